//! EfficientNet-Lite (Tan & Le; the TF "Lite" variants: ReLU6, no squeeze-excitation, fixed
//! stem and head), from a checkpoint with the `efficientnet_pytorch` / `efficientnet_lite_pytorch`
//! tensor names (`_conv_stem`, `_blocks.N._expand_conv`, `_depthwise_conv`, `_project_conv`,
//! `_bn0/1/2`, `_conv_head`, `_fc`).
//!
//! Widths, kernel sizes, expansion and the number of blocks are read from the tensors' shapes;
//! only the strides are not in the weights and come from the config (`blocks[i].stride`).
//! Padding is TensorFlow "SAME" (asymmetric for stride 2), batch norm eps 1e-3, folded into the
//! convolutions. Taps: `stem`, `blocks.0` … `blocks.N`, `head` (after the head conv + ReLU6),
//! `pooled` (global average, the embedding), then the logits.

use super::layers::{Activation, BatchNorm, Conv2d, GlobalAvgPool, Layer, Linear, Padding, Residual, Sequence};
use super::network::Network;
use crate::error::{Error, Result};
use crate::models::weights::Weights;

/// Batch-norm epsilon of the TF checkpoints.
const BN_EPS: f64 = 1e-3;

fn conv_bn(w: &Weights, conv: &str, bn: &str, shape: &[usize], stride: usize, groups: usize) -> Result<Conv2d> {
    let (cout, cin_g, k) = (shape[0], shape[1], shape[3]);
    let c = Conv2d::load(w, conv, (cin_g * groups, cout, k), stride, Padding::TfSame, groups, false)?;
    c.fold(&BatchNorm::load(w, bn, cout, BN_EPS)?)
}

fn shape_of(w: &Weights, name: &str, rank: usize) -> Result<Vec<usize>> {
    match w.shape(name) {
        Some(s) if s.len() == rank => Ok(s.to_vec()),
        Some(s) => Err(Error::format(w.path(), format!("tensor '{name}' has shape {s:?}, expected rank {rank}"))),
        None => Err(Error::format(w.path(), format!("missing tensor '{name}' (not an EfficientNet-Lite checkpoint?)"))),
    }
}

/// Builds the network; `strides[i]` is block `i`'s depthwise stride.
pub fn build(w: &Weights, strides: &[usize]) -> Result<Network> {
    let stem_shape = shape_of(w, "_conv_stem.weight", 4)?;
    if stem_shape[1] != 3 {
        return Err(Error::format(w.path(), format!("_conv_stem.weight {stem_shape:?}: expected 3 input channels")));
    }
    let mut stages: Vec<(String, Box<dyn Layer>)> = Vec::new();
    let stem = conv_bn(w, "_conv_stem", "_bn0", &stem_shape, 2, 1)?;
    stages.push(("stem".into(), Box::new(Sequence(vec![Box::new(stem), Box::new(Activation::Relu6)]))));
    let mut cin = stem_shape[0];
    let mut i = 0;
    while w.contains(&format!("_blocks.{i}._depthwise_conv.weight")) {
        let p = format!("_blocks.{i}");
        let stride = *strides.get(i).ok_or_else(|| {
            Error::format(
                w.path(),
                format!("the config gives strides for {} blocks, the weights have more", strides.len()),
            )
        })?;
        let mut body: Vec<Box<dyn Layer>> = Vec::new();
        let expand = format!("{p}._expand_conv.weight");
        let mut hidden = cin;
        if w.contains(&expand) {
            let s = shape_of(w, &expand, 4)?;
            if s[1] != cin {
                return Err(Error::format(
                    w.path(),
                    format!("tensor '{expand}' has shape {s:?}, expected {cin} inputs"),
                ));
            }
            hidden = s[0];
            body.push(Box::new(conv_bn(w, &format!("{p}._expand_conv"), &format!("{p}._bn0"), &s, 1, 1)?));
            body.push(Box::new(Activation::Relu6));
        }
        let dw = shape_of(w, &format!("{p}._depthwise_conv.weight"), 4)?;
        if dw[0] != hidden || dw[1] != 1 {
            return Err(Error::format(
                w.path(),
                format!("tensor '{p}._depthwise_conv.weight' has shape {dw:?}, expected [{hidden}, 1, k, k]"),
            ));
        }
        body.push(Box::new(conv_bn(w, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), &dw, stride, hidden)?));
        body.push(Box::new(Activation::Relu6));
        let proj = shape_of(w, &format!("{p}._project_conv.weight"), 4)?;
        if proj[1] != hidden {
            return Err(Error::format(
                w.path(),
                format!("tensor '{p}._project_conv.weight' has shape {proj:?}, expected {hidden} inputs"),
            ));
        }
        body.push(Box::new(conv_bn(w, &format!("{p}._project_conv"), &format!("{p}._bn2"), &proj, 1, 1)?));
        let cout = proj[0];
        let block: Box<dyn Layer> = if stride == 1 && cin == cout {
            Box::new(Residual { body: Sequence(body), skip: None, post: None })
        } else {
            Box::new(Sequence(body))
        };
        stages.push((format!("blocks.{i}"), block));
        cin = cout;
        i += 1;
    }
    if i == 0 {
        return Err(Error::format(
            w.path(),
            "no '_blocks.0._depthwise_conv.weight': not an EfficientNet-Lite checkpoint",
        ));
    }
    if strides.len() != i {
        return Err(Error::format(
            w.path(),
            format!("the config gives strides for {} blocks, the weights have {i}", strides.len()),
        ));
    }
    let head = shape_of(w, "_conv_head.weight", 4)?;
    if head[1] != cin {
        return Err(Error::format(
            w.path(),
            format!("tensor '_conv_head.weight' has shape {head:?}, expected {cin} inputs"),
        ));
    }
    let head_conv = conv_bn(w, "_conv_head", "_bn1", &head, 1, 1)?;
    stages.push(("head".into(), Box::new(Sequence(vec![Box::new(head_conv), Box::new(Activation::Relu6)]))));
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    let fc = shape_of(w, "_fc.weight", 2)?;
    let classes = fc[0];
    stages.push(("logits".into(), Box::new(Linear::load(w, "_fc", head[0], classes, true)?)));
    Network::new(stages, classes)
}

/// Block strides from an EfficientNet-Lite `config.json` (`blocks[i].stride`, or `stages[j]`
/// with `repeats` and the stride of the stage's first block).
pub fn strides_from_config(cfg: &serde_json::Value) -> Option<Vec<usize>> {
    if let Some(blocks) = cfg.get("blocks").and_then(|b| b.as_array()) {
        return blocks
            .iter()
            .map(|b| b.get("stride").and_then(|s| s.as_u64()).filter(|s| (1..=4).contains(s)).map(|s| s as usize))
            .collect();
    }
    let stages = cfg.get("stages")?.as_array()?;
    let mut out = Vec::new();
    for s in stages {
        let r = s.get("repeats")?.as_u64()? as usize;
        let st = s.get("stride")?.as_u64().filter(|s| (1..=4).contains(s))? as usize;
        out.push(st);
        out.extend(std::iter::repeat(1).take(r.saturating_sub(1)));
    }
    Some(out)
}
