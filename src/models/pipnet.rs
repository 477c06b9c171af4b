//! PIP-Net (Nauta, Schlötterer, van Keulen & Seifert, "PIP-Net: Patch-Based Intuitive Prototypes
//! for Interpretable Image Classification", CVPR 2023) as published in `M-Nauta/PIPNet`.
//!
//! A backbone's feature map `f [B, D, H, W]` (D = channels, no add-on layer) becomes prototype
//! presences by a softmax over the channels at every position, `z = softmax_D(f)`, and a max
//! over positions, `p = max_{H,W} z ∈ [0, 1]^D`. A non-negative scoring sheet gives the class
//! scores `o = p · relu(W)ᵀ` (`W [K, D]`, no bias). At inference presences below 0.1 are set
//! to 0 first, and a prediction whose every score is 0 abstains ("not seen before").
//!
//! Backbones: torchvision ConvNeXt with PIP-Net's stride rule (every stride-2 downsampling
//! convolution with more input channels than a threshold runs at stride 1: `convnext_tiny_26`
//! has threshold 24 → a 26×26 grid at 224 px, `convnext_tiny_13` 48 → 13×13). The weights are
//! the official `state_dict` (`_net.features.*`, `_classification.weight`, the normalisation
//! multiplier; a `torch.save` file with `model_state_dict` and `module.` prefixes loads as is).
//! ResNet backbones (torchvision names, any depth and width) run `layer3` and `layer4` at stride
//! 1. The backbone reuses [`super::cnn`]'s layers and their written-out backward passes.

use super::cnn::{convnext, resnet, Network};
use super::weights::Weights;
use crate::error::{Error, Result};
use candle_core::{Tensor, D};

/// The inference clamp: presences below this count as absent.
pub const PRESENCE_CLAMP: f32 = 0.1;

/// A PIP-Net: backbone, prototypes = its channels, scoring sheet.
pub struct PipNet {
    /// The backbone's feature stages (`features.0` … `features.7`).
    pub backbone: Network,
    /// The scoring sheet `W [K, D]` as stored (the model uses `relu(W)`).
    pub weight: Tensor,
    /// `_classification.normalization_multiplier` (used by the training losses).
    pub multiplier: f32,
}

/// One forward pass.
pub struct PipNetOutput {
    /// Backbone features `[B, D, H, W]`.
    pub features: Tensor,
    /// `softmax_D(f)` `[B, D, H, W]`.
    pub z: Tensor,
    /// Presences `[B, D]`.
    pub p: Tensor,
    /// Presences with the inference clamp.
    pub p_clamped: Tensor,
    /// Scores `[B, K]` without and with the clamp.
    pub o: Tensor,
    pub o_clamped: Tensor,
}

impl PipNet {
    /// A ConvNeXt PIP-Net from its state dict with stride threshold `threshold`.
    pub fn convnext(w: &Weights, threshold: usize) -> Result<Self> {
        let net = w.scoped("_net.");
        if !net.contains("features.0.0.weight") {
            return Err(Error::format(
                w.path(),
                "missing tensor '_net.features.0.0.weight': not a PIP-Net with a torchvision ConvNeXt backbone",
            ));
        }
        let (stages, d) = convnext::features(&net, Some(threshold))?;
        Self::with_backbone(w, stages, d)
    }

    /// A ResNet PIP-Net (`_net.conv1`, `_net.layer1` …) with PIP-Net's strides: `layer3` and
    /// `layer4` at stride 1 (a 28×28 grid at 224 px).
    pub fn resnet(w: &Weights) -> Result<Self> {
        let net = w.scoped("_net.");
        if !net.contains("conv1.weight") {
            return Err(Error::format(
                w.path(),
                "missing tensor '_net.conv1.weight': not a PIP-Net with a torchvision ResNet backbone",
            ));
        }
        let (stages, d) = resnet::features(&net, [1, 2, 1, 1])?;
        Self::with_backbone(w, stages, d)
    }

    fn with_backbone(w: &Weights, stages: super::cnn::network::Stages, d: usize) -> Result<Self> {
        let backbone = Network::new(stages, d)?;
        let weight = match w.shape("_classification.weight") {
            Some(&[k, dd]) if dd == d && k > 0 => w.get("_classification.weight", &[k, d])?,
            Some(s) => {
                return Err(Error::format(
                    w.path(),
                    format!("tensor '_classification.weight' has shape {s:?}, expected [classes, {d}]"),
                ))
            }
            None => return Err(Error::format(w.path(), "missing tensor '_classification.weight'")),
        };
        let multiplier = ["_classification.normalization_multiplier", "_multiplier"]
            .iter()
            .find(|n| w.contains(n))
            .ok_or_else(|| Error::format(w.path(), "missing tensor '_classification.normalization_multiplier'"))
            .and_then(|n| Ok(w.get(n, &[1])?.to_vec1::<f32>()?[0]))?;
        Ok(PipNet { backbone, weight, multiplier })
    }

