//! IBA — the per-sample information bottleneck for classifiers (Schulz, Sixt, Tombari &
//! Landgraf, "Restricting the Flow: Information Bottlenecks for Attribution", ICLR 2020).
//!
//! At one tap `x [C, H, W]` (the output of a stage), IBA replaces the features by
//! `z = λ·x + (1 − λ)·ε` with `ε ~ N(μ, σ²)` drawn from the features' own distribution
//! (statistics estimated over a data set, see [`stats`]). Working in standardised units
//! `r = (x − μ)/σ`, this is the shared bottleneck with the N(0, 1) prior: the capacity is
//! `KL = −½(1 + ln(1−λ)² − (λr)² − (1−λ)²)` per element. `λ = smooth(sigmoid(α))` with a
//! σ = 1 Gaussian (reflection padding); features that are almost never non-zero (active
//! fraction ≤ 0.01) are masked out. Adam minimises
//! `−log softmax(logits(z))[target] + β·mean(KL)` for 10 steps (lr 1, 10 samples, α₀ = 5).
//!
//! The map is the capacity of the last step's forward pass, summed over channels, in bits
//! (÷ ln 2), per input pixel (× h·w / (H·W)), resized to the input like the official
//! `to_saliency_map` (scikit-image bilinear with mirrored borders; see
//! [`Heatmap::resize_bilinear_mirror`]). The defaults are the paper's and the official code's.

pub mod readout;
pub mod stats;

use super::classifier::{self, log_prob_and_grad, Prediction};
use crate::bottleneck::{self, BottleneckSettings, Mask, NoiseSource, Objective, SeededNoise, Smoothing, StepTrace};
use crate::control::{RunControl, StepCounter};
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::cnn::{ClassifierBundle, Network};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};
use stats::FeatureStats;
use std::path::PathBuf;
use std::time::Instant;

/// IBA settings. Effects: `beta` larger → sparser maps (less information allowed through);
/// `sigma` larger → smoother maps; `layer` earlier → finer but noisier maps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IbaConfig {
    /// The tap whose output is bottlenecked (e.g. `blocks.10`); default: the model's `ibex.json`.
    pub layer: Option<String>,
    /// Feature statistics (safetensors; relative paths are relative to the model directory).
    pub statistics: Option<PathBuf>,
    /// Noise seed: the same seed gives the same map.
    pub seed: u64,
    /// Standard deviation (feature-map pixels) of the Gaussian smoothing of λ; 0 = none.
    pub sigma: f64,
    /// Lower bound of the feature std.
    pub min_std: f64,
    /// A feature is active if it is non-zero in more than this fraction of the estimation
    /// samples (used when the statistics give counts).
    pub active_threshold: f64,
    #[serde(flatten)]
    pub bottleneck: BottleneckSettings,
}

impl Default for IbaConfig {
    /// The paper's (and the official code's) settings.
    fn default() -> Self {
        IbaConfig {
            layer: None,
            statistics: None,
            seed: 0,
            sigma: 1.0,
            min_std: 0.01,
            active_threshold: 0.01,
            bottleneck: BottleneckSettings {
                beta: 10.0,
                steps: 10,
                lr: 1.0,
                samples: 10,
                samples_per_pass: 0,
                alpha_init: 5.0,
            },
        }
    }
}

impl IbaConfig {
    /// `overrides` (JSON object) on top of `self`, checked.
    pub fn merged(&self, overrides: &serde_json::Value) -> Result<Self> {
        let cfg: IbaConfig = super::options::merge(self, overrides, "IBA", &[])?;
        cfg.bottleneck.validate()?;
        if !(cfg.sigma.is_finite() && (0.0..=64.0).contains(&cfg.sigma)) {
            return Err(Error::invalid(format!("sigma must be in [0, 64], got {}", cfg.sigma)));
        }
        if !(0.0..=1.0).contains(&cfg.active_threshold) {
            return Err(Error::invalid(format!("active_threshold must be in [0, 1], got {}", cfg.active_threshold)));
        }
        if !(cfg.min_std.is_finite() && cfg.min_std > 0.0) {
            return Err(Error::invalid(format!("min_std must be > 0, got {}", cfg.min_std)));
        }
        Ok(cfg)
    }

    /// The defaults for a model: the paper's, then the directory's `ibex.json` `iba` entry.
    pub fn for_bundle(bundle: &ClassifierBundle) -> Result<Self> {
        IbaConfig::default().merged(&bundle.recommended_for("iba"))
    }
}

