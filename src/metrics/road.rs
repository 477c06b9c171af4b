//! ROAD — RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and
//! Efficient Evaluation Strategy for Attribution Methods", ICML 2022).
//!
//! Deleting pixels by filling in a constant leaks the mask's shape into the model ("class
//! information leakage"); ROAD fills the removed pixels by **noisy linear imputation** instead:
//! every removed pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the four
//! direct ones, 1/12 for the diagonals, renormalised at the border), solved jointly for all
//! removed pixels, so holes are filled smoothly from their rim; then Gaussian noise (σ = 0.01,
//! absolute, in the model's normalised input units) is added to the imputed values.
//!
//! For each removed set the system is `(D − W)·x = W_known·v` per channel, with `D` the sum of
//! each removed pixel's in-image neighbour weights and `W` the weights between removed
//! pixels: symmetric and diagonally dominant, strictly so wherever a hole touches a kept
//! pixel, so it is positive definite whenever some pixel is kept. It is solved by conjugate
//! gradients with a Jacobi preconditioner on the removed pixels only (a small sparse solve per
//! image and fraction), to a relative residual of 1e-6.
//!
//! The curves follow the paper: pixels ranked by the map (MoRF: most relevant first, LeRF:
//! least; ties in row-major order), the first `round(p·N)` removed for each fraction `p` of
//! [`RoadSettings::fractions`] (default 10 %, 20 %, …, 90 %), and the target's probability
//! recorded. The summary is the mean over the fractions; LeRF − MoRF (higher is better) is
//! ROAD's combined score.

use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::metrics::ScoreFn;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

/// ROAD settings (the paper's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct RoadSettings {
    /// Fractions of the pixels removed, each in (0, 1).
    pub fractions: Vec<f64>,
    /// Standard deviation of the noise added to imputed values (normalised input units).
    pub noise: f64,
    /// Seed of that noise.
    pub seed: u64,
}

impl Default for RoadSettings {
    fn default() -> Self {
        RoadSettings { fractions: (1..=9).map(|i| i as f64 / 10.0).collect(), noise: 0.01, seed: 0 }
    }
}

/// ROAD's MoRF and LeRF scores at each fraction, and their means.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Road {
    pub fractions: Vec<f64>,
    pub morf: Vec<f32>,
    pub lerf: Vec<f32>,
    pub morf_mean: f32,
    pub lerf_mean: f32,
    /// LeRF mean − MoRF mean: higher is better.
    pub gap: f32,
}

/// The 8-neighbourhood and its weights.
const NEIGHBOURS: [(isize, isize, f64); 8] = [
    (1, 1, 1.0 / 12.0),
    (0, 1, 1.0 / 6.0),
    (-1, 1, 1.0 / 12.0),
    (1, -1, 1.0 / 12.0),
    (0, -1, 1.0 / 6.0),
    (-1, -1, 1.0 / 12.0),
    (1, 0, 1.0 / 6.0),
    (-1, 0, 1.0 / 6.0),
];

/// Fills the pixels where `removed` is true (row-major `width × height`) of every channel of
/// `image` (CHW) by linear imputation, and adds `N(0, noise²)` to them from `rng`.
pub fn impute(
    image: &mut [f32],
    channels: usize,
    width: usize,
    height: usize,
    removed: &[bool],
    noise: f64,
    rng: &mut impl rand::Rng,
) -> Result<()> {
    let n = width * height;
    if removed.len() != n || image.len() != channels * n {
        return Err(Error::invalid("ROAD: the mask or the image does not match the image size"));
    }
    let holes: Vec<usize> = (0..n).filter(|&i| removed[i]).collect();
    if holes.is_empty() {
        return Ok(());
    }
    if holes.len() == n {
        return Err(Error::invalid("ROAD cannot impute an image with every pixel removed"));
    }
    let mut var = vec![usize::MAX; n];
    for (k, &i) in holes.iter().enumerate() {
        var[i] = k;
    }
    // per hole: diagonal, (neighbour variable, weight) and (kept pixel, weight)
    let m = holes.len();
    let mut diag = vec![0f64; m];
    let mut links: Vec<Vec<(usize, f64)>> = vec![Vec::new(); m];
    let mut known: Vec<Vec<(usize, f64)>> = vec![Vec::new(); m];
    for (k, &i) in holes.iter().enumerate() {
        let (y, x) = ((i / width) as isize, (i % width) as isize);
        for &(dy, dx, w) in &NEIGHBOURS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                continue;
            }
            let j = ny as usize * width + nx as usize;
            diag[k] += w;
            if removed[j] {
                links[k].push((var[j], w));
            } else {
                known[k].push((j, w));
            }
        }
    }
    let normal = Normal::new(0.0, noise.max(0.0)).map_err(|e| Error::invalid(format!("ROAD noise: {e}")))?;
    for c in 0..channels {
        let plane = &image[c * n..(c + 1) * n];
        let b: Vec<f64> = known.iter().map(|ks| ks.iter().map(|&(j, w)| w * plane[j] as f64).sum()).collect();
        let x = conjugate_gradient(&diag, &links, &b)?;
        let plane = &mut image[c * n..(c + 1) * n];
        for (k, &i) in holes.iter().enumerate() {
            plane[i] = (x[k] + if noise > 0.0 { normal.sample(rng) } else { 0.0 }) as f32;
        }
    }
    Ok(())
}

