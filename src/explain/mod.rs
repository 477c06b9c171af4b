//! Attribution methods, one module each, built on [`crate::bottleneck`] and [`crate::models`],
//! and the method-independent [`Explanation`] that the C ABI and bindings expose.

pub mod baselines;
pub mod classifier;
pub mod dual_ib;
pub mod evaluation;
pub mod fit;
pub mod iba;
pub mod m2ib;
pub mod options;
pub mod pipnet;
pub mod tune;

pub use baselines::{
    BaselineExplanation, GradCam, GradCamConfig, GradCamExplanation, IntegratedGradients, IntegratedGradientsConfig,
    Occlusion, OcclusionConfig, Saliency, SaliencyConfig,
};
pub use classifier::{ClassScore, Prediction};
pub use dual_ib::{DualIb, DualIbConfig, DualIbExplainConfig};
pub use iba::readout::IbaReadout;
pub use iba::{Iba, IbaConfig, IbaExplanation};
pub use m2ib::{M2ib, M2ibConfig, M2ibExplanation};

use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::Model;
use serde::Serialize;

/// What to explain: a class (classifiers) and/or captions (vision-language models).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub class_index: Option<usize>,
    pub texts: Vec<String>,
}

/// One map of an explanation.
#[derive(Clone, Debug)]
pub struct NamedMap {
    /// e.g. `image`, `image_capacity`, `text`, `text_capacity`, `saliency`, `gradcam`.
    pub name: String,
    /// `normalized` (min-max to [0, 1]), `nats`, `bits` or `bits_per_pixel`.
    pub units: String,
    /// The caption this map belongs to, if any.
    pub text_index: Option<usize>,
    pub map: Heatmap,
}

/// Per-caption results beside the maps.
#[derive(Clone, Debug, Serialize)]
pub struct TextResult {
    pub caption: String,
    pub tokens: Vec<String>,
    pub token_ids: Vec<u32>,
    /// Normalised token scores.
    pub scores: Vec<f32>,
    pub similarity: f32,
}

/// A method-independent explanation: maps with names and units (`maps[0]` is the method's main
/// map), per-caption token scores (CLIP), the prediction and target (classifiers).
#[derive(Clone, Debug)]
pub struct Explanation {
    pub method: String,
    pub maps: Vec<NamedMap>,
    pub texts: Vec<TextResult>,
    /// Classifiers: the class explained and the top-5 on the clean input.
    pub prediction: Option<Prediction>,
    /// Method-specific numbers (IBA: total bits; IG: completeness gap; …).
    pub summary: serde_json::Map<String, serde_json::Value>,
    /// The preprocessed image the maps refer to.
    pub image: RgbImage,
    /// Where the maps lie on the original image: `[x0, y0, x1, y1]` in its pixels.
    pub source_region: [f32; 4],
    /// The settings used (JSON).
    pub config: serde_json::Value,
    pub elapsed_ms: f64,
}

impl From<M2ibExplanation> for Explanation {
    fn from(ex: M2ibExplanation) -> Self {
        let mut maps = Vec::new();
        let mut texts = Vec::new();
        for (i, c) in ex.captions.into_iter().enumerate() {
            let n = c.text_capacity.len() as u32;
            maps.push(NamedMap {
                name: "image".into(),
                units: "normalized".into(),
                text_index: Some(i),
                map: c.image_map,
            });
            maps.push(NamedMap {
                name: "image_capacity".into(),
                units: "nats".into(),
                text_index: Some(i),
                map: c.image_capacity,
            });
            maps.push(NamedMap {
                name: "text".into(),
                units: "normalized".into(),
                text_index: Some(i),
                map: Heatmap { width: n, height: 1, data: c.text_scores.clone() },
            });
            maps.push(NamedMap {
                name: "text_capacity".into(),
                units: "nats".into(),
                text_index: Some(i),
                map: Heatmap { width: n, height: 1, data: c.text_capacity },
            });
            texts.push(TextResult {
                caption: c.caption,
                tokens: c.tokens.text,
                token_ids: c.tokens.ids,
                scores: c.text_scores,
                similarity: c.similarity,
            });
        }
        Explanation {
            method: "m2ib".into(),
            maps,
            texts,
            prediction: None,
            summary: Default::default(),
            image: ex.image,
            source_region: ex.source_region,
            config: serde_json::to_value(&ex.config).unwrap_or_default(),
            elapsed_ms: ex.elapsed_ms,
        }
    }
}

