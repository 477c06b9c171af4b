//! Baselines in the same result format and for the same target as the bottleneck methods:
//! Grad-CAM, gradient saliency, Integrated Gradients and occlusion. Each is a plain type with
//! a serde config (defaults as their papers or the most used implementation) and an
//! `explain_batch` over images.

pub mod gradcam;
pub mod integrated_gradients;
pub mod occlusion;
pub mod saliency;

pub use gradcam::{GradCam, GradCamConfig, GradCamExplanation};
pub use integrated_gradients::{IntegratedGradients, IntegratedGradientsConfig};
pub use occlusion::{Occlusion, OcclusionConfig};
pub use saliency::{Saliency, SaliencyConfig};

use crate::explain::classifier::Prediction;
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;

/// The result of a baseline for one image: its maps (`maps[0]` the main one), the prediction,
/// summary numbers (e.g. IG's completeness gap) and the settings.
#[derive(Clone, Debug)]
pub struct BaselineExplanation {
    pub method: &'static str,
    /// `(name, units, map)`.
    pub maps: Vec<(String, String, Heatmap)>,
    pub prediction: Prediction,
    pub summary: serde_json::Map<String, serde_json::Value>,
    pub image: RgbImage,
    pub source_region: [f32; 4],
    pub config: serde_json::Value,
    pub elapsed_ms: f64,
}
