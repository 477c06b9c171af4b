//! Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017): the path integral of the
//! gradient of the target's logit from a baseline `x₀` to the input `x`,
//! `IG_i = (x_i − x₀_i) · ∫₀¹ ∂f(x₀ + t(x − x₀))/∂x_i dt`, by the trapezoidal rule over
//! `steps` intervals (the interpolation points run in batches). The map is IG summed over
//! colour channels. Completeness — `Σ IG = f(x) − f(x₀)` — holds up to the quadrature error,
//! reported as `completeness_gap` (a large gap asks for more steps).

use super::BaselineExplanation;
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::explain::classifier::{self, one_hot};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::cnn::ClassifierBundle;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Integrated-Gradients settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntegratedGradientsConfig {
    /// Intervals of the path (more: smaller completeness gap, proportionally slower).
    pub steps: usize,
    /// The baseline, a constant in the model's normalised input space (0: Captum's default;
    /// for mean/std-normalised models that is the data mean).
    pub baseline: f64,
    /// Interpolation points per forward/backward pass (bounds memory).
    pub batch: usize,
}

impl Default for IntegratedGradientsConfig {
    fn default() -> Self {
        IntegratedGradientsConfig { steps: 50, baseline: 0.0, batch: 16 }
    }
}

/// Integrated Gradients.
pub struct IntegratedGradients {
    pub config: IntegratedGradientsConfig,
}

impl IntegratedGradients {
    /// Checks the settings.
    pub fn new(config: IntegratedGradientsConfig) -> Result<Self> {
        if config.steps == 0 || config.steps > 10_000 || config.batch == 0 || !config.baseline.is_finite() {
            return Err(Error::invalid(format!(
                "integrated gradients: steps must be in 1..=10000, batch >= 1 and baseline finite, got {config:?}"
            )));
        }
        Ok(IntegratedGradients { config })
    }

    /// Explains each image (its predicted class, or `target`).
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<BaselineExplanation>> {
        let net = &bundle.network;
        let c = &self.config;
        let passes = (c.steps + 1).div_ceil(c.batch);
        let total = (passes * images.len()) as u32;
        let mut done = 0;
        classifier::each_image(bundle, images, control, |_, input, control| {
            let start = Instant::now();
            let x = &input.pixels;
            let logits = net.forward(x)?;
            let prediction = classifier::predict(bundle, &logits, target)?;
            let t = prediction.target.index;
            let x0 = x.ones_like()?.affine(0.0, c.baseline)?;
            let diff = (x - &x0)?;
            let mut acc = x.zeros_like()?;
            let mut f0 = 0f32;
            let mut k = 0;
            while k <= c.steps {
                let m = c.batch.min(c.steps + 1 - k);
                let alphas: Vec<f32> = (k..k + m).map(|j| j as f32 / c.steps as f32).collect();
                let a = Tensor::from_vec(alphas, (m, 1, 1, 1), x.device())?;
                let pts = x0.broadcast_add(&diff.broadcast_mul(&a)?)?;
                let (lg, tape) = net.suffix_forward("input", &pts)?;
                if k == 0 {
                    f0 = lg.get(0)?.get(t)?.to_scalar::<f32>()?;
                }
                let oh = one_hot(net.num_classes, t, &lg)?.broadcast_as((m, net.num_classes))?.contiguous()?;
                let g = net.suffix_backward(&tape, &oh)?;
                // trapezoid weights: ½ at both ends, 1 inside
                let w: Vec<f32> =
                    (k..k + m).map(|j| if j == 0 || j == c.steps { 0.5 } else { 1.0 } / c.steps as f32).collect();
                let w = Tensor::from_vec(w, (m, 1, 1, 1), x.device())?;
                acc = (acc + g.broadcast_mul(&w)?.sum_keepdim(0)?)?;
                k += m;
                done += 1;
                control.report(done, total)?;
            }
            let ig = (acc * &diff)?;
            let (w, h) = (input.pre.width, input.pre.height);
            let map = ig.sum(1)?.flatten_all()?.to_vec1::<f32>()?;
            if map.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numerical("integrated gradients: NaN or infinity in the attribution".into()));
            }
            let fx = logits.get(0)?.get(t)?.to_scalar::<f32>()?;
            let sum = ig.sum_all()?.to_scalar::<f32>()?;
            let mut summary = serde_json::Map::new();
            summary.insert("attribution_sum".into(), sum.into());
            summary.insert("logit_difference".into(), (fx - f0).into());
            summary.insert("completeness_gap".into(), (sum - (fx - f0)).abs().into());
            Ok(BaselineExplanation {
                method: "ig",
                maps: vec![("integrated_gradients".into(), "logit".into(), Heatmap::new(w, h, map)?)],
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
