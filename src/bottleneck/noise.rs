//! Where the bottleneck's noise comes from: a seeded generator (default) or a supplied bank.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Supplies standard-normal noise `ε` for the samples of each optimisation step.
pub trait NoiseSource {
    /// Noise for samples `first..first+count` of step `step`, shape `[count, …dims]`. The values
    /// of a sample must not depend on how samples are grouped into passes.
    fn sample(&mut self, step: usize, first: usize, count: usize, dims: &[usize], device: &Device) -> Result<Tensor>;
}

/// Reproducible noise from a seed: every (run, step, sample) has its own ChaCha8 stream, so the
/// result does not depend on the device or on `samples_per_pass`.
#[derive(Clone, Debug)]
pub struct SeededNoise {
    seed: u64,
    run: u64,
}

impl SeededNoise {
    /// Noise for one optimisation run; `run` separates independent runs under one seed.
    pub fn new(seed: u64, run: u64) -> Self {
        SeededNoise { seed, run }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoiseSource for SeededNoise {
    fn sample(&mut self, step: usize, first: usize, count: usize, dims: &[usize], device: &Device) -> Result<Tensor> {
        let per: usize = dims.iter().product();
        let mut data = Vec::with_capacity(count * per);
        for s in first..first + count {
            let key = splitmix(splitmix(splitmix(self.seed) ^ self.run) ^ ((step as u64) << 32 | s as u64));
            let mut rng = ChaCha8Rng::seed_from_u64(key);
            data.extend((0..per).map(|_| -> f32 { StandardNormal.sample(&mut rng) }));
        }
        let shape: Vec<usize> = std::iter::once(count).chain(dims.iter().copied()).collect();
        Ok(Tensor::from_vec(data, shape, device)?)
    }
}

/// A fixed bank `[steps, samples, …dims]`: step `k` uses `bank[k]` (for exact parity with a
/// reference implementation run on the same bank).
pub struct NoiseBank {
    bank: Tensor,
}

impl NoiseBank {
    pub fn new(bank: Tensor) -> Result<Self> {
        if bank.rank() < 3 {
            return Err(Error::invalid(format!("a noise bank is [steps, samples, …dims], got {:?}", bank.dims())));
        }
        Ok(NoiseBank { bank })
    }
}

impl NoiseSource for NoiseBank {
    fn sample(&mut self, step: usize, first: usize, count: usize, dims: &[usize], device: &Device) -> Result<Tensor> {
        let b = self.bank.dims();
        if step >= b[0] || first + count > b[1] || &b[2..] != dims {
            return Err(Error::invalid(format!(
                "noise bank {b:?} cannot supply step {step}, samples {first}..{} of shape {dims:?}",
                first + count
            )));
        }
        Ok(self.bank.get(step)?.narrow(0, first, count)?.to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_grouping_free() {
        let dev = Device::Cpu;
        let mut a = SeededNoise::new(7, 1);
        let all = a.sample(3, 0, 4, &[5, 6], &dev).unwrap();
        let part = a.sample(3, 2, 2, &[5, 6], &dev).unwrap();
        let diff = (all.narrow(0, 2, 2).unwrap() - part).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let other = SeededNoise::new(7, 2).sample(3, 0, 4, &[5, 6], &dev).unwrap();
        assert!((all.clone() - other).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.1);
        // standard normal: mean ~ 0, variance ~ 1 over many draws
        let big = SeededNoise::new(1, 0).sample(0, 0, 10, &[100, 100], &dev).unwrap();
        let m = big.mean_all().unwrap().to_scalar::<f32>().unwrap();
        let v = big.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.03, "mean {m} var {v}");
    }
}
