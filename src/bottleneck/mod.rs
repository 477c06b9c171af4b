//! The information bottleneck shared by every method.
//!
//! A hidden state `h` (any shape: `[T, D]` tokens × channels for transformers, `[C, H, W]` for
//! feature maps) is replaced by `z = λ·h + (1 − λ)·ε` with `λ = sigmoid(α)` learned per element
//! and `ε ~ N(0, 1)`; a method with a data-dependent prior N(μ, σ²) (IBA) passes standardised
//! features `(x − μ)/σ` and maps `z` back inside its objective. The
//! optimisation minimises `β·mean(C) − fit(z)`, where `C` is the capacity (KL to the prior, in
//! nats, see [`capacity`]) and `fit` is supplied by the method through an [`Objective`] (M2IB:
//! cosine to the other modality's embedding). `α` starts at `alpha_init` and follows Adam;
//! the noise samples of one step run as one batch (split into passes of at most
//! `samples_per_pass` to bound memory). The heatmap is the capacity of the last step's forward
//! pass — the reference implementations' convention — so that last step runs forward only.
//!
//! A [`Mask`] adds IBA's two refinements: `λ = smooth(sigmoid(α))` (spatial Gaussian smoothing,
//! see [`smoothing`]) and an active-neuron mask that zeroes the capacity of features that are
//! (almost) always zero.

pub mod adam;
pub mod capacity;
pub mod noise;
pub mod smoothing;

pub use noise::{NoiseBank, NoiseSource, SeededNoise};
pub use smoothing::Smoothing;

use crate::control::StepCounter;
use crate::error::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// What the bottleneck fits: a differentiable function of the bottlenecked hidden state.
pub trait Objective {
    /// For `z [n, …h's shape]`, the fitting term of each sample and, if `grad`, `∂(Σ fit)/∂z`.
    fn evaluate(&self, z: &Tensor, grad: bool) -> Result<(Vec<f32>, Option<Tensor>)>;
}

/// Optimisation settings shared by every bottleneck method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BottleneckSettings {
    /// Weight of the compression term: larger β keeps fewer features (sparser maps).
    pub beta: f64,
    /// Optimisation steps; the map comes from the last step's forward pass.
    pub steps: usize,
    /// Adam learning rate on α (at lr 1 each step moves α by about ±1).
    pub lr: f64,
    /// Noise samples per step (the batch).
    pub samples: usize,
    /// Largest number of samples run in one pass (bounds memory); 0 = all at once.
    pub samples_per_pass: usize,
    /// Initial α (λ = sigmoid(α) ≈ 0.993 for 5: almost everything passes at first).
    pub alpha_init: f64,
}

impl BottleneckSettings {
    /// Checks ranges, with messages that say what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::invalid(format!("beta must be a finite number >= 0, got {}", self.beta)));
        }
        if self.steps == 0 || self.steps > 100_000 {
            return Err(Error::invalid(format!("steps must be in 1..=100000, got {}", self.steps)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(format!("lr must be a finite number > 0, got {}", self.lr)));
        }
        if self.samples == 0 || self.samples > 100_000 {
            return Err(Error::invalid(format!("samples must be in 1..=100000, got {}", self.samples)));
        }
        if !self.alpha_init.is_finite() || self.alpha_init.abs() > 30.0 {
            return Err(Error::invalid(format!("alpha_init must be in [-30, 30], got {}", self.alpha_init)));
        }
        Ok(())
    }
}

/// The three loss terms at one step (before that step's update).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    pub compression: f32,
    pub fitting: f32,
    pub loss: f32,
}

/// How `λ` is formed from `α`, and which features count: the plain bottleneck
/// (`Mask::default()`), or IBA's smoothed mask over active neurons.
#[derive(Default)]
pub struct Mask<'a> {
    /// Smooths `sigmoid(α)` over space; `h` must then be `[C, H, W]`.
    pub smoothing: Option<&'a Smoothing>,
    /// 1 for features that count, 0 for inactive ones (their capacity is zero), shaped like `h`.
    pub active: Option<&'a Tensor>,
}

impl Mask<'_> {
    /// `λ` from `sigmoid(α)`.
    fn lambda(&self, sig: &Tensor) -> Result<Tensor> {
        match self.smoothing {
            Some(s) => s.apply(sig),
            None => Ok(sig.clone()),
        }
    }

    /// The capacity at `λ`, zero for inactive features.
    fn capacity(&self, h: &Tensor, lambda: &Tensor) -> Result<Tensor> {
        let cap = capacity::capacity(h, lambda)?;
        Ok(match self.active {
            Some(a) => (cap * a)?,
            None => cap,
        })
    }
}

/// The capacity (nats, shaped like `h`) of the bottleneck at a given `alpha`, with no
/// optimisation: what an amortised method (a readout network predicting `α`) reports.
pub fn capacity_at(h: &Tensor, alpha: &Tensor, mask: &Mask<'_>) -> Result<Tensor> {
    mask.capacity(h, &mask.lambda(&candle_nn::ops::sigmoid(alpha)?)?)
}

/// Result of one bottleneck optimisation.
pub struct Outcome {
    /// Capacity (shaped like `h`) in nats of the last forward pass.
    pub capacity: Tensor,
    /// Loss terms per step.
    pub trace: Vec<StepTrace>,
}

fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?)
}

