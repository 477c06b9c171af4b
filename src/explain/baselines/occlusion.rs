//! Occlusion (Zeiler & Fergus, ECCV 2014): slide a `window × window` patch of a constant
//! value over the input with `stride`, and attribute to each pixel the mean drop in the
//! target's probability over the windows that cover it. Gradient-free: only forward passes,
//! in batches.

use super::BaselineExplanation;
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::explain::classifier::{self, target_probability};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::cnn::ClassifierBundle;
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
    /// Occluded images per forward pass.
    pub batch: usize,
}

impl Default for OcclusionConfig {
    fn default() -> Self {
        OcclusionConfig { window: 32, stride: 16, fill: 0.0, batch: 16 }
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
        if config.window == 0 || config.stride == 0 || config.batch == 0 || !config.fill.is_finite() {
            return Err(Error::invalid(format!("occlusion: window, stride and batch must be >= 1, got {config:?}")));
        }
        Ok(Occlusion { config })
    }

    /// Explains each image (its predicted class, or `target`).
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<BaselineExplanation>> {
        let c = &self.config;
        let n_images = images.len();
        classifier::each_image(bundle, images, control, |ii, input, control| {
            let start = Instant::now();
            let (w, h) = (input.pre.width, input.pre.height);
            let prediction = classifier::predict(bundle, &bundle.network.forward(&input.pixels)?, target)?;
            let p0 = prediction.target.probability;
            let mut score = target_probability(bundle, prediction.target.index, w, h);
            let windows: Vec<(u32, u32)> = offsets(h, c.window, c.stride)
                .into_iter()
                .flat_map(|y| offsets(w, c.window, c.stride).into_iter().map(move |x| (x, y)))
                .collect();
            let (ww, wh) = (c.window.min(w) as usize, c.window.min(h) as usize);
            let plane = (w * h) as usize;
            let mut sum = vec![0f64; plane];
            let mut count = vec![0u32; plane];
            for (bi, chunk) in windows.chunks(c.batch).enumerate() {
                let mut batch = Vec::with_capacity(chunk.len() * 3 * plane);
                for &(x0, y0) in chunk {
                    let mut img = input.pre.pixel_values.clone();
                    for ch in 0..3 {
                        for y in y0 as usize..y0 as usize + wh {
                            let row = ch * plane + y * w as usize;
                            img[row + x0 as usize..row + x0 as usize + ww].fill(c.fill as f32);
                        }
                    }
                    batch.extend_from_slice(&img);
                }
                let probs = score(&batch, chunk.len())?;
                for (&(x0, y0), &p) in chunk.iter().zip(&probs) {
                    let drop = (p0 - p) as f64;
                    for y in y0 as usize..y0 as usize + wh {
                        for x in x0 as usize..x0 as usize + ww {
                            sum[y * w as usize + x] += drop;
                            count[y * w as usize + x] += 1;
                        }
                    }
                }
                let passes = windows.len().div_ceil(c.batch);
                control.report((ii * passes + bi + 1) as u32, (n_images * passes) as u32)?;
            }
            let map: Vec<f32> =
                sum.iter().zip(&count).map(|(&s, &n)| if n == 0 { 0.0 } else { (s / n as f64) as f32 }).collect();
            let mut summary = serde_json::Map::new();
            summary.insert("windows".into(), windows.len().into());
            Ok(BaselineExplanation {
                method: "occlusion",
                maps: vec![("occlusion".into(), "probability_drop".into(), Heatmap::new(w, h, map)?)],
                prediction,
                summary,
                image: input.pre.image,
                source_region: input.pre.source_region,
                config: serde_json::to_value(c)?,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}
