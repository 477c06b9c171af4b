//! CLIP (HF `CLIPModel`): configuration, tokenizer, model with taps, and directory loading.

pub mod config;
pub mod model;
pub mod random;
pub mod tokenizer;

pub use config::ClipConfig;
pub use model::{ClipModel, Modality, Tower};
pub use tokenizer::{ClipTokenizer, Tokens};

use crate::error::{Error, Result};
use crate::imaging::preprocess::ClipPreprocessor;
use crate::models::weights::Weights;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Settings a model directory may recommend for M2IB (from an optional `ibex.json`), e.g. a
/// layer and beta chosen for a shallow model. Explicit settings always win over these.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendedSettings {
    #[serde(default)]
    pub m2ib: Option<serde_json::Value>,
}

/// A CLIP model directory loaded for explanation: weights, tokenizer and preprocessing.
pub struct ClipBundle {
    pub model: ClipModel,
    pub tokenizer: ClipTokenizer,
    pub preprocessor: ClipPreprocessor,
    pub recommended: RecommendedSettings,
    pub dir: PathBuf,
}

impl ClipBundle {
    /// Loads an HF CLIP directory: `config.json`, `model.safetensors` (or `pytorch_model.bin`),
    /// `tokenizer.json`, and `preprocessor_config.json` (CLIP defaults if absent).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("{} is not a model directory", dir.display())));
        }
        let config = ClipConfig::from_file(&dir.join("config.json"))?;
        let weights_path =
            ["model.safetensors", "pytorch_model.bin"].iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(
                || Error::NotFound(format!("{}: neither model.safetensors nor pytorch_model.bin", dir.display())),
            )?;
        let weights = Weights::load(&weights_path, device)?;
        let model = ClipModel::from_weights(config, &weights, device)?;
        let tokenizer =
            ClipTokenizer::from_file(&dir.join("tokenizer.json"), model.config.text.max_position_embeddings)?;
        let pp = dir.join("preprocessor_config.json");
        let preprocessor = if pp.is_file() {
            ClipPreprocessor::from_file(&pp)?
        } else {
            ClipPreprocessor::for_image_size(model.config.vision.image_size as u32)
        };
        if preprocessor.crop_width as usize != model.config.vision.image_size
            || preprocessor.crop_height as usize != model.config.vision.image_size
        {
            return Err(Error::format(
                &pp,
                format!(
                    "crop size {}x{} does not match the vision tower's image_size {}",
                    preprocessor.crop_width, preprocessor.crop_height, model.config.vision.image_size
                ),
            ));
        }
        let rec = dir.join("ibex.json");
        let recommended = if rec.is_file() {
            let s = std::fs::read_to_string(&rec).map_err(|e| Error::io(&rec, e))?;
            serde_json::from_str(&s).map_err(|e| Error::format(&rec, e.to_string()))?
        } else {
            RecommendedSettings::default()
        };
        Ok(ClipBundle { model, tokenizer, preprocessor, recommended, dir: dir.to_path_buf() })
    }
}