/// Runs the bottleneck on `h` (the frozen prefix's output for one input).
pub(crate) fn optimise(
    h: &Tensor,
    settings: &BottleneckSettings,
    mask: &Mask<'_>,
    objective: &dyn Objective,
    noise: &mut dyn NoiseSource,
    progress: &mut StepCounter<'_, '_>,
) -> Result<Outcome> {
    settings.validate()?;
    let dims = h.dims().to_vec();
    let dev = h.device();
    let n = settings.samples;
    let per_pass = if settings.samples_per_pass == 0 { n } else { settings.samples_per_pass.min(n) };
    let mut alpha = Tensor::full(settings.alpha_init as f32, dims.as_slice(), dev)?.to_dtype(h.dtype())?;
    let mut adam = adam::Adam::new(&alpha, settings.lr)?;
    let mut trace = Vec::with_capacity(settings.steps);
    for step in 0..settings.steps {
        progress.control.check()?;
        let last = step + 1 == settings.steps;
        let mut eps_for = |first: usize, count: usize| noise.sample(step, first, count, &dims, dev);
        let (terms, capacity, g_alpha) =
            evaluate(h, &alpha, settings.beta, mask, n, per_pass, &mut eps_for, objective, !last)?;
        if !(terms.compression.is_finite() && terms.fitting.is_finite()) {
            return Err(Error::Numerical(format!(
                "bottleneck step {step}: compression {}, fitting {} (is the input finite?)",
                terms.compression, terms.fitting
            )));
        }
        trace.push(terms);
        progress.step()?;
        match g_alpha {
            Some(g) => alpha = adam.step(&alpha, &g)?,
            None => return Ok(Outcome { capacity, trace }),
        }
    }
    unreachable!("steps >= 1 is validated")
}

/// The loss terms and the capacity (shaped like `h`) at `alpha` and, if `grad`, `∂loss/∂α`, with the
/// noise of samples `first..first+count` supplied by `eps_for` (passes of at most `per_pass`
/// samples).
#[allow(clippy::too_many_arguments)]
fn evaluate(
    h: &Tensor,
    alpha: &Tensor,
    beta: f64,
    mask: &Mask<'_>,
    n: usize,
    per_pass: usize,
    eps_for: &mut dyn FnMut(usize, usize) -> Result<Tensor>,
    objective: &dyn Objective,
    grad: bool,
) -> Result<(StepTrace, Tensor, Option<Tensor>)> {
    let numel = h.elem_count() as f64;
    let hb = h.unsqueeze(0)?;
    let sig = candle_nn::ops::sigmoid(alpha)?;
    let lambda = mask.lambda(&sig)?;
    let cap = mask.capacity(h, &lambda)?;
    let compression = scalar(&cap.mean_all()?)?;
    let one_minus = lambda.affine(-1.0, 1.0)?;
    let mut fit_sum = 0f64;
    let mut grad_lambda: Option<Tensor> = None;
    let mut first = 0;
    while first < n {
        let count = per_pass.min(n - first);
        let eps = eps_for(first, count)?.to_dtype(h.dtype())?;
        let z = hb.broadcast_mul(&lambda)?.broadcast_add(&eps.broadcast_mul(&one_minus)?)?;
        let (fits, dz) = objective.evaluate(&z, grad)?;
        fit_sum += fits.iter().map(|&f| f as f64).sum::<f64>();
        if let Some(dz) = dz {
            // ∂z/∂λ = h − ε
            let g = (dz * hb.broadcast_sub(&eps)?)?.sum(0)?;
            grad_lambda = Some(match grad_lambda {
                Some(acc) => (acc + g)?,
                None => g,
            });
        }
        first += count;
    }
    let fitting = (fit_sum / n as f64) as f32;
    let loss = (beta * compression as f64 - fitting as f64) as f32;
    let terms = StepTrace { compression, fitting, loss };
    let Some(g_fit) = grad_lambda else { return Ok((terms, cap, None)) };
    // loss = β·mean(C) − mean_i fit_i
    let g_cap = capacity::capacity_grad(h, &lambda)?;
    let g_cap = match mask.active {
        Some(a) => (g_cap * a)?,
        None => g_cap,
    };
    let g_lambda = ((g_cap * (beta / numel))? - (g_fit / n as f64)?)?;
    let g_sig = match mask.smoothing {
        Some(s) => s.adjoint(&g_lambda)?,
        None => g_lambda,
    };
    let g_alpha = (g_sig * (&sig * sig.affine(-1.0, 1.0)?)?)?;
    Ok((terms, cap, Some(g_alpha)))
}

/// The loss terms and `∂loss/∂α` at `alpha` for fixed noise `eps [n, …h's shape]` (one pass):
/// what each optimisation step computes, exposed for gradient checks.
pub fn loss_and_grad(
    h: &Tensor,
    alpha: &Tensor,
    eps: &Tensor,
    beta: f64,
    mask: &Mask<'_>,
    objective: &dyn Objective,
) -> Result<(StepTrace, Tensor)> {
    let n = eps.dim(0)?;
    let mut eps_for = |first: usize, count: usize| Ok(eps.narrow(0, first, count)?);
    let (terms, _, g) = evaluate(h, alpha, beta, mask, n, n, &mut eps_for, objective, true)?;
    Ok((terms, g.expect("gradient requested")))
}
