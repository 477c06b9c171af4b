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

/// See [`PipNet::sheet_size`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SheetSize {
    /// The relevant prototypes, ascending (their count is the official "global size").
    pub relevant: Vec<usize>,
    pub relevant_weights: usize,
    pub sparsity: f64,
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
            .and_then(|n| Ok(w.get(n, &[1])?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?[0]))?;
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

    /// The scoring sheet's size as the official evaluation defines it: the relevant prototypes
    /// (`max_c W_cd > 1e-3`, the "global size"), the relevant weights (`W > 1e-3`) and the
    /// sparsity `1 − relevant weights / all weights`.
    pub fn sheet_size(&self) -> Result<SheetSize> {
        let w = self.weight.to_vec2::<f32>()?;
        let relevant_weights = w.iter().flatten().filter(|&&v| v > 1e-3).count();
        let d = self.prototypes();
        let relevant: Vec<usize> = (0..d).filter(|&k| w.iter().any(|row| row[k] > 1e-3)).collect();
        let total = (d * self.classes()) as f64;
        Ok(SheetSize { relevant, relevant_weights, sparsity: 1.0 - relevant_weights as f64 / total })
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
    /// Per-class OOD thresholds on the un-clamped score (`ibex pipnet thresholds`), if set.
    pub ood_thresholds: Option<Vec<f32>>,
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
        let ood_thresholds = ood_thresholds(&cfg, model.classes()).map_err(|m| Error::format(&cfg_path, m))?;
        let mut pre = crate::imaging::preprocess::ClipPreprocessor::for_image_size(image_size);
        // torchvision's Resize((S, S)): PIL bilinear, no crop
        pre.resample = crate::imaging::resize::Filter::Bilinear;
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
            ood_thresholds,
            labels,
            preprocessor: pre,
            image_size,
            patchsize,
            dir: dir.to_path_buf(),
            device: device.clone(),
        })
    }

    /// Whether an image with un-clamped scores `o` is out of distribution: its best class's
    /// score is below that class's threshold (the official `eval_ood` rule). `None` without
    /// thresholds.
    pub fn is_ood(&self, o: &[f32]) -> Option<bool> {
        let t = self.ood_thresholds.as_ref()?;
        let best = (0..o.len()).max_by(|&a, &b| o[a].total_cmp(&o[b]).then(b.cmp(&a)))?;
        Some(o[best] < t[best])
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

/// The OOD thresholds of a config: `ood_thresholds` (a list, one per class) or the official
/// export's `ood_fpr95_on_checkpoint.class_thresholds` (`{"0": t0, …}`).
fn ood_thresholds(cfg: &serde_json::Value, classes: usize) -> std::result::Result<Option<Vec<f32>>, String> {
    let list: Option<Vec<f32>> = if let Some(v) = cfg.get("ood_thresholds") {
        Some(serde_json::from_value(v.clone()).map_err(|_| "'ood_thresholds' must be a list of numbers".to_string())?)
    } else if let Some(m) = cfg.pointer("/ood_fpr95_on_checkpoint/class_thresholds").and_then(|m| m.as_object()) {
        let mut v = vec![f32::NAN; classes];
        for (k, t) in m {
            let (Ok(i), Some(t)) = (k.parse::<usize>(), t.as_f64()) else {
                return Err(format!("bad class threshold '{k}'"));
            };
            if i < classes {
                v[i] = t as f32;
            }
        }
        Some(v)
    } else {
        None
    };
    match list {
        Some(v) if v.len() != classes || v.iter().any(|t| !t.is_finite()) => {
            Err(format!("the OOD thresholds must be {classes} finite numbers"))
        }
        other => Ok(other),
    }
}

/// Per-class OOD thresholds by the official FPR95 procedure from the un-clamped scores `o` of
/// in-distribution images: for each predicted class the `100 − percent` percentile of its
/// images' best score (numpy's linear interpolation), then all thresholds × 0.999 until at
/// least `percent` % of the images are accepted. Classes never predicted get the lowest
/// threshold found.
pub fn fpr_thresholds(scores: &[Vec<f32>], classes: usize, percent: f64) -> Result<Vec<f32>> {
    if scores.is_empty() || !(0.0..=100.0).contains(&percent) {
        return Err(Error::invalid("thresholds need in-distribution images and a percent in 0..=100"));
    }
    let best = |o: &[f32]| (0..o.len()).max_by(|&a, &b| o[a].total_cmp(&o[b]).then(b.cmp(&a))).unwrap_or(0);
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); classes];
    for o in scores {
        let c = best(o);
        per[c].push(o[c] as f64);
    }
    let q = (100.0 - percent) / 100.0;
    let mut t: Vec<f64> = per
        .iter_mut()
        .map(|v| {
            if v.is_empty() {
                return f64::NAN;
            }
            v.sort_by(f64::total_cmp);
            let pos = q * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        })
        .collect();
    let fallback = t.iter().copied().filter(|x| x.is_finite()).fold(f64::INFINITY, f64::min);
    t.iter_mut().filter(|x| !x.is_finite()).for_each(|x| *x = fallback);
    let accepted = |t: &[f64]| scores.iter().filter(|o| o[best(o)] as f64 >= t[best(o)]).count() as f64;
    let need = percent / 100.0 * scores.len() as f64;
    for _ in 0..100_000 {
        if accepted(&t) >= need {
            break;
        }
        t.iter_mut().for_each(|x| *x *= 0.999);
    }
    Ok(t.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpr_thresholds_take_the_percentile_and_scale_until_enough_pass() {
        // class 0 wins with scores 1..=20, class 1 with 101..=110
        let mut scores: Vec<Vec<f32>> = (1..=20).map(|i| vec![i as f32, 0.0]).collect();
        scores.extend((101..=110).map(|i| vec![0.0, i as f32]));
        let t = fpr_thresholds(&scores, 2, 95.0).unwrap();
        // numpy: percentile([1..20], 5) = 1.95; percentile([101..110], 5) = 101.45. That accepts
        // 28 of 30 (< 95 %), so both are scaled by 0.999^k with the smallest k that lets 101
        // pass: k = 5 (101.45 · 0.999^5 = 100.94)
        let k = 5;
        assert!((t[0] as f64 - 1.95 * 0.999f64.powi(k)).abs() < 1e-5, "{t:?}");
        assert!((t[1] as f64 - 101.45 * 0.999f64.powi(k)).abs() < 1e-4, "{t:?}");
        assert!(101.45 * 0.999f64.powi(k - 1) > 101.0);
        assert!(fpr_thresholds(&[], 2, 95.0).is_err());
    }
}