    /// Number of prototypes `D`.
    pub fn prototypes(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Number of classes `K`.
    pub fn classes(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The forward pass on normalised images `[B, 3, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<PipNetOutput> {
        let features = self.backbone.forward(x)?;
        let z = candle_nn::ops::softmax(&features, 1)?;
        let p = z.flatten_from(2)?.max(D::Minus1)?;
        let p_clamped = (&p * p.ge(PRESENCE_CLAMP)?.to_dtype(p.dtype())?)?;
        let w = self.weight.relu()?.t()?;
        let o = p.matmul(&w)?;
        let o_clamped = p_clamped.matmul(&w)?;
        Ok(PipNetOutput { features, z, p, p_clamped, o, o_clamped })
    }
}

/// A PIP-Net model directory: `config.json`, the weights (`model.safetensors`, or one checkpoint
/// file — the official `torch.save` file loads as is when named `*.pth`), class names.
///
/// `config.json` keys (the fixture's `fmnist/config.json` is such a file): `backbone` — either
/// `{"type": "…convnext…", "stride_threshold": N}` or `{"type": "…resnet…"}`; `image_size`
/// (square input side); `patchsize` (the side of the image patch a prototype is shown with,
/// default 32); `mean` / `std` (default ImageNet's); `class_names` (or `classes.txt`).
pub struct PipNetBundle {
    pub model: PipNet,
    pub labels: Vec<String>,
    pub preprocessor: crate::imaging::preprocess::ClipPreprocessor,
    pub image_size: u32,
    pub patchsize: u32,
    pub dir: std::path::PathBuf,
    pub device: candle_core::Device,
}

/// Whether `config` describes a PIP-Net.
pub fn is_pipnet_config(config: &serde_json::Value) -> bool {
    let s = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or("").to_ascii_lowercase();
    s("model").contains("pip-net") || s("model_type") == "pipnet" || s("architecture") == "pipnet"
}

impl PipNetBundle {
    pub fn load(dir: &std::path::Path, device: &candle_core::Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&cfg_path, format!("not valid JSON ({e})")))?;
        let w = Weights::load(&super::cnn::weights_file(dir)?, device)?;
        let backbone = cfg.get("backbone").cloned().unwrap_or_default();
        let kind = backbone.get("type").and_then(|t| t.as_str()).unwrap_or("").to_ascii_lowercase();
        let model = if kind.contains("convnext") {
            let t = backbone
                .get("stride_threshold")
                .and_then(|t| t.as_u64())
                .ok_or_else(|| Error::format(&cfg_path, "a ConvNeXt PIP-Net needs 'backbone.stride_threshold'"))?;
            PipNet::convnext(&w, t as usize)?
        } else if kind.contains("resnet") {
            PipNet::resnet(&w)?
        } else {
            return Err(Error::format(&cfg_path, "'backbone.type' must name a ConvNeXt or a ResNet"));
        };
        let image_size = cfg.get("image_size").and_then(|v| v.as_u64()).unwrap_or(224) as u32;
        if !(16..=4096).contains(&image_size) {
            return Err(Error::format(&cfg_path, format!("image_size {image_size} is out of range")));
        }
        let patchsize = cfg.get("patchsize").and_then(|v| v.as_u64()).unwrap_or(32).clamp(1, image_size as u64) as u32;
        let triple = |k: &str, d: [f32; 3]| -> Result<[f32; 3]> {
            match cfg.get(k) {
                None => Ok(d),
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|_| Error::format(&cfg_path, format!("'{k}' must be three numbers"))),
            }
        };
        let mut pre = crate::imaging::preprocess::ClipPreprocessor::for_image_size(image_size);
        pre.mean = triple("mean", [0.485, 0.456, 0.406])?;
        pre.std = triple("std", [0.229, 0.224, 0.225])?;
        let labels: Vec<String> = match cfg.get("class_names") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| Error::format(&cfg_path, "'class_names' must be a list of strings"))?,
            None => (0..model.classes()).map(|i| format!("class {i}")).collect(),
        };
        if labels.len() != model.classes() {
            return Err(Error::format(
                &cfg_path,
                format!("{} class names for a model with {} classes", labels.len(), model.classes()),
            ));
        }
        Ok(PipNetBundle {
            model,
            labels,
            preprocessor: pre,
            image_size,
            patchsize,
            dir: dir.to_path_buf(),
            device: device.clone(),
        })
    }
}

/// Writes a PIP-Net model directory from an official checkpoint (a `torch.save` file with
/// `model_state_dict` and `module.` prefixes, or safetensors) and its `config.json`: the
/// weights as `model.safetensors` (written through a temporary file), the config as given. The
/// model is built once first, so a checkpoint that does not fit the config is refused with the
/// tensor named.
pub fn convert(checkpoint: &std::path::Path, config: &std::path::Path, out: &std::path::Path) -> Result<PipNetBundle> {
    let text = std::fs::read_to_string(config).map_err(|e| Error::io(config, e))?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(config, format!("not valid JSON ({e})")))?;
    if !is_pipnet_config(&cfg) {
        cfg["architecture"] = serde_json::json!("pipnet");
    }
    let w = Weights::load(checkpoint, &candle_core::Device::Cpu)?;
    let keep: std::collections::HashMap<String, Tensor> = w
        .names()
        .filter(|n| {
            n.starts_with("_net.")
                || n.starts_with("_classification.")
                || *n == "_multiplier"
                || n.starts_with("_add_on.")
        })
        .map(|n| Ok((n.to_string(), w.get(n, w.shape(n).unwrap_or(&[]))?)))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tmp = out.join("model.safetensors.partial");
    Weights::from_tensors(keep).save(&tmp)?;
    std::fs::rename(&tmp, out.join("model.safetensors")).map_err(|e| Error::io(out, e))?;
    let cfg_out = out.join("config.json");
    std::fs::write(&cfg_out, serde_json::to_string_pretty(&cfg)?).map_err(|e| Error::io(&cfg_out, e))?;
    PipNetBundle::load(out, &candle_core::Device::Cpu)
}
