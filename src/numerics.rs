//! Numerical checks on tensors.

use crate::error::Result;
use candle_core::{DType, Tensor};

/// Whether every element of `t` is finite: `Σ 0·x` is 0 for finite values and NaN as soon as
/// one value is NaN or infinite (a max-based test would skip NaN, which never compares
/// greater). One pass, on any device.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    if t.elem_count() == 0 {
        return Ok(true);
    }
    Ok(t.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nan_and_infinity_anywhere_are_found() {
        let ok = Tensor::new(&[1f32, -3.0, 1e30, 0.0], &Device::Cpu).unwrap();
        assert!(all_finite(&ok).unwrap());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for pos in 0..4 {
                let mut v = vec![1f32, 2.0, 3.0, 4.0];
                v[pos] = bad;
                assert!(!all_finite(&Tensor::new(v.as_slice(), &Device::Cpu).unwrap()).unwrap(), "{bad} at {pos}");
            }
        }
    }
}
