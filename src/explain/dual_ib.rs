//! Dual-IB: for a CNN classifier, how much information each local feature carries about the
//! **decision** and about the **global representation**, and how much of the latter the
//! decision does not need.
//!
//! Notation: `x` is a local representation (a tap's `[C, H, W]` output, default the end of the
//! first block group at stride 4), `x_ij` its feature vector at one position, `y` the global
//! representation (default the pooled embedding before the classifier; `logits` selectable).
//! Both are standardised (`x` by its per-element prior N(μ, σ²), `y` per channel).
//!
//! - **General map** `I(x_ij; y)`: an InfoMax critic `f(x_ij, y) = ⟨φ_L(x_ij), φ_G(y)⟩` (two small
//!   MLPs, [`crate::models::mlp`]) trained with InfoNCE over every position of every image of a
//!   batch, the other images' `y` as negatives (one `[B·H·W, B]` matrix product). At explain
//!   time the candidates are the image's own `y` and a bank of training `y`s (`K` in all); the
//!   pointwise InfoNCE `ln K + f(x_ij, y) − ln Σ_k exp f(x_ij, y_k)` (÷ ln 2, bits) is a lower
//!   bound of the information in expectation, and never exceeds `log₂ K` (the InfoNCE bound).
//! - **Sufficient map** `I(x'; y)`: the bottleneck `x' = λ·x + (1 − λ)·ε` on `x`, with `λ` from the
//!   infer network (the IBA readout, [`super::iba::readout`], trained in the same fit) or optimised
//!   per sample (`alpha = "per-sample"`), fitted to keep the decision:
//!   `−log p(target | x') + β₂·mean KL`. Its capacity per position (KL to the prior, summed over
//!   channels, bits) is an upper bound on what `x'` keeps, and therefore on `I(x'_ij; y)`.
//! - **Redundancy** = general − sufficient, raw and clamped at 0.
//!
//! The objective `L = CE(x') − β₁·InfoNCE(x; y) + β₂·KL(x')` is minimised with the base network
//! frozen. Its two parts have disjoint parameters — the infer network sees only `CE + β₂·KL`,
//! the critic only `−β₁·InfoNCE` — so one fit trains both from the same batches. Adam is
//! invariant to a constant factor on a gradient, so a loss weight on parameters of their own
//! can act only through the step size: β₁ multiplies the critic's learning rate.
//!
//! **Which map is which.** The patent text names these two maps inconsistently between its
//! sections. We follow the data-processing inequality: `y` is computed from `x`, and `x'` is a
//! noisy function of `x` alone, so `y ← x → x'` is a Markov chain and `I(x'; y) ≤ I(x; y)`.
//! The information the bottlenecked features keep about the output ("sufficient", what the
//! decision needs) can never exceed what the local features hold about the representation
//! ("general"); general − sufficient ≥ 0 is the redundancy. The estimators are an upper bound
//! (sufficient) and a lower bound (general) of those two quantities, so where the bounds are
//! loose the raw difference can dip below 0 — hence the clamped map beside the raw one.

use super::classifier::{self, Prediction};
use super::fit::{self, FitSettings, Learner, Views};
use super::iba::readout::{Readout, ReadoutConfig, ReadoutTrainer};
use super::iba::{bits_per_pixel, Iba, IbaConfig};
use crate::bottleneck::SeededNoise;
use crate::control::{RunControl, StepCounter};
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::cnn::{ClassifierBundle, Network};
use crate::models::mlp::{Mlp, MlpAdam};
use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Dual-IB training settings. Effects: `beta2` larger → a sparser sufficient map (IBA's 10
/// suits ImageNet; a task with few classes needs less, since keeping its decision is worth at
/// most ln(classes) nats); `beta1` multiplies the critic's learning rate; `critic_dim` larger → a more expressive critic (the general
/// map is bounded by `log₂ K` either way); `bank` more negatives → a higher bound `log₂ K`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DualIbConfig {
    /// The local representation `x` (default: the model's `ibex.json`, else the last tap at
    /// stride 4).
    pub local: Option<String>,
    /// The global representation `y`: `pooled` (default) or the logits tap.
    pub global: Option<String>,
    pub beta1: f64,
    pub beta2: f64,
    pub critic_hidden: usize,
    pub critic_dim: usize,
    /// Training views kept as negatives for the general map (their `y`).
    pub bank: usize,
    pub samples: usize,
    pub sigma: f64,
    pub min_std: f64,
    pub augment: bool,
    #[serde(flatten)]
    pub fit: FitSettings,
}

