//! The per-element capacity (KL divergence to the N(0, 1) prior) of the bottleneck
//! `z = λ·h + (1 − λ)·ε`, and its derivative with respect to λ.

use crate::error::Result;
use candle_core::Tensor;

/// `C = −½(1 + ln s² − μ² − s²)` with `μ = λh`, `s = 1 − λ`, in nats, elementwise
/// (the same evaluation order as the reference implementations).
pub fn capacity(h: &Tensor, lambda: &Tensor) -> Result<Tensor> {
    let mu = (h * lambda)?;
    let var = lambda.affine(-1.0, 1.0)?.sqr()?;
    let inner = ((var.log()? + 1.0)? - mu.sqr()?)?.sub(&var)?;
    Ok((inner * -0.5)?)
}

/// `∂C/∂λ = 1/(1 − λ) + λh² − (1 − λ)`.
pub fn capacity_grad(h: &Tensor, lambda: &Tensor) -> Result<Tensor> {
    let one_minus = lambda.affine(-1.0, 1.0)?;
    Ok(((one_minus.recip()? + (lambda * h.sqr()?)?)? - one_minus)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn zero_when_nothing_passes_and_matches_finite_differences() {
        let dev = Device::Cpu;
        let h = Tensor::new(&[0.5f64, -1.5, 2.0, 0.0], &dev).unwrap();
        // λ = 0: z = ε ~ N(0,1) = the prior, so KL = 0 exactly.
        let zero = capacity(&h, &h.zeros_like().unwrap()).unwrap().to_vec1::<f64>().unwrap();
        assert!(zero.iter().all(|c| c.abs() < 1e-12), "{zero:?}");
        let lam = Tensor::new(&[0.3f64, 0.7, 0.9, 0.5], &dev).unwrap();
        let g = capacity_grad(&h, &lam).unwrap().to_vec1::<f64>().unwrap();
        let e = 1e-6;
        let cp = capacity(&h, &(&lam + e).unwrap()).unwrap().to_vec1::<f64>().unwrap();
        let cm = capacity(&h, &(&lam - e).unwrap()).unwrap().to_vec1::<f64>().unwrap();
        for i in 0..4 {
            let fd = (cp[i] - cm[i]) / (2.0 * e);
            assert!((fd - g[i]).abs() < 1e-6, "{i}: fd {fd} analytic {}", g[i]);
        }
        // closed form against a Monte Carlo estimate of KL(N(μ, s²) || N(0, 1))
        let (hh, l) = (1.3f64, 0.6f64);
        let (mu, s) = (l * hh, 1.0 - l);
        let c = capacity(&Tensor::new(&[hh], &dev).unwrap(), &Tensor::new(&[l], &dev).unwrap())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 400_000;
        let mc: f64 = (0..n)
            .map(|_| {
                let e: f64 = StandardNormal.sample(&mut rng);
                let z = mu + s * e;
                // log q(z) - log p(z)
                -0.5 * e * e - s.ln() + 0.5 * z * z
            })
            .sum::<f64>()
            / n as f64;
        assert!((mc - c).abs() / c < 0.01, "closed form {c} vs Monte Carlo {mc}");
    }
}