impl Explanation {
    /// The target in words: the class explained (label and index), or the captions.
    pub fn target_description(&self) -> String {
        if let Some(p) = &self.prediction {
            return format!("{} (class {})", p.target.label, p.target.index);
        }
        self.texts.iter().map(|t| t.caption.as_str()).collect::<Vec<_>>().join(" | ")
    }

    /// The report every front end writes (CLI `--json`, `ibex_result_json`): `method`, `model`,
    /// `target` and `top5` (classifiers), `texts` (CLIP), `maps` (`name`, `units`, `width`,
    /// `height`, and the row-major `data` if `with_data`; `maps[0]` is the main map), `image`
    /// (size and `source_region`), `config`, `elapsed_ms`.
    pub fn report(&self, model: Option<&str>, with_data: bool) -> serde_json::Value {
        let maps: Vec<serde_json::Value> = self
            .maps
            .iter()
            .map(|m| {
                let mut v = serde_json::json!({
                    "name": m.name, "units": m.units, "width": m.map.width, "height": m.map.height,
                    "text_index": m.text_index,
                });
                if with_data {
                    v["data"] = serde_json::json!(m.map.data);
                }
                v
            })
            .collect();
        serde_json::json!({
            "method": self.method,
            "model": model,
            "target": self.prediction.as_ref().map(|p| &p.target),
            "top5": self.prediction.as_ref().map(|p| &p.top5),
            "summary": self.summary,
            "texts": self.texts,
            "maps": maps,
            "image": { "width": self.image.width, "height": self.image.height, "source_region": self.source_region },
            "config": self.config,
            "elapsed_ms": self.elapsed_ms,
        })
    }
}

pub(crate) fn map(name: &str, units: &str, map: Heatmap) -> NamedMap {
    NamedMap { name: name.into(), units: units.into(), text_index: None, map }
}

impl From<IbaExplanation> for Explanation {
    fn from(ex: IbaExplanation) -> Self {
        Explanation {
            method: "iba".into(),
            maps: vec![map("saliency", "bits_per_pixel", ex.saliency), map("capacity", "bits", ex.capacity_bits)],
            texts: vec![],
            prediction: Some(ex.prediction),
            summary: [("total_bits".to_string(), serde_json::json!(ex.total_bits))].into_iter().collect(),
            image: ex.image,
            source_region: ex.source_region,
            config: serde_json::to_value(&ex.config).unwrap_or_default(),
            elapsed_ms: ex.elapsed_ms,
        }
    }
}

impl From<GradCamExplanation> for Explanation {
    fn from(ex: GradCamExplanation) -> Self {
        Explanation {
            method: "gradcam".into(),
            maps: vec![map("gradcam", "normalized", ex.map), map("gradcam_grid", "relu_weighted_activation", ex.grid)],
            texts: vec![],
            prediction: Some(ex.prediction),
            summary: Default::default(),
            image: ex.image,
            source_region: ex.source_region,
            config: serde_json::to_value(&ex.config).unwrap_or_default(),
            elapsed_ms: ex.elapsed_ms,
        }
    }
}

impl From<BaselineExplanation> for Explanation {
    fn from(ex: BaselineExplanation) -> Self {
        Explanation {
            method: ex.method.into(),
            maps: ex.maps.into_iter().map(|(n, u, m)| map(&n, &u, m)).collect(),
            texts: vec![],
            prediction: Some(ex.prediction),
            summary: ex.summary,
            image: ex.image,
            source_region: ex.source_region,
            config: ex.config,
            elapsed_ms: ex.elapsed_ms,
        }
    }
}

/// Converts a method's own results into [`Explanation`]s.
fn collect<T: Into<Explanation>>(r: Result<Vec<T>>) -> Result<Vec<Explanation>> {
    Ok(r?.into_iter().map(Into::into).collect())
}

