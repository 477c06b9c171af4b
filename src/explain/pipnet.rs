//! PIP-Net explanations: the class scores with the inference clamp and abstention, and for the
//! top classes the prototypes that contribute, as the official `vis_pred` lists them.
//!
//! For each of the three highest-scoring classes (descending score), the prototypes with
//! `p_d · relu(W_cd) > 0.01` (clamped presence `p_d`), in descending presence order, each with
//! its location: the grid cell of its maximum (`latent_hw`, found like the official code —
//! `torch.max` over rows, then over columns, so exact ties pick the smallest column, then the
//! smallest row), and two boxes by the official rule with `skip = round((S − P)/(G − 1))` for
//! image side `S`, patch side `P` and grid side `G`:
//!
//! - `box` `[x0, y0, x1, y1]`: the rectangle `vis_pred` draws, `[skip·w, skip·h,
//!   min(S, skip·w + P), min(S, skip·h + P)]`;
//! - `patch_box` `[h_min, h_max, w_min, w_max]`: the patch `get_img_coordinates` crops. Quirk
//!   reproduced: the last **column** is snapped to `[S − P, S]`, the last row is not (the official
//!   code tests `softmaxes.shape[1]`, the prototype count, where it means the grid height).
//!
//! `ood` (with thresholds from `ibex pipnet thresholds`): the best un-clamped score is below
//! its class's threshold, the official `eval_ood` rule; null without thresholds.
//!
//! Maps at the input resolution: the class evidence of the predicted class `Σ_d relu(W_cd)·z_d`
//! (main map) and each listed prototype's presence map `z_d`, bilinearly upsampled.

use super::classifier::{ClassScore, Prediction};
use super::{map, Explanation};
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::models::pipnet::PipNetBundle;
use candle_core::{DType, Tensor, D};
use serde::Serialize;
use std::time::Instant;

/// A prototype's part in a class score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrototypeEvidence {
    pub index: usize,
    /// Clamped presence `p_d`.
    pub presence: f32,
    /// `relu(W_cd)`.
    pub weight: f32,
    /// `presence · weight`.
    pub contribution: f32,
    /// `(h, w)` on the grid.
    pub latent_hw: [usize; 2],
    /// `[x0, y0, x1, y1]` in input pixels (the drawn rectangle).
    pub r#box: [u32; 4],
    /// `[h_min, h_max, w_min, w_max]` (the official patch).
    pub patch_box: [u32; 4],
}

/// The evidence for one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassEvidence {
    pub index: usize,
    pub label: String,
    pub score: f32,
    pub prototypes: Vec<PrototypeEvidence>,
}

/// The official `argmax` of a `[H, W]` map: per column the first maximal row, then the first
/// column with the largest of those.
pub fn latent_argmax(z: &[f32], h: usize, w: usize) -> [usize; 2] {
    let mut best = (f32::NEG_INFINITY, 0, 0);
    for x in 0..w {
        let mut col = (f32::NEG_INFINITY, 0);
        for y in 0..h {
            if z[y * w + x] > col.0 {
                col = (z[y * w + x], y);
            }
        }
        if col.0 > best.0 {
            best = (col.0, col.1, x);
        }
    }
    [best.1, best.2]
}

/// The two boxes of grid cell `(h, w)` (see the module docs).
pub fn boxes(hw: [usize; 2], grid: [usize; 2], size: u32, patch: u32) -> ([u32; 4], [u32; 4]) {
    let skip = if grid[1] > 1 { ((size - patch) as f64 / (grid[1] - 1) as f64).round() as u32 } else { 0 };
    let (h, w) = (hw[0] as u32, hw[1] as u32);
    let rect = [skip * w, skip * h, (skip * w + patch).min(size), (skip * h + patch).min(size)];
    let (w_min, w_max) = if hw[1] + 1 == grid[1] { (size - patch, size) } else { (skip * w, skip * w + patch) };
    (rect, [skip * h, skip * h + patch, w_min, w_max])
}