/// Solves `(D − W)·x = b` (Jacobi-preconditioned CG), `D` = `diag`, `W` from `links`.
fn conjugate_gradient(diag: &[f64], links: &[Vec<(usize, f64)>], b: &[f64]) -> Result<Vec<f64>> {
    let m = b.len();
    let apply = |v: &[f64], out: &mut [f64]| {
        for k in 0..m {
            out[k] = diag[k] * v[k] - links[k].iter().map(|&(j, w)| w * v[j]).sum::<f64>();
        }
    };
    // start from the mean of the kept neighbours (exact for isolated pixels)
    let mut x: Vec<f64> = (0..m).map(|k| b[k] / diag[k]).collect();
    let mut ax = vec![0f64; m];
    apply(&x, &mut ax);
    let mut r: Vec<f64> = (0..m).map(|k| b[k] - ax[k]).collect();
    let mut z: Vec<f64> = (0..m).map(|k| r[k] / diag[k]).collect();
    let mut p = z.clone();
    let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
    let b_norm = b.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
    let mut ap = vec![0f64; m];
    for _ in 0..10 * m.max(100) {
        let r_norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        if r_norm <= 1e-6 * b_norm {
            return Ok(x);
        }
        apply(&p, &mut ap);
        let pap: f64 = p.iter().zip(&ap).map(|(a, b)| a * b).sum();
        if pap <= 0.0 {
            break;
        }
        let a = rz / pap;
        for k in 0..m {
            x[k] += a * p[k];
            r[k] -= a * ap[k];
            z[k] = r[k] / diag[k];
        }
        let rz_new: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let beta = rz_new / rz;
        rz = rz_new;
        for k in 0..m {
            p[k] = z[k] + beta * p[k];
        }
    }
    let r_norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
    if r_norm <= 1e-4 * b_norm {
        return Ok(x);
    }
    Err(Error::Numerical(format!("ROAD imputation did not converge (relative residual {:.2e})", r_norm / b_norm)))
}

