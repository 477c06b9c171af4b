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

    fn with_backbone(w: &Weights, stages: Vec<(String, Box<dyn super::cnn::layers::Layer>)>, d: usize) -> Result<Self> {
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