impl Default for DualIbConfig {
    fn default() -> Self {
        DualIbConfig {
            local: None,
            global: None,
            beta1: 1.0,
            beta2: 10.0,
            critic_hidden: 128,
            critic_dim: 64,
            bank: 1024,
            samples: 10,
            sigma: 1.0,
            min_std: 0.01,
            augment: true,
            fit: FitSettings { epochs: 10, batch: 8, lr: 1e-3, seed: 0 },
        }
    }
}

impl DualIbConfig {
    /// `overrides` on the defaults, the model's `ibex.json` `dual_ib` entry in between.
    pub fn for_bundle(bundle: &ClassifierBundle, overrides: &serde_json::Value) -> Result<Self> {
        let base: DualIbConfig =
            super::options::merge(&DualIbConfig::default(), &bundle.recommended_for("dual_ib"), "Dual-IB", &[])?;
        let cfg: DualIbConfig = super::options::merge(&base, overrides, "Dual-IB", &[])?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges, with messages that say what is allowed.
    pub fn validate(&self) -> Result<()> {
        self.readout_config().validate()?;
        if self.fit.batch < 2 {
            return Err(Error::invalid(
                "Dual-IB's critic needs batches of at least 2 images (negatives come from the other images)",
            ));
        }
        if !(self.beta1.is_finite() && self.beta1 > 0.0 && self.beta1 * self.fit.lr < 10.0) {
            return Err(Error::invalid(format!("beta1 must be > 0 (and beta1 · lr < 10), got {}", self.beta1)));
        }
        if self.critic_hidden == 0 || self.critic_dim == 0 || self.bank == 0 {
            return Err(Error::invalid("critic_hidden, critic_dim and bank must be >= 1"));
        }
        Ok(())
    }

    fn readout_config(&self) -> ReadoutConfig {
        ReadoutConfig {
            layer: self.local.clone(),
            taps: vec![],
            statistics: None,
            beta: self.beta2,
            samples: self.samples,
            sigma: self.sigma,
            min_std: self.min_std,
            active_threshold: 0.01,
            augment: self.augment,
            fit: self.fit.clone(),
        }
    }
}

/// The default local tap: the last tap at stride 4 (the first block group's output).
pub fn default_local(net: &Network, input: (usize, usize), device: &Device) -> Result<String> {
    let x = Tensor::zeros((1, 3, input.0, input.1), DType::F32, device)?;
    let taps = net.taps();
    let outs = net.forward_all(&x)?;
    let mut best = None;
    for (t, o) in taps[1..].iter().zip(&outs) {
        if o.rank() == 4 && o.dim(2)? * 4 >= input.0 && o.dim(2)? * 4 < input.0 + 4 {
            best = Some(t.to_string());
        }
    }
    best.ok_or_else(|| Error::invalid("this model has no tap at stride 4: set 'local'"))
}

/// Gradients of the critic's two heads (local, global).
pub type CriticGrads = (crate::models::mlp::MlpGrads, crate::models::mlp::MlpGrads);

/// The critic `f(x_ij, y) = ⟨φ_L(x_ij), φ_G(y)⟩`.
pub struct Critic {
    pub local: Mlp,
    pub global: Mlp,
}

impl Critic {
    /// Rows `[P, d]` of `φ_L` for standardised local features `r [N, C, H, W]` (row = position,
    /// images in order).
    fn local_rows(r: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = r.dims4()?;
        Ok(r.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?.contiguous()?)
    }

    /// InfoNCE over a batch: standardised `r [B, C, H, W]`, `y [B, D]`. Returns the mean loss
    /// (nats), the InfoNCE estimate `ln B − loss`, and (if `grad`) the gradients of the loss.
    pub fn infonce(&self, r: &Tensor, y: &Tensor, grad: bool) -> Result<(f32, f32, Option<CriticGrads>)> {
        let (b, _, h, w) = r.dims4()?;
        let p = h * w;
        let (l, lt) = self.local.forward_tape(&Self::local_rows(r)?)?;
        let (g, gt) = self.global.forward_tape(y)?;
        let s = l.matmul(&g.t()?)?; // [B·P, B]
        let lsm = candle_nn::ops::log_softmax(&s, D::Minus1)?;
        let own: Vec<u32> = (0..b * p).map(|row| (row / p) as u32).collect();
        let own = Tensor::from_vec(own, (b * p, 1), s.device())?;
        let picked = lsm.gather(&own, 1)?;
        let loss = -(picked.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?) as f32;
        let estimate = (b as f64).ln() as f32 - loss;
        if !grad {
            return Ok((loss, estimate, None));
        }
        let onehot = Tensor::zeros((b * p, b), s.dtype(), s.device())?.scatter_add(
            &own,
            &Tensor::ones((b * p, 1), s.dtype(), s.device())?,
            1,
        )?;
        let ds = ((lsm.exp()? - onehot)? / (b * p) as f64)?;
        let (_, gl) = self.local.backward(&lt, &ds.matmul(&g)?)?;
        let (_, gg) = self.global.backward(&gt, &ds.t()?.matmul(&l)?)?;
        Ok((loss, estimate, Some((gl, gg))))
    }

