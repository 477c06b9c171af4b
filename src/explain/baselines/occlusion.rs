//! Occlusion (Zeiler & Fergus, ECCV 2014): slide a `window × window` patch of a constant
//! value over the input with `stride`, and attribute to each pixel the mean drop in the
//! target's probability over the windows that cover it. Gradient-free: only forward passes,
//! in batches. For CLIP the score is the image–caption cosine similarity instead.

use super::BaselineExplanation;
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::explain::classifier::{self, target_probability};
use crate::explain::m2ib::unit;
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::clip::ClipBundle;
use crate::models::cnn::ClassifierBundle;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Occlusion settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OcclusionConfig {
    /// Side of the occluding patch in input pixels (larger: coarser, fewer passes).
    pub window: u32,
    /// Step between patches (smaller: smoother, quadratically more passes).
    pub stride: u32,
    /// The patch value in the model's normalised input space (0: the data mean for
    /// mean/std-normalised models, mid-grey for EfficientNet-Lite).
    pub fill: f64,
    /// Instead of `fill`: a colour on the 0..=255 pixel scale (e.g. `[0, 0, 0]` for black),
    /// normalised like the model's input.
    pub fill_rgb: Option<[f32; 3]>,
    /// Occluded images per forward pass.
    pub batch: usize,
}

impl Default for OcclusionConfig {
    fn default() -> Self {
        OcclusionConfig { window: 32, stride: 16, fill: 0.0, fill_rgb: None, batch: 16 }
    }
}

/// Occlusion.
pub struct Occlusion {
    pub config: OcclusionConfig,
}

/// Window offsets along one axis of `n` pixels: every `stride`, plus one flush with the end.
fn offsets(n: u32, window: u32, stride: u32) -> Vec<u32> {
    let w = window.min(n);
    let mut v: Vec<u32> = (0..=n - w).step_by(stride as usize).collect();
    if *v.last().unwrap_or(&0) != n - w {
        v.push(n - w);
    }
    v
}

impl Occlusion {
    /// Checks the settings.
    pub fn new(config: OcclusionConfig) -> Result<Self> {
        let rgb_ok = config.fill_rgb.map_or(true, |c| c.iter().all(|v| (0.0..=255.0).contains(v)));
        if config.window == 0 || config.stride == 0 || config.batch == 0 || !config.fill.is_finite() || !rgb_ok {
            return Err(Error::invalid(format!(
                "occlusion: window, stride and batch must be >= 1, fill finite and fill_rgb within 0..=255, got {config:?}"
            )));
        }
        Ok(Occlusion { config })
    }

    /// The fill value of each channel for a model with preprocessing `pre`.
    pub fn fill_values(&self, pre: &crate::imaging::preprocess::ClipPreprocessor) -> [f32; 3] {
        match self.config.fill_rgb {
            Some(rgb) => pre.normalise_value(rgb),
            None => [self.config.fill as f32; 3],
        }
    }

