//! M2IB — multi-modal information bottleneck attribution for CLIP (Wang et al., NeurIPS 2023).
//!
//! For an image–caption pair, two independent bottleneck optimisations run: one on the output
//! of a vision-tower layer, fitted to the cosine between the bottlenecked image embedding and
//! the caption's (unperturbed) text embedding; one on a text-tower layer, fitted to the cosine
//! with the image embedding. The capacity (nats) that survives is the attribution: per image
//! patch (drop CLS, reshape to the patch grid, upsample bilinearly to the input size, min-max)
//! and per caption token (start/end tokens included, min-max).
//!
//! Defaults reproduce the official implementation (`YingWANGG/M2IB`): β = 0.1, 10 steps, Adam
//! lr 1, 10 noise samples, α initialised to 5, layer 9 of ViT-B/32's 12 layers. For a tower of
//! another depth `n`, the default layer keeps the paper's relative depth: `round(10·n/12) − 1`
//! (12 → 9, 24 → 19, 6 → 4, 4 → 2). A model directory may recommend its own setting in
//! `ibex.json` (the bundled demo model: layer 1, β = 1, chosen on its benchmark).

use crate::bottleneck::{self, BottleneckSettings, Mask, NoiseBank, NoiseSource, Objective, SeededNoise, StepTrace};
use crate::control::{RunControl, StepCounter};
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::clip::{ClipBundle, ClipModel, Modality, Tokens, Tower};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// M2IB hyper-parameters: the bottleneck's (β, steps, lr, samples, samples_per_pass,
/// alpha_init; see [`BottleneckSettings`]) plus where the bottlenecks sit and the noise seed.
/// Unset layers follow the depth rule in the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct M2ibConfig {
    /// Bottleneck on the output of this vision layer (0-based). Earlier layers give coarser,
    /// more object-like maps; later layers more token-specific ones.
    pub vision_layer: Option<usize>,
    /// Bottleneck on the output of this text layer (0-based).
    pub text_layer: Option<usize>,
    /// Seed of the noise: same seed, same maps.
    pub seed: u64,
    #[serde(flatten)]
    pub bottleneck: BottleneckSettings,
}

impl Default for M2ibConfig {
    /// The official implementation's settings.
    fn default() -> Self {
        M2ibConfig {
            vision_layer: None,
            text_layer: None,
            seed: 0,
            bottleneck: BottleneckSettings {
                beta: 0.1,
                steps: 10,
                lr: 1.0,
                samples: 10,
                samples_per_pass: 0,
                alpha_init: 5.0,
            },
        }
    }
}

/// The default bottleneck layer for a tower of `depth` layers (paper: 9 of 12).
pub fn default_layer(depth: usize) -> usize {
    (((10 * depth) as f64 / 12.0).round() as usize).clamp(1, depth) - 1
}

impl M2ibConfig {
    /// Applies settings from JSON (an object with any of this struct's keys; `layer` sets both
    /// towers) on top of `self`. Unknown keys and wrong types are errors naming the key.
    pub fn merged(&self, overrides: &serde_json::Value) -> Result<Self> {
        let cfg: M2ibConfig =
            super::options::merge(self, overrides, "M2IB", &[("layer", &["vision_layer", "text_layer"])])?;
        cfg.bottleneck.validate()?;
        Ok(cfg)
    }

    /// The defaults for a model: the paper's, then what the model directory recommends.
    pub fn for_bundle(bundle: &ClipBundle) -> Result<Self> {
        match &bundle.recommended.m2ib {
            Some(v) => M2ibConfig::default().merged(v),
            None => Ok(M2ibConfig::default()),
        }
    }

    /// The layers actually used for `model` (explicit or by the depth rule), checked.
    pub fn resolve_layers(&self, model: &ClipModel) -> Result<(usize, usize)> {
        let v = self.vision_layer.unwrap_or_else(|| default_layer(model.vision.depth()));
        let t = self.text_layer.unwrap_or_else(|| default_layer(model.text.depth()));
        for (m, l, depth) in [("vision", v, model.vision.depth()), ("text", t, model.text.depth())] {
            if l >= depth {
                return Err(Error::invalid(format!(
                    "{m}_layer {l} does not exist: the {m} tower has layers 0..={}",
                    depth - 1
                )));
            }
        }
        Ok((v, t))
    }
}