    /// The pointwise InfoNCE of every position of `r [1, C, H, W]` with its own `y [1, D]`
    /// among the candidates `[y; bank]`, in bits, `[H, W]` row-major; and `K`.
    pub fn pointwise_bits(&self, r: &Tensor, y: &Tensor, bank: &Tensor) -> Result<(Vec<f32>, usize)> {
        let l = self.local.forward(&Self::local_rows(r)?)?;
        let cands = Tensor::cat(&[y, bank], 0)?;
        let k = cands.dim(0)?;
        let s = l.matmul(&self.global.forward(&cands)?.t()?)?;
        let lsm = candle_nn::ops::log_softmax(&s, D::Minus1)?.narrow(1, 0, 1)?.flatten_all()?;
        let ln_k = (k as f64).ln();
        let bits = lsm.to_dtype(DType::F64)?.affine(1.0 / std::f64::consts::LN_2, ln_k / std::f64::consts::LN_2)?;
        Ok((bits.to_dtype(DType::F32)?.to_vec1::<f32>()?, k))
    }
}

/// A trained Dual-IB state for one model: the infer network (with the prior of `x`), the
/// critic and the bank of negatives.
pub struct DualIbState {
    pub readout: Readout,
    pub critic: Critic,
    /// Standardised `y` of training views `[N, D]`.
    pub bank: Tensor,
    pub global: String,
    pub config: DualIbConfig,
}

impl DualIbState {
    /// Loads a state for `net`: fails with a clear message for another model's state.
    pub fn load(net: &Network, path: &Path, device: &Device) -> Result<Self> {
        let (map, header) = fit::load_checked(path, "dual-ib", net, device)?;
        Self::from_parts(&map, &header, path, device)
    }

    fn from_parts(
        map: &HashMap<String, Tensor>,
        header: &serde_json::Value,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let readout = Readout::load_from(map, header, path, device)?;
        let bad = |m: String| Error::format(path, m);
        let critic = Critic {
            local: Mlp::load_from("critic.local", map, device).map_err(|e| bad(e.to_string()))?,
            global: Mlp::load_from("critic.global", map, device).map_err(|e| bad(e.to_string()))?,
        };
        let bank = map.get("bank").ok_or_else(|| bad("no 'bank'".into()))?.to_dtype(DType::F32)?.to_device(device)?;
        let global = header["global"].as_str().ok_or_else(|| bad("no 'global'".into()))?.to_string();
        let config: DualIbConfig =
            serde_json::from_value(header["config"].clone()).map_err(|e| bad(format!("config: {e}")))?;
        config.validate().map_err(|e| bad(e.to_string()))?;
        // the infer network reads [local, global]; the critic heads meet in one space
        if readout.taps.len() != 2 || readout.taps[0] != readout.layer || readout.taps[1] != global {
            return Err(bad(format!("the infer network's taps {:?} are not [local, '{global}']", readout.taps)));
        }
        if critic.local.inputs() != readout.prior.dims()[0]
            || critic.local.outputs() != critic.global.outputs()
            || bank.dims2().map(|d| d.1).ok() != Some(critic.global.inputs())
            || readout.tap_width(1) != Some(critic.global.inputs())
        {
            return Err(bad("the critic does not fit the state's representations".into()));
        }
        Ok(DualIbState { readout, critic, bank, global, config })
    }
}

/// Trains a Dual-IB state (the learner for [`fit::run`]).
pub struct DualIbTrainer<'a> {
    readout: ReadoutTrainer<'a>,
    critic: Critic,
    adam_local: MlpAdam,
    adam_global: MlpAdam,
    bank: Tensor,
    global: String,
    config: DualIbConfig,
}

