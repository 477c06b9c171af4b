//! Feature statistics for IBA's prior N(μ, σ²): per-element mean, standard deviation and the
//! active-neuron mask of one tap's output, read from a safetensors file.
//!
//! [`estimate`] computes them (`ibex stats`) with [`Welford`]'s running estimate.
//!
//! Keys (those of the fixture written with the official `IBA.estimate`, and of `ibex stats`):
//! `feature_mean`, `feature_std` (or `feature_std_unclamped`), `active_mask` (or
//! `nonzero_count` with `n_samples`), all `[C, H, W]`.

use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::imaging::augment::augmented_input;
use crate::imaging::image::RgbImage;
use crate::models::cnn::ClassifierBundle;
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// The prior of one tap: mean and std (clamped at `min_std`) and the active mask, `[C, H, W]`.
#[derive(Clone)]
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
        Self::from_map(&map, path, min_std, active_threshold, device)
    }

    /// The statistics in a loaded tensor map (a statistics file, or a readout / Dual-IB state
    /// that carries its prior); `path` names the file in errors.
    pub fn from_map(
        map: &std::collections::HashMap<String, Tensor>,
        path: &Path,
        min_std: f64,
        active_threshold: f64,
        device: &Device,
    ) -> Result<Self> {
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
        // counts (with the caller's threshold) where the file has them, else its stored mask
        let active = if let (Some(c), Some(n)) = (map.get("nonzero_count"), map.get("n_samples")) {
            let n = n.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.first().copied().unwrap_or(0.0);
            if n < 1.0 {
                return Err(Error::format(path, "n_samples is 0"));
            }
            (c.to_dtype(DType::F64)? / n)?.gt(active_threshold)?.to_dtype(DType::F32)?
        } else if let Some(a) = get("active_mask") {
            a?.gt(0.5f32)?.to_dtype(DType::F32)?
        } else {
            mean.ones_like()?
        };
        if active.dims() != mean.dims() {
            return Err(Error::format(path, format!("active mask {:?} is not shaped like the mean", active.dims())));
        }
        for (name, t) in [("feature_mean", &mean), ("feature_std", &std)] {
            if !crate::numerics::all_finite(t)? {
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

    /// Features `x [C, H, W]` in standardised units, `(x − μ)/σ`, zero where inactive.
    pub fn standardise(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?.broadcast_mul(&self.active)?)
    }

    /// Adds `feature_mean`, `feature_std`, `active_mask` to `map` (what [`FeatureStats::from_map`] reads).
    pub fn save_into(&self, map: &mut std::collections::HashMap<String, Tensor>) {
        map.insert("feature_mean".into(), self.mean.clone());
        map.insert("feature_std".into(), self.std.clone());
        map.insert("active_mask".into(), self.active.clone());
    }
}

/// Welford's running mean and variance per element (as the official `WelfordEstimator`, in
/// `f64`), with per-element non-zero counts for the active-neuron mask.
pub struct Welford {
    dims: Vec<usize>,
    n: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    nonzero: Vec<i64>,
}

impl Welford {
    /// An empty estimator for samples of shape `dims` (`[C, H, W]`).
    pub fn new(dims: &[usize]) -> Self {
        let k = dims.iter().product();
        Welford { dims: dims.to_vec(), n: 0, mean: vec![0.0; k], m2: vec![0.0; k], nonzero: vec![0; k] }
    }

    /// Samples seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Adds one sample.
    pub fn update(&mut self, x: &[f32]) -> Result<()> {
        if x.len() != self.mean.len() {
            return Err(Error::invalid(format!(
                "a sample of {} values for statistics of shape {:?}",
                x.len(),
                self.dims
            )));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numerical("a feature sample contains NaN or infinity".into()));
        }
        self.n += 1;
        let n = self.n as f64;
        for (i, &v) in x.iter().enumerate() {
            let v = v as f64;
            let d = v - self.mean[i];
            self.mean[i] += d / n;
            self.m2[i] += d * (v - self.mean[i]);
            self.nonzero[i] += (v != 0.0) as i64;
        }
        Ok(())
    }

    /// The unbiased standard deviation per element (`sqrt(M2 / (n − 1))`).
    pub fn std(&self) -> Vec<f64> {
        let d = (self.n.max(2) - 1) as f64;
        self.m2.iter().map(|m| (m / d).sqrt()).collect()
    }

    /// The prior these statistics give (std clamped at `min_std`, features non-zero in more than
    /// `active_threshold` of the samples active).
    pub fn stats(&self, min_std: f64, active_threshold: f64, device: &Device) -> Result<FeatureStats> {
        if self.n < 2 {
            return Err(Error::invalid("statistics need at least 2 samples"));
        }
        let n = self.n as f64;
        let f = |v: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(v, self.dims.as_slice(), device)?) };
        Ok(FeatureStats {
            mean: f(self.mean.iter().map(|&m| m as f32).collect())?,
            std: f(self.std().iter().map(|&s| s.max(min_std) as f32).collect())?,
            active: f(self.nonzero.iter().map(|&c| if c as f64 / n > active_threshold { 1.0 } else { 0.0 }).collect())?,
        })
    }

    /// Writes the statistics with the keys [`FeatureStats::load`] reads (and the official
    /// estimator's raw state): `feature_mean`, `feature_std` (clamped at `min_std`),
    /// `feature_std_unclamped`, `welford_m2`, `nonzero_count`, `n_samples`, `active_mask`
    /// (non-zero in more than `active_threshold` of the samples).
    pub fn save(&self, path: &Path, min_std: f64, active_threshold: f64) -> Result<()> {
        let dev = Device::Cpu;
        let mut map = std::collections::HashMap::new();
        self.stats(min_std, active_threshold, &dev)?.save_into(&mut map);
        let f = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), self.dims.as_slice(), &dev)?)
        };
        map.insert("feature_std_unclamped".to_string(), f(self.std())?);
        map.insert("welford_m2".to_string(), f(self.m2.clone())?);
        map.insert("nonzero_count".to_string(), Tensor::from_vec(self.nonzero.clone(), self.dims.as_slice(), &dev)?);
        map.insert("n_samples".to_string(), Tensor::from_vec(vec![self.n as i64], 1, &dev)?);
        candle_core::safetensors::save(&map, path).map_err(|e| Error::format(path, format!("cannot write: {e}")))
    }
}

