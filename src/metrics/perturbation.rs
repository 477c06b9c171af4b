//! Deletion (MoRF) and LeRF curves: remove tiles of the input in the order a heatmap gives,
//! and follow the target's probability.
//!
//! The protocol (from `../shared/fixtures/cnn/iba-reference/README.md`, "Deletion/insertion"):
//! split the input into `tile × tile` tiles, score each tile by the mean of the map over it,
//! order the tiles (MoRF: `argsort(-score, stable)`, LeRF: `argsort(score, stable)`), and at
//! step `k = 0..=steps` replace the first `floor(k · tiles / steps)` tiles by the per-channel
//! mean of the (normalised) input. The curve is the target probability at each step and its
//! AUC a trapezoid over `x = k / steps`.

use std::cmp::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;

/// Settings of a deletion / LeRF curve. The defaults are the reference's: 8×8 tiles, 50 steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurveSettings {
    /// Side of a square tile in input pixels (default 8). The input's width and height must be
    /// multiples of it.
    pub tile: u32,
    /// Number of steps (default 50): the curve has `steps + 1` points, `k = 0..=steps`.
    pub steps: u32,
    /// At most this many perturbed images are passed to one call of the scoring function
    /// (default 17, so that the 51 images of a default curve take three calls).
    pub batch: usize,
}

impl Default for CurveSettings {
    fn default() -> Self {
        CurveSettings { tile: 8, steps: 50, batch: 17 }
    }
}

/// The order in which tiles are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most relevant first (deletion): `argsort(-score, stable)`. Serialised as `"morf"`.
    MoRF,
    /// Least relevant first: `argsort(score, stable)`. Serialised as `"lerf"`.
    LeRF,
}

/// The scoring function of a curve: `score(images, n)` gets `n` perturbed images back to back
/// (each CHW, like the input) and returns their `n` scores (the target's softmax probability in
/// the reference protocol).
pub type ScoreFn<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// One perturbation curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// The tile order the curve was made with.
    pub order: Order,
    /// The score (target probability) at steps `k = 0..=steps`: `steps + 1` values; the first
    /// is the score of the unperturbed input, the last that of the all-mean image.
    pub scores: Vec<f32>,
    /// Trapezoid area under `scores` over `x = k / steps` (see [`auc`]).
    pub auc: f32,
}

/// Checks the tile size against a `width × height` grid and returns the number of tiles along
/// x and y.
fn tile_grid(width: u32, height: u32, tile: u32, what: &str) -> Result<(usize, usize)> {
    if tile == 0 {
        return Err(Error::invalid("tile size is 0: it must be at least 1 pixel"));
    }
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!("{what} size {width}x{height} is empty")));
    }
    if width % tile != 0 || height % tile != 0 {
        return Err(Error::invalid(format!("{what} size {width}x{height} is not a multiple of the tile size {tile}")));
    }
    Ok(((width / tile) as usize, (height / tile) as usize))
}

