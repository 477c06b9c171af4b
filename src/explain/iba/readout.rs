//! The amortised bottleneck ("readout bottleneck", Schulz et al. 2020, §3.2): instead of
//! optimising `α` for every image, a small network predicts it from the image's own features,
//! so an explanation is one forward pass. The same network is Dual-IB's *infer network*.
//!
//! Inputs: the outputs of several taps (default: the bottleneck's tap, the last stage before
//! pooling, and the logits) of the clean image, each standardised per channel, resized to the
//! bottleneck's grid (bilinear, `align_corners = true`; vectors are broadcast over the grid) and
//! stacked. Three 1×1 convolutions `F → F/2 → 2C → C` with ReLUs give `α [C, H, W]`, bounded to
//! ±5 by `5·tanh(a/5)`; the last layer starts at bias 5 and weights ×10⁻³, so training
//! starts from "almost everything passes" (λ ≈ 0.98). Training minimises, over a folder of images, IBA's loss
//! `−log p(target | z) + β·mean(KL)` with the target the model's own top-1 on each view (the
//! official code trains on labels; a folder of photos has none) and the same prior, smoothing
//! and active mask as per-sample IBA.
//!
//! Differences from the official `IBAReadout`: the readout inputs are standardised per channel
//! (the official estimator is per element; per channel does not tie the readout to one input
//! size); `α` is bounded smoothly instead of clamped (a clamped readout can get stuck with
//! every output past the bound, where the clamp passes no gradient); and the noise samples
//! per view are a setting (`samples`, default 10 like IBA).

use super::stats::{FeatureStats, Welford};
use super::{saliency_map, TargetLogProb};
use crate::bottleneck::{self, Mask, NoiseSource, SeededNoise, Smoothing, StepTrace};
use crate::error::{Error, Result};
use crate::explain::fit::{self, FitSettings, Learner, Views};
use crate::models::cnn::Network;
use crate::models::mlp::{Mlp, MlpAdam, MlpGrads};
use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Readout settings. Effects: `beta` larger → sparser maps; `taps` later → more class-specific α;
/// the fit settings as in [`FitSettings`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadoutConfig {
    /// The bottlenecked tap (default: the model's IBA layer).
    pub layer: Option<String>,
    /// The taps the readout reads (default: `layer`, the stage before `pooled`, the logits).
    pub taps: Vec<String>,
    /// Prior of the bottleneck (default: the model's IBA statistics; if none, estimated from
    /// the training views).
    pub statistics: Option<PathBuf>,
    pub beta: f64,
    /// Noise samples per view and step.
    pub samples: usize,
    pub sigma: f64,
    pub min_std: f64,
    pub active_threshold: f64,
    /// Augment the training photos (random resized crops and flips).
    pub augment: bool,
    #[serde(flatten)]
    pub fit: FitSettings,
}

impl Default for ReadoutConfig {
    fn default() -> Self {
        ReadoutConfig {
            layer: None,
            taps: vec![],
            statistics: None,
            beta: 10.0,
            samples: 10,
            sigma: 1.0,
            min_std: 0.01,
            active_threshold: 0.01,
            augment: true,
            fit: FitSettings { epochs: 20, batch: 4, lr: 1e-2, seed: 0 },
        }
    }
}

impl ReadoutConfig {
    /// Checks ranges, with messages that say what is allowed.
    pub fn validate(&self) -> Result<()> {
        self.fit.validate()?;
        if self.samples == 0 || self.samples > 100_000 {
            return Err(Error::invalid(format!("samples must be in 1..=100000, got {}", self.samples)));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::invalid(format!("beta must be a finite number >= 0, got {}", self.beta)));
        }
        if !(self.sigma.is_finite() && (0.0..=64.0).contains(&self.sigma)) {
            return Err(Error::invalid(format!("sigma must be in [0, 64], got {}", self.sigma)));
        }
        if !(self.min_std.is_finite() && self.min_std > 0.0) {
            return Err(Error::invalid(format!("min_std must be > 0, got {}", self.min_std)));
        }
        if !(0.0..=1.0).contains(&self.active_threshold) {
            return Err(Error::invalid(format!("active_threshold must be in [0, 1], got {}", self.active_threshold)));
        }
        Ok(())
    }
}

