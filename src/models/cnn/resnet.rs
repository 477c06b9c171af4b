//! ResNet (He et al. 2016) with torchvision's tensor names (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer2.0.downsample.0/1`, `fc`), BasicBlock and Bottleneck (torchvision ≥ 0.3: the stride
//! on the 3×3 convolution).
//!
//! The architecture is read from the state dict alone: the block type (a `conv3` means
//! Bottleneck), the number of blocks per stage, every width and the number of classes, so
//! ResNet-18/34/50/101/152 and narrow or shallow variants load with no configuration. Stage
//! strides are torchvision's `[1, 2, 2, 2]` unless the config gives `strides` (PIP-Net keeps
//! `layer3` and `layer4` at stride 1). Taps: `stem` (after the max-pool), `layer1` … `layer4`,
//! `pooled`, then the logits.

use super::layers::{
    Activation, BatchNorm, Conv2d, GlobalAvgPool, Layer, Linear, MaxPool2d, Padding, Residual, Sequence,
};
use super::network::{Network, Stages};
use crate::error::{Error, Result};
use crate::models::weights::Weights;

/// Batch-norm epsilon of torchvision models.
const BN_EPS: f64 = 1e-5;

fn shape4(w: &Weights, name: &str) -> Result<[usize; 4]> {
    match w.shape(name) {
        Some(&[a, b, c, d]) => Ok([a, b, c, d]),
        Some(s) => Err(Error::format(w.path(), format!("tensor '{name}' has shape {s:?}, expected 4 dimensions"))),
        None => Err(Error::format(w.path(), format!("missing tensor '{name}' (not a torchvision ResNet?)"))),
    }
}

/// Convolution `name` (shape from the weights, padding k/2) folded with batch norm `bn`.
fn conv_bn(w: &Weights, name: &str, bn: &str, cin: usize, stride: usize) -> Result<Conv2d> {
    let [cout, ci, k, k2] = shape4(w, &format!("{name}.weight"))?;
    if ci != cin || k != k2 {
        return Err(Error::format(
            w.path(),
            format!("tensor '{name}.weight' has shape [{cout}, {ci}, {k}, {k2}], expected {cin} input channels and a square kernel"),
        ));
    }
    let bias = w.contains(&format!("{name}.bias"));
    Conv2d::load(w, name, (cin, cout, k), stride, Padding::Fixed(k / 2), 1, bias)?
        .fold(&BatchNorm::load(w, bn, cout, BN_EPS)?)
}

/// The feature stages `stem`, `layer1` … `layer4` and the final width; `strides` are the four
/// stages' strides (torchvision: `[1, 2, 2, 2]`; PIP-Net: `[1, 2, 1, 1]`).
pub fn features(w: &Weights, strides: [usize; 4]) -> Result<(Stages, usize)> {
    let mut stages: Stages = Vec::new();
    let stem = conv_bn(w, "conv1", "bn1", 3, 2)?;
    let mut cin = stem.weight.dim(0)?;
    stages.push((
        "stem".into(),
        Box::new(Sequence(vec![
            Box::new(stem),
            Box::new(Activation::Relu),
            Box::new(MaxPool2d { kernel: 3, stride: 2, padding: 1 }),
        ])),
    ));
    let bottleneck = w.contains("layer1.0.conv3.weight");
    for (li, &stride) in strides.iter().enumerate() {
        let layer = format!("layer{}", li + 1);
        let mut blocks: Vec<Box<dyn Layer>> = Vec::new();
        let mut b = 0;
        while w.contains(&format!("{layer}.{b}.conv1.weight")) {
            let p = format!("{layer}.{b}");
            let s = if b == 0 { stride } else { 1 };
            let mut body: Vec<Box<dyn Layer>> = Vec::new();
            let c1 = conv_bn(w, &format!("{p}.conv1"), &format!("{p}.bn1"), cin, if bottleneck { 1 } else { s })?;
            let mut c = c1.weight.dim(0)?;
            body.push(Box::new(c1));
            body.push(Box::new(Activation::Relu));
            let c2 = conv_bn(w, &format!("{p}.conv2"), &format!("{p}.bn2"), c, if bottleneck { s } else { 1 })?;
            c = c2.weight.dim(0)?;
            body.push(Box::new(c2));
            if bottleneck {
                body.push(Box::new(Activation::Relu));
                let c3 = conv_bn(w, &format!("{p}.conv3"), &format!("{p}.bn3"), c, 1)?;
                c = c3.weight.dim(0)?;
                body.push(Box::new(c3));
            }
            let skip = if w.contains(&format!("{p}.downsample.0.weight")) {
                let d = conv_bn(w, &format!("{p}.downsample.0"), &format!("{p}.downsample.1"), cin, s)?;
                if d.weight.dim(0)? != c {
                    return Err(Error::format(
                        w.path(),
                        format!("'{p}.downsample.0.weight' does not give {c} channels"),
                    ));
                }
                Some(Sequence(vec![Box::new(d)]))
            } else if s != 1 || cin != c {
                return Err(Error::format(
                    w.path(),
                    format!("missing tensor '{p}.downsample.0.weight': block changes {cin} -> {c} channels or strides"),
                ));
            } else {
                None
            };
            blocks.push(Box::new(Residual { body: Sequence(body), skip, post: Some(Activation::Relu) }));
            cin = c;
            b += 1;
        }
        if b == 0 {
            return Err(Error::format(
                w.path(),
                format!("missing tensor '{layer}.0.conv1.weight' (not a torchvision ResNet?)"),
            ));
        }
        stages.push((layer, Box::new(Sequence(blocks))));
    }
    Ok((stages, cin))
}

/// Builds the network; `strides` are the four stages' strides (torchvision: `[1, 2, 2, 2]`).
pub fn build(w: &Weights, strides: [usize; 4]) -> Result<Network> {
    let (mut stages, cin) = features(w, strides)?;
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    let classes = match w.shape("fc.weight") {
        Some(&[k, c]) if c == cin => k,
        Some(s) => {
            return Err(Error::format(
                w.path(),
                format!("tensor 'fc.weight' has shape {s:?}, expected [classes, {cin}]"),
            ))
        }
        None => return Err(Error::format(w.path(), "missing tensor 'fc.weight'")),
    };
    stages.push(("logits".into(), Box::new(Linear::load(w, "fc", cin, classes, true)?)));
    Network::new(stages, classes)
}

/// Stage strides from a config's `strides` (four numbers), else torchvision's.
pub fn strides_from_config(cfg: &serde_json::Value) -> Result<[usize; 4]> {
    match cfg.get("strides") {
        None => Ok([1, 2, 2, 2]),
        Some(v) => {
            let s: Vec<usize> = serde_json::from_value(v.clone())
                .map_err(|_| Error::invalid(format!("'strides' must be four positive integers, got {v}")))?;
            match s.as_slice() {
                &[a, b, c, d] if s.iter().all(|&x| (1..=4).contains(&x)) => Ok([a, b, c, d]),
                _ => Err(Error::invalid(format!("'strides' must be four integers in 1..=4, got {v}"))),
            }
        }
    }
}