impl<'a> DualIbTrainer<'a> {
    /// A fresh trainer: statistics from `views` (epoch 0), the bank of negatives from `bank`
    /// (the images as they are, un-augmented, so that an image of the training set explained
    /// later is recognised in the bank and not used as its own negative).
    pub fn new(
        net: &'a Network,
        config: DualIbConfig,
        views: &Views<'_>,
        bank: &Views<'_>,
        device: &Device,
    ) -> Result<Self> {
        let first = (views.view)(0, 0)?;
        let input = (first.dim(2)?, first.dim(3)?);
        let local = match &config.local {
            Some(l) => l.clone(),
            None => default_local(net, input, device)?,
        };
        let global = config.global.clone().unwrap_or_else(|| "pooled".into());
        net.check_tap(&local)?;
        let taps = net.taps();
        let (li, gi) = (taps.iter().position(|&t| t == local), taps.iter().position(|&t| t == global));
        match (li, gi) {
            (Some(l), Some(g)) if g > l => {}
            (_, None) => return Err(Error::invalid(format!("no tap '{global}' for the global representation"))),
            _ => {
                return Err(Error::invalid(format!(
                    "the global tap '{global}' must come after the local tap '{local}'"
                )))
            }
        }
        let mut config = config;
        config.local = Some(local.clone());
        config.global = Some(global.clone());
        let mut rcfg = config.readout_config();
        rcfg.layer = Some(local.clone());
        rcfg.taps = vec![local.clone(), global.clone()];
        let readout = Readout::init(net, &local, &rcfg.taps, None, &rcfg, views)?;
        // the bank: standardised y of the first views
        let n = bank.count.min(config.bank);
        let mut ys = Vec::with_capacity(n);
        for i in 0..n {
            let y = net.forward_taps(&(bank.view)(0, i)?, &[global.as_str()])?.remove(0);
            ys.push(readout.standardise_tap(1, &y.flatten_from(1)?)?);
        }
        let bank = Tensor::cat(&ys, 0)?;
        let d = bank.dim(1)?;
        let c = readout.prior.dims()[0];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.fit.seed ^ 0xC817);
        let critic = Critic {
            local: Mlp::new(&[c, config.critic_hidden, config.critic_dim], &mut rng, device)?,
            global: Mlp::new(&[d, config.critic_hidden, config.critic_dim], &mut rng, device)?,
        };
        let adam_local = MlpAdam::new(&critic.local, config.fit.lr * config.beta1)?;
        let adam_global = MlpAdam::new(&critic.global, config.fit.lr * config.beta1)?;
        let readout = ReadoutTrainer::new(net, readout, rcfg, input)?;
        Ok(DualIbTrainer { readout, critic, adam_local, adam_global, bank, global, config })
    }

    /// The training settings (epochs, batch, lr, seed).
    pub fn settings(&self) -> &FitSettings {
        &self.config.fit
    }

    /// What the run trains on, as stored in the state (see [`ReadoutTrainer::data`]).
    pub fn data(&self) -> &serde_json::Value {
        &self.readout.data
    }

    /// Sets what the run trains on.
    pub fn set_data(&mut self, data: serde_json::Value) {
        self.readout.data = data;
    }

    /// Whether the training views are augmented.
    pub fn augment(&self) -> bool {
        self.config.augment
    }

    /// Resumes from a state file; returns the trainer and the epochs already done.
    pub fn resume(net: &'a Network, path: &Path, device: &Device) -> Result<(Self, usize)> {
        let (map, header) = fit::load_checked(path, "dual-ib", net, device)?;
        let s = DualIbState::from_parts(&map, &header, path, device)?;
        let mut rcfg = s.config.readout_config();
        rcfg.taps = s.readout.taps.clone();
        let (readout, done) = ReadoutTrainer::restore(net, s.readout, rcfg, &map, &header, path)?;
        let lr = s.config.fit.lr * s.config.beta1;
        let adam_local = MlpAdam::load_from("critic.local.adam", &map, &s.critic.local, lr)?;
        let adam_global = MlpAdam::load_from("critic.global.adam", &map, &s.critic.global, lr)?;
        let t = DualIbTrainer {
            readout,
            critic: s.critic,
            adam_local,
            adam_global,
            bank: s.bank,
            global: s.global,
            config: s.config,
        };
        Ok((t, done))
    }
}