/// The mean of `map` over each `tile × tile` tile, tiles in row-major order (tile row by tile
/// row). Sums are taken in `f64` and the mean rounded once to `f32`; with the IBA maps of the
/// reference this reproduces its tile order exactly. (Maps upsampled from a coarse grid, like
/// Grad-CAM's, have hundreds of nearly tied tiles whose order depends on the last bit of the
/// summation; no summation order reproduces the reference's on those.)
///
/// # Errors
/// [`Error::InvalidArgument`] if `tile` is 0, the map is empty, its data length is not
/// `width * height`, its size is not a multiple of `tile`, or a value is NaN or infinite.
pub fn tile_scores(map: &Heatmap, tile: u32) -> Result<Vec<f32>> {
    let (tx, ty) = tile_grid(map.width, map.height, tile, "heatmap")?;
    let w = map.width as usize;
    if map.data.len() != w * map.height as usize {
        return Err(Error::invalid(format!(
            "a {}x{} heatmap needs {} values, got {}",
            map.width,
            map.height,
            w * map.height as usize,
            map.data.len()
        )));
    }
    if let Some(i) = map.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "heatmap value at (x={}, y={}) is {}; tile scores need finite values",
            i % w,
            i / w,
            map.data[i]
        )));
    }
    let t = tile as usize;
    let mut sums = vec![0f64; tx * ty];
    for (y, row) in map.data.chunks_exact(w).enumerate() {
        let sums_row = &mut sums[(y / t) * tx..(y / t + 1) * tx];
        for (s, part) in sums_row.iter_mut().zip(row.chunks_exact(t)) {
            *s += part.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    let n = (t * t) as f64;
    Ok(sums.into_iter().map(|s| (s / n) as f32).collect())
}

/// Compares two keys like numpy's sort: ascending, NaN after everything, `-0.0 == 0.0`.
fn cmp_nan_last(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The tile indices in removal order, exactly as numpy's stable argsort gives them:
/// [`Order::MoRF`] is `argsort(-scores, kind="stable")` (descending, tied tiles in ascending
/// index order) and [`Order::LeRF`] is `argsort(scores, kind="stable")` (ascending, ties in
/// ascending index order). NaN scores come last in both orders, like numpy.
pub fn tile_order(scores: &[f32], order: Order) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // `sort_by` is stable, so equal keys keep their (ascending) index order.
    match order {
        Order::MoRF => idx.sort_by(|&a, &b| cmp_nan_last(-scores[a], -scores[b])),
        Order::LeRF => idx.sort_by(|&a, &b| cmp_nan_last(scores[a], scores[b])),
    }
    idx
}

/// How many tiles are removed at step `k`: `floor(k * total / steps)`, in exact integer
/// arithmetic (784 tiles, 50 steps: 15 at k = 1, 392 at k = 25, 784 at k = 50). `k` is
/// clamped to `steps`, and `steps == 0` gives `total`.
pub fn tiles_removed(k: u32, total: usize, steps: u32) -> usize {
    if steps == 0 {
        return total;
    }
    let k = k.min(steps);
    (u128::from(k) * total as u128 / u128::from(steps)) as usize
}

/// Trapezoid area under `y` sampled at `x = i / (len - 1)`, `i = 0..len`, in `f64`; 0 for
/// fewer than two points.
pub fn auc(y: &[f32]) -> f32 {
    if y.len() < 2 {
        return 0.0;
    }
    let area: f64 = y.windows(2).map(|p| 0.5 * (f64::from(p[0]) + f64::from(p[1]))).sum();
    (area / (y.len() - 1) as f64) as f32
}

/// A seeded random permutation of `0..tiles` (Fisher–Yates with [`ChaCha8Rng`]), for the
/// random-order baseline. Reproducible across platforms for the same seed; it is not numpy's
/// `default_rng(seed).permutation`, so the reference's `random` curve is matched only in
/// distribution, not value by value.
pub fn random_order(tiles: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..tiles).collect();
    for i in (1..tiles).rev() {
        // Sample as u64 so that the stream does not depend on the width of usize.
        let j = rng.random_range(0..=i as u64) as usize;
        idx.swap(i, j);
    }
    idx
}

/// The deletion (MoRF) or LeRF curve of `map` for one input.
///
/// `input` is the normalised network input, CHW, `channels * height * width` values; `map` is
/// a heatmap of the same `width × height`. Tiles are scored with [`tile_scores`], ordered with
/// [`tile_order`], and removed as in [`perturbation_curve_with_order`]; the AUC is [`auc`] of
/// the scores.
///
/// `score(images, n)` receives `n` (at most `settings.batch`) perturbed images concatenated,
/// each CHW like `input`, and returns their `n` target probabilities.
///
/// # Errors
/// [`Error::InvalidArgument`] if the map's size differs from the input's, and for every error
/// of [`tile_scores`] and [`perturbation_curve_with_order`]; errors of `score` are passed on.
#[allow(clippy::too_many_arguments)]
pub fn perturbation_curve(
    input: &[f32],
    channels: usize,
    width: u32,
    height: u32,
    map: &Heatmap,
    order: Order,
    settings: &CurveSettings,
    score: &mut ScoreFn<'_>,
) -> Result<Curve> {
    if (map.width, map.height) != (width, height) {
        return Err(Error::invalid(format!(
            "heatmap is {}x{} but the input is {width}x{height}; resize the map to the input first",
            map.width, map.height
        )));
    }
    // Check the settings and input before scoring the tiles, so that errors name the input.
    check_settings(settings)?;
    tile_grid(width, height, settings.tile, "input")?;
    let tiles = tile_scores(map, settings.tile)?;
    let order_idx = tile_order(&tiles, order);
    let scores = perturbation_curve_with_order(input, channels, width, height, &order_idx, settings, score)?;
    let auc = auc(&scores);
    Ok(Curve { order, scores, auc })
}

