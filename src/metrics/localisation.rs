//! Localisation: does the heatmap point at the target object?
//!
//! The protocol (from `../shared/fixtures/cnn/iba-reference/README.md`, "Pointing game", and
//! `../shared/fixtures/images/README.md`, "Boxes"): boxes are `[x0, y0, x1, y1]` in input
//! pixels, half-open, so pixel `(x, y)` is inside when `x0 <= x < x1` and `y0 <= y < y1`. The
//! map's maximum is the first one in row-major order (numpy `argmax` of the flattened map). A
//! pointing hit is a maximum inside one of the target's boxes; the tolerant variant
//! (`hit_tol15`, 15 px) also accepts a maximum within that Euclidean distance of a box, the
//! distance being measured from the maximum's pixel to the nearest pixel of the box.

use crate::imaging::heatmap::Heatmap;

/// The inclusive pixel range `[lo, hi]` along one axis of a half-open interval `[a, b)`:
/// integer `p` satisfies `a <= p < b` exactly when `ceil(a) <= p <= ceil(b) - 1`. `None` if the
/// interval holds no pixel or a bound is NaN.
fn pixel_range(a: f32, b: f32) -> Option<(f64, f64)> {
    let (lo, hi) = (f64::from(a).ceil(), f64::from(b).ceil() - 1.0);
    (lo <= hi).then_some((lo, hi))
}

/// The pixel ranges `([x_lo, x_hi], [y_lo, y_hi])` of a box, `None` if it holds no pixel.
fn box_pixels(b: &[f32; 4]) -> Option<((f64, f64), (f64, f64))> {
    Some((pixel_range(b[0], b[2])?, pixel_range(b[1], b[3])?))
}

/// Distance from `p` to the inclusive range `[lo, hi]` along one axis (0 inside).
fn axis_gap(p: f64, (lo, hi): (f64, f64)) -> f64 {
    (lo - p).max(p - hi).max(0.0)
}

/// Whether the pointing game counts `map` as a hit for the target boxes `boxes`
/// (`[x0, y0, x1, y1]`, half-open, in the map's pixels).
///
/// The map's maximum is taken with [`Heatmap::argmax`] (the first maximum in row-major order). With `tolerance <= 0` (or NaN) it is a
/// hit when that pixel `(x, y)` lies in some box: `x0 <= x < x1` and `y0 <= y < y1`. With
/// `tolerance = t > 0` it is a hit when the Euclidean distance from `(x, y)` to the nearest
/// pixel of some box is at most `t` (the reference's `hit_tol15` uses `t = 15`); for `t < 1`
/// this is the same as the strict rule. An empty or all-NaN map, or no non-empty box, is a
/// miss.
pub fn pointing_hit(map: &Heatmap, boxes: &[[f32; 4]], tolerance: f32) -> bool {
    if map.data.iter().all(|v| v.is_nan()) {
        return false;
    }
    let (x, y) = map.argmax();
    let (x, y) = (f64::from(x), f64::from(y));
    let t = if tolerance > 0.0 { f64::from(tolerance) } else { 0.0 };
    boxes.iter().filter_map(box_pixels).any(|(bx, by)| {
        let (dx, dy) = (axis_gap(x, bx), axis_gap(y, by));
        dx * dx + dy * dy <= t * t
    })
}