/// The methods `Method::create` knows, per model family.
pub const METHODS: &str =
    "m2ib, occlusion (clip); iba, iba-readout, dual-ib, gradcam, saliency, ig, occlusion (classifiers)";

/// A configured method, ready to explain inputs of one model kind, with the largest input it
/// accepts.
pub struct Method {
    pub kind: MethodKind,
    /// Images with more pixels (width × height) than this are refused before any work (option
    /// `max_pixels`; default and ceiling [`crate::imaging::MAX_PIXELS`]).
    pub max_pixels: u64,
}

/// The smallest image side a method accepts: below it, upsampling to the model's input invents
/// the content being explained.
pub const MIN_SIDE: u32 = 16;

/// The method itself.
// one per explainer, created once: the size difference between variants costs nothing
#[allow(clippy::large_enum_variant)]
pub enum MethodKind {
    M2ib(M2ib),
    Iba(Iba),
    IbaReadout(IbaReadout),
    DualIb(DualIb),
    GradCam(GradCam),
    Saliency(Saliency),
    IntegratedGradients(IntegratedGradients),
    Occlusion(Occlusion),
    PipNet(pipnet::PipNetExplainer),
}

impl Method {
    /// The methods [`Method::create`] offers for `model` (canonical names).
    pub fn names(model: &Model) -> &'static [&'static str] {
        match model {
            Model::Clip(_) => &["m2ib", "occlusion"],
            Model::Classifier(_) => &["iba", "iba-readout", "dual-ib", "gradcam", "saliency", "ig", "occlusion"],
            Model::PipNet(_) => &["pipnet"],
        }
    }

    /// Creates method `name` for `model` with JSON `options` over the defaults (for M2IB:
    /// the paper's, then the model directory's recommendations).
    pub fn create(model: &Model, name: &str, options: &serde_json::Value) -> Result<Method> {
        let ceiling = crate::imaging::MAX_PIXELS;
        let mut options = options.clone();
        let max_pixels = match options.as_object_mut().and_then(|o| o.remove("max_pixels")) {
            None => ceiling,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=ceiling).contains(&n) => n,
                _ => return Err(Error::invalid(format!("max_pixels must be an integer in 1..={ceiling}, got {v}"))),
            },
        };
        let kind = MethodKind::create(model, name, &options)?;
        Ok(Method { kind, max_pixels })
    }

    /// Explains `image` for `target`.
    pub fn explain(
        &self,
        model: &Model,
        image: &RgbImage,
        target: &Target,
        control: &mut RunControl<'_>,
    ) -> Result<Explanation> {
        Ok(self.explain_batch(model, std::slice::from_ref(image), target, control)?.remove(0))
    }

    /// Explains every image for the same target, in one call.
    pub fn explain_batch(
        &self,
        model: &Model,
        images: &[RgbImage],
        target: &Target,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<Explanation>> {
        for (i, im) in images.iter().enumerate() {
            if im.width.min(im.height) < MIN_SIDE {
                return Err(Error::invalid(format!(
                    "image {i} is {}x{}: too small to explain (each side must be at least {MIN_SIDE} pixels)",
                    im.width, im.height
                )));
            }
            let px = u64::from(im.width) * u64::from(im.height);
            if px > self.max_pixels {
                return Err(Error::invalid(format!(
                    "image {i} is {}x{} = {px} pixels, over this explainer's limit of {} (option max_pixels)",
                    im.width, im.height, self.max_pixels
                )));
            }
        }
        self.kind.explain_batch(model, images, target, control)
    }
}