fn check_settings(settings: &CurveSettings) -> Result<()> {
    if settings.tile == 0 {
        return Err(Error::invalid("tile size is 0: it must be at least 1 pixel"));
    }
    if settings.steps == 0 {
        return Err(Error::invalid("steps is 0: a curve needs at least 1 step"));
    }
    if settings.batch == 0 {
        return Err(Error::invalid("batch is 0: the scoring function must get at least 1 image per call"));
    }
    Ok(())
}

/// The perturbation curve for a given tile order: the scores at steps `k = 0..=steps`.
///
/// The input (CHW, `channels * height * width` values, normalised) is cut into
/// `settings.tile`-sized tiles numbered row-major; `order_idx` must be a permutation of
/// `0..tiles`. At step `k` the first [`tiles_removed`]`(k, tiles, steps)` tiles of `order_idx`
/// are replaced by the fill value: per channel, the mean of `input` over the whole image
/// (computed in `f64`, stored as `f32`). The `steps + 1` perturbed images are handed to
/// `score(images, n)` in order, at most `settings.batch` per call (`images` holds the `n`
/// images back to back, each CHW); `score` must return `n` finite values.
///
/// This is the loop behind [`perturbation_curve`]; call it directly for a random baseline
/// ([`random_order`]) and take [`auc`] of the result.
///
/// # Errors
/// [`Error::InvalidArgument`] if `tile`, `steps`, `batch` or `channels` is 0, the size is
/// empty or not a multiple of the tile, `input` has the wrong length or a non-finite value,
/// `order_idx` is not a permutation of the tiles, or `score` returns the wrong number of
/// values; [`Error::Numerical`] if `score` returns NaN or infinity. Errors of `score` are
/// passed on.
#[allow(clippy::too_many_arguments)]
pub fn perturbation_curve_with_order(
    input: &[f32],
    channels: usize,
    width: u32,
    height: u32,
    order_idx: &[usize],
    settings: &CurveSettings,
    score: &mut ScoreFn<'_>,
) -> Result<Vec<f32>> {
    check_settings(settings)?;
    let (tx, ty) = tile_grid(width, height, settings.tile, "input")?;
    if channels == 0 {
        return Err(Error::invalid("channels is 0: the input needs at least one channel"));
    }
    let (w, h) = (width as usize, height as usize);
    let plane = w * h;
    let image_len = channels
        .checked_mul(plane)
        .ok_or_else(|| Error::invalid(format!("{channels} channels of {width}x{height} overflow usize")))?;
    if input.len() != image_len {
        return Err(Error::invalid(format!(
            "input has {} values but {channels} channels of {width}x{height} (CHW) need {image_len}",
            input.len()
        )));
    }
    if let Some(i) = input.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "input value {} (channel {}, x={}, y={}) is {}; the fill mean needs finite values",
            i,
            i / plane,
            i % w,
            (i % plane) / w,
            input[i]
        )));
    }
    let total = tx * ty;
    if order_idx.len() != total {
        return Err(Error::invalid(format!(
            "tile order has {} entries but the {width}x{height} input has {total} tiles of {}x{}",
            order_idx.len(),
            settings.tile,
            settings.tile
        )));
    }
    let mut seen = vec![false; total];
    for &t in order_idx {
        if t >= total {
            return Err(Error::invalid(format!("tile order names tile {t}, but there are only {total} tiles")));
        }
        if std::mem::replace(&mut seen[t], true) {
            return Err(Error::invalid(format!("tile order names tile {t} twice; it must be a permutation")));
        }
    }

    let fill: Vec<f32> = input
        .chunks_exact(plane)
        .map(|c| (c.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32)
        .collect();
    let t = settings.tile as usize;
    let mut current = input.to_vec();
    let mut removed = 0usize;
    let points = settings.steps as usize + 1;
    let mut scores = Vec::with_capacity(points);
    let mut images = Vec::with_capacity(settings.batch.min(points) * image_len);
    let mut k = 0usize;
    while k < points {
        let n = settings.batch.min(points - k);
        images.clear();
        for step in k..k + n {
            // Removal counts only grow with k, so each image extends the previous one.
            let target = tiles_removed(step as u32, total, settings.steps);
            for &tile in &order_idx[removed..target] {
                let (x0, y0) = ((tile % tx) * t, (tile / tx) * t);
                for (c, &value) in fill.iter().enumerate() {
                    for y in y0..y0 + t {
                        let start = c * plane + y * w + x0;
                        current[start..start + t].fill(value);
                    }
                }
            }
            removed = target;
            images.extend_from_slice(&current);
        }
        let got = score(&images, n)?;
        if got.len() != n {
            return Err(Error::invalid(format!(
                "the scoring function returned {} values for a batch of {n} images (steps {k}..{})",
                got.len(),
                k + n - 1
            )));
        }
        if let Some(i) = got.iter().position(|v| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "the scoring function returned {} for step {} of the perturbation curve",
                got[i],
                k + i
            )));
        }
        scores.extend(got);
        k += n;
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {i}: {x} vs {y} ({a:?} vs {b:?})");
        }
    }

    fn invalid(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(e @ Error::InvalidArgument(_)) => e.to_string(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_reference_settings() {
        assert_eq!(CurveSettings::default(), CurveSettings { tile: 8, steps: 50, batch: 17 });
    }

    #[test]
    fn order_serialises_lowercase() {
        assert_eq!(serde_json::to_string(&Order::MoRF).unwrap(), "\"morf\"");
        assert_eq!(serde_json::to_string(&Order::LeRF).unwrap(), "\"lerf\"");
        let c = Curve { order: Order::LeRF, scores: vec![1.0, 0.5], auc: 0.75 };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"order":"lerf","scores":[1.0,0.5],"auc":0.75}"#);
    }

    #[test]
    fn tile_scores_are_tile_means_row_major() {
        // 4x4 map, 2x2 tiles: tile 0 = top-left, 1 = top-right, 2 = bottom-left, 3 = bottom-right.
        #[rustfmt::skip]
        let data = vec![
            1.0, 2.0,   5.0, 5.0,
            3.0, 4.0,   5.0, 5.0,
            0.0, 0.0,  -1.0, 1.0,
            0.0, 8.0,   2.0, 2.0,
        ];
        let map = Heatmap::new(4, 4, data).unwrap();
        assert_eq!(tile_scores(&map, 2).unwrap(), vec![2.5, 5.0, 2.0, 1.0]);
        assert_eq!(tile_scores(&map, 4).unwrap(), vec![42.0 / 16.0]);
        assert_eq!(tile_scores(&map, 1).unwrap(), map.data);
    }

    #[test]
    fn tile_scores_errors() {
        let map = Heatmap::new(4, 4, vec![0.0; 16]).unwrap();
        assert!(invalid(tile_scores(&map, 0)).contains("tile size is 0"));
        assert!(invalid(tile_scores(&map, 3)).contains("not a multiple of the tile size 3"));
        let mut nan = map.clone();
        nan.data[6] = f32::NAN;
        assert!(invalid(tile_scores(&nan, 2)).contains("(x=2, y=1) is NaN"));
        let short = Heatmap { width: 4, height: 4, data: vec![0.0; 15] };
        assert!(invalid(tile_scores(&short, 2)).contains("needs 16 values, got 15"));
    }

    #[test]
    fn tile_order_is_numpy_stable_argsort_on_ties() {
        let s = [1.0, 3.0, 3.0, 2.0, 3.0, 1.0];
        // np.argsort(-s, kind="stable") = [1, 2, 4, 3, 0, 5]; np.argsort(s, kind="stable") = [0, 5, 3, 1, 2, 4]
        assert_eq!(tile_order(&s, Order::MoRF), vec![1, 2, 4, 3, 0, 5]);
        assert_eq!(tile_order(&s, Order::LeRF), vec![0, 5, 3, 1, 2, 4]);
        // -0.0 and 0.0 tie; NaN goes last in both orders (numpy sorts NaN to the end).
        let z = [0.0, -0.0, f32::NAN, 0.5];
        assert_eq!(tile_order(&z, Order::MoRF), vec![3, 0, 1, 2]);
        assert_eq!(tile_order(&z, Order::LeRF), vec![0, 1, 3, 2]);
        // A map with constant regions: ties between whole tiles.
        #[rustfmt::skip]
        let map = Heatmap::new(4, 2, vec![
            1.0, 1.0, 0.0, 0.0,
            1.0, 1.0, 0.0, 0.0,
        ]).unwrap();
        let scores = tile_scores(&map, 1).unwrap();
        assert_eq!(tile_order(&scores, Order::MoRF), vec![0, 1, 4, 5, 2, 3, 6, 7]);
        assert_eq!(tile_order(&scores, Order::LeRF), vec![2, 3, 6, 7, 0, 1, 4, 5]);
        assert!(tile_order(&[], Order::MoRF).is_empty());
    }

    #[test]
    fn tiles_removed_floor_rule() {
        assert_eq!(tiles_removed(0, 784, 50), 0);
        assert_eq!(tiles_removed(1, 784, 50), 15);
        assert_eq!(tiles_removed(3, 784, 50), 47);
        assert_eq!(tiles_removed(25, 784, 50), 392);
        assert_eq!(tiles_removed(49, 784, 50), 768);
        assert_eq!(tiles_removed(50, 784, 50), 784);
        assert_eq!(tiles_removed(60, 784, 50), 784);
        assert_eq!(tiles_removed(1, 784, 0), 784);
        // LeRF keeps 784 - floor(15.68 k) = ceil(15.68 (50 - k)) tiles.
        assert_eq!(784 - tiles_removed(1, 784, 50), 769);
        // No overflow for large counts.
        assert_eq!(tiles_removed(u32::MAX - 1, usize::MAX, u32::MAX), usize::MAX - usize::MAX / u32::MAX as usize);
    }

    #[test]
    fn auc_trapezoid() {
        // y = x^2 at x = 0, 1/4, 2/4, 3/4, 1: trapezoid = 22/64.
        let y: Vec<f32> = (0..5).map(|k| (k as f32 / 4.0).powi(2)).collect();
        assert_eq!(auc(&y), 0.34375);
        // Linear: exact.
        let lin: Vec<f32> = (0..=50).map(|k| k as f32 / 50.0).collect();
        assert!((auc(&lin) - 0.5).abs() < 1e-7);
        assert_eq!(auc(&[0.3; 51]), 0.3);
        assert_eq!(auc(&[1.0, 0.0]), 0.5);
        assert_eq!(auc(&[0.7]), 0.0);
        assert_eq!(auc(&[]), 0.0);
    }

    #[test]
    fn random_order_is_a_seeded_permutation() {
        let a = random_order(784, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..784).collect::<Vec<_>>());
        assert_eq!(a, random_order(784, 0));
        assert_ne!(a, random_order(784, 1));
        assert_ne!(a, (0..784).collect::<Vec<_>>());
        assert_eq!(random_order(1, 5), vec![0]);
        assert!(random_order(0, 5).is_empty());
    }

    /// 8x8 one-channel input, 2x2 tiles (16 tiles). Planted region: tiles 5, 6 and 9 (pixels
    /// with value 1, everything else 0), so the fill value is 12/64 = 0.1875. The score is the
    /// mean of the input over the planted pixels: 1 intact, 0.1875 when all are replaced.
    fn planted() -> (Vec<f32>, Vec<usize>) {
        let planted_tiles = vec![5, 6, 9];
        let mut input = vec![0f32; 64];
        for &t in &planted_tiles {
            let (x0, y0) = ((t % 4) * 2, (t / 4) * 2);
            for y in y0..y0 + 2 {
                for x in x0..x0 + 2 {
                    input[y * 8 + x] = 1.0;
                }
            }
        }
        let pixels = (0..64).filter(|&i| input[i] == 1.0).collect();
        (input, pixels)
    }

    fn region_score(pixels: Vec<usize>, calls: &mut Vec<usize>) -> impl FnMut(&[f32], usize) -> Result<Vec<f32>> + '_ {
        move |images: &[f32], n: usize| {
            assert_eq!(images.len(), n * 64);
            calls.push(n);
            Ok(images
                .chunks_exact(64)
                .map(|img| pixels.iter().map(|&p| img[p]).sum::<f32>() / pixels.len() as f32)
                .collect())
        }
    }

    #[test]
    fn perfect_map_morf_drops_faster_than_lerf() {
        let (input, pixels) = planted();
        // Perfect map: planted tiles highest (tile 9 > 5 > 6), the rest graded low and distinct.
        let mut tile_value = [0f32; 16];
        for (t, v) in tile_value.iter_mut().enumerate() {
            *v = t as f32 * 0.01;
        }
        tile_value[9] = 3.0;
        tile_value[5] = 2.0;
        tile_value[6] = 1.0;
        let map = Heatmap::new(8, 8, (0..64).map(|i| tile_value[((i / 8) / 2) * 4 + (i % 8) / 2]).collect()).unwrap();
        // One tile per step, so each planted tile leaves at a known step.
        let settings = CurveSettings { tile: 2, steps: 16, batch: 5 };
        let f = 0.1875f32;
        let j = |removed: f32| ((3.0 - removed) + removed * f) / 3.0;

        let mut calls = Vec::new();
        let morf = perturbation_curve(
            &input,
            1,
            8,
            8,
            &map,
            Order::MoRF,
            &settings,
            &mut region_score(pixels.clone(), &mut calls),
        )
        .unwrap();
        assert_eq!(calls, vec![5, 5, 5, 2]);
        let mut expected = vec![j(0.0), j(1.0), j(2.0)];
        expected.extend(std::iter::repeat(j(3.0)).take(14));
        assert_eq!(morf.order, Order::MoRF);
        assert_close(&morf.scores, &expected, 1e-6);
        // AUC by hand: (1/16) * [ (1 + j1)/2 + (j1 + j2)/2 + (j2 + f)/2 + 13 f ].
        let hand = ((1.0 + j(1.0)) / 2.0 + (j(1.0) + j(2.0)) / 2.0 + (j(2.0) + f) / 2.0 + 13.0 * f) / 16.0;
        assert!((morf.auc - hand).abs() < 1e-6, "{} vs {hand}", morf.auc);

        let mut calls = Vec::new();
        let lerf =
            perturbation_curve(&input, 1, 8, 8, &map, Order::LeRF, &settings, &mut region_score(pixels, &mut calls))
                .unwrap();
        // LeRF removes the 13 background tiles first; tile 6, then 5, then 9 at steps 14, 15, 16.
        let mut expected = vec![1.0; 14];
        expected.extend([j(1.0), j(2.0), j(3.0)]);
        assert_close(&lerf.scores, &expected, 1e-6);
        let hand = (13.0 + (1.0 + j(1.0)) / 2.0 + (j(1.0) + j(2.0)) / 2.0 + (j(2.0) + f) / 2.0) / 16.0;
        assert!((lerf.auc - hand).abs() < 1e-6, "{} vs {hand}", lerf.auc);
        assert!(morf.auc < 0.3 && lerf.auc > 0.8, "morf {} lerf {}", morf.auc, lerf.auc);
        // Both end at the all-mean image.
        assert_eq!(morf.scores[16], lerf.scores[16]);
    }

    #[test]
    fn floor_rule_with_uneven_steps() {
        // 16 tiles, 3 steps: 0, 5, 10, 16 tiles removed. Score = number of filled pixels / 4.
        let input: Vec<f32> = (0..64).map(|i| i as f32).collect(); // mean 31.5
        let map = Heatmap::new(8, 8, (0..64).map(|i| -(i as f32)).collect()).unwrap(); // tile 0 most relevant
        let settings = CurveSettings { tile: 2, steps: 3, batch: 17 };
        let mut count = |images: &[f32], n: usize| -> Result<Vec<f32>> {
            assert_eq!(n, 4);
            Ok(images.chunks_exact(64).map(|img| img.iter().filter(|&&v| v == 31.5).count() as f32 / 4.0).collect())
        };
        let c = perturbation_curve(&input, 1, 8, 8, &map, Order::MoRF, &settings, &mut count).unwrap();
        assert_eq!(c.scores, vec![0.0, 5.0, 10.0, 16.0]);
    }

    #[test]
    fn fill_is_the_per_channel_mean_and_tiles_follow_the_order() {
        // 2 channels of 4x2 (two 2x2 tiles: 0 = left, 1 = right).
        #[rustfmt::skip]
        let input = vec![
            1.0, 2.0, 3.0, 4.0,
            5.0, 6.0, 7.0, 8.0, // channel 0, mean 4.5
            -1.0, -1.0, -1.0, -1.0,
            -1.0, -1.0, -1.0, 3.0, // channel 1, mean -0.5
        ];
        let mut seen: Vec<Vec<f32>> = Vec::new();
        let mut record = |images: &[f32], n: usize| -> Result<Vec<f32>> {
            seen.extend(images.chunks_exact(16).map(|c| c.to_vec()));
            Ok(vec![0.5; n])
        };
        let settings = CurveSettings { tile: 2, steps: 2, batch: 2 };
        let scores = perturbation_curve_with_order(&input, 2, 4, 2, &[1, 0], &settings, &mut record).unwrap();
        assert_eq!(scores, vec![0.5; 3]);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], input);
        #[rustfmt::skip]
        let step1 = vec![
            1.0, 2.0, 4.5, 4.5,
            5.0, 6.0, 4.5, 4.5,
            -1.0, -1.0, -0.5, -0.5,
            -1.0, -1.0, -0.5, -0.5,
        ];
        assert_eq!(seen[1], step1);
        let step2 = [vec![4.5; 8], vec![-0.5; 8]].concat();
        assert_eq!(seen[2], step2);
    }

    #[test]
    fn curve_errors() {
        let input = vec![0.0f32; 2 * 8 * 8];
        let map = Heatmap::new(8, 8, vec![0.0; 64]).unwrap();
        let s = CurveSettings { tile: 2, steps: 4, batch: 3 };
        let mut ok = |_: &[f32], n: usize| -> Result<Vec<f32>> { Ok(vec![0.1; n]) };

        let small = Heatmap::new(4, 4, vec![0.0; 16]).unwrap();
        assert!(invalid(perturbation_curve(&input, 2, 8, 8, &small, Order::MoRF, &s, &mut ok))
            .contains("heatmap is 4x4 but the input is 8x8"));
        assert!(invalid(perturbation_curve(&input[1..], 2, 8, 8, &map, Order::MoRF, &s, &mut ok))
            .contains("input has 127 values but 2 channels of 8x8 (CHW) need 128"));
        assert!(invalid(perturbation_curve(&input, 0, 8, 8, &map, Order::MoRF, &s, &mut ok)).contains("channels is 0"));
        let tile0 = CurveSettings { tile: 0, ..s };
        assert!(
            invalid(perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &tile0, &mut ok)).contains("tile size is 0")
        );
        let steps0 = CurveSettings { steps: 0, ..s };
        assert!(
            invalid(perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &steps0, &mut ok)).contains("steps is 0")
        );
        let batch0 = CurveSettings { batch: 0, ..s };
        assert!(
            invalid(perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &batch0, &mut ok)).contains("batch is 0")
        );
        let tile3 = CurveSettings { tile: 3, ..s };
        assert!(invalid(perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &tile3, &mut ok))
            .contains("input size 8x8 is not a multiple of the tile size 3"));
        let mut nan_map = map.clone();
        nan_map.data[9] = f32::NAN;
        assert!(invalid(perturbation_curve(&input, 2, 8, 8, &nan_map, Order::MoRF, &s, &mut ok)).contains("is NaN"));
        let mut nan_input = input.clone();
        nan_input[70] = f32::NAN;
        assert!(invalid(perturbation_curve(&nan_input, 2, 8, 8, &map, Order::MoRF, &s, &mut ok))
            .contains("(channel 1, x=6, y=0) is NaN"));

        let mut short = |_: &[f32], n: usize| -> Result<Vec<f32>> { Ok(vec![0.1; n - 1]) };
        assert!(invalid(perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &s, &mut short))
            .contains("returned 2 values for a batch of 3 images"));
        let mut nan = |_: &[f32], n: usize| -> Result<Vec<f32>> {
            let mut v = vec![0.1; n];
            v[n - 1] = f32::NAN;
            Ok(v)
        };
        let err = perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &s, &mut nan).unwrap_err();
        assert!(matches!(err, Error::Numerical(_)), "{err:?}");
        assert!(err.to_string().contains("returned NaN for step 2"), "{err}");
        let mut fails = |_: &[f32], _: usize| -> Result<Vec<f32>> { Err(Error::Cancelled) };
        assert!(matches!(
            perturbation_curve(&input, 2, 8, 8, &map, Order::MoRF, &s, &mut fails),
            Err(Error::Cancelled)
        ));

        // Orders that are not a permutation of the 16 tiles.
        let mut order: Vec<usize> = (0..16).collect();
        assert!(invalid(perturbation_curve_with_order(&input, 2, 8, 8, &order[1..], &s, &mut ok))
            .contains("tile order has 15 entries but the 8x8 input has 16 tiles of 2x2"));
        order[3] = 16;
        assert!(invalid(perturbation_curve_with_order(&input, 2, 8, 8, &order, &s, &mut ok))
            .contains("names tile 16, but there are only 16 tiles"));
        order[3] = 4;
        assert!(
            invalid(perturbation_curve_with_order(&input, 2, 8, 8, &order, &s, &mut ok)).contains("names tile 4 twice")
        );
    }
}
