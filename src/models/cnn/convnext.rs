//! ConvNeXt (Liu et al. 2022) with torchvision's tensor names: `features.0` (4×4/4 stem
//! convolution + LayerNorm2d), stages `features.1/3/5/7` of CNBlocks (depthwise 7×7, channel
//! LayerNorm, Linear ×4, GELU, Linear, layer scale, residual), downsampling `features.2/4/6`
//! (LayerNorm2d + 2×2/2 convolution), then average pooling, `classifier.0` (LayerNorm2d) and
//! `classifier.2` (Linear).
//!
//! Stage depths, widths and the number of classes come from the weights. The per-position
//! Linear layers are 1×1 convolutions. Taps: `features.0` … `features.7`, `pooled` (after the
//! classifier's LayerNorm: the embedding the last Linear reads), then the logits.

use super::layers::{
    Activation, Conv2d, GlobalAvgPool, Layer, LayerNorm2d, Linear, Padding, Residual, Scale, Sequence,
};
use super::network::{Network, Stages};
use crate::error::{Error, Result};
use crate::models::weights::Weights;

/// LayerNorm epsilon of torchvision's ConvNeXt.
const LN_EPS: f64 = 1e-6;

fn shape(w: &Weights, name: &str) -> Result<Vec<usize>> {
    w.shape(name)
        .map(<[usize]>::to_vec)
        .ok_or_else(|| Error::format(w.path(), format!("missing tensor '{name}' (not a torchvision ConvNeXt?)")))
}

fn conv(w: &Weights, name: &str, cin: usize, stride: usize, groups: usize) -> Result<Conv2d> {
    let s = shape(w, &format!("{name}.weight"))?;
    if s.len() != 4 || s[1] * groups != cin || s[2] != s[3] {
        return Err(Error::format(
            w.path(),
            format!("tensor '{name}.weight' has shape {s:?}, expected [_, {}, k, k]", cin / groups),
        ));
    }
    let k = s[2];
    let pad = if stride == 1 { k / 2 } else { 0 };
    Conv2d::load(w, name, (cin, s[0], k), stride, Padding::Fixed(pad), groups, true)
}

/// A Linear `name` applied at every position, as a 1×1 convolution.
fn pointwise(w: &Weights, name: &str, cin: usize) -> Result<Conv2d> {
    let s = shape(w, &format!("{name}.weight"))?;
    if s.len() != 2 || s[1] != cin {
        return Err(Error::format(w.path(), format!("tensor '{name}.weight' has shape {s:?}, expected [_, {cin}]")));
    }
    let weight = w.get(&format!("{name}.weight"), &s)?.reshape((s[0], cin, 1, 1))?;
    let bias = Some(w.get(&format!("{name}.bias"), &[s[0]])?);
    Ok(Conv2d { weight, bias, stride: 1, padding: Padding::Fixed(0), groups: 1 })
}

fn block(w: &Weights, p: &str, c: usize) -> Result<Residual> {
    let body = Sequence(vec![
        Box::new(conv(w, &format!("{p}.block.0"), c, 1, c)?),
        Box::new(LayerNorm2d::load(w, &format!("{p}.block.2"), c, LN_EPS)?),
        Box::new(pointwise(w, &format!("{p}.block.3"), c)?),
        Box::new(Activation::Gelu),
        Box::new(pointwise(w, &format!("{p}.block.5"), 4 * c)?),
        Box::new(Scale(w.get(&format!("{p}.layer_scale"), &[c, 1, 1])?.reshape((1, c, 1, 1))?)),
    ]);
    Ok(Residual { body, skip: None, post: None })
}

/// The tensor names of a block's parameters, in [`super::layers::Layer::params`] order.
fn block_names(p: &str) -> Vec<String> {
    ["block.0.weight", "block.0.bias", "block.2.weight", "block.2.bias", "block.3.weight", "block.3.bias"]
        .iter()
        .chain(&["block.5.weight", "block.5.bias", "layer_scale"])
        .map(|n| format!("{p}.{n}"))
        .collect()
}

/// The feature stages `features.0` … `features.7` and the final width. With
/// `stride_threshold` (PIP-Net's rule), every stride-2 downsampling convolution whose input has
/// more channels than the threshold runs at stride 1 (still unpadded, so a 2×2 kernel shrinks
/// the map by one).
pub fn features(w: &Weights, stride_threshold: Option<usize>) -> Result<(Stages, usize)> {
    features_named(w, stride_threshold).map(|(s, c, _)| (s, c))
}

/// [`features`] plus, per stage, the tensor names of its parameters in
/// [`super::layers::Layer::params`] order (what training updates and saves).
pub fn features_named(w: &Weights, stride_threshold: Option<usize>) -> Result<(Stages, usize, Vec<Vec<String>>)> {
    let mut stages: Stages = Vec::new();
    let mut names: Vec<Vec<String>> = Vec::new();
    let stem = conv(w, "features.0.0", 3, 4, 1)?;
    let mut c = stem.weight.dim(0)?;
    let pair = |p: &str| vec![format!("{p}.weight"), format!("{p}.bias")];
    names.push([pair("features.0.0"), pair("features.0.1")].concat());
    stages.push((
        "features.0".into(),
        Box::new(Sequence(vec![Box::new(stem), Box::new(LayerNorm2d::load(w, "features.0.1", c, LN_EPS)?)])),
    ));
    for f in 1..8 {
        let name = format!("features.{f}");
        if f % 2 == 1 {
            let mut blocks: Vec<Box<dyn Layer>> = Vec::new();
            let mut i = 0;
            let mut stage_names = Vec::new();
            while w.contains(&format!("{name}.{i}.block.0.weight")) {
                blocks.push(Box::new(block(w, &format!("{name}.{i}"), c)?));
                stage_names.extend(block_names(&format!("{name}.{i}")));
                i += 1;
            }
            if i == 0 {
                return Err(Error::format(
                    w.path(),
                    format!("missing tensor '{name}.0.block.0.weight' (not a torchvision ConvNeXt?)"),
                ));
            }
            stages.push((name, Box::new(Sequence(blocks))));
            names.push(stage_names);
        } else {
            let norm = LayerNorm2d::load(w, &format!("{name}.0"), c, LN_EPS)?;
            let mut down = conv(w, &format!("{name}.1"), c, 2, 1)?;
            if stride_threshold.is_some_and(|t| c > t) {
                down.stride = 1;
            }
            c = down.weight.dim(0)?;
            names.push([pair(&format!("{name}.0")), pair(&format!("{name}.1"))].concat());
            stages.push((name, Box::new(Sequence(vec![Box::new(norm), Box::new(down)]))));
        }
    }
    Ok((stages, c, names))
}

/// Builds the network from a torchvision ConvNeXt state dict.
pub fn build(w: &Weights) -> Result<Network> {
    let (mut stages, c) = features(w, None)?;
    let norm = LayerNorm2d::load(w, "classifier.0", c, LN_EPS)?;
    stages.push(("pooled".into(), Box::new(Sequence(vec![Box::new(GlobalAvgPool), Box::new(norm)]))));
    let classes = match w.shape("classifier.2.weight") {
        Some(&[k, ci]) if ci == c => k,
        Some(s) => {
            return Err(Error::format(
                w.path(),
                format!("tensor 'classifier.2.weight' has shape {s:?}, expected [classes, {c}]"),
            ))
        }
        None => return Err(Error::format(w.path(), "missing tensor 'classifier.2.weight'")),
    };
    stages.push(("logits".into(), Box::new(Linear::load(w, "classifier.2", c, classes, true)?)));
    Network::new(stages, classes)
}