/// Estimates the statistics of `tap`'s output over `samples` augmented views of `images`
/// (the reference recipe: sample `i` is a `RandomResizedCrop(scale 0.08–1, ratio 3/4–4/3)`
/// of image `i mod n`, resized bicubically to the model input, flipped with probability ½),
/// `batch` views per forward pass, reproducible from `seed`. Progress counts samples.
pub fn estimate(
    bundle: &ClassifierBundle,
    tap: &str,
    images: &[RgbImage],
    samples: usize,
    seed: u64,
    batch: usize,
    control: &mut RunControl<'_>,
) -> Result<Welford> {
    use rand::SeedableRng;
    if images.is_empty() || samples < 2 || batch == 0 {
        return Err(Error::invalid(format!(
            "statistics need images, at least 2 samples and a batch >= 1 (got {} images, {samples} samples, batch {batch})",
            images.len()
        )));
    }
    bundle.network.check_tap(tap)?;
    let (w, h) = (bundle.preprocessor.crop_width, bundle.preprocessor.crop_height);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut est: Option<Welford> = None;
    let mut done = 0;
    while done < samples {
        control.check()?;
        let m = batch.min(samples - done);
        let mut pixels = Vec::with_capacity(m * 3 * (w * h) as usize);
        for i in done..done + m {
            pixels.extend(augmented_input(&bundle.preprocessor, &images[i % images.len()], &mut rng)?.pixel_values);
        }
        let x = Tensor::from_vec(pixels, (m, 3, h as usize, w as usize), &bundle.device)?;
        let feats = bundle.network.forward_until(tap, &x)?.to_dtype(DType::F32)?;
        let dims = feats.dims()[1..].to_vec();
        let est = est.get_or_insert_with(|| Welford::new(&dims));
        for j in 0..m {
            est.update(&feats.get(j)?.flatten_all()?.to_vec1::<f32>()?)?;
        }
        done += m;
        control.report(done as u32, samples as u32)?;
    }
    Ok(est.expect("samples >= 2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_two_pass_statistics() {
        let xs: Vec<Vec<f32>> =
            (0..50).map(|i| (0..6).map(|j| ((i * 7 + j * 3) % 11) as f32 - 4.0).collect()).collect();
        let mut w = Welford::new(&[1, 2, 3]);
        for x in &xs {
            w.update(x).unwrap();
        }
        for j in 0..6 {
            let col: Vec<f64> = xs.iter().map(|x| x[j] as f64).collect();
            let mean = col.iter().sum::<f64>() / 50.0;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 49.0;
            assert!((w.mean[j] - mean).abs() < 1e-12 && (w.std()[j] - var.sqrt()).abs() < 1e-12);
            assert_eq!(w.nonzero[j], col.iter().filter(|&&v| v != 0.0).count() as i64);
        }
        assert!(w.update(&[0.0; 5]).is_err());
        assert!(w.update(&[f32::NAN; 6]).is_err());
    }
}
