//! Dual encoders for M2IB — HF `CLIPModel`, open_clip (LAION), SigLIP and BiomedCLIP — one model
//! structure with taps ([`ClipModel`]), their tokenizers and preprocessing, and directory
//! loading with family detection.

pub mod config;
pub mod model;
pub mod openclip;
pub mod random;
pub mod siglip;
pub mod spiece;
pub mod tokenizer;

pub use config::{ClipConfig, Family};
pub use model::{ClipModel, Modality, Tower};
pub use tokenizer::{ClipTokenizer, TextClean, Tokens};

use crate::error::{Error, Result};
use crate::imaging::preprocess::{ClipPreprocessor, CLIP_MEAN, CLIP_STD};
use crate::imaging::resize::Filter;
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
    /// How `ibex tune` chose the `m2ib` settings (score, data), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<serde_json::Value>,
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
    /// Loads a dual-encoder directory, detecting the family:
    /// - `open_clip_config.json` + `open_clip_model.safetensors` / `open_clip_pytorch_model.bin`:
    ///   open_clip (OpenAI-style towers, or timm ViT + BERT as in BiomedCLIP);
    /// - `config.json` with `model_type: "siglip"` + `model.safetensors`: SigLIP;
    /// - `config.json` with `model_type: "clip"` + `model.safetensors` / `pytorch_model.bin`:
    ///   HF CLIP.
    ///
    /// The tokenizer is `tokenizer.json` where present, else `spiece.model` (SigLIP) or
    /// `vocab.txt` (BERT); it must fit the model's vocabulary. Preprocessing comes from
    /// `preprocessor_config.json` or open_clip's `preprocess_cfg`, else the family's default.
    /// An optional `ibex.json` recommends M2IB settings (see [`RecommendedSettings`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("{} is not a model directory", dir.display())));
        }
        let (model, tokenizer, preprocessor) = if is_open_clip_dir(dir) {
            load_open_clip(dir, device)?
        } else {
            let cfg_path = dir.join("config.json");
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::format(&cfg_path, format!("not valid JSON ({e})")))?;
            match v.get("model_type").and_then(|t| t.as_str()) {
                Some("siglip") => load_siglip(dir, &text, device)?,
                None | Some("clip") => load_hf_clip(dir, device)?,
                Some(other) => {
                    return Err(Error::Unsupported(format!(
                        "{}: model_type '{other}' is not a dual-encoder family ibex reads (clip, siglip; open_clip \
                         directories have an open_clip_config.json)",
                        cfg_path.display()
                    )))
                }
            }
        };
        check_vocab(&model, &tokenizer, dir)?;
        let s = model.config.vision.image_size as u32;
        // without a crop the input is square only for square images: the model checks each one
        let uncropped =
            !preprocessor.do_center_crop && preprocessor.resize_to.is_none() && preprocessor.shortest_edge == s;
        if preprocessor.output_size() != Some((s, s)) && !uncropped {
            return Err(Error::format(
                dir,
                format!(
                    "the image preprocessing makes {:?} inputs; the vision tower takes {s}x{s}",
                    preprocessor.output_size()
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

type Parts = (ClipModel, ClipTokenizer, ClipPreprocessor);

/// An open_clip checkpoint: its config with its weights, or its config alone (LAION
/// repositories hold both layouts; without open_clip weights the HF files are read).
pub fn is_open_clip_dir(dir: &Path) -> bool {
    dir.join("open_clip_config.json").is_file()
        && (openclip::WEIGHT_FILES.iter().any(|f| dir.join(f).is_file()) || !dir.join("config.json").is_file())
}

fn first_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NotFound(format!("{}: none of {} is there", dir.display(), names.join(", "))))
}

/// `preprocessor_config.json` over the family's `defaults`, or the defaults alone.
fn preprocessor_or(dir: &Path, defaults: ClipPreprocessor) -> Result<ClipPreprocessor> {
    let pp = dir.join("preprocessor_config.json");
    if pp.is_file() {
        ClipPreprocessor::from_file_with(&pp, defaults)
    } else {
        Ok(defaults)
    }
}

/// The tokenizer of a directory: `tokenizer.json`, else `spiece.model`, else `vocab.txt`.
fn tokenizer_for(dir: &Path, family: Family, max_len: usize, pad: Option<u32>) -> Result<ClipTokenizer> {
    let clean = match family {
        // open_clip cleans text (ftfy, HTML, whitespace) before its own and HF tokenizers
        Family::OpenClip | Family::BiomedClip => TextClean::OpenClip,
        Family::Siglip => TextClean::Siglip,
        Family::Clip => TextClean::None,
    };
    let json = dir.join("tokenizer.json");
    let spiece = dir.join("spiece.model");
    let vocab = dir.join("vocab.txt");
    let tok = if json.is_file() {
        ClipTokenizer::from_file(&json, max_len)?
    } else if spiece.is_file() {
        ClipTokenizer::from_spiece(&spiece, "</s>", max_len)?
    } else if vocab.is_file() {
        ClipTokenizer::from_wordpiece(&vocab, lowercase_setting(dir)?, max_len)?
    } else {
        return Err(Error::NotFound(format!(
            "{}: no tokenizer (tokenizer.json, spiece.model or vocab.txt)",
            dir.display()
        )));
    };
    Ok(tok.with_clean(clean).with_padding(pad))
}

/// `do_lower_case` from `tokenizer_config.json` (BERT's default, true, when absent).
fn lowercase_setting(dir: &Path) -> Result<bool> {
    let p = dir.join("tokenizer_config.json");
    if !p.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&p, format!("not valid JSON ({e})")))?;
    Ok(v.get("do_lower_case").and_then(|b| b.as_bool()).unwrap_or(true))
}