/// An IBA explanation of one image.
#[derive(Clone, Debug)]
pub struct IbaExplanation {
    /// Saliency in bits per input pixel at the preprocessed input size (the main map).
    pub saliency: Heatmap,
    /// Capacity per feature-map position in bits (summed over channels).
    pub capacity_bits: Heatmap,
    /// Total information through the bottleneck, bits.
    pub total_bits: f32,
    pub prediction: Prediction,
    pub trace: Vec<StepTrace>,
    /// The preprocessed image and where it lies on the original.
    pub image: RgbImage,
    pub source_region: [f32; 4],
    pub config: IbaConfig,
    pub elapsed_ms: f64,
}

/// `log softmax(logits(z))[target]` through the network's suffix, in standardised units.
pub(crate) struct TargetLogProb<'a> {
    pub net: &'a Network,
    pub tap: &'a str,
    pub target: usize,
    pub stats: &'a FeatureStats,
}

impl Objective for TargetLogProb<'_> {
    fn evaluate(&self, z: &Tensor, grad: bool) -> Result<(Vec<f32>, Option<Tensor>)> {
        let s = self.stats;
        let x = z.broadcast_mul(&s.std)?.broadcast_add(&s.mean)?.broadcast_mul(&s.active)?;
        if !grad {
            let logits = self.net.forward_from(self.tap, &x)?;
            let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.narrow(1, self.target, 1)?.squeeze(1)?;
            return Ok((lp.to_vec1::<f32>()?, None));
        }
        let (logits, tape) = self.net.suffix_forward(self.tap, &x)?;
        let (lp, dlogits) = log_prob_and_grad(&logits, self.target)?;
        let dx = self.net.suffix_backward(&tape, &dlogits)?;
        let dz = dx.broadcast_mul(&s.std)?.broadcast_mul(&s.active)?;
        Ok((lp, Some(dz)))
    }
}

/// IBA with a fixed configuration and its feature statistics, for one model.
pub struct Iba {
    pub config: IbaConfig,
    layer: String,
    stats: FeatureStats,
}

impl Iba {
    /// Resolves the tap and loads the statistics for `bundle`.
    pub fn new(bundle: &ClassifierBundle, config: IbaConfig) -> Result<Self> {
        config.bottleneck.validate()?;
        let layer = config.layer.clone().ok_or_else(|| {
            Error::invalid(
                "IBA needs a layer (a tap such as 'blocks.10'): set 'layer', or add it to the model's ibex.json",
            )
        })?;
        bundle.network.check_tap(&layer)?;
        let path = config.statistics.clone().ok_or_else(|| {
            Error::invalid(format!(
                "IBA needs feature statistics for tap '{layer}': set 'statistics' to a file written by `ibex stats`"
            ))
        })?;
        let path = if path.is_relative() { bundle.dir.join(path) } else { path };
        let stats = FeatureStats::load(&path, config.min_std, config.active_threshold, &bundle.device)?;
        let mut config = config;
        config.statistics = Some(path);
        Iba::with_stats(config, layer, stats)
    }

    /// IBA at tap `layer` with a prior already at hand (Dual-IB's per-sample mode).
    pub fn with_stats(mut config: IbaConfig, layer: String, stats: FeatureStats) -> Result<Self> {
        config.bottleneck.validate()?;
        config.layer = Some(layer.clone());
        Ok(Iba { config, layer, stats })
    }

    /// Steps reported to a progress callback for `images` images.
    pub fn total_steps(&self, images: usize) -> u32 {
        (self.config.bottleneck.steps * images) as u32
    }

    /// The bottleneck on the tap's output `x [1, C, H, W]` for class `target`: capacity
    /// `[C, H, W]` in nats and the loss trace.
    pub(crate) fn capacity(
        &self,
        net: &Network,
        x: &Tensor,
        target: usize,
        noise: &mut dyn NoiseSource,
        counter: &mut StepCounter<'_, '_>,
    ) -> Result<bottleneck::Outcome> {
        let x = x.squeeze(0)?;
        if x.dims() != self.stats.dims() {
            return Err(Error::invalid(format!(
                "the feature statistics are for a {:?} map, but tap '{}' gives {:?} at this input size",
                self.stats.dims(),
                self.layer,
                x.dims()
            )));
        }
        let r = self.stats.standardise(&x)?;
        let (_, h, w) = r.dims3()?;
        let smoothing = if self.config.sigma > 0.0 {
            Some(Smoothing::new(self.config.sigma, h, w, r.dtype(), r.device())?)
        } else {
            None
        };
        let mask = Mask { smoothing: smoothing.as_ref(), active: Some(&self.stats.active) };
        let objective = TargetLogProb { net, tap: &self.layer, target, stats: &self.stats };
        bottleneck::optimise(&r, &self.config.bottleneck, &mask, &objective, noise, counter)
    }

