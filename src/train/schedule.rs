//! Learning-rate schedules of PyTorch that PIP-Net's training uses, in closed form.

use std::f64::consts::PI;

/// `CosineAnnealingLR`: from `base` at step 0 to `eta_min` at step `t_max` (and back up after
/// it, as PyTorch's does when stepped past `t_max`).
pub fn cosine(base: f64, eta_min: f64, step: usize, t_max: usize) -> f64 {
    if t_max == 0 {
        return base;
    }
    eta_min + (base - eta_min) * (1.0 + (PI * step as f64 / t_max as f64).cos()) / 2.0
}

/// `CosineAnnealingWarmRestarts(T_0 = period, T_mult = 1)` stepped with a fractional epoch
/// `t` (PIP-Net steps it with `epoch − 1 + i / iterations` after every batch).
pub fn warm_restarts(base: f64, eta_min: f64, t: f64, period: f64) -> f64 {
    if period <= 0.0 {
        return base;
    }
    let t_cur = t.rem_euclid(period);
    eta_min + (base - eta_min) * (1.0 + (PI * t_cur / period).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_points_and_restarts() {
        assert_eq!(cosine(0.1, 0.001, 0, 100), 0.1);
        assert!((cosine(0.1, 0.001, 100, 100) - 0.001).abs() < 1e-15);
        assert!((cosine(0.1, 0.0, 50, 100) - 0.05).abs() < 1e-15);
        assert_eq!(warm_restarts(0.05, 0.001, 0.0, 5.0), 0.05);
        assert!((warm_restarts(0.05, 0.001, 5.0, 5.0) - 0.05).abs() < 1e-15);
        assert!((warm_restarts(0.05, 0.001, 2.5, 5.0) - 0.0255).abs() < 1e-12);
        assert!(warm_restarts(0.05, 0.001, 4.99, 5.0) < 0.0011);
    }
}