/// The bound on `α` (the official readout's).
const ALPHA_BOUND: f64 = 5.0;

/// `α = 5·tanh(a/5)`: within ±5 like the official clamp, but smooth, so an output that
/// overshoots still gets a gradient (with the hard clamp a readout can saturate at −5
/// everywhere and never recover — seen on the synthetic Dual-IB task).
fn bound(raw: &Tensor) -> Result<Tensor> {
    Ok(((raw / ALPHA_BOUND)?.tanh()? * ALPHA_BOUND)?)
}

/// The default readout taps for a bottleneck at `layer`.
pub fn default_taps(net: &Network, layer: &str) -> Vec<String> {
    let taps = net.taps();
    let mut out = vec![layer.to_string()];
    if let Some(p) = taps.iter().position(|&t| t == "pooled") {
        if p >= 1 && taps[p - 1] != layer && taps[p - 1] != "input" {
            out.push(taps[p - 1].to_string());
        }
    }
    out.push(net.logits_tap().to_string());
    out
}

/// The `[n_out, n_in]` matrix of 1-D linear interpolation with `align_corners = true`.
fn interpolation(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        let src = if n_out > 1 { o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64 } else { 0.0 };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let f = (src - i0 as f64) as f32;
        m[o * n_in + i0] += 1.0 - f;
        m[o * n_in + i1] += f;
    }
    m
}

/// A feature-map tap's output `[1, C, h, w]` as `[C, H, W]` on the bottleneck grid.
fn to_grid(t: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let t = t.squeeze(0)?;
    match t.rank() {
        3 => {
            let (c, hi, wi) = t.dims3()?;
            if (hi, wi) == (h, w) {
                return Ok(t);
            }
            let dev = t.device();
            let ry = Tensor::from_vec(interpolation(hi, h), (h, hi), dev)?.to_dtype(t.dtype())?;
            let rx = Tensor::from_vec(interpolation(wi, w), (w, wi), dev)?.to_dtype(t.dtype())?;
            let cols = t.reshape((c * hi, wi))?.matmul(&rx.t()?)?.reshape((c, hi, w))?;
            Ok(ry.broadcast_left(c)?.matmul(&cols)?)
        }
        r => Err(Error::invalid(format!("a readout tap must give a feature map or a vector, got rank {}", r + 1))),
    }
}

/// A trained (or training) readout for one model.
pub struct Readout {
    pub layer: String,
    pub taps: Vec<String>,
    /// Per-channel mean and std of each readout tap.
    tap_stats: Vec<(Tensor, Tensor)>,
    /// The bottleneck's prior.
    pub prior: FeatureStats,
    pub mlp: Mlp,
    pub sigma: f64,
    smoothing: Option<Smoothing>,
}

/// The clean pass of one image: the standardised bottleneck input, the readout's inputs and
/// the logits.
pub struct ReadoutPass {
    pub r: Tensor,
    /// The readout taps' raw outputs.
    pub taps: Vec<Tensor>,
    /// Standardised feature-map taps on the bottleneck grid, `[H·W, F_grid]` (grid taps first
    /// in the network's input columns) …
    pub grid: Option<Tensor>,
    /// … and the vector taps, `[1, F_vec]`, the same for every position.
    pub shared: Option<Tensor>,
    pub positions: usize,
    pub logits: Tensor,
}