    /// The occlusion maps of one normalised input (`pixels`, CHW, `w × h`) for `base.len()`
    /// scores at once: per pixel, the mean of `base[t] − score_t(occluded)` over the windows
    /// covering it, the windows filled with `fill` (per channel). `score(images, n)` returns
    /// the `base.len()` scores of each of the `n` images, image by image. `report(done, total)`
    /// is called after every batch of windows. Returns the maps and the number of windows.
    #[allow(clippy::too_many_arguments)]
    pub fn maps(
        &self,
        fill: [f32; 3],
        pixels: &[f32],
        w: u32,
        h: u32,
        base: &[f32],
        score: &mut crate::metrics::ScoreFn<'_>,
        report: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<(Vec<Heatmap>, usize)> {
        let c = &self.config;
        let windows: Vec<(u32, u32)> = offsets(h, c.window, c.stride)
            .into_iter()
            .flat_map(|y| offsets(w, c.window, c.stride).into_iter().map(move |x| (x, y)))
            .collect();
        let (ww, wh) = (c.window.min(w) as usize, c.window.min(h) as usize);
        let plane = (w * h) as usize;
        let channels = pixels.len() / plane.max(1);
        let t = base.len();
        let mut sum = vec![vec![0f64; plane]; t];
        let mut count = vec![0u32; plane];
        let passes = windows.len().div_ceil(c.batch);
        for (bi, chunk) in windows.chunks(c.batch).enumerate() {
            let mut batch = Vec::with_capacity(chunk.len() * pixels.len());
            for &(x0, y0) in chunk {
                let mut img = pixels.to_vec();
                for ch in 0..channels {
                    for y in y0 as usize..y0 as usize + wh {
                        let row = ch * plane + y * w as usize;
                        img[row + x0 as usize..row + x0 as usize + ww].fill(fill[ch.min(2)]);
                    }
                }
                batch.extend_from_slice(&img);
            }
            let scores = score(&batch, chunk.len())?;
            if scores.len() != chunk.len() * t {
                return Err(Error::Numerical(
                    "occlusion: the scoring function returned the wrong number of scores".into(),
                ));
            }
            for (&(x0, y0), s) in chunk.iter().zip(scores.chunks(t)) {
                for y in y0 as usize..y0 as usize + wh {
                    for x in x0 as usize..x0 as usize + ww {
                        for (k, (&b, &p)) in base.iter().zip(s).enumerate() {
                            sum[k][y * w as usize + x] += (b - p) as f64;
                        }
                        count[y * w as usize + x] += 1;
                    }
                }
            }
            report(bi + 1, passes)?;
        }
        let maps = sum
            .iter()
            .map(|sum| {
                let m = sum.iter().zip(&count).map(|(&s, &n)| if n == 0 { 0.0 } else { (s / n as f64) as f32 });
                Heatmap::new(w, h, m.collect())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((maps, windows.len()))
    }

    /// Explains each image (its predicted class, or `target`).
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<BaselineExplanation>> {
        let n_images = images.len();
        let fill = self.fill_values(&bundle.preprocessor);
        classifier::each_image(bundle, images, control, |ii, input, control| {
            let start = Instant::now();
            let (w, h) = (input.pre.width, input.pre.height);
            let prediction = classifier::predict(bundle, &bundle.network.forward(&input.pixels)?, target)?;
            let mut score = target_probability(bundle, prediction.target.index, w, h);
            let mut report =
                |done: usize, passes: usize| control.report((ii * passes + done) as u32, (n_images * passes) as u32);
            let base = [prediction.target.probability];
            let (mut maps, windows) = self.maps(fill, &input.pre.pixel_values, w, h, &base, &mut score, &mut report)?;
            let map = maps.remove(0);
            let mut summary = serde_json::Map::new();
            summary.insert("windows".into(), windows.into());
            Ok(BaselineExplanation {
                method: "occlusion",
                maps: vec![("occlusion".into(), "probability_drop".into(), map)],
                prediction,
                summary,
                image: input.pre.image,
                source_region: input.pre.source_region,
                config: serde_json::to_value(&self.config)?,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }

    /// Occlusion for a CLIP image–caption pair: the drop in cosine similarity between the
    /// occluded image's embedding and the caption's, per pixel (gradient-free, so it can be set
    /// beside M2IB on the same pairs). One explanation per image, one map per caption.
    pub fn explain_clip(
        &self,
        bundle: &ClipBundle,
        images: &[RgbImage],
        captions: &[&str],
        control: &mut RunControl<'_>,
    ) -> Result<Vec<crate::explain::Explanation>> {
        if images.is_empty() || captions.is_empty() {
            return Err(Error::invalid("occlusion for CLIP needs at least one image and one caption"));
        }
        let model = &bundle.model;
        let texts: Vec<(crate::models::clip::Tokens, Tensor)> = captions
            .iter()
            .map(|c| {
                let t = bundle.tokenizer.encode(c)?;
                let f = model.text_features(&t.ids)?;
                Ok((t, unit(&f.to_dtype(DType::F32)?)?))
            })
            .collect::<Result<_>>()?;
        let fill = self.fill_values(&bundle.preprocessor);
        let texts_t = Tensor::cat(&texts.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(), 0)?.t()?;
        let mut out = Vec::with_capacity(images.len());
        for (ii, image) in images.iter().enumerate() {
            control.check()?;
            let start = Instant::now();
            let pre = classifier::model_input(&bundle.preprocessor, &model.device, image)?.pre;
            let (w, h) = (pre.width, pre.height);
            let dev = &model.device;
            // every window batch goes through the vision tower once, for all captions
            let mut score = |batch: &[f32], n: usize| -> Result<Vec<f32>> {
                let x = Tensor::from_slice(batch, (n, 3, h as usize, w as usize), dev)?;
                let img = unit(&model.image_features(&x)?.to_dtype(DType::F32)?)?;
                Ok(img.matmul(&texts_t)?.flatten_all()?.to_vec1::<f32>()?)
            };
            let base = score(&pre.pixel_values, 1)?;
            let mut report = |done: usize, passes: usize| {
                control.report((ii * passes + done) as u32, (images.len() * passes) as u32)
            };
            let (heatmaps, _) = self.maps(fill, &pre.pixel_values, w, h, &base, &mut score, &mut report)?;
            let mut maps = Vec::new();
            let mut results = Vec::new();
            for (ci, (map, (tokens, _))) in heatmaps.into_iter().zip(&texts).enumerate() {
                maps.push(crate::explain::NamedMap {
                    name: "occlusion".into(),
                    units: "similarity_drop".into(),
                    text_index: Some(ci),
                    map,
                });
                results.push(crate::explain::TextResult {
                    caption: captions[ci].to_string(),
                    tokens: tokens.text.clone(),
                    token_ids: tokens.ids.clone(),
                    scores: vec![],
                    similarity: base[ci],
                });
            }
            out.push(crate::explain::Explanation {
                method: "occlusion".into(),
                maps,
                texts: results,
                prediction: None,
                summary: Default::default(),
                image: pre.image,
                source_region: pre.source_region,
                config: serde_json::to_value(&self.config)?,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            });
        }
        Ok(out)
    }
}
