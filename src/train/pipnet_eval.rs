//! PIP-Net evaluation on a labelled image folder, with the official `eval_pipnet` definitions
//! (on the inference scores `o_clamped`), but without its side effect: the official loop
//! subtracts 10⁻³ from the sheet before every test batch (upstream issue #3), so its figures
//! belong to a sheet other than the saved one; here the model is never changed.

use crate::error::Result;
use crate::imaging::folder::ImageFolder;
use crate::imaging::preprocess::ClipPreprocessor;
use crate::models::pipnet::PipNet;
use candle_core::Tensor;

/// Figures over a test set.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub images: usize,
    /// Top-1 accuracy on the clamped scores (an abstention counts as class 0's guess, as
    /// `torch.max` does with all-zero scores).
    pub top1_accuracy: f64,
    /// The label is among the five best scores whatever the order of tied scores (abstaining
    /// and sparse models tie many classes at 0, where the official `torch.topk` picks an
    /// unspecified order).
    pub top5_accuracy: f64,
    /// Images whose every score is 0.
    pub abstained: usize,
    /// Prototypes with a weight above 10⁻³ for some class.
    pub global_size: usize,
    /// `1 − #(W > 10⁻³) / #W`.
    pub sparsity: f64,
    /// Mean number of prototypes with `|p_d · W_ŷd| > 10⁻³` for the predicted class ŷ
    /// (official `almost_sim_nonzeros`, the "local size" of an explanation).
    pub local_size_predicted_class: f64,
    /// Mean number of prototypes with `Σ_c relu(p_d · W_cd − 10⁻³) > 0` per image (the official
    /// "local size, all classes" sums over the batch first, which makes it batch-dependent).
    pub local_size_any_class: f64,
    /// Mean number of clamped presences above 10⁻³ (official `almost_nonzeros`).
    pub almost_nonzeros: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// Evaluates `net` on `data`, `batch` images per forward pass.
pub fn evaluate(net: &PipNet, pre: &ClipPreprocessor, data: &ImageFolder, batch: usize) -> Result<EvalReport> {
    let k = net.classes();
    if data.classes.len() != k {
        return Err(crate::error::Error::invalid(format!(
            "the images have {} classes, the model {k}",
            data.classes.len()
        )));
    }
    let w = net.weight.to_vec2::<f32>()?;
    let size = net.sheet_size()?;
    let dev = net.weight.device().clone();
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut top1, mut top5, mut abstained) = (0usize, 0usize, 0usize);
    let (mut local_pred, mut local_any, mut anz) = (0usize, 0usize, 0usize);
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch.max(1)) {
        let mut values = Vec::new();
        let mut dims = (0, 0);
        for &i in chunk {
            let p = pre.preprocess(&data.images[i])?;
            dims = (p.height as usize, p.width as usize);
            values.extend(p.pixel_values);
        }
        let x = Tensor::from_vec(values, (chunk.len(), 3, dims.0, dims.1), &dev)?;
        let out = net.forward(&x)?;
        let o = out.o_clamped.to_vec2::<f32>()?;
        let p = out.p_clamped.to_vec2::<f32>()?;
        for ((row, pres), &i) in o.iter().zip(&p).zip(chunk) {
            let y = data.labels[i] as usize;
            let pred = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            confusion[y.min(k - 1)][pred] += 1;
            top1 += usize::from(pred == y);
            let ahead = (0..k).filter(|&c| c != y && row[c] >= row[y]).count();
            top5 += usize::from(ahead < 5);
            abstained += usize::from(row.iter().all(|&v| v == 0.0));
            local_pred += pres.iter().zip(&w[pred]).filter(|(&pd, &wd)| (pd * wd).abs() > 1e-3).count();
            local_any += (0..pres.len())
                .filter(|&d| w.iter().map(|wc| (pres[d] * wc[d] - 1e-3).max(0.0)).sum::<f32>() > 0.0)
                .count();
            anz += pres.iter().filter(|&&v| v.abs() > 1e-3).count();
        }
    }
    let n = data.len().max(1) as f64;
    Ok(EvalReport {
        images: data.len(),
        top1_accuracy: top1 as f64 / n,
        top5_accuracy: top5 as f64 / n,
        abstained,
        global_size: size.relevant.len(),
        sparsity: size.sparsity,
        local_size_predicted_class: local_pred as f64 / n,
        local_size_any_class: local_any as f64 / n,
        almost_nonzeros: anz as f64 / n,
        confusion,
    })
}