    /// Explains each image (its predicted class, or `target`), in one call.
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<IbaExplanation>> {
        let net = &bundle.network;
        let total = self.total_steps(images.len());
        let mut done = 0;
        classifier::each_image(bundle, images, control, |_, input, control| {
            let start = Instant::now();
            let x = net.forward_until(&self.layer, &input.pixels)?;
            let prediction = classifier::predict(bundle, &net.forward_from(&self.layer, &x)?, target)?;
            let mut noise = SeededNoise::new(self.config.seed, 0);
            // progress counts steps over the whole batch
            let mut counter = StepCounter { control, done, total };
            let outcome = self.capacity(net, &x, prediction.target.index, &mut noise, &mut counter)?;
            done = counter.done;
            let (saliency, capacity_bits, total_bits) =
                saliency_map(&outcome.capacity, input.pre.width, input.pre.height)?;
            Ok(IbaExplanation {
                saliency,
                capacity_bits,
                total_bits,
                prediction,
                trace: outcome.trace,
                image: input.pre.image,
                source_region: input.pre.source_region,
                config: self.config.clone(),
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}

/// The official `to_saliency_map`: capacity `[C, h, w]` (nats) summed over channels (NaN as
/// 0), in bits, per input pixel (× h·w/(W·H)), resized to `width × height` with mirrored
/// borders. Also returns the per-position capacity in bits and the total in bits.
pub fn saliency_map(capacity: &Tensor, width: u32, height: u32) -> Result<(Heatmap, Heatmap, f32)> {
    let grid = bits_grid(capacity)?;
    let total = grid.data.iter().map(|&v| v as f64).sum::<f64>() as f32;
    Ok((bits_per_pixel(&grid, width, height)?, grid, total))
}

/// Capacity `[C, h, w]` (nats) summed over channels, in bits per feature-map position (NaN as 0).
pub fn bits_grid(capacity: &Tensor) -> Result<Heatmap> {
    let (_, h, w) = capacity.dims3()?;
    let per_pos = capacity.to_dtype(candle_core::DType::F64)?.sum(0)?.flatten_all()?.to_vec1::<f64>()?;
    let ln2 = std::f64::consts::LN_2;
    let bits: Vec<f32> = per_pos.iter().map(|&v| if v.is_nan() { 0.0 } else { (v / ln2) as f32 }).collect();
    Heatmap::new(w as u32, h as u32, bits)
}

/// A map in bits per feature-map position as bits per input pixel (× h·w/(W·H)), resized to
/// `width × height` like the official `to_saliency_map` (bilinear, mirrored borders): its sum
/// stays the grid's total.
pub fn bits_per_pixel(grid: &Heatmap, width: u32, height: u32) -> Result<Heatmap> {
    let scale = (grid.width as f64 * grid.height as f64) / (width as f64 * height as f64);
    let per_pixel =
        Heatmap::new(grid.width, grid.height, grid.data.iter().map(|&b| (b as f64 * scale) as f32).collect())?;
    Ok(per_pixel.resize_bilinear_mirror(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The saliency is per input pixel: summed over the resized map it gives back the total
    /// bits of the capacity grid (the resize only spreads them), for the 14×14 → 224×224 of
    /// EfficientNet-Lite0 at `blocks.10` and for a non-integer factor.
    #[test]
    fn resizing_preserves_total_bits() {
        let dev = candle_core::Device::Cpu;
        for (h, w, oh, ow) in [(14usize, 14usize, 224u32, 224u32), (7, 9, 100, 130)] {
            let cap = Tensor::rand(0f32, 3.0, (5, h, w), &dev).unwrap();
            let (per_pixel, grid, total) = saliency_map(&cap, ow, oh).unwrap();
            let summed: f64 = per_pixel.data.iter().map(|&v| v as f64).sum();
            let nats: f64 =
                cap.to_dtype(candle_core::DType::F64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            let bits = nats / std::f64::consts::LN_2;
            assert!((total as f64 - bits).abs() < 1e-3 * bits, "total {total} vs {bits}");
            assert!((grid.sum() as f64 - bits).abs() < 1e-3 * bits);
            assert!((summed - bits).abs() < 0.01 * bits, "{h}x{w} -> {ow}x{oh}: resized sum {summed} vs {bits} bits");
        }
    }
}
