//! Models with taps: each exposes its forward pass in stages so a method can run the frozen
//! prefix once and repeat only the suffix.

pub mod clip;
pub mod cnn;
pub mod mlp;
pub mod pipnet;
pub mod transformer;
pub mod weights;

use crate::error::{Error, Result};
use candle_core::Device;
use std::path::Path;

/// Any model ibex can explain. Immutable once loaded; share it across threads behind an `Arc`.
// loaded once and shared behind an `Arc`: the variants' size difference costs nothing
#[allow(clippy::large_enum_variant)]
pub enum Model {
    /// A CLIP dual encoder with its tokenizer and preprocessing.
    Clip(clip::ClipBundle),
    /// A convolutional image classifier (EfficientNet-Lite, ResNet, ConvNeXt) with labels and preprocessing.
    Classifier(cnn::ClassifierBundle),
    /// A PIP-Net prototype-part classifier.
    PipNet(pipnet::PipNetBundle),
}

impl Model {
    /// Loads a model directory. `kind` is `"clip"` (any dual encoder: HF CLIP, open_clip,
    /// SigLIP, BiomedCLIP), one family (`"open_clip"`, `"siglip"`, `"biomedclip"`),
    /// `"efficientnet_lite"`, … or `None`/`"auto"` to detect it from `config.json` /
    /// `open_clip_config.json` (or, for classifiers, the tensor names).
    pub fn load(kind: Option<&str>, dir: &Path, device: &Device) -> Result<Model> {
        let kind = match kind.map(str::trim) {
            None | Some("") | Some("auto") => detect_kind(dir)?,
            Some(k) => k.to_ascii_lowercase(),
        };
        match kind.as_str() {
            "clip" | "open_clip" | "siglip" | "biomedclip" => {
                let b = clip::ClipBundle::load(dir, device)?;
                let family = b.model.config.family.kind();
                if kind != "clip" && kind != family {
                    return Err(Error::invalid(format!(
                        "{} holds a {family} model, not {kind} (kind \"clip\" or \"auto\" loads any dual encoder)",
                        dir.display()
                    )));
                }
                log::info!(
                    "loaded {} model {} ({} vision / {} text layers, {}x{} patch grid) on {}",
                    b.model.config.family.display_name(),
                    dir.display(),
                    b.model.vision.depth(),
                    b.model.text.depth(),
                    b.model.config.vision.grid(),
                    b.model.config.vision.grid(),
                    crate::device::device_name(device)
                );
                Ok(Model::Clip(b))
            }
            "classifier" => {
                let b = cnn::ClassifierBundle::load(dir, None, device)?;
                log::info!(
                    "loaded {} classifier {} ({} classes)",
                    b.architecture.kind(),
                    dir.display(),
                    b.network.num_classes
                );
                Ok(Model::Classifier(b))
            }
            "pipnet" => {
                let b = pipnet::PipNetBundle::load(dir, device)?;
                log::info!(
                    "loaded PIP-Net {} ({} prototypes, {} classes)",
                    dir.display(),
                    b.model.prototypes(),
                    b.model.classes()
                );
                Ok(Model::PipNet(b))
            }
            other => match cnn::Architecture::from_kind(other) {
                Some(a) => {
                    let b = cnn::ClassifierBundle::load(dir, Some(a), device)?;
                    log::info!("loaded {} classifier {} ({} classes)", a.kind(), dir.display(), b.network.num_classes);
                    Ok(Model::Classifier(b))
                }
                None => Err(Error::Unsupported(format!("model kind '{other}' (this version supports: {KINDS})"))),
            },
        }
    }

    /// The model kind as a string (`"clip"`, `"open_clip"`, `"siglip"`, `"biomedclip"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Clip(b) => b.model.config.family.kind(),
            Model::Classifier(b) => b.architecture.kind(),
            Model::PipNet(_) => "pipnet",
        }
    }
}

/// The model kinds `Model::load` accepts.
pub const KINDS: &str = "clip, open_clip, siglip, biomedclip, efficientnet_lite, resnet, convnext, pipnet, auto";

fn detect_kind(dir: &Path) -> Result<String> {
    if clip::is_open_clip_dir(dir) {
        return Ok("clip".into());
    }
    let cfg = dir.join("config.json");
    if !cfg.is_file() && dir.is_dir() {
        // a bare classifier checkpoint: recognised from its tensor names
        return Ok("classifier".into());
    }
    let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&cfg, format!("not valid JSON ({e})")))?;
    if pipnet::is_pipnet_config(&v) {
        return Ok("pipnet".into());
    }
    match v.get("model_type").and_then(|t| t.as_str()) {
        Some("clip") | Some("siglip") => Ok("clip".into()),
        _ if cnn::Architecture::detect(&v, None).is_some() => Ok("classifier".into()),
        Some(t) => {
            Err(Error::Unsupported(format!("{}: model_type '{t}' (this version supports: {KINDS})", cfg.display())))
        }
        None => Ok("classifier".into()),
    }
}