/// The fraction of the map's positive mass that lies in the union of `boxes`
/// (`[x0, y0, x1, y1]`, half-open, in the map's pixels): `Σ_in max(v, 0) / Σ_all max(v, 0)`,
/// summed in `f64`. A pixel in several boxes counts once; NaN values count as 0. A map with no
/// positive mass gives 0.
pub fn energy_in_boxes(map: &Heatmap, boxes: &[[f32; 4]]) -> f32 {
    let w = map.width as usize;
    if w == 0 {
        return 0.0;
    }
    let n = (w * map.height as usize).min(map.data.len());
    let ranges: Vec<_> = boxes.iter().filter_map(box_pixels).collect();
    let (mut inside, mut total) = (0f64, 0f64);
    for (i, &v) in map.data[..n].iter().enumerate() {
        if v.is_nan() || v <= 0.0 {
            continue;
        }
        let v = f64::from(v);
        total += v;
        let (x, y) = ((i % w) as f64, (i / w) as f64);
        if ranges.iter().any(|&(bx, by)| axis_gap(x, bx) == 0.0 && axis_gap(y, by) == 0.0) {
            inside += v;
        }
    }
    if total > 0.0 {
        (inside / total) as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w × h` map of zeros with the given `(x, y, value)` entries.
    fn planted(w: u32, h: u32, points: &[(u32, u32, f32)]) -> Heatmap {
        let mut data = vec![0.0; (w * h) as usize];
        for &(x, y, v) in points {
            data[(y * w + x) as usize] = v;
        }
        Heatmap::new(w, h, data).unwrap()
    }

    #[test]
    fn argmax_is_the_first_maximum_in_row_major_order() {
        // Ties at (3, 1), (1, 2) and (0, 3): the first in row-major order is (3, 1).
        let map = planted(4, 4, &[(1, 2, 5.0), (3, 1, 5.0), (0, 3, 5.0), (2, 0, 4.0)]);
        assert_eq!(Heatmap::argmax(&map), (3, 1));
        // NaN is skipped, even in first position.
        let map = planted(4, 4, &[(0, 0, f32::NAN), (2, 3, 1.0), (3, 3, f32::NAN)]);
        assert_eq!(Heatmap::argmax(&map), (2, 3));
        // All equal: the first pixel. All negative: the largest.
        assert_eq!(Heatmap::argmax(&planted(3, 2, &[])), (0, 0));
        let neg = Heatmap::new(3, 2, vec![-3.0, -2.0, -5.0, -1.5, -9.0, -1.5]).unwrap();
        assert_eq!(Heatmap::argmax(&neg), (0, 1));
        let all_nan = Heatmap::new(2, 2, vec![f32::NAN; 4]).unwrap();
        assert_eq!(Heatmap::argmax(&all_nan), (0, 0));
        assert!(!pointing_hit(&all_nan, &[[0.0, 0.0, 2.0, 2.0]], 0.0));
    }

    #[test]
    fn strict_pointing_uses_half_open_boxes() {
        let b = [[2.0, 2.0, 5.0, 5.0]];
        let at = |x, y| planted(10, 10, &[(x, y, 1.0)]);
        assert!(pointing_hit(&at(2, 2), &b, 0.0));
        assert!(pointing_hit(&at(4, 4), &b, 0.0));
        assert!(!pointing_hit(&at(5, 3), &b, 0.0)); // x1 is exclusive
        assert!(!pointing_hit(&at(3, 5), &b, 0.0)); // y1 is exclusive
        assert!(!pointing_hit(&at(1, 3), &b, 0.0));
        // Any of several boxes; an empty box never hits.
        let many = [[0.0, 0.0, 0.0, 10.0], [6.0, 6.0, 8.0, 8.0]];
        assert!(pointing_hit(&at(7, 6), &many, 0.0));
        assert!(!pointing_hit(&at(0, 3), &many, 0.0));
        assert!(!pointing_hit(&at(3, 3), &[], 15.0));
        // Fractional bounds: pixels 3 and 4 satisfy 2.5 <= x < 4.2.
        let frac = [[2.5, 0.0, 4.2, 10.0]];
        assert!(!pointing_hit(&at(2, 0), &frac, 0.0));
        assert!(pointing_hit(&at(3, 0), &frac, 0.0));
        assert!(pointing_hit(&at(4, 0), &frac, 0.0));
        assert!(!pointing_hit(&at(5, 0), &frac, 0.0));
        // Negative or NaN tolerance is the strict rule.
        assert!(!pointing_hit(&at(5, 3), &b, -3.0));
        assert!(!pointing_hit(&at(5, 3), &b, f32::NAN));
    }

    #[test]
    fn tolerant_pointing_is_euclidean_distance_to_the_nearest_box_pixel() {
        // Box pixels: x in 2..=4, y in 2..=4.
        let b = [[2.0, 2.0, 5.0, 5.0]];
        let at = |x, y| planted(20, 20, &[(x, y, 1.0)]);
        // (5, 3) is 1 px right of the last column.
        assert!(!pointing_hit(&at(5, 3), &b, 0.5));
        assert!(pointing_hit(&at(5, 3), &b, 1.0));
        // (7, 3): 3 px away.
        assert!(!pointing_hit(&at(7, 3), &b, 2.9));
        assert!(pointing_hit(&at(7, 3), &b, 3.0));
        // (7, 8): 3 px right and 4 px below the corner pixel (4, 4): distance 5 (Chebyshev would say 4).
        assert!(!pointing_hit(&at(7, 8), &b, 4.99));
        assert!(pointing_hit(&at(7, 8), &b, 5.0));
        // Above-left of the box: (0, 0) to (2, 2) is sqrt(8).
        assert!(!pointing_hit(&at(0, 0), &b, 2.82));
        assert!(pointing_hit(&at(0, 0), &b, 2.83));
        // Inside is a hit at any tolerance.
        assert!(pointing_hit(&at(3, 3), &b, 15.0));
    }

    #[test]
    fn energy_is_the_positive_mass_fraction_in_the_union_of_boxes() {
        // 4x4 map; positive mass 1 + 2 + 3 + 4 = 10; the negative value is ignored.
        let map = planted(4, 4, &[(0, 0, 1.0), (1, 1, 2.0), (3, 3, 3.0), (2, 0, 4.0), (1, 0, -5.0)]);
        assert_eq!(energy_in_boxes(&map, &[[0.0, 0.0, 2.0, 2.0]]), 0.3);
        // Half-open: [0, 0, 1, 1] holds only (0, 0).
        assert_eq!(energy_in_boxes(&map, &[[0.0, 0.0, 1.0, 1.0]]), 0.1);
        // Overlapping boxes count each pixel once.
        assert_eq!(energy_in_boxes(&map, &[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 4.0]]), 0.6);
        assert_eq!(energy_in_boxes(&map, &[[0.0, 0.0, 4.0, 4.0]]), 1.0);
        assert_eq!(energy_in_boxes(&map, &[]), 0.0);
        // Boxes reaching outside the map are fine.
        assert_eq!(energy_in_boxes(&map, &[[2.0, -10.0, 40.0, 1.0]]), 0.4);
        // No positive mass.
        assert_eq!(energy_in_boxes(&planted(4, 4, &[(1, 1, -1.0)]), &[[0.0, 0.0, 4.0, 4.0]]), 0.0);
        // NaN counts as 0.
        let nan = planted(2, 1, &[(0, 0, f32::NAN), (1, 0, 2.0)]);
        assert_eq!(energy_in_boxes(&nan, &[[1.0, 0.0, 2.0, 1.0]]), 1.0);
    }
}
