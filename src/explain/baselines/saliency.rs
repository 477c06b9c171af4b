//! Gradient saliency (Simonyan, Vedaldi & Zisserman 2014): `max_c |∂ logit_target / ∂ x_c|`
//! per input pixel, from one forward and one backward pass through the whole network.

use super::BaselineExplanation;
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::explain::classifier::{self, one_hot};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::cnn::ClassifierBundle;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Gradient-saliency settings (none yet: the paper's definition).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SaliencyConfig {}

/// Gradient saliency.
pub struct Saliency {
    pub config: SaliencyConfig,
}

impl Saliency {
    /// Explains each image (its predicted class, or `target`).
    pub fn explain_batch(
        &self,
        bundle: &ClassifierBundle,
        images: &[RgbImage],
        target: Option<usize>,
        control: &mut RunControl<'_>,
    ) -> Result<Vec<BaselineExplanation>> {
        let net = &bundle.network;
        classifier::each_image(bundle, images, control, |i, input, control| {
            let start = Instant::now();
            let (logits, tape) = net.suffix_forward("input", &input.pixels)?;
            let prediction = classifier::predict(bundle, &logits, target)?;
            let dx = net.suffix_backward(&tape, &one_hot(net.num_classes, prediction.target.index, &logits)?)?;
            let (w, h) = (input.pre.width, input.pre.height);
            if !crate::numerics::all_finite(&dx)? {
                return Err(Error::Numerical("the gradient contains NaN or infinity".into()));
            }
            let map = dx.abs()?.max(1)?.flatten_all()?.to_vec1::<f32>()?;
            control.report(i as u32 + 1, images.len() as u32)?;
            Ok(BaselineExplanation {
                method: "saliency",
                maps: vec![("saliency".into(), "abs_gradient".into(), Heatmap::new(w, h, map)?)],
                prediction,
                summary: Default::default(),
                image: input.pre.image,
                source_region: input.pre.source_region,
                config: serde_json::to_value(&self.config)?,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            })
        })
    }
}
