//! Gaussian smoothing of the mask `λ` over space (IBA, Schulz et al. 2020): each channel of a
//! `[C, H, W]` mask is convolved with a normalised `k × k` Gaussian (`k = 2·round(2σ) + 1`)
//! after reflection padding (mirror about the edge pixel, no edge repeat: PyTorch's
//! `ReflectionPad2d`).
//!
//! The normalised 2-D Gaussian is separable, so the whole operation is `S_H · λ_c · S_Wᵀ` per
//! channel with two small matrices that include the reflection; the adjoint (for the gradient)
//! is `S_Hᵀ · g_c · S_W`. Exact, and two batched matrix products on any device.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// A fixed spatial Gaussian smoothing for maps of one size.
pub struct Smoothing {
    /// `[H, H]` and its transpose (for the adjoint).
    rows: Tensor,
    rows_t: Tensor,
    /// `[W, W]` transposed (applied on the right), and untransposed (for the adjoint).
    cols_t: Tensor,
    cols: Tensor,
}

/// The normalised 1-D Gaussian with IBA's kernel size.
fn kernel(sigma: f64) -> Vec<f64> {
    let k = 2 * (2.0 * sigma).round() as usize + 1;
    let mean = (k - 1) as f64 / 2.0;
    let g: Vec<f64> = (0..k).map(|i| (-(i as f64 - mean).powi(2) / (2.0 * sigma * sigma)).exp()).collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// The `[n, n]` matrix of a 1-D convolution with `g` after reflection padding.
fn matrix(n: usize, g: &[f64]) -> Result<Vec<f64>> {
    let r = g.len() / 2;
    if r >= n {
        return Err(Error::invalid(format!(
            "smoothing with a {}-tap kernel needs maps of at least {} pixels per side, got {n}",
            g.len(),
            r + 1
        )));
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for (t, &gv) in g.iter().enumerate() {
            let j = i as isize + t as isize - r as isize;
            let j = if j < 0 {
                -j
            } else if j >= n as isize {
                2 * (n as isize - 1) - j
            } else {
                j
            };
            m[i * n + j as usize] += gv;
        }
    }
    Ok(m)
}

impl Smoothing {
    /// Smoothing with standard deviation `sigma` (pixels) for `h × w` maps.
    pub fn new(sigma: f64, h: usize, w: usize, dtype: DType, device: &Device) -> Result<Self> {
        if !(sigma.is_finite() && sigma > 0.0 && sigma <= 64.0) {
            return Err(Error::invalid(format!("smoothing sigma must be in (0, 64], got {sigma}")));
        }
        let g = kernel(sigma);
        let rows = Tensor::from_vec(matrix(h, &g)?, (h, h), device)?.to_dtype(dtype)?;
        let cols = Tensor::from_vec(matrix(w, &g)?, (w, w), device)?.to_dtype(dtype)?;
        let (rows_t, cols_t) = (rows.t()?.contiguous()?, cols.t()?.contiguous()?);
        Ok(Smoothing { rows, rows_t, cols_t, cols })
    }

    /// Smooths `x [C, H, W]` per channel.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.rows.broadcast_matmul(x)?.broadcast_matmul(&self.cols_t)?)
    }

    /// The adjoint: `∂loss/∂x` from `∂loss/∂apply(x)`.
    pub fn adjoint(&self, g: &Tensor) -> Result<Tensor> {
        Ok(self.rows_t.broadcast_matmul(g)?.broadcast_matmul(&self.cols)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_direct_reflection_padded_convolution_and_is_its_adjoint() {
        let (c, h, w) = (2, 6, 7);
        let dev = Device::Cpu;
        let x: Vec<f64> = (0..c * h * w).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        let xt = Tensor::from_vec(x.clone(), (c, h, w), &dev).unwrap();
        let s = Smoothing::new(1.0, h, w, DType::F64, &dev).unwrap();
        let y = s.apply(&xt).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // direct: reflection pad 2, 5x5 normalised Gaussian
        let g = kernel(1.0);
        assert_eq!(g.len(), 5);
        let refl = |i: isize, n: usize| -> usize {
            if i < 0 {
                (-i) as usize
            } else if i >= n as isize {
                (2 * (n as isize - 1) - i) as usize
            } else {
                i as usize
            }
        };
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let mut acc = 0.0;
                    for a in 0..5 {
                        for b in 0..5 {
                            let (ii, jj) = (refl(i as isize + a as isize - 2, h), refl(j as isize + b as isize - 2, w));
                            acc += g[a] * g[b] * x[ch * h * w + ii * w + jj];
                        }
                    }
                    assert!((acc - y[ch * h * w + i * w + j]).abs() < 1e-12);
                }
            }
        }
        let gy = Tensor::from_vec((0..c * h * w).map(|i| (i % 5) as f64).collect(), (c, h, w), &dev).unwrap();
        let lhs = (&gy * s.apply(&xt).unwrap()).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let rhs = (s.adjoint(&gy).unwrap() * &xt).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
        // a normalised kernel keeps constants constant
        let ones = Tensor::ones((1, h, w), DType::F64, &dev).unwrap();
        let o = s.apply(&ones).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert!(o.iter().all(|v| (v - 1.0).abs() < 1e-12));
        assert!(Smoothing::new(1.0, 2, 9, DType::F64, &dev).is_err());
    }
}