/// Where the noise comes from.
pub enum Noise {
    /// Seeded generator (the config's seed).
    Seeded,
    /// Fixed banks `[steps, samples, T, D]` for the vision and text runs (parity tests).
    Banks { vision: Tensor, text: Tensor },
}

/// The explanation of one caption against one image.
#[derive(Clone, Debug)]
pub struct CaptionExplanation {
    pub caption: String,
    pub tokens: Tokens,
    /// Image map at the preprocessed input resolution, min-max normalised to [0, 1].
    pub image_map: Heatmap,
    /// Capacity per patch (nats, summed over channels) on the patch grid.
    pub image_capacity: Heatmap,
    /// Per token (start/end included), min-max normalised.
    pub text_scores: Vec<f32>,
    /// Capacity per token, nats summed over channels.
    pub text_capacity: Vec<f32>,
    /// Cosine between the unperturbed image and text embeddings.
    pub similarity: f32,
    pub vision_trace: Vec<StepTrace>,
    pub text_trace: Vec<StepTrace>,
}

/// M2IB explanations of one image with one or more captions.
#[derive(Clone, Debug)]
pub struct M2ibExplanation {
    /// The preprocessed image (resized and cropped, 0..255), what the maps refer to.
    pub image: RgbImage,
    /// Where the maps lie on the original image: `[x0, y0, x1, y1]` in its pixels.
    pub source_region: [f32; 4],
    pub captions: Vec<CaptionExplanation>,
    /// The settings used, with layers resolved.
    pub config: M2ibConfig,
    pub elapsed_ms: f64,
}

/// Cosine to a fixed target embedding, through a tower's differentiable suffix.
pub(crate) struct CosineToTarget<'a> {
    pub tower: &'a Tower,
    pub layer: usize,
    pub pool: usize,
    /// Unit-norm target `[1, P]`.
    pub target: Tensor,
}

impl Objective for CosineToTarget<'_> {
    fn evaluate(&self, z: &Tensor, grad: bool) -> Result<(Vec<f32>, Option<Tensor>)> {
        if !grad {
            let e = self.tower.forward_from(self.layer, z, self.pool)?;
            let norm = e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            let cos = e.broadcast_div(&norm)?.broadcast_mul(&self.target)?.sum(D::Minus1)?;
            return Ok((cos.to_vec1::<f32>()?, None));
        }
        let (e, tape) = self.tower.suffix_forward(self.layer, z, self.pool)?;
        let norm = e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let ehat = e.broadcast_div(&norm)?;
        let cos = ehat.broadcast_mul(&self.target)?.sum_keepdim(D::Minus1)?;
        // ∂cos/∂e = (t̂ − cos·ê) / |e|
        let de = self.target.broadcast_sub(&ehat.broadcast_mul(&cos)?)?.broadcast_div(&norm)?;
        let dz = self.tower.suffix_backward(self.layer, &tape, &de)?;
        Ok((cos.squeeze(1)?.to_vec1::<f32>()?, Some(dz)))
    }
}

/// Rows (last dimension) scaled to unit length.
pub(crate) fn unit(e: &Tensor) -> Result<Tensor> {
    let n = e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(e.broadcast_div(&n)?)
}

fn finite(t: &Tensor, what: &str) -> Result<()> {
    if !crate::numerics::all_finite(t)? {
        return Err(Error::Numerical(format!("{what} contains NaN or infinity")));
    }
    Ok(())
}

/// The M2IB method with a fixed configuration.
pub struct M2ib {
    pub config: M2ibConfig,
}

/// A caption's image-independent inputs, computed once per call.
struct PreparedCaption {
    /// Output of the text bottleneck layer, `[L, D]`.
    hidden: Tensor,
    /// The pooled (end-of-text) token.
    pool: usize,
    /// Unit-norm text embedding `[1, P]`: the vision run's target.
    embed: Tensor,
}

/// Raw per-caption result of [`M2ib::explain_tensors`].
pub struct RawCaption {
    /// Capacity `[T_v, D_v]` of the vision run (nats).
    pub vision_capacity: Tensor,
    /// Capacity `[L, D_t]` of the text run (nats).
    pub text_capacity: Tensor,
    pub vision_trace: Vec<StepTrace>,
    pub text_trace: Vec<StepTrace>,
    pub similarity: f32,
}