/// ROAD's MoRF and LeRF scores of `map` over `input` (CHW, normalised, the map's size).
pub fn road(
    input: &[f32],
    channels: usize,
    map: &Heatmap,
    settings: &RoadSettings,
    score: &mut ScoreFn<'_>,
) -> Result<Road> {
    let (w, h) = (map.width as usize, map.height as usize);
    let n = w * h;
    if input.len() != channels * n {
        return Err(Error::invalid(format!("ROAD: the input has {} values for a {w}x{h} map", input.len())));
    }
    if map.data.iter().any(|v| !v.is_finite()) || input.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("ROAD: the map or the input has NaN or infinite values"));
    }
    if settings.fractions.is_empty() || settings.fractions.iter().any(|&p| !(p > 0.0 && p < 1.0)) {
        return Err(Error::invalid("ROAD fractions must each lie strictly between 0 and 1"));
    }
    let mut desc: Vec<usize> = (0..n).collect();
    desc.sort_by(|&a, &b| map.data[b].total_cmp(&map.data[a]).then(a.cmp(&b)));
    let mut asc: Vec<usize> = (0..n).collect();
    asc.sort_by(|&a, &b| map.data[a].total_cmp(&map.data[b]).then(a.cmp(&b)));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed);
    let mut curve = |order: &[usize]| -> Result<Vec<f32>> {
        let mut batch = Vec::with_capacity(settings.fractions.len() * input.len());
        for &p in &settings.fractions {
            let k = ((p * n as f64).round() as usize).min(n - 1);
            let mut removed = vec![false; n];
            for &i in &order[..k] {
                removed[i] = true;
            }
            let mut img = input.to_vec();
            impute(&mut img, channels, w, h, &removed, settings.noise, &mut rng)?;
            batch.extend(img);
        }
        let s = score(&batch, settings.fractions.len())?;
        if s.len() != settings.fractions.len() || s.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numerical("ROAD: the scoring function returned a wrong or non-finite score".into()));
        }
        Ok(s)
    };
    let morf = curve(&desc)?;
    let lerf = curve(&asc)?;
    let mean = |v: &[f32]| (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64) as f32;
    let (morf_mean, lerf_mean) = (mean(&morf), mean(&lerf));
    Ok(Road { fractions: settings.fractions.clone(), morf, lerf, morf_mean, lerf_mean, gap: lerf_mean - morf_mean })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear ramp is harmonic for the symmetric stencil: imputation without noise restores
    /// it exactly whatever interior pixels are removed (at the border the stencil is one-sided);
    /// every imputed pixel is the weighted mean of its neighbours.
    #[test]
    fn imputation_restores_a_ramp_and_satisfies_the_stencil() {
        let (w, h) = (9usize, 7usize);
        let ramp: Vec<f32> = (0..w * h).map(|i| (i % w) as f32 * 0.5 - (i / w) as f32 * 0.25 + 1.0).collect();
        let interior = |i: usize| i % w > 0 && i % w < w - 1 && i / w > 0 && i / w < h - 1;
        let removed: Vec<bool> = (0..w * h).map(|i| interior(i) && (i * 7919) % 10 < 7).collect();
        let mut img = ramp.clone();
        for (v, &r) in img.iter_mut().zip(&removed) {
            if r {
                *v = 100.0;
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        impute(&mut img, 1, w, h, &removed, 0.0, &mut rng).unwrap();
        for (i, (a, b)) in img.iter().zip(&ramp).enumerate() {
            assert!((a - b).abs() < 1e-4, "pixel {i}: {a} vs {b}");
        }
        // a non-harmonic image, border pixels removed too: the stencil holds at every removed pixel
        let removed: Vec<bool> = (0..w * h).map(|i| (i * 7919) % 10 < 7).collect();
        let img0: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32).collect();
        let mut img = img0.clone();
        impute(&mut img, 1, w, h, &removed, 0.0, &mut rng).unwrap();
        for i in (0..w * h).filter(|&i| removed[i]) {
            let (y, x) = ((i / w) as isize, (i % w) as isize);
            let (mut s, mut ws) = (0f64, 0f64);
            for &(dy, dx, wt) in &NEIGHBOURS {
                let (ny, nx) = (y + dy, x + dx);
                if ny >= 0 && nx >= 0 && ny < h as isize && nx < w as isize {
                    s += wt * img[ny as usize * w + nx as usize] as f64;
                    ws += wt;
                }
            }
            assert!((img[i] as f64 - s / ws).abs() < 1e-4, "stencil at {i}");
        }
        assert!(impute(&mut img, 1, w, h, &vec![true; w * h], 0.0, &mut rng).is_err());
    }

    #[test]
    fn road_orders_pixels_by_the_map() {
        // the score is the mean of the left half: a map that ranks the left half first has a
        // lower MoRF and higher LeRF than its mirror image
        let (w, h) = (8u32, 4u32);
        let input: Vec<f32> = (0..32).map(|i| if i % 8 < 4 { 1.0 } else { 0.0 }).collect();
        let left = Heatmap::new(w, h, (0..32).map(|i| if i % 8 < 4 { 1.0 } else { 0.0 }).collect()).unwrap();
        let right = Heatmap::new(w, h, left.data.iter().map(|v| 1.0 - v).collect()).unwrap();
        let mut score = |b: &[f32], n: usize| -> Result<Vec<f32>> {
            Ok((0..n).map(|k| (0..32).filter(|i| i % 8 < 4).map(|i| b[k * 32 + i]).sum::<f32>() / 16.0).collect())
        };
        let s = RoadSettings { noise: 0.0, ..Default::default() };
        let a = road(&input, 1, &left, &s, &mut score).unwrap();
        let b = road(&input, 1, &right, &s, &mut score).unwrap();
        assert!(a.gap > 0.2 && b.gap < -0.2, "{a:?} {b:?}");
        assert_eq!(a.morf.len(), 9);
    }
}
