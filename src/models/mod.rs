//! Models with taps: each exposes its forward pass in stages so a method can run the frozen
//! prefix once and repeat only the suffix.

pub mod clip;
pub mod transformer;
pub mod weights;

use crate::error::{Error, Result};
use candle_core::Device;
use std::path::Path;

/// Any model ibex can explain. Immutable once loaded; share it across threads behind an `Arc`.
pub enum Model {
    /// A CLIP dual encoder with its tokenizer and preprocessing.
    Clip(clip::ClipBundle),
}

impl Model {
    /// Loads a model directory. `kind` is `"clip"`, or `None`/`"auto"` to detect it from
    /// `config.json`.
    pub fn load(kind: Option<&str>, dir: &Path, device: &Device) -> Result<Model> {
        let kind = match kind.map(str::trim) {
            None | Some("") | Some("auto") => detect_kind(dir)?,
            Some(k) => k.to_ascii_lowercase(),
        };
        match kind.as_str() {
            "clip" => {
                let b = clip::ClipBundle::load(dir, device)?;
                log::info!(
                    "loaded CLIP model {} ({} vision / {} text layers, {}x{} patch grid) on {}",
                    dir.display(),
                    b.model.vision.depth(),
                    b.model.text.depth(),
                    b.model.config.vision.grid(),
                    b.model.config.vision.grid(),
                    crate::device::device_name(device)
                );
                Ok(Model::Clip(b))
            }
            other => Err(Error::Unsupported(format!("model kind '{other}' (this version supports: clip)"))),
        }
    }

    /// The model kind as a string (`"clip"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Clip(_) => "clip",
        }
    }
}

fn detect_kind(dir: &Path) -> Result<String> {
    let cfg = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&cfg, format!("not valid JSON ({e})")))?;
    match v.get("model_type").and_then(|t| t.as_str()) {
        Some("clip") => Ok("clip".into()),
        Some(t) => {
            Err(Error::Unsupported(format!("{}: model_type '{t}' (this version supports: clip)", cfg.display())))
        }
        None => Err(Error::format(&cfg, "no model_type: pass the model kind explicitly")),
    }
}
