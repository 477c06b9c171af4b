//! Feature statistics for IBA's prior N(μ, σ²): per-element mean, standard deviation and the
//! active-neuron mask of one tap's output, read from a safetensors file.
//!
//! Keys (those of the fixture written with the official `IBA.estimate`, and of `ibex stats`):
//! `feature_mean`, `feature_std` (or `feature_std_unclamped`), `active_mask` (or
//! `nonzero_count` with `n_samples`), all `[C, H, W]`.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// The prior of one tap: mean and std (clamped at `min_std`) and the active mask, `[C, H, W]`.
pub struct FeatureStats {
    pub mean: Tensor,
    pub std: Tensor,
    pub active: Tensor,
}

impl FeatureStats {
    /// Reads statistics; `min_std` clamps the std, `active_threshold` decides the mask when the
    /// file gives counts rather than a mask.
    pub fn load(path: &Path, min_std: f64, active_threshold: f64, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "IBA feature statistics {} (estimate them with `ibex stats --model … --layer … --images DIR --out FILE`)",
                path.display()
            )));
        }
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::format(path, format!("not a readable safetensors file ({e})")))?;
        let get = |k: &str| map.get(k).map(|t| t.to_dtype(DType::F32));
        let mean = get("feature_mean").ok_or_else(|| Error::format(path, "no 'feature_mean' tensor"))??;
        let std = match get("feature_std_unclamped").or_else(|| get("feature_std")) {
            Some(t) => t?,
            None => return Err(Error::format(path, "no 'feature_std' tensor")),
        };
        if mean.rank() != 3 || std.dims() != mean.dims() {
            return Err(Error::format(
                path,
                format!("feature_mean {:?} and feature_std {:?} must both be [C, H, W]", mean.dims(), std.dims()),
            ));
        }
        let active = if let Some(a) = get("active_mask") {
            a?.gt(0.5f32)?.to_dtype(DType::F32)?
        } else if let (Some(c), Some(n)) = (map.get("nonzero_count"), map.get("n_samples")) {
            let n = n.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.first().copied().unwrap_or(0.0);
            if n < 1.0 {
                return Err(Error::format(path, "n_samples is 0"));
            }
            (c.to_dtype(DType::F64)? / n)?.gt(active_threshold)?.to_dtype(DType::F32)?
        } else {
            mean.ones_like()?
        };
        if active.dims() != mean.dims() {
            return Err(Error::format(path, format!("active mask {:?} is not shaped like the mean", active.dims())));
        }
        for (name, t) in [("feature_mean", &mean), ("feature_std", &std)] {
            if !crate::models::cnn::layers::all_finite(t)? {
                return Err(Error::format(path, format!("'{name}' contains NaN or infinity")));
            }
        }
        let std = std.clamp(min_std as f32, f32::MAX)?;
        Ok(FeatureStats {
            mean: mean.to_device(device)?,
            std: std.to_device(device)?,
            active: active.to_device(device)?,
        })
    }

    /// `[C, H, W]`.
    pub fn dims(&self) -> &[usize] {
        self.mean.dims()
    }
}
