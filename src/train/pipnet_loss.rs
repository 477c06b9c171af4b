//! PIP-Net's training objective (Nauta et al. 2023, §3.2) and its gradients, written out.
//!
//! The batch holds two views of `B` images, `[view 1 of all; view 2 of all]` (`2B` rows), with
//! latent presences `z [2B, D, H, W]` (softmax over the prototypes at each position), pooled
//! presences `p [2B, D]` and scores `o [2B, K]`.
//!
//! - **Alignment** `L_A = ½ (a(z₁, sg(z₂)) + a(z₂, sg(z₁)))` with
//!   `a(u, v) = −mean_n log(⟨u_n, v_n⟩ + 1e-12)` over all `B·H·W` positions `n`
//!   (`sg` = stop-gradient): the same position in the two views should show the same prototype.
//! - **Tanh** `L_T = −½ Σ_views mean_d log(tanh(Σ_b p[b, d]) + 1e-8)`: every prototype should be
//!   present somewhere in the batch (against collapse onto a few prototypes).
//! - **Classification** `L_C = NLL(log_softmax(log(1 + o^m)), y)` over both views, with the
//!   normalisation multiplier `m` (2): the log keeps scores of sparse sheets comparable.
//!
//! The loss is `λ_A L_A + λ_T L_T + λ_C L_C`; a weight of 0 drops its term (and its gradient).
//! The epsilons are the official code's (`align_loss` keeps its own default, 1e-12).

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};

const EPS_ALIGN: f64 = 1e-12;
const EPS_TANH: f64 = 1e-8;

/// The weights `λ_A`, `λ_T`, `λ_C`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    pub align: f64,
    pub tanh: f64,
    pub class: f64,
}

/// The loss and its parts (all terms are computed whatever their weight, for logging).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LossTerms {
    pub total: f64,
    pub align: f64,
    pub tanh: f64,
    pub class: f64,
    /// Fraction of the `2B` rows whose largest (un-clamped) score is the label.
    pub accuracy: f64,
}

/// `∂loss/∂z`, `∂loss/∂p` (through `L_T` only) and `∂loss/∂o`.
pub struct LossGrads {
    pub dz: Tensor,
    pub dp: Tensor,
    pub dout: Tensor,
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// The loss and its gradients for `labels` (one per image, `B` of them; the labels of the
/// second view are the same).
pub fn pipnet_loss(
    z: &Tensor,
    p: &Tensor,
    o: &Tensor,
    labels: &[u32],
    multiplier: f64,
    weights: &LossWeights,
) -> Result<(LossTerms, LossGrads)> {
    let (n2, d, h, w) = z.dims4()?;
    let b = labels.len();
    let k = o.dim(1)?;
    if n2 != 2 * b || n2 == 0 || p.dims() != [n2, d] || o.dims() != [n2, k] {
        return Err(Error::invalid(format!(
            "PIP-Net loss: z {:?}, p {:?}, o {:?} do not fit two views of {b} labelled images",
            z.dims(),
            p.dims(),
            o.dims()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&y| y as usize >= k) {
        return Err(Error::invalid(format!("label {bad} is not below the {k} classes")));
    }
    let hw = h * w;
    let zs = values(z)?;
    let ps = values(p)?;
    let os = values(o)?;
    let mut terms = LossTerms::default();

    // alignment over the B·H·W positions of the two views
    let half = b * d * hw;
    let (z1, z2) = zs.split_at(half);
    let npos = (b * hw) as f64;
    let mut dz = vec![0f64; zs.len()];
    let mut align = 0.0;
    for img in 0..b {
        let base = img * d * hw;
        for pos in 0..hw {
            let dot: f64 = (0..d).map(|c| z1[base + c * hw + pos] * z2[base + c * hw + pos]).sum();
            align -= (dot + EPS_ALIGN).ln();
            if weights.align != 0.0 {
                // each view gets the gradient of its own term only (the other is detached)
                let g = -weights.align * 0.5 / (npos * (dot + EPS_ALIGN));
                for c in 0..d {
                    let i = base + c * hw + pos;
                    dz[i] += g * z2[i];
                    dz[half + i] += g * z1[i];
                }
            }
        }
    }
    terms.align = align / npos;

    // tanh over the batch sums of each view
    let mut dp = vec![0f64; ps.len()];
    let mut tanh = 0.0;
    for view in 0..2 {
        for c in 0..d {
            let s: f64 = (0..b).map(|i| ps[(view * b + i) * d + c]).sum();
            let t = s.tanh();
            tanh -= (t + EPS_TANH).ln() / (2.0 * d as f64);
            if weights.tanh != 0.0 {
                let g = -weights.tanh / (2.0 * d as f64) * (1.0 - t * t) / (t + EPS_TANH);
                for i in 0..b {
                    dp[(view * b + i) * d + c] += g;
                }
            }
        }
    }
    terms.tanh = tanh;

    // classification on log(1 + o^m)
    let mut dout = vec![0f64; os.len()];
    let mut class = 0.0;
    let mut correct = 0usize;
    for r in 0..n2 {
        let y = labels[r % b] as usize;
        let row = &os[r * k..(r + 1) * k];
        let logits: Vec<f64> = row.iter().map(|&v| v.max(0.0).powf(multiplier).ln_1p()).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        class -= logits[y] - lse;
        let best = (0..k).fold(0, |bi, j| if row[j] > row[bi] { j } else { bi });
        correct += usize::from(best == y);
        if weights.class != 0.0 {
            for j in 0..k {
                let soft = (logits[j] - lse).exp() - if j == y { 1.0 } else { 0.0 };
                let v = row[j].max(0.0);
                // d log(1 + v^m)/dv = m v^(m−1) / (1 + v^m)
                let dl = if v > 0.0 { multiplier * v.powf(multiplier - 1.0) / (1.0 + v.powf(multiplier)) } else { 0.0 };
                dout[r * k + j] = weights.class * soft * dl / n2 as f64;
            }
        }
    }
    terms.class = class / n2 as f64;
    terms.accuracy = correct as f64 / n2 as f64;
    terms.total = weights.align * terms.align + weights.tanh * terms.tanh + weights.class * terms.class;
    if !terms.total.is_finite() {
        return Err(Error::Numerical(format!("PIP-Net loss is not finite: {terms:?}")));
    }
    let dev = z.device();
    let dtype = z.dtype();
    let to = |v: Vec<f64>, dims: &[usize]| -> Result<Tensor> { Ok(Tensor::from_vec(v, dims, dev)?.to_dtype(dtype)?) };
    Ok((terms, LossGrads { dz: to(dz, z.dims())?, dp: to(dp, p.dims())?, dout: to(dout, o.dims())? }))
}