/// A relevant prototype's global explanation: its class weights and the images (of a folder)
/// where it is most present, with the patch that shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrototypeGallery {
    pub index: usize,
    /// `(class, relu(W_cd))` for the classes it counts for (`W_cd > 1e-3`), largest first.
    pub classes: Vec<(usize, f32)>,
    /// `(image index, presence, patch_box)`, most present first.
    pub top: Vec<(usize, f32, [u32; 4])>,
}

/// The global explanation over preprocessed inputs: for every relevant prototype its `k` most
/// present images and where. `inputs` are `[1, 3, S, S]`; `report(i)` after each image.
pub fn galleries(
    bundle: &PipNetBundle,
    inputs: &mut dyn Iterator<Item = Result<Tensor>>,
    k: usize,
    report: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<PrototypeGallery>> {
    let sheet = bundle.model.sheet_size()?;
    let w = bundle.model.weight.relu()?.to_vec2::<f32>()?;
    let mut best: Vec<Vec<(usize, f32, [u32; 4])>> = vec![Vec::new(); sheet.relevant.len()];
    for (i, x) in inputs.enumerate() {
        let o = bundle.model.forward(&x?)?;
        let (_, _, gh, gw) = o.z.dims4()?;
        let p = o.p.flatten_all()?.to_vec1::<f32>()?;
        let z = o.z.flatten_all()?.to_vec1::<f32>()?;
        for (slot, &d) in best.iter_mut().zip(&sheet.relevant) {
            let hw = latent_argmax(&z[d * gh * gw..(d + 1) * gh * gw], gh, gw);
            let (_, patch) = boxes(hw, [gh, gw], bundle.image_size, bundle.patchsize);
            slot.push((i, p[d], patch));
            slot.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            slot.truncate(k);
        }
        report(i + 1)?;
    }
    Ok(sheet
        .relevant
        .iter()
        .zip(best)
        .map(|(&d, top)| {
            let mut classes: Vec<(usize, f32)> =
                (0..w.len()).filter(|&c| w[c][d] > 1e-3).map(|c| (c, w[c][d])).collect();
            classes.sort_by(|a, b| b.1.total_cmp(&a.1));
            PrototypeGallery { index: d, classes, top }
        })
        .collect())
}

/// PIP-Net explanations (no settings: the method is the model).
pub struct PipNetExplainer;

impl PipNetExplainer {
    /// Explains each image in one call.
    pub fn explain_batch(
        &self,
        bundle: &PipNetBundle,
        images: &[RgbImage],
        control: &mut RunControl<'_>,
    ) -> Result<Vec<Explanation>> {
        if images.is_empty() {
            return Err(Error::invalid("no image to explain"));
        }
        let mut out = Vec::with_capacity(images.len());
        for (i, image) in images.iter().enumerate() {
            control.check()?;
            let input =
                super::classifier::model_input(&bundle.preprocessor, &bundle.device, image).map_err(|e| match e {
                    Error::InvalidArgument(m) => Error::InvalidArgument(format!("image {i}: {m}")),
                    e => e,
                })?;
            out.push(self.explain_input(bundle, &input.pixels, input.pre.image, input.pre.source_region)?);
            control.report(i as u32 + 1, images.len() as u32)?;
        }
        Ok(out)
    }

    /// The explanation of one preprocessed input `[1, 3, S, S]`.
    pub fn explain_input(
        &self,
        bundle: &PipNetBundle,
        x: &Tensor,
        image: RgbImage,
        source_region: [f32; 4],
    ) -> Result<Explanation> {
        let start = Instant::now();
        let net = &bundle.model;
        let o = net.forward(x)?;
        let (_, d, gh, gw) = o.z.dims4()?;
        let scores = o.o_clamped.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if scores.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numerical("PIP-Net scores contain NaN or infinity".into()));
        }
        let p = o.p_clamped.flatten_all()?.to_vec1::<f32>()?;
        let z = o.z.squeeze(0)?.to_dtype(DType::F32)?;
        let zv = z.flatten_all()?.to_vec1::<f32>()?;
        let w = net.weight.relu()?.to_vec2::<f32>()?;
        let abstained = scores.iter().all(|&s| s == 0.0);
        // probabilities as the official visualisation shows them: softmax(log(1 + o²))
        let probs =
            candle_nn::ops::softmax(&(o.o_clamped.sqr()? + 1.0)?.log()?, D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let score = |c: usize| ClassScore {
            index: c,
            label: bundle.labels[c].clone(),
            probability: probs[c],
            logit: scores[c],
        };
        let evidence = |c: usize| -> ClassEvidence {
            let mut protos: Vec<usize> = (0..d).filter(|&k| p[k] * w[c][k] > 0.01).collect();
            protos.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let prototypes = protos
                .into_iter()
                .map(|k| {
                    let hw = latent_argmax(&zv[k * gh * gw..(k + 1) * gh * gw], gh, gw);
                    let (r#box, patch_box) = boxes(hw, [gh, gw], bundle.image_size, bundle.patchsize);
                    PrototypeEvidence {
                        index: k,
                        presence: p[k],
                        weight: w[c][k],
                        contribution: p[k] * w[c][k],
                        latent_hw: hw,
                        r#box,
                        patch_box,
                    }
                })
                .collect();
            ClassEvidence { index: c, label: bundle.labels[c].clone(), score: scores[c], prototypes }
        };
        let top: Vec<ClassEvidence> = order.iter().take(3).map(|&c| evidence(c)).collect();
        let predicted = order[0];
        let (s, size) = (bundle.image_size, bundle.image_size);
        let up = |grid: Vec<f32>| -> Result<Heatmap> {
            Ok(Heatmap::new(gw as u32, gh as u32, grid)?.upsample_bilinear(s, size))
        };
        let wc = Tensor::new(w[predicted].as_slice(), z.device())?.reshape((d, 1, 1))?;
        let evidence_map = z.broadcast_mul(&wc)?.sum(0)?.flatten_all()?.to_vec1::<f32>()?;
        let mut maps = vec![map("class_evidence", "score", up(evidence_map)?)];
        for pe in &top[0].prototypes {
            maps.push(map(
                &format!("prototype_{}", pe.index),
                "presence",
                up(zv[pe.index * gh * gw..(pe.index + 1) * gh * gw].to_vec())?,
            ));
        }
        let mut summary = serde_json::Map::new();
        summary.insert("scores".into(), serde_json::json!(scores));
        summary.insert("predicted".into(), serde_json::json!(if abstained { None } else { Some(predicted) }));
        summary.insert("abstained".into(), serde_json::json!(abstained));
        let unclamped = o.o.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        summary.insert("ood".into(), serde_json::json!(bundle.is_ood(&unclamped)));
        summary.insert("prototypes".into(), serde_json::to_value(&top[0].prototypes)?);
        summary.insert("top_classes".into(), serde_json::to_value(&top)?);
        summary.insert("present_prototypes".into(), serde_json::json!(p.iter().filter(|&&v| v > 0.0).count()));
        Ok(Explanation {
            method: "pipnet".into(),
            maps,
            texts: vec![],
            prediction: Some(Prediction {
                target: score(predicted),
                top5: order.iter().take(5).map(|&c| score(c)).collect(),
            }),
            summary,
            image,
            source_region,
            config: serde_json::json!({ "image_size": bundle.image_size, "patchsize": bundle.patchsize, "presence_clamp": crate::models::pipnet::PRESENCE_CLAMP }),
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_boxes_follow_the_official_rules() {
        // ties: the smallest column wins, then the smallest row
        let z = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(latent_argmax(&z, 2, 3), [1, 0]);
        let z = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(latent_argmax(&z, 2, 3), [0, 0]);
        let z = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        assert_eq!(latent_argmax(&z, 2, 3), [1, 0]);
        // the fixture's 64 px / 6x6 grid / 32 px patches: skip 6, last column snapped, last row not
        assert_eq!(boxes([5, 1], [6, 6], 64, 32), ([6, 30, 38, 62], [30, 62, 6, 38]));
        assert_eq!(boxes([5, 5], [6, 6], 64, 32), ([30, 30, 62, 62], [30, 62, 32, 64]));
    }
}
