//! A classifier as a chain of named stages, with taps: `forward_until(tap)` runs the frozen
//! prefix once, `forward_from(tap, h)` / [`Network::suffix_forward`] + [`Network::suffix_backward`]
//! run the rest with a written-out backward pass (∂loss/∂h only).
//!
//! Tap names follow the checkpoint's module names (`stem`, `blocks.10`, `layer2`, `features.3`,
//! `head`, `pooled`); `input` names the network input itself, so `forward_from("input", x)` is
//! the whole network and the backward from it gives the gradient with respect to the pixels.

use super::layers::{Layer, Randomiser, Tape};
use crate::error::{Error, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// Named stages in order, as the architecture builders produce them.
pub type Stages = Vec<(String, Box<dyn Layer>)>;

/// A classifier made of named stages; the last stage produces the logits `[N, classes]`.
pub struct Network {
    stages: Vec<(String, Arc<dyn Layer>)>,
    /// Number of classes (the width of the logits).
    pub num_classes: usize,
}

/// What [`Network::suffix_backward`] needs from [`Network::suffix_forward`].
pub struct SuffixTape {
    first: usize,
    tapes: Vec<Tape>,
}

impl Network {
    /// A network whose last stage gives `num_classes` logits (at least 1).
    pub fn new(stages: Stages, num_classes: usize) -> Result<Self> {
        if num_classes == 0 || stages.is_empty() {
            return Err(Error::invalid("a classifier needs at least one stage and one class"));
        }
        Ok(Network { stages: stages.into_iter().map(|(n, l)| (n, Arc::from(l))).collect(), num_classes })
    }

    /// A copy whose last `k` stages have random weights (see [`Layer::randomised`]); the
    /// other stages are shared. Cascading model randomisation (MPRT) takes `k = 1, 2, …`.
    pub fn with_top_randomised(&self, k: usize, seed: u64) -> Result<Network> {
        let n = self.stages.len();
        if k > n {
            return Err(Error::invalid(format!("cannot randomise {k} of {n} stages")));
        }
        let mut rng = Randomiser::new(seed);
        let mut stages = self.stages.clone();
        // from the top down, so that one seed gives the same top layers for every k
        for (_, l) in stages[n - k..].iter_mut().rev() {
            *l = Arc::from(l.randomised(&mut rng)?);
        }
        Ok(Network { stages, num_classes: self.num_classes })
    }

    /// The stages from the top (the logits) down, as MPRT randomises them: the name and
    /// whether it has learned weights.
    pub fn stages_top_down(&self) -> Vec<(&str, bool)> {
        self.stages.iter().rev().map(|(n, l)| (n.as_str(), l.learned())).collect()
    }

    /// The tap names, in order (`input` first).
    pub fn taps(&self) -> Vec<&str> {
        std::iter::once("input").chain(self.stages.iter().map(|(n, _)| n.as_str())).collect()
    }

    /// Index of the first stage AFTER `tap`.
    fn after(&self, tap: &str) -> Result<usize> {
        if tap == "input" {
            return Ok(0);
        }
        match self.stages.iter().position(|(n, _)| n == tap) {
            Some(i) => Ok(i + 1),
            None => Err(Error::invalid(format!("no tap '{tap}' in this model (taps: {})", self.taps().join(", ")))),
        }
    }

    /// Checks that `tap` exists and is not the logits.
    pub fn check_tap(&self, tap: &str) -> Result<()> {
        let i = self.after(tap)?;
        if i == self.stages.len() {
            return Err(Error::invalid(format!("tap '{tap}' is the logits; choose an earlier one")));
        }
        Ok(())
    }

    /// The whole network: pixels `[N, 3, H, W]` → logits `[N, classes]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_from("input", x)
    }

    /// The output of stage `tap` (the frozen prefix).
    pub fn forward_until(&self, tap: &str, x: &Tensor) -> Result<Tensor> {
        let end = self.after(tap)?;
        let mut h = x.clone();
        for (_, l) in &self.stages[..end] {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    /// Logits from the output `h` of stage `tap`.
    pub fn forward_from(&self, tap: &str, h: &Tensor) -> Result<Tensor> {
        let start = self.after(tap)?;
        let mut h = h.clone();
        for (_, l) in &self.stages[start..] {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    /// Logits from `h` at `tap`, recording what the backward pass needs.
    pub fn suffix_forward(&self, tap: &str, h: &Tensor) -> Result<(Tensor, SuffixTape)> {
        self.suffix_run(tap, h, false)
    }

    /// [`Network::suffix_forward`] recording also what the weight gradients need
    /// ([`Network::suffix_backward_params`]).
    pub fn suffix_forward_train(&self, tap: &str, h: &Tensor) -> Result<(Tensor, SuffixTape)> {
        self.suffix_run(tap, h, true)
    }

    fn suffix_run(&self, tap: &str, h: &Tensor, train: bool) -> Result<(Tensor, SuffixTape)> {
        let first = self.after(tap)?;
        let mut h = h.clone();
        let mut tapes = Vec::with_capacity(self.stages.len() - first);
        for (_, l) in &self.stages[first..] {
            let (y, t) = if train { l.forward_train(&h)? } else { l.forward_tape(&h)? };
            tapes.push(t);
            h = y;
        }
        Ok((h, SuffixTape { first, tapes }))
    }

    /// `∂loss/∂h` at the tap and the weight gradients of every stage after it (in
    /// [`Layer::params`] order, one list per stage), from a [`Network::suffix_forward_train`] tape.
    /// From the `input` tap there is no input gradient (`None`): training never needs the
    /// pixels' gradient, and it would cost as much as the first stage's forward pass.
    pub fn suffix_backward_params(
        &self,
        tape: &SuffixTape,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Vec<Vec<Tensor>>)> {
        let mut g = dout.clone();
        let mut grads = Vec::with_capacity(tape.tapes.len());
        for (i, ((_, l), t)) in self.stages[tape.first..].iter().zip(&tape.tapes).enumerate().rev() {
            if i == 0 && tape.first == 0 {
                // the gradient for the pixels is not needed
                grads.push(l.param_grads(t, &g)?);
                grads.reverse();
                return Ok((None, grads));
            }
            let (dx, gp) = l.backward_params(t, &g)?;
            grads.push(gp);
            g = dx;
        }
        grads.reverse();
        Ok((Some(g), grads))
    }

    /// The stage names in order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The parameters of every stage (see [`Layer::params`]).
    pub fn stage_params(&self) -> Result<Vec<Vec<Tensor>>> {
        self.stages.iter().map(|(_, l)| l.params()).collect()
    }

    /// A copy whose last `params.len()` stages take these parameters (see [`Layer::with_params`]);
    /// the stages before them are shared.
    pub fn with_stage_params(&self, params: &[Vec<Tensor>]) -> Result<Network> {
        let n = self.stages.len();
        if params.len() > n {
            return Err(Error::invalid(format!("{} parameter lists for {n} stages", params.len())));
        }
        let mut stages = self.stages.clone();
        for ((_, l), p) in stages[n - params.len()..].iter_mut().zip(params) {
            *l = Arc::from(l.with_params(p)?);
        }
        Ok(Network { stages, num_classes: self.num_classes })
    }

    /// `∂loss/∂h` at the tap from `∂loss/∂logits`.
    pub fn suffix_backward(&self, tape: &SuffixTape, dlogits: &Tensor) -> Result<Tensor> {
        let mut g = dlogits.clone();
        for ((_, l), t) in self.stages[tape.first..].iter().zip(&tape.tapes).rev() {
            g = l.backward(t, &g)?;
        }
        Ok(g)
    }

    /// The outputs of `taps` (any order, `input` and the logits stage allowed) from one pass
    /// that stops at the last of them, with the logits if that pass reached them.
    pub fn forward_taps(&self, x: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>> {
        let ends: Vec<usize> = taps.iter().map(|t| self.after(t)).collect::<Result<_>>()?;
        let last = ends.iter().copied().max().unwrap_or(0);
        let mut outs = vec![None; taps.len()];
        let mut h = x.clone();
        for i in 0..=last {
            if i > 0 {
                h = self.stages[i - 1].1.forward(&h)?;
            }
            for (o, &e) in outs.iter_mut().zip(&ends) {
                if e == i {
                    *o = Some(h.clone());
                }
            }
        }
        Ok(outs.into_iter().map(|o| o.expect("every tap is reached")).collect())
    }

    /// The name of the last stage (the logits).
    pub fn logits_tap(&self) -> &str {
        &self.stages.last().expect("at least one stage").0
    }

    /// The output of every stage, in order (parity checks, debugging).
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(self.stages.len());
        let mut h = x.clone();
        for (_, l) in &self.stages {
            h = l.forward(&h)?;
            outs.push(h.clone());
        }
        Ok(outs)
    }
}
