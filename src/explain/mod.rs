//! Attribution methods, one module each, built on [`crate::bottleneck`] and [`crate::models`],
//! and the method-independent [`Explanation`] that the C ABI and bindings expose.

pub mod m2ib;

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
    /// e.g. `image`, `image_capacity`, `text`, `text_capacity`.
    pub name: String,
    /// `normalized` (min-max to [0, 1]) or `nats`.
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

/// A method-independent explanation: maps with names and units, per-caption token scores.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub method: String,
    pub maps: Vec<NamedMap>,
    pub texts: Vec<TextResult>,
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
            image: ex.image,
            source_region: ex.source_region,
            config: serde_json::to_value(&ex.config).unwrap_or_default(),
            elapsed_ms: ex.elapsed_ms,
        }
    }
}

/// A configured method, ready to explain inputs of one model kind.
pub enum Method {
    M2ib(M2ib),
}

impl Method {
    /// Creates method `name` for `model` with JSON `options` over the defaults (for M2IB:
    /// the paper's, then the model directory's recommendations).
    pub fn create(model: &Model, name: &str, options: &serde_json::Value) -> Result<Method> {
        match (name.trim().to_ascii_lowercase().as_str(), model) {
            ("m2ib", Model::Clip(b)) => Ok(Method::M2ib(M2ib::new(M2ibConfig::for_bundle(b)?.merged(options)?)?)),
            (other, m) => {
                Err(Error::Unsupported(format!("method '{other}' for a {} model (available: m2ib for clip)", m.kind())))
            }
        }
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
        match (self, model) {
            (Method::M2ib(m), Model::Clip(b)) => {
                if target.texts.is_empty() {
                    return Err(Error::invalid("M2IB needs a caption: set the target's text"));
                }
                let caps: Vec<&str> = target.texts.iter().map(String::as_str).collect();
                Ok(m.explain_batch(b, images, &caps, control)?.into_iter().map(Explanation::from).collect())
            }
        }
    }
}
