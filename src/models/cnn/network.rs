//! A classifier as a chain of named stages, with taps: `forward_until(tap)` runs the frozen
//! prefix once, `forward_from(tap, h)` / [`Network::suffix_forward`] + [`Network::suffix_backward`]
//! run the rest with a written-out backward pass (∂loss/∂h only).
//!
//! Tap names follow the checkpoint's module names (`stem`, `blocks.10`, `layer2`, `features.3`,
//! `head`, `pooled`); `input` names the network input itself, so `forward_from("input", x)` is
//! the whole network and the backward from it gives the gradient with respect to the pixels.

use super::layers::{Layer, Tape};
use crate::error::{Error, Result};
use candle_core::Tensor;

/// A classifier made of named stages; the last stage produces the logits `[N, classes]`.
pub struct Network {
    stages: Vec<(String, Box<dyn Layer>)>,
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
    pub fn new(stages: Vec<(String, Box<dyn Layer>)>, num_classes: usize) -> Result<Self> {
        if num_classes == 0 || stages.is_empty() {
            return Err(Error::invalid("a classifier needs at least one stage and one class"));
        }
        Ok(Network { stages, num_classes })
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
        let first = self.after(tap)?;
        let mut h = h.clone();
        let mut tapes = Vec::with_capacity(self.stages.len() - first);
        for (_, l) in &self.stages[first..] {
            let (y, t) = l.forward_tape(&h)?;
            tapes.push(t);
            h = y;
        }
        Ok((h, SuffixTape { first, tapes }))
    }

    /// `∂loss/∂h` at the tap from `∂loss/∂logits`.
    pub fn suffix_backward(&self, tape: &SuffixTape, dlogits: &Tensor) -> Result<Tensor> {
        let mut g = dlogits.clone();
        for ((_, l), t) in self.stages[tape.first..].iter().zip(&tape.tapes).rev() {
            g = l.backward(t, &g)?;
        }
        Ok(g)
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