impl Learner for DualIbTrainer<'_> {
    fn step(&mut self, pixels: &Tensor) -> Result<Vec<(&'static str, f32)>> {
        // the infer network's clean passes already hold the critic's inputs: x (standardised)
        // and y (its second tap)
        let (mut terms, passes) = self.readout.step_with_passes(pixels)?;
        let r = Tensor::stack(&passes.iter().map(|p| p.r.clone()).collect::<Vec<_>>(), 0)?;
        let ys = passes.iter().map(|p| p.taps[1].flatten_from(1)).collect::<candle_core::Result<Vec<_>>>()?;
        let y = self.readout.readout.standardise_tap(1, &Tensor::cat(&ys, 0)?)?;
        let (loss, estimate, grads) = self.critic.infonce(&r, &y, true)?;
        let (gl, gg) = grads.expect("gradients requested");
        self.adam_local.step(&mut self.critic.local, &gl)?;
        self.adam_global.step(&mut self.critic.global, &gg)?;
        terms.push(("infonce_loss", loss));
        terms.push(("infonce_bits", estimate / std::f32::consts::LN_2));
        Ok(terms)
    }

    fn save(&self, path: &Path, epochs_done: usize) -> Result<()> {
        let mut map = HashMap::new();
        let mut header = serde_json::json!({ "kind": "dual-ib", "config": self.config, "global": self.global });
        self.readout.save_into(&mut map, &mut header, epochs_done)?;
        self.critic.local.save_into("critic.local", &mut map);
        self.critic.global.save_into("critic.global", &mut map);
        self.adam_local.save_into("critic.local.adam", &mut map)?;
        self.adam_global.save_into("critic.global.adam", &mut map)?;
        map.insert("bank".into(), self.bank.clone());
        fit::save_state(path, map, &header)
    }
}

/// How Dual-IB's bottleneck gets `α` at explain time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DualIbExplainConfig {
    /// The trained state (`ibex dual-ib fit`).
    pub state: Option<PathBuf>,
    /// `readout` (the infer network, one pass) or `per-sample` (IBA's 10-step optimisation).
    pub alpha: String,
    /// Seed of the per-sample optimisation's noise.
    pub seed: u64,
}

impl Default for DualIbExplainConfig {
    fn default() -> Self {
        DualIbExplainConfig { state: None, alpha: "readout".into(), seed: 0 }
    }
}

/// The three maps of one image on the local tap's grid, in bits per position.
#[derive(Clone, Debug)]
pub struct DualIbMaps {
    pub sufficient: Heatmap,
    pub general: Heatmap,
    pub redundancy: Heatmap,
    /// `log₂ K`: the most the general map can hold per position.
    pub bound_bits: f32,
    pub candidates: usize,
    pub logits: Tensor,
}

/// Dual-IB with a trained state.
pub struct DualIb {
    pub state: DualIbState,
    pub config: DualIbExplainConfig,
}

impl DualIb {
    pub fn new(net: &Network, config: DualIbExplainConfig, device: &Device) -> Result<Self> {
        let path = config.state.clone().ok_or_else(|| {
            Error::invalid("Dual-IB needs a trained state: set 'state' to a file written by `ibex dual-ib fit`")
        })?;
        if config.alpha != "readout" && config.alpha != "per-sample" {
            return Err(Error::invalid(format!("alpha must be 'readout' or 'per-sample', got '{}'", config.alpha)));
        }
        Ok(DualIb { state: DualIbState::load(net, &path, device)?, config })
    }

    /// Optimisation steps per image (0 with the infer network).
    fn steps_per_image(&self) -> u32 {
        if self.config.alpha == "readout" {
            0
        } else {
            IbaConfig::default().bottleneck.steps as u32
        }
    }