/// The tokenizer must produce the ids the model's token embedding has rows for (a table
/// padded by fewer than 128 spare rows is accepted).
fn check_vocab(model: &ClipModel, tok: &ClipTokenizer, dir: &Path) -> Result<()> {
    let (t, m) = (tok.vocab_size(), model.config.text.vocab_size);
    if t > m || m - t >= 128 {
        return Err(Error::format(
            dir,
            format!(
                "the tokenizer has {t} ids but the model's token embedding has {m} rows: the tokenizer belongs to \
                 another model"
            ),
        ));
    }
    Ok(())
}

fn load_hf_clip(dir: &Path, device: &Device) -> Result<Parts> {
    let config = ClipConfig::from_file(&dir.join("config.json"))?;
    let weights = Weights::load(&first_file(dir, &["model.safetensors", "pytorch_model.bin"])?, device)?;
    let model = ClipModel::from_weights(config, &weights, device)?;
    let tokenizer = tokenizer_for(dir, Family::Clip, model.config.text.max_position_embeddings, None)?;
    // CLIPImageProcessor's defaults for missing keys; the model's size without a file
    let pp = dir.join("preprocessor_config.json");
    let pp = if pp.is_file() {
        ClipPreprocessor::from_file(&pp)?
    } else {
        ClipPreprocessor::for_image_size(model.config.vision.image_size as u32)
    };
    Ok((model, tokenizer, pp))
}

fn load_siglip(dir: &Path, json: &str, device: &Device) -> Result<Parts> {
    let cfg_path = dir.join("config.json");
    let (config, pad) = siglip::config_from_json(json).map_err(|e| match e {
        Error::InvalidArgument(m) => Error::format(&cfg_path, m),
        e => e,
    })?;
    let weights = Weights::load(&first_file(dir, &["model.safetensors", "pytorch_model.bin"])?, device)?;
    let model = siglip::from_weights(config, &weights, device)?;
    let tokenizer = tokenizer_for(dir, Family::Siglip, model.config.text.max_position_embeddings, Some(pad))?;
    let size = model.config.vision.image_size as u32;
    let pp = preprocessor_or(dir, ClipPreprocessor::fixed(size, [0.5; 3], [0.5; 3], Filter::Bicubic))?;
    Ok((model, tokenizer, pp))
}

fn load_open_clip(dir: &Path, device: &Device) -> Result<Parts> {
    let cfg = openclip::OpenClipConfig::from_file(&dir.join("open_clip_config.json"))?;
    let mut weights = Weights::load(&first_file(dir, &openclip::WEIGHT_FILES)?, device)?;
    let model = openclip::load_model(&cfg, dir, &mut weights, device)?;
    let tokenizer = tokenizer_for(dir, model.config.family, model.config.text.max_position_embeddings, None)?;
    let size = model.config.vision.image_size as u32;
    let mut pp = ClipPreprocessor::for_image_size(size);
    if !cfg.check_preprocess()? {
        pp.resample = Filter::Bilinear;
    }
    let (mean, std) = cfg.mean_std()?.unwrap_or((CLIP_MEAN, CLIP_STD));
    pp.mean = mean;
    pp.std = std;
    Ok((model, tokenizer, pp))
}
