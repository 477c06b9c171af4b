//! Grad-CAM (Selvaraju et al., ICCV 2017) at any tap, as pytorch-grad-cam computes it: the
//! gradient of the target's logit with respect to the tap's output `A [C, h, w]`, averaged over
//! space, weights the channels: `cam = ReLU(Σ_c w_c A_c)`. The map is min-max normalised on the
//! grid, resized bilinearly (half-pixel centres, clamped borders) to the input, and min-max
//! normalised again (`mm(resize(mm(cam)))`, with `mm(v) = (v − min) / (1e-7 + max(v − min))`).
//!
//! A baseline: one forward and one backward pass, no optimisation.

use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::explain::classifier::{self, one_hot, Prediction};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::cnn::ClassifierBundle;
use candle_core::D;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Grad-CAM settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradCamConfig {
    /// The tap (default: the model's last feature map before pooling, or `ibex.json`'s).
    pub layer: Option<String>,
}

/// A Grad-CAM explanation of one image.
#[derive(Clone, Debug)]
pub struct GradCamExplanation {
    /// At the preprocessed input size, in [0, 1].
    pub map: Heatmap,
    /// `ReLU(Σ_c w_c A_c)` on the tap's grid (unnormalised).
    pub grid: Heatmap,
    /// `w_c`.
    pub channel_weights: Vec<f32>,
    pub prediction: Prediction,
    pub image: RgbImage,
    pub source_region: [f32; 4],
    pub config: GradCamConfig,
    pub elapsed_ms: f64,
}

/// pytorch-grad-cam's min-max: `(v − min) / (1e-7 + max(v − min))`.
pub(crate) fn mm(h: &Heatmap) -> Heatmap {
    let (min, _) = h.min_max();
    let shifted: Vec<f32> = h.data.iter().map(|&v| v - min).collect();
    let max = shifted.iter().cloned().fold(0f32, f32::max);
    Heatmap { width: h.width, height: h.height, data: shifted.iter().map(|&v| v / (1e-7 + max)).collect() }
}

/// Grad-CAM with a fixed configuration.
pub struct GradCam {
    pub config: GradCamConfig,
    layer: String,
}

impl GradCam {
    /// Resolves the tap for `bundle`.
    pub fn new(bundle: &ClassifierBundle, config: GradCamConfig) -> Result<Self> {
        let layer = match &config.layer {
            Some(l) => l.clone(),
            None => match bundle.recommended_for("gradcam").get("layer").and_then(|v| v.as_str()) {
                Some(l) => l.to_string(),
                None => last_feature_map(bundle)?,
            },
        };
        bundle.network.check_tap(&layer)?;
        Ok(GradCam { config: GradCamConfig { layer: Some(layer.clone()) }, layer })
    }

    /// Explains each image (its predicted class, or `target`).
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<GradCamExplanation>> {
        let net = &bundle.network;
        classifier::each_image(bundle, images, control, |i, input, control| {
            let start = Instant::now();
            let a = net.forward_until(&self.layer, &input.pixels)?;
            if a.rank() != 4 {
                return Err(Error::invalid(format!(
                    "Grad-CAM needs a feature map; tap '{}' is {:?}",
                    self.layer,
                    a.dims()
                )));
            }
            let (logits, tape) = net.suffix_forward(&self.layer, &a)?;
            let prediction = classifier::predict(bundle, &logits, target)?;
            let da = net.suffix_backward(&tape, &one_hot(net.num_classes, prediction.target.index, &logits)?)?;
            let weights = da.mean(D::Minus1)?.mean(D::Minus1)?; // [1, C]
            let (_, c, h, w) = a.dims4()?;
            let cam = weights.reshape((1, c, 1, 1))?.broadcast_mul(&a)?.sum(1)?.relu()?;
            let grid = Heatmap::new(w as u32, h as u32, cam.flatten_all()?.to_vec1::<f32>()?)?;
            if grid.data.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numerical("the Grad-CAM map contains NaN or infinity".into()));
            }
            let map = mm(&mm(&grid).upsample_bilinear(input.pre.width, input.pre.height));
            control.report(i as u32 + 1, images.len() as u32)?;
            Ok(GradCamExplanation {
                map,
                grid,
                channel_weights: weights.flatten_all()?.to_vec1::<f32>()?,
                prediction,
                image: input.pre.image,
                source_region: input.pre.source_region,
                config: self.config.clone(),
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}

/// The last tap before global pooling whose output is a feature map.
fn last_feature_map(bundle: &ClassifierBundle) -> Result<String> {
    let taps = bundle.network.taps();
    match taps.iter().position(|t| *t == "pooled") {
        Some(i) if i > 1 => Ok(taps[i - 1].to_string()),
        _ => Err(Error::invalid("this model has no 'pooled' tap: set Grad-CAM's 'layer'")),
    }
}