impl Readout {
    /// A fresh readout: the tap statistics are estimated from `views` (epoch 0), the prior too
    /// unless given; weights initialised from the seed.
    pub fn init(
        net: &Network,
        layer: &str,
        taps: &[String],
        prior: Option<FeatureStats>,
        config: &ReadoutConfig,
        views: &Views<'_>,
    ) -> Result<Self> {
        net.check_tap(layer)?;
        config.validate()?;
        if taps.is_empty() {
            return Err(Error::invalid("the readout needs at least one tap"));
        }
        if views.count == 0 {
            return Err(Error::invalid("no training images"));
        }
        let names: Vec<&str> = std::iter::once(layer).chain(taps.iter().map(String::as_str)).collect();
        let mut sums: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
        let mut welford: Option<Welford> = None;
        let mut dev = Device::Cpu;
        for i in 0..views.count {
            let outs = net.forward_taps(&(views.view)(0, i)?, &names)?;
            dev = outs[0].device().clone();
            if prior.is_none() {
                let x = outs[0].squeeze(0)?.to_dtype(DType::F32)?;
                welford.get_or_insert_with(|| Welford::new(x.dims())).update(&x.flatten_all()?.to_vec1::<f32>()?)?;
            }
            for (k, t) in outs[1..].iter().enumerate() {
                let t = t.squeeze(0)?.to_dtype(DType::F32)?;
                let c = t.dim(0)?;
                let rows = t.reshape((c, t.elem_count() / c))?.to_dtype(DType::F64)?;
                let s = rows.sum(1)?.to_vec1::<f64>()?;
                let q = rows.sqr()?.sum(1)?.to_vec1::<f64>()?;
                if sums.len() <= k {
                    sums.push((vec![0.0; c], vec![0.0; c], 0.0));
                }
                let e = &mut sums[k];
                e.0.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
                e.1.iter_mut().zip(&q).for_each(|(a, b)| *a += b);
                e.2 += (t.elem_count() / c) as f64;
            }
        }
        let prior = match prior {
            Some(p) => p,
            None => welford.ok_or_else(|| Error::invalid("no training views"))?.stats(
                config.min_std,
                config.active_threshold,
                &dev,
            )?,
        };
        let tap_stats = sums
            .into_iter()
            .map(|(s, q, n)| {
                let mean: Vec<f32> = s.iter().map(|v| (v / n) as f32).collect();
                let std: Vec<f32> = s
                    .iter()
                    .zip(&q)
                    .map(|(s, q)| ((q / n - (s / n).powi(2)).max(0.0).sqrt().max(config.min_std)) as f32)
                    .collect();
                let c = mean.len();
                Ok((Tensor::from_vec(mean, c, &dev)?, Tensor::from_vec(std, c, &dev)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let f_in: usize = tap_stats.iter().map(|(m, _)| m.dim(0).unwrap_or(0)).sum();
        let c = prior.dims()[0];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.fit.seed);
        let mut mlp = Mlp::new(&[f_in, (f_in / 2).max(1), 2 * c, c], &mut rng, &dev)?;
        let last = mlp.layers.last_mut().expect("three layers");
        last.weight = (&last.weight * 1e-3)?;
        last.bias = last.bias.ones_like()?.affine(ALPHA_BOUND, 0.0)?;
        Self::assemble(layer, taps, tap_stats, prior, mlp, config.sigma)
    }

    fn assemble(
        layer: &str,
        taps: &[String],
        tap_stats: Vec<(Tensor, Tensor)>,
        prior: FeatureStats,
        mlp: Mlp,
        sigma: f64,
    ) -> Result<Self> {
        let (_, h, w) = <[usize; 3]>::try_from(prior.dims())
            .map(|d| (d[0], d[1], d[2]))
            .map_err(|_| Error::invalid("the bottleneck prior must be [C, H, W]"))?;
        let smoothing =
            if sigma > 0.0 { Some(Smoothing::new(sigma, h, w, DType::F32, prior.mean.device())?) } else { None };
        Ok(Readout { layer: layer.into(), taps: taps.to_vec(), tap_stats, prior, mlp, sigma, smoothing })
    }

    #[cfg(test)]
    fn with_mlp(&self, mlp: Mlp) -> Readout {
        Self::assemble(&self.layer, &self.taps, self.tap_stats.clone(), self.prior.clone(), mlp, self.sigma).unwrap()
    }

    fn mask(&self) -> Mask<'_> {
        Mask { smoothing: self.smoothing.as_ref(), active: Some(&self.prior.active) }
    }

    /// The clean pass of `pixels [1, 3, H, W]`.
    pub fn pass(&self, net: &Network, pixels: &Tensor) -> Result<ReadoutPass> {
        let names: Vec<&str> = std::iter::once(self.layer.as_str())
            .chain(self.taps.iter().map(String::as_str))
            .chain(std::iter::once(net.logits_tap()))
            .collect();
        let outs = net.forward_taps(pixels, &names)?;
        let x = outs[0].squeeze(0)?;
        if x.dims() != self.prior.dims() {
            return Err(Error::invalid(format!(
                "the readout was trained on a {:?} map at '{}', this input gives {:?}",
                self.prior.dims(),
                self.layer,
                x.dims()
            )));
        }
        let (_, h, w) = x.dims3()?;
        // feature-map taps become per-position columns, vector taps one shared row
        let (mut grid, mut shared) = (Vec::new(), Vec::new());
        for (k, t) in outs[1..=self.taps.len()].iter().enumerate() {
            let (mean, _) = &self.tap_stats[k];
            let c = t.dim(1)?;
            if c != mean.dim(0)? {
                return Err(Error::invalid("a readout tap has another width than in training"));
            }
            let z = self.standardise_tap(k, t)?;
            if z.rank() == 2 {
                shared.push(z);
            } else {
                grid.push(to_grid(&z, h, w)?);
            }
        }
        let grid =
            if grid.is_empty() { None } else { Some(Tensor::cat(&grid, 0)?.flatten_from(1)?.t()?.contiguous()?) };
        let shared = if shared.is_empty() { None } else { Some(Tensor::cat(&shared, 1)?) };
        Ok(ReadoutPass {
            r: self.prior.standardise(&x)?,
            grid,
            shared,
            positions: h * w,
            logits: outs[outs.len() - 1].clone(),
            taps: outs[1..=self.taps.len()].to_vec(),
        })
    }

    /// The readout network's raw output `[H·W, C]` for a pass, with its tape.
    fn network(&self, pass: &ReadoutPass) -> Result<(Tensor, crate::models::mlp::MlpTape)> {
        match (&pass.grid, &pass.shared) {
            (Some(g), Some(s)) => self.mlp.forward_tape_split(g, s),
            (Some(g), None) => self.mlp.forward_tape(g),
            (None, Some(s)) => self.mlp.forward_tape(&s.broadcast_as((pass.positions, s.dim(1)?))?.contiguous()?),
            (None, None) => Err(Error::invalid("the readout has no taps")),
        }
    }

    /// The channel count of readout tap `k`, if it exists.
    pub fn tap_width(&self, k: usize) -> Option<usize> {
        self.tap_stats.get(k).and_then(|(m, _)| m.dim(0).ok())
    }

    /// Readout tap `k`'s output `[N, C, …]` standardised per channel with the training statistics.
    pub fn standardise_tap(&self, k: usize, t: &Tensor) -> Result<Tensor> {
        let (mean, std) = &self.tap_stats[k];
        let mut shape = vec![1, mean.dim(0)?];
        shape.extend(std::iter::repeat(1).take(t.rank().saturating_sub(2)));
        Ok(t.broadcast_sub(&mean.reshape(shape.as_slice())?)?.broadcast_div(&std.reshape(shape.as_slice())?)?)
    }

    /// The bottleneck's capacity `[C, H, W]` (nats) for an image, and the pass it came from.
    pub fn capacity(&self, net: &Network, pixels: &Tensor) -> Result<(Tensor, ReadoutPass)> {
        let pass = self.pass(net, pixels)?;
        Ok((self.capacity_from(&pass)?, pass))
    }

    /// The capacity `[C, H, W]` (nats) for a clean pass; NaN or infinity is an error.
    pub fn capacity_from(&self, pass: &ReadoutPass) -> Result<Tensor> {
        let alpha = bound(&self.network(pass)?.0)?.t()?.reshape(pass.r.dims())?;
        let cap = bottleneck::capacity_at(&pass.r, &alpha, &self.mask())?;
        if !crate::numerics::all_finite(&cap)? {
            return Err(Error::Numerical(
                "the readout's capacity contains NaN or infinity (is the input finite?)".into(),
            ));
        }
        Ok(cap)
    }

    /// The loss on one view's clean pass (target = its top-1) and the readout's weight
    /// gradients.
    pub fn loss_and_grads(
        &self,
        net: &Network,
        pass: &ReadoutPass,
        beta: f64,
        samples: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<(StepTrace, MlpGrads)> {
        let target = pass.logits.flatten_all()?.argmax(D::Minus1)?.to_scalar::<u32>()? as usize;
        let (tape_out, tape) = self.network(pass)?;
        let dims = pass.r.dims().to_vec();
        let alpha = bound(&tape_out)?.t()?.reshape(dims.as_slice())?;
        let eps = noise.sample(0, 0, samples, &dims, pass.r.device())?;
        let objective = TargetLogProb { net, tap: &self.layer, target, stats: &self.prior };
        let (terms, g_alpha) = bottleneck::loss_and_grad(&pass.r, &alpha, &eps, beta, &self.mask(), &objective)?;
        let (c, p) = (dims[0], dims[1] * dims[2]);
        // d/da [b·tanh(a/b)] = 1 − tanh²(a/b)
        let th = (&tape_out / ALPHA_BOUND)?.tanh()?;
        let g_raw = (g_alpha.reshape((c, p))?.t()? * th.sqr()?.affine(-1.0, 1.0)?)?;
        let (_, grads) = self.mlp.backward(&tape, &g_raw)?;
        Ok((terms, grads))
    }

    /// Adds the readout's tensors (prior, tap statistics, weights) to `map`; its header fields
    /// to `header`.
    pub fn save_into(&self, map: &mut HashMap<String, Tensor>, header: &mut serde_json::Value) {
        self.prior.save_into(map);
        for (i, (m, s)) in self.tap_stats.iter().enumerate() {
            map.insert(format!("readout.tap{i}.mean"), m.clone());
            map.insert(format!("readout.tap{i}.std"), s.clone());
        }
        self.mlp.save_into("readout.mlp", map);
        header["layer"] = serde_json::json!(self.layer);
        header["taps"] = serde_json::json!(self.taps);
        header["sigma"] = serde_json::json!(self.sigma);
    }

    /// Reads what [`Readout::save_into`] wrote.
    pub fn load_from(
        map: &HashMap<String, Tensor>,
        header: &serde_json::Value,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let bad = |m: &str| Error::format(path, m.to_string());
        let layer = header["layer"].as_str().ok_or_else(|| bad("no 'layer' in the header"))?;
        let taps: Vec<String> = serde_json::from_value(header["taps"].clone()).map_err(|_| bad("no 'taps'"))?;
        let sigma = header["sigma"].as_f64().ok_or_else(|| bad("no 'sigma'"))?;
        let prior = FeatureStats::from_map(map, path, 1e-12, 0.5, device)?;
        let tap_stats = (0..taps.len())
            .map(|i| {
                let get = |k: &str| {
                    map.get(&format!("readout.tap{i}.{k}"))
                        .ok_or_else(|| bad(&format!("no 'readout.tap{i}.{k}'")))
                        .and_then(|t| Ok(t.to_dtype(DType::F32)?.to_device(device)?))
                };
                Ok((get("mean")?, get("std")?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mlp = Mlp::load_from("readout.mlp", map, device).map_err(|e| bad(&e.to_string()))?;
        let f_in: usize = tap_stats.iter().map(|(m, _)| m.elem_count()).sum();
        if mlp.inputs() != f_in || mlp.outputs() != prior.dims()[0] {
            return Err(bad("the readout network does not fit its taps and prior"));
        }
        Self::assemble(layer, &taps, tap_stats, prior, mlp, sigma)
    }
}

/// Trains a [`Readout`] (the learner for [`fit::run`]).
pub struct ReadoutTrainer<'a> {
    pub net: &'a Network,
    pub readout: Readout,
    adam: MlpAdam,
    pub config: ReadoutConfig,
    signature: serde_json::Value,
    steps: u64,
    /// What the caller trains on (e.g. the number and names of the images), stored in the
    /// state so that a resumed run can check it has the same data.
    pub data: serde_json::Value,
}

impl<'a> ReadoutTrainer<'a> {
    /// A new trainer for `net`, whose inputs are `input` (height, width).
    pub fn new(net: &'a Network, readout: Readout, config: ReadoutConfig, input: (usize, usize)) -> Result<Self> {
        config.validate()?;
        let adam = MlpAdam::new(&readout.mlp, config.fit.lr)?;
        let device = readout.prior.mean.device().clone();
        let signature = fit::model_signature(net, input, &device)?;
        Ok(ReadoutTrainer { net, readout, adam, config, signature, steps: 0, data: serde_json::Value::Null })
    }

    /// Resumes from a state file; returns the trainer and the epochs already done.
    pub fn resume(net: &'a Network, path: &Path, device: &Device) -> Result<(Self, usize)> {
        let (map, header) = fit::load_checked(path, "iba-readout", net, device)?;
        let readout = Readout::load_from(&map, &header, path, device)?;
        let config: ReadoutConfig = serde_json::from_value(header["config"].clone())
            .map_err(|e| Error::format(path, format!("config: {e}")))?;
        Self::restore(net, readout, config, &map, &header, path)
    }

    /// Adds the readout, its optimiser state, the model signature and the progress to a state.
    pub fn save_into(
        &self,
        map: &mut HashMap<String, Tensor>,
        header: &mut serde_json::Value,
        epochs_done: usize,
    ) -> Result<()> {
        header["signature"] = self.signature.clone();
        header["epochs_done"] = serde_json::json!(epochs_done);
        header["steps"] = serde_json::json!(self.steps);
        header["data"] = self.data.clone();
        self.readout.save_into(map, header);
        self.adam.save_into("readout.adam", map)
    }

    /// Restores the optimiser state and progress saved by [`ReadoutTrainer::save_into`].
    pub fn restore(
        net: &'a Network,
        readout: Readout,
        config: ReadoutConfig,
        map: &HashMap<String, Tensor>,
        header: &serde_json::Value,
        path: &Path,
    ) -> Result<(Self, usize)> {
        config.validate().map_err(|e| Error::format(path, e.to_string()))?;
        let adam = MlpAdam::load_from("readout.adam", map, &readout.mlp, config.fit.lr)?;
        let done = fit::header_count(header, "epochs_done", path)? as usize;
        let steps = fit::header_count(header, "steps", path)?;
        let (signature, data) = (header["signature"].clone(), header["data"].clone());
        Ok((ReadoutTrainer { net, readout, adam, config, signature, steps, data }, done))
    }

    /// One update from a batch; also returns each view's clean pass (Dual-IB's critic reads
    /// its inputs from them instead of running the network again).
    pub fn step_with_passes(&mut self, pixels: &Tensor) -> Result<(fit::Terms, Vec<ReadoutPass>)> {
        let b = pixels.dim(0)?;
        let mut total: Option<MlpGrads> = None;
        let (mut loss, mut comp, mut fitting) = (0f32, 0f32, 0f32);
        let mut passes = Vec::with_capacity(b);
        for i in 0..b {
            let mut noise = SeededNoise::new(self.config.fit.seed, self.steps * 4096 + i as u64 + 1);
            let pass = self.readout.pass(self.net, &pixels.narrow(0, i, 1)?)?;
            let (t, g) =
                self.readout.loss_and_grads(self.net, &pass, self.config.beta, self.config.samples, &mut noise)?;
            loss += t.loss / b as f32;
            comp += t.compression / b as f32;
            fitting += t.fitting / b as f32;
            total = Some(match total {
                Some(acc) => acc.plus(&g)?,
                None => g,
            });
            passes.push(pass);
        }
        let grads = total.expect("a batch has at least one view").scale(1.0 / b as f64)?;
        self.adam.step(&mut self.readout.mlp, &grads)?;
        self.steps += 1;
        Ok((vec![("loss", loss), ("mean_kl_nats", comp), ("log_prob", fitting)], passes))
    }
}

impl Learner for ReadoutTrainer<'_> {
    fn step(&mut self, pixels: &Tensor) -> Result<Vec<(&'static str, f32)>> {
        Ok(self.step_with_passes(pixels)?.0)
    }

    fn save(&self, path: &Path, epochs_done: usize) -> Result<()> {
        let mut map = HashMap::new();
        let mut header = serde_json::json!({ "kind": "iba-readout", "config": self.config });
        self.save_into(&mut map, &mut header, epochs_done)?;
        fit::save_state(path, map, &header)
    }
}

/// IBA with a trained readout: one forward pass per image.
pub struct IbaReadout {
    pub readout: Readout,
    pub path: PathBuf,
}

impl IbaReadout {
    /// Loads a readout state for `net` (fails if it was trained for another model).
    pub fn load(net: &Network, path: &Path, device: &Device) -> Result<Self> {
        let (map, header) = fit::load_checked(path, "iba-readout", net, device)?;
        Ok(IbaReadout { readout: Readout::load_from(&map, &header, path, device)?, path: path.to_path_buf() })
    }

    /// Saliency in bits per pixel at `width × height`, capacity per position in bits, total bits.
    pub fn saliency(
        &self,
        net: &Network,
        pixels: &Tensor,
    ) -> Result<(crate::imaging::heatmap::Heatmap, crate::imaging::heatmap::Heatmap, f32, Tensor)> {
        let (cap, pass) = self.readout.capacity(net, pixels)?;
        let (_, _, h, w) = pixels.dims4()?;
        let (s, g, t) = saliency_map(&cap, w as u32, h as u32)?;
        Ok((s, g, t, pass.logits))
    }
}

impl IbaReadout {
    /// Explains each image (the model's top-1: the readout was trained on it) in one call.
    pub fn explain_batch(
        &self,
        bundle: &crate::models::cnn::ClassifierBundle,
        images: &[crate::imaging::image::RgbImage],
        target: Option<usize>,
        control: &mut crate::control::RunControl<'_>,
    ) -> Result<Vec<crate::explain::Explanation>> {
        use crate::explain::{classifier, Explanation, NamedMap};
        let n = images.len() as u32;
        classifier::each_image(bundle, images, control, |i, input, control| {
            control.report(i as u32 + 1, n)?;
            let start = std::time::Instant::now();
            let (saliency, grid, total, logits) = self.saliency(&bundle.network, &input.pixels)?;
            let prediction = classifier::predict(bundle, &logits, None)?;
            if target.is_some_and(|t| t != prediction.target.index) {
                return Err(Error::invalid(format!(
                    "the readout explains the model's top-1 class ({}); use --method iba to explain class {}",
                    prediction.target.index,
                    target.unwrap_or_default()
                )));
            }
            let map = |name: &str, units: &str, map| NamedMap {
                name: name.into(),
                units: units.into(),
                text_index: None,
                map,
            };
            Ok(Explanation {
                method: "iba-readout".into(),
                maps: vec![map("saliency", "bits_per_pixel", saliency), map("capacity", "bits", grid)],
                texts: vec![],
                prediction: Some(prediction),
                summary: [("total_bits".to_string(), serde_json::json!(total))].into_iter().collect(),
                image: input.pre.image,
                source_region: input.pre.source_region,
                config: serde_json::json!({ "state": self.path, "layer": self.readout.layer, "taps": self.readout.taps }),
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::cnn::layers::{Activation, Conv2d, GlobalAvgPool, Layer, Linear, Padding, Sequence};

    fn tiny_network(dev: &Device) -> Network {
        let conv = |cin: usize, cout: usize, seed: f64| Conv2d {
            weight: Tensor::randn(0f32, 0.5, (cout, cin, 3, 3), dev).unwrap().affine(1.0, seed).unwrap(),
            bias: Some(Tensor::randn(0f32, 0.1, cout, dev).unwrap()),
            stride: 1,
            padding: Padding::Fixed(1),
            groups: 1,
        };
        let stages: Vec<(String, Box<dyn Layer>)> = vec![
            ("c1".into(), Box::new(Sequence(vec![Box::new(conv(3, 4, 0.0)), Box::new(Activation::Relu)]))),
            ("c2".into(), Box::new(Sequence(vec![Box::new(conv(4, 5, 0.01)), Box::new(Activation::Gelu)]))),
            ("pooled".into(), Box::new(GlobalAvgPool)),
            (
                "logits".into(),
                Box::new(Linear {
                    weight: Tensor::randn(0f32, 1.0, (3, 5), dev).unwrap(),
                    bias: Some(Tensor::zeros(3, DType::F32, dev).unwrap()),
                }),
            ),
        ];
        Network::new(stages, 3).unwrap()
    }

    /// The readout's weight gradients (through the bound, the smoothing, the bottleneck and the
    /// network's suffix, with a feature-map tap and a shared vector tap) match central
    /// differences of its loss at fixed noise.
    #[test]
    fn readout_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let net = tiny_network(&dev);
        let inputs: Vec<Tensor> = (0..3).map(|_| Tensor::randn(0f32, 1.0, (1, 3, 6, 6), &dev).unwrap()).collect();
        let views = Views::fixed(&inputs);
        let config = ReadoutConfig { samples: 3, ..ReadoutConfig::default() };
        let taps = vec!["c1".to_string(), "logits".to_string()];
        let mut r = Readout::init(&net, "c1", &taps, None, &config, &views).unwrap();
        // a last layer with real weights, so that α varies and the bound is exercised
        let last = r.mlp.layers.last_mut().unwrap();
        last.weight = (&last.weight * 3000.0).unwrap();
        let loss = |r: &Readout| {
            let mut noise = SeededNoise::new(7, 1);
            let pass = r.pass(&net, &inputs[1]).unwrap();
            r.loss_and_grads(&net, &pass, 0.3, 3, &mut noise).unwrap()
        };
        let (_, grads) = loss(&r);
        let e = 1e-2f32;
        for (li, k) in [(0usize, 3usize), (1, 5), (2, 2), (2, 7)] {
            let bump = |d: f32| {
                let mut mlp = r.mlp.clone();
                let w = &mut mlp.layers[li].weight;
                let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v[k] += d;
                *w = Tensor::from_vec(v, w.dims(), &dev).unwrap();
                loss(&r.with_mlp(mlp)).0.loss as f64
            };
            let fd = (bump(e) - bump(-e)) / (2.0 * e as f64);
            let g = grads.0[li].0.flatten_all().unwrap().to_vec1::<f32>().unwrap()[k] as f64;
            assert!((fd - g).abs() <= 0.02 * fd.abs().max(g.abs()) + 1e-3, "layer {li} weight {k}: fd {fd} vs {g}");
        }
    }

    #[test]
    fn align_corners_interpolation_keeps_the_corners_and_constants() {
        let m = interpolation(4, 7);
        for o in 0..7 {
            let row: f32 = m[o * 4..o * 4 + 4].iter().sum();
            assert!((row - 1.0).abs() < 1e-6);
        }
        assert_eq!(m[0], 1.0);
        assert_eq!(m[6 * 4 + 3], 1.0);
        // the middle output sits halfway between inputs 1 and 2
        assert!((m[3 * 4 + 1] - 0.5).abs() < 1e-6 && (m[3 * 4 + 2] - 0.5).abs() < 1e-6);
    }
}