impl MethodKind {
    fn create(model: &Model, name: &str, options: &serde_json::Value) -> Result<MethodKind> {
        match (name.trim().to_ascii_lowercase().as_str(), model) {
            ("m2ib", Model::Clip(b)) => Ok(MethodKind::M2ib(M2ib::new(M2ibConfig::for_bundle(b)?.merged(options)?)?)),
            ("iba", Model::Classifier(b)) => {
                Ok(MethodKind::Iba(Iba::new(b, IbaConfig::for_bundle(b)?.merged(options)?)?))
            }
            ("iba-readout" | "iba_readout", Model::Classifier(b)) => {
                #[derive(serde::Serialize, serde::Deserialize)]
                struct Opts {
                    state: Option<std::path::PathBuf>,
                }
                let o = options::merge(&Opts { state: None }, options, "IBA readout", &[])?;
                let path = o.state.ok_or_else(|| {
                    Error::invalid("the IBA readout needs a trained state: set 'state' to a file written by `ibex iba fit-readout`")
                })?;
                Ok(MethodKind::IbaReadout(IbaReadout::load(&b.network, &path, &b.device)?))
            }
            ("dual-ib" | "dual_ib" | "dualib", Model::Classifier(b)) => {
                let cfg = options::merge(&DualIbExplainConfig::default(), options, "Dual-IB", &[])?;
                Ok(MethodKind::DualIb(DualIb::new(&b.network, cfg, &b.device)?))
            }
            ("gradcam" | "grad-cam", Model::Classifier(b)) => {
                let cfg = options::merge(&GradCamConfig { layer: None }, options, "Grad-CAM", &[])?;
                Ok(MethodKind::GradCam(GradCam::new(b, cfg)?))
            }
            ("saliency", Model::Classifier(_)) => Ok(MethodKind::Saliency(Saliency {
                config: options::merge(&SaliencyConfig::default(), options, "saliency", &[])?,
            })),
            ("ig" | "integrated_gradients", Model::Classifier(_)) => Ok(MethodKind::IntegratedGradients(
                IntegratedGradients::new(options::merge(&IntegratedGradientsConfig::default(), options, "IG", &[])?)?,
            )),
            ("pipnet", Model::PipNet(_)) => {
                options::merge(&serde_json::json!({}), options, "PIP-Net", &[])?;
                Ok(MethodKind::PipNet(pipnet::PipNetExplainer))
            }
            ("occlusion", Model::Classifier(_) | Model::Clip(_)) => Ok(MethodKind::Occlusion(Occlusion::new(
                options::merge(&OcclusionConfig::default(), options, "occlusion", &[])?,
            )?)),
            (other, m) => {
                Err(Error::Unsupported(format!("method '{other}' for a {} model (available: {METHODS})", m.kind())))
            }
        }
    }

    fn explain_batch(
        &self,
        model: &Model,
        images: &[RgbImage],
        target: &Target,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<Explanation>> {
        let t = target.class_index;
        match (self, model) {
            (MethodKind::M2ib(m), Model::Clip(b)) => {
                if target.texts.is_empty() {
                    return Err(Error::invalid("M2IB needs a caption: set the target's text"));
                }
                let caps: Vec<&str> = target.texts.iter().map(String::as_str).collect();
                Ok(m.explain_batch(b, images, &caps, control)?.into_iter().map(Explanation::from).collect())
            }
            (MethodKind::Iba(m), Model::Classifier(b)) => collect(m.explain_batch(b, images, t, control)),
            (MethodKind::IbaReadout(m), Model::Classifier(b)) => m.explain_batch(b, images, t, control),
            (MethodKind::DualIb(m), Model::Classifier(b)) => m.explain_batch(b, images, t, control),
            (MethodKind::GradCam(m), Model::Classifier(b)) => collect(m.explain_batch(b, images, t, control)),
            (MethodKind::Saliency(m), Model::Classifier(b)) => collect(m.explain_batch(b, images, t, control)),
            (MethodKind::IntegratedGradients(m), Model::Classifier(b)) => {
                collect(m.explain_batch(b, images, t, control))
            }
            (MethodKind::Occlusion(m), Model::Classifier(b)) => collect(m.explain_batch(b, images, t, control)),
            (MethodKind::PipNet(m), Model::PipNet(b)) => m.explain_batch(b, images, control),
            (MethodKind::Occlusion(m), Model::Clip(b)) => {
                if target.texts.is_empty() {
                    return Err(Error::invalid("occlusion on CLIP needs a caption: set the target's text"));
                }
                let caps: Vec<&str> = target.texts.iter().map(String::as_str).collect();
                m.explain_clip(b, images, &caps, control)
            }
            _ => Err(Error::invalid("this explainer was created for another kind of model")),
        }
    }
}