impl M2ib {
    pub fn new(config: M2ibConfig) -> Result<Self> {
        config.bottleneck.validate()?;
        Ok(M2ib { config })
    }

    /// Steps one call will report to a progress callback.
    pub fn total_steps(&self, captions: usize) -> u32 {
        (2 * self.config.bottleneck.steps * captions) as u32
    }

    /// Core M2IB on model inputs: normalised pixels `[1, 3, S, S]` and token ids per caption.
    /// The vision prefix and the image embedding are computed once for all captions.
    pub fn explain_tensors(
        &self,
        model: &ClipModel,
        pixels: &Tensor,
        captions: &[Vec<u32>],
        noise: &Noise,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<RawCaption>> {
        let mut counter = StepCounter { control, done: 0, total: self.total_steps(captions.len()) };
        let prepared = self.prepare_captions(model, captions)?;
        self.run(model, pixels, &prepared, noise, &mut counter)
    }

    /// The text side of each caption, which does not depend on the image: the frozen text
    /// prefix (bottleneck input), the pooled token and the unit text embedding.
    fn prepare_captions(&self, model: &ClipModel, captions: &[Vec<u32>]) -> Result<Vec<PreparedCaption>> {
        if captions.is_empty() {
            return Err(Error::invalid("M2IB needs at least one caption"));
        }
        let (_, lt) = self.config.resolve_layers(model)?;
        captions
            .iter()
            .map(|ids| {
                let temb = model.embed_text(ids)?;
                let pool = model.text_pool_index(ids);
                let ht = model.text.forward_until(&temb, lt)?;
                let embed = unit(&model.text.forward_from(lt, &ht, pool)?)?;
                Ok(PreparedCaption { hidden: ht.squeeze(0)?, pool, embed })
            })
            .collect()
    }

    fn run(
        &self,
        model: &ClipModel,
        pixels: &Tensor,
        captions: &[PreparedCaption],
        noise: &Noise,
        counter: &mut StepCounter<'_, '_>,
    ) -> Result<Vec<RawCaption>> {
        finite(pixels, "the input image")?;
        let (lv, lt) = self.config.resolve_layers(model)?;
        let settings = &self.config.bottleneck;
        counter.control.check()?;
        let vemb = model.embed_image(pixels)?;
        let hv = model.vision.forward_until(&vemb, lv)?;
        let image_embed = model.vision.forward_from(lv, &hv, model.vision_pool_index())?;
        let image_unit = unit(&image_embed)?;
        let hv = hv.squeeze(0)?;
        let mut out = Vec::with_capacity(captions.len());
        for (ci, cap) in captions.iter().enumerate() {
            let similarity = (&image_unit * &cap.embed)?.sum_all()?.to_scalar::<f32>()?;
            let source = |m: Modality| -> Result<Box<dyn NoiseSource>> {
                Ok(match noise {
                    Noise::Seeded => {
                        Box::new(SeededNoise::new(self.config.seed, (ci as u64) << 1 | (m == Modality::Text) as u64))
                    }
                    Noise::Banks { vision, text } => {
                        Box::new(NoiseBank::new(if m == Modality::Vision { vision.clone() } else { text.clone() })?)
                    }
                })
            };
            let vobj = CosineToTarget {
                tower: &model.vision,
                layer: lv,
                pool: model.vision_pool_index(),
                target: cap.embed.clone(),
            };
            let v = bottleneck::optimise(
                &hv,
                settings,
                &Mask::default(),
                &vobj,
                source(Modality::Vision)?.as_mut(),
                counter,
            )?;
            let tobj = CosineToTarget { tower: &model.text, layer: lt, pool: cap.pool, target: image_unit.clone() };
            let t = bottleneck::optimise(
                &cap.hidden,
                settings,
                &Mask::default(),
                &tobj,
                source(Modality::Text)?.as_mut(),
                counter,
            )?;
            out.push(RawCaption {
                vision_capacity: v.capacity,
                text_capacity: t.capacity,
                vision_trace: v.trace,
                text_trace: t.trace,
                similarity,
            });
        }
        Ok(out)
    }

    /// M2IB for one image and several captions, from a decoded image.
    pub fn explain(
        &self,
        bundle: &ClipBundle,
        image: &RgbImage,
        captions: &[&str],
        control: &mut RunControl<'_>,
    ) -> Result<M2ibExplanation> {
        Ok(self.explain_batch(bundle, std::slice::from_ref(image), captions, control)?.remove(0))
    }

    /// M2IB for several images, each against the same captions, in one call (progress counts
    /// over the whole batch). An image's maps do not depend on its place in the batch.
    pub fn explain_batch(
        &self,
        bundle: &ClipBundle,
        images: &[RgbImage],
        captions: &[&str],
        control: &mut RunControl<'_>,
    ) -> Result<Vec<M2ibExplanation>> {
        if images.is_empty() {
            return Err(Error::invalid("no image to explain"));
        }
        let model = &bundle.model;
        let tokens = captions.iter().map(|c| bundle.tokenizer.encode(c)).collect::<Result<Vec<_>>>()?;
        let ids: Vec<Vec<u32>> = tokens.iter().map(|t| t.ids.clone()).collect();
        let prepared = self.prepare_captions(model, &ids)?;
        let (lv, lt) = self.config.resolve_layers(model)?;
        let mut config = self.config.clone();
        config.vision_layer = Some(lv);
        config.text_layer = Some(lt);
        let mut counter =
            StepCounter { control, done: 0, total: self.total_steps(captions.len()) * images.len() as u32 };
        let mut results = Vec::with_capacity(images.len());
        for (i, image) in images.iter().enumerate() {
            let start = Instant::now();
            let pre = bundle.preprocessor.preprocess(image)?;
            let shape = (1, 3, pre.height as usize, pre.width as usize);
            let pixels = Tensor::from_vec(pre.pixel_values, shape, &model.device)?;
            let raw = self.run(model, &pixels, &prepared, &Noise::Seeded, &mut counter).map_err(|e| match e {
                Error::Numerical(m) if images.len() > 1 => Error::Numerical(format!("image {i}: {m}")),
                e => e,
            })?;
            let mut out = Vec::with_capacity(raw.len());
            for ((r, tok), caption) in raw.into_iter().zip(&tokens).zip(captions) {
                let vtok = r.vision_capacity.sum(D::Minus1)?.to_vec1::<f32>()?;
                let image_capacity = model.patch_map(&vtok)?;
                let image_map = image_capacity.upsample_bilinear(pre.width, pre.height).normalized()?;
                let text_capacity = r.text_capacity.sum(D::Minus1)?.to_vec1::<f32>()?;
                let text_scores =
                    Heatmap::new(text_capacity.len() as u32, 1, text_capacity.clone())?.normalized()?.data;
                out.push(CaptionExplanation {
                    caption: caption.to_string(),
                    tokens: tok.clone(),
                    image_map,
                    image_capacity,
                    text_scores,
                    text_capacity,
                    similarity: r.similarity,
                    vision_trace: r.vision_trace,
                    text_trace: r.text_trace,
                });
            }
            log::debug!("M2IB image {i}: {} captions in {:.0} ms", out.len(), start.elapsed().as_secs_f64() * 1e3);
            results.push(M2ibExplanation {
                image: pre.image,
                source_region: pre.source_region,
                captions: out,
                config: config.clone(),
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            });
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_merge_over_defaults_with_clear_errors() {
        let d = M2ibConfig::default();
        assert_eq!((d.bottleneck.beta, d.bottleneck.steps, d.bottleneck.samples), (0.1, 10, 10));
        let c = d.merged(&json!({"layer": 3, "text_layer": 1, "beta": 2, "seed": 9})).unwrap();
        assert_eq!((c.vision_layer, c.text_layer, c.bottleneck.beta, c.seed), (Some(3), Some(1), 2.0, 9));
        let e = d.merged(&json!({"betta": 1.0})).unwrap_err().to_string();
        assert!(e.contains("'betta'") && e.contains("beta") && e.contains("samples_per_pass"), "{e}");
        let e = d.merged(&json!({"steps": "ten"})).unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        assert!(d.merged(&json!({"steps": 0})).unwrap_err().to_string().contains("steps"));
        assert!(d.merged(&json!({"lr": -1})).is_err());
        assert!(d.merged(&json!([1, 2])).is_err());
        assert_eq!(d.merged(&serde_json::Value::Null).unwrap(), d);
        // the flattened JSON form is what reports show
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["beta"], 2.0);
        assert_eq!(v["vision_layer"], 3);
    }
}