    /// The three maps for `pixels [1, 3, H, W]`, explaining `target` (per-sample) or the top-1
    /// (readout).
    pub fn maps(
        &self,
        net: &Network,
        pixels: &Tensor,
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<DualIbMaps> {
        let total = self.steps_per_image();
        self.maps_counted(net, pixels, target, &mut StepCounter { control, done: 0, total })
    }

    fn maps_counted(
        &self,
        net: &Network,
        pixels: &Tensor,
        target: Option<usize>,
        counter: &mut StepCounter<'_, '_>,
    ) -> Result<DualIbMaps> {
        let s = &self.state;
        let pass = s.readout.pass(net, pixels)?;
        let top1 = pass.logits.flatten_all()?.argmax(D::Minus1)?.to_scalar::<u32>()? as usize;
        let capacity = if self.config.alpha == "readout" {
            if target.is_some_and(|t| t != top1) {
                return Err(Error::invalid(
                    "the Dual-IB infer network explains the model's top-1 class; use alpha 'per-sample' for another class",
                ));
            }
            s.readout.capacity_from(&pass)?
        } else {
            let mut cfg = IbaConfig { seed: self.config.seed, sigma: s.readout.sigma, ..Default::default() };
            cfg.bottleneck.beta = s.config.beta2;
            let iba = Iba::with_stats(cfg, s.readout.layer.clone(), s.readout.prior.clone())?;
            let mut noise = SeededNoise::new(self.config.seed, 0);
            // the infer network's first tap is the local representation itself
            iba.capacity(net, &pass.taps[0], target.unwrap_or(top1), &mut noise, counter)?.capacity
        };
        let sufficient = super::iba::bits_grid(&capacity)?;
        let y = s.readout.standardise_tap(1, &pass.taps[1].flatten_from(1)?)?;
        let bank = self.negatives(&y)?;
        let (general, k) = s.critic.pointwise_bits(&pass.r.unsqueeze(0)?, &y, &bank)?;
        if general.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numerical("the critic's scores contain NaN or infinity".into()));
        }
        let red: Vec<f32> = general.iter().zip(&sufficient.data).map(|(g, s)| g - s).collect();
        let (w, h) = (sufficient.width, sufficient.height);
        Ok(DualIbMaps {
            sufficient,
            general: Heatmap::new(w, h, general)?,
            redundancy: Heatmap::new(w, h, red)?,
            bound_bits: ((k as f64).ln() / std::f64::consts::LN_2) as f32,
            candidates: k,
            logits: pass.logits,
        })
    }

    /// The bank without entries equal to `y` (an image from the training set is not its own
    /// negative).
    fn negatives(&self, y: &Tensor) -> Result<Tensor> {
        let bank = &self.state.bank;
        let d = bank.broadcast_sub(y)?.sqr()?.sum(1)?.to_vec1::<f32>()?;
        let scale = y.sqr()?.sum_all()?.to_scalar::<f32>()?.max(1e-12);
        let keep: Vec<u32> = d.iter().enumerate().filter(|(_, &v)| v > 1e-8 * scale).map(|(i, _)| i as u32).collect();
        if keep.is_empty() {
            return Err(Error::invalid("the Dual-IB bank has no negatives for this image"));
        }
        Ok(bank.index_select(&Tensor::new(keep.as_slice(), bank.device())?, 0)?)
    }

    /// Explains each image in one call.
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<super::Explanation>> {
        let total = self.steps_per_image() * images.len() as u32;
        let mut done = 0;
        classifier::each_image(bundle, images, control, |i, input, control| {
            let start = Instant::now();
            let mut counter = StepCounter { control, done, total };
            let m = self.maps_counted(&bundle.network, &input.pixels, target, &mut counter)?;
            done = counter.done;
            if total == 0 {
                // one pass per image: progress counts images
                counter.control.report(i as u32 + 1, images.len() as u32)?;
            }
            let prediction: Prediction = classifier::predict(bundle, &m.logits, target)?;
            let (pw, ph) = (input.pre.width, input.pre.height);
            let per_pixel = |g: &Heatmap| bits_per_pixel(g, pw, ph);
            let clamped = Heatmap::new(
                m.redundancy.width,
                m.redundancy.height,
                m.redundancy.data.iter().map(|v| v.max(0.0)).collect(),
            )?;
            let maps = vec![
                super::map("sufficient", "bits_per_pixel", per_pixel(&m.sufficient)?),
                super::map("general", "bits_per_pixel", per_pixel(&m.general)?),
                super::map("redundancy", "bits_per_pixel", per_pixel(&m.redundancy)?),
                super::map("redundancy_clamped", "bits_per_pixel", per_pixel(&clamped)?),
                super::map("sufficient_grid", "bits", m.sufficient.clone()),
                super::map("general_grid", "bits", m.general.clone()),
                super::map("redundancy_grid", "bits", m.redundancy.clone()),
            ];
            let summary = [
                ("sufficient_bits", m.sufficient.sum()),
                ("general_bits", m.general.sum()),
                ("redundancy_bits", m.redundancy.sum()),
                ("general_bound_bits_per_position", m.bound_bits),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .chain(std::iter::once(("candidates".to_string(), serde_json::json!(m.candidates))))
            .collect();
            let mut config = serde_json::to_value(&self.config)?;
            config["training"] = serde_json::to_value(&self.state.config)?;
            Ok(super::Explanation {
                method: "dual-ib".into(),
                maps,
                texts: vec![],
                prediction: Some(prediction),
                summary,
                image: input.pre.image,
                source_region: input.pre.source_region,
                config,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}
