//! Scalar maps over an image grid ("heatmaps"): attribution or capacity values per patch or per
//! pixel, with the bilinear upsampling and min-max normalisation the reference implementations
//! apply before display.

use std::borrow::Cow;

use crate::error::{Error, Result};

/// A row-major `width × height` grid of `f32` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Width (columns).
    pub width: u32,
    /// Height (rows).
    pub height: u32,
    /// `width * height` values, row by row.
    pub data: Vec<f32>,
}

/// Per output index along one axis: the two source indices and their weights, as torch's
/// `compute_source_index_and_lambda` computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lerp {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// torch's linear interpolation indices for `align_corners=False`, in `f32` like its CPU kernel.
fn lerp_axis(in_size: usize, out_size: usize) -> Vec<Lerp> {
    if in_size == out_size {
        return (0..out_size).map(|i| Lerp { i0: i, i1: i, w0: 1.0, w1: 0.0 }).collect();
    }
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|dst| {
            let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_size - 1);
            let w1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            Lerp { i0, i1, w0: 1.0 - w1, w1 }
        })
        .collect()
}

impl Heatmap {
    /// A heatmap from row-major values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a dimension is zero or `data.len() != width * height`.
    pub fn new(width: u32, height: u32, data: Vec<f32>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!(
                "heatmap size {width}x{height} is empty: width and height must be at least 1"
            )));
        }
        let expected = u64::from(width) * u64::from(height);
        if data.len() as u64 != expected {
            return Err(Error::invalid(format!(
                "a {width}x{height} heatmap needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Heatmap { width, height, data })
    }

    /// `(width, height)`.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The value at column `x`, row `y`, or `None` outside the map.
    pub fn get(&self, x: u32, y: u32) -> Option<f32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.data.get(y as usize * self.width as usize + x as usize).copied()
    }

    /// The values, padded with zeros or cut to `width * height` if `data` has another length.
    fn values(&self) -> Cow<'_, [f32]> {
        let n = self.width as usize * self.height as usize;
        if self.data.len() == n {
            Cow::Borrowed(&self.data)
        } else {
            let mut v = self.data.clone();
            v.resize(n, 0.0);
            Cow::Owned(v)
        }
    }

    /// Resizes to `width × height` exactly like torch's
    /// `F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)` on CPU:
    /// half-pixel centres, source index `(dst + 0.5) * in / out - 0.5` clamped at 0, upper
    /// neighbour clamped to the last index, all in `f32`. Works for shrinking too (without
    /// antialiasing, like torch's default). An empty map gives zeros.
    pub fn upsample_bilinear(&self, width: u32, height: u32) -> Heatmap {
        let (out_w, out_h) = (width as usize, height as usize);
        let (in_w, in_h) = (self.width as usize, self.height as usize);
        if in_w == 0 || in_h == 0 {
            return Heatmap { width, height, data: vec![0.0; out_w * out_h] };
        }
        let src = self.values();
        let xs = lerp_axis(in_w, out_w);
        let ys = lerp_axis(in_h, out_h);
        let mut data = Vec::with_capacity(out_w * out_h);
        for ly in &ys {
            let row0 = &src[ly.i0 * in_w..(ly.i0 + 1) * in_w];
            let row1 = &src[ly.i1 * in_w..(ly.i1 + 1) * in_w];
            for lx in &xs {
                // torch evaluates the width interpolation inside the height interpolation.
                let t0 = row0[lx.i0] * lx.w0 + row0[lx.i1] * lx.w1;
                let t1 = row1[lx.i0] * lx.w0 + row1[lx.i1] * lx.w1;
                data.push(t0 * ly.w0 + t1 * ly.w1);
            }
        }
        Heatmap { width, height, data }
    }

    /// Resizes to `width × height` like scikit-image's `resize(order=1, mode="reflect")`
    /// (scipy `zoom` with `grid_mode=True`, `mode="mirror"`), which IBA's `to_saliency_map`
    /// uses: bilinear with half-pixel centres, source coordinate `(dst + 0.5)·in/out − 0.5`, and
    /// outside the map the values are mirrored about the edge pixel's centre (index −1 reads 1)
    /// instead of clamped. Computed in `f64`. Differs from [`Heatmap::upsample_bilinear`] only in
    /// the outer band of half a source pixel.
    pub fn resize_bilinear_mirror(&self, width: u32, height: u32) -> Heatmap {
        let (out_w, out_h) = (width as usize, height as usize);
        let (in_w, in_h) = (self.width as usize, self.height as usize);
        if in_w == 0 || in_h == 0 {
            return Heatmap { width, height, data: vec![0.0; out_w * out_h] };
        }
        let src = self.values();
        let axis = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f64)> {
            let mirror = |i: isize| -> usize {
                if n_in == 1 {
                    return 0;
                }
                let period = 2 * (n_in as isize - 1);
                let m = i.rem_euclid(period);
                (if m >= n_in as isize { period - m } else { m }) as usize
            };
            (0..n_out)
                .map(|d| {
                    let x = (d as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5;
                    let f = x.floor();
                    (mirror(f as isize), mirror(f as isize + 1), x - f)
                })
                .collect()
        };
        let xs = axis(in_w, out_w);
        let ys = axis(in_h, out_h);
        let at = |x: usize, y: usize| f64::from(src[y * in_w + x]);
        let mut data = Vec::with_capacity(out_w * out_h);
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
                let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
                data.push((top * (1.0 - fy) + bottom * fy) as f32);
            }
        }
        Heatmap { width, height, data }
    }

    /// Min-max normalised to [0, 1]: `(x - min) / (max - min)`. A constant map gives all zeros.
    ///
    /// # Errors
    /// [`Error::Numerical`] if any value is NaN or infinite (the message gives its position).
    pub fn normalized(&self) -> Result<Heatmap> {
        let w = self.width.max(1) as usize;
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "heatmap value at (x={}, y={}) is {}; cannot normalise",
                i % w,
                i / w,
                self.data[i]
            )));
        }
        let (min, max) = self.min_max();
        let range = f64::from(max) - f64::from(min);
        let data = if self.data.is_empty() || range <= 0.0 {
            vec![0.0; self.data.len()]
        } else {
            // f64 so that neither the difference nor the range can overflow.
            self.data.iter().map(|&v| ((f64::from(v) - f64::from(min)) / range) as f32).collect()
        };
        Ok(Heatmap { width: self.width, height: self.height, data })
    }

    /// `(x, y)` — column and row — of the first maximum in row-major order (NaN values are
    /// skipped; an empty or all-NaN map gives `(0, 0)`).
    pub fn argmax(&self) -> (u32, u32) {
        let mut best: Option<(usize, f32)> = None;
        for (i, &v) in self.data.iter().enumerate() {
            let better = match best {
                None => !v.is_nan(),
                Some((_, b)) => v > b,
            };
            if better {
                best = Some((i, v));
            }
        }
        let w = self.width.max(1) as usize;
        best.map_or((0, 0), |(i, _)| ((i % w) as u32, (i / w) as u32))
    }

    /// The sum of all values (accumulated in `f64`).
    pub fn sum(&self) -> f32 {
        self.data.iter().map(|&v| f64::from(v)).sum::<f64>() as f32
    }

    /// The mean of all values (accumulated in `f64`; 0 for an empty map).
    pub fn mean(&self) -> f32 {
        if self.data.is_empty() {
            0.0
        } else {
            (self.data.iter().map(|&v| f64::from(v)).sum::<f64>() / self.data.len() as f64) as f32
        }
    }

    /// `(min, max)` over the values, NaN values skipped; `(NaN, NaN)` for an empty or all-NaN
    /// map.
    pub fn min_max(&self) -> (f32, f32) {
        let (min, max) = self
            .data
            .iter()
            .filter(|v| !v.is_nan())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if min > max {
            (f32::NAN, f32::NAN)
        } else {
            (min, max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Heatmap::new(2, 2, vec![0.0; 4]).is_ok());
        let err = Heatmap::new(2, 2, vec![0.0; 3]).unwrap_err().to_string();
        assert!(err.contains("needs 4 values, got 3"), "{err}");
        assert!(Heatmap::new(0, 2, vec![]).is_err());
    }

    #[test]
    fn upsample_2x2_to_4x4_matches_torch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False)
        let h = Heatmap::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let up = h.upsample_bilinear(4, 4);
        #[rustfmt::skip]
        let expected = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(up.dimensions(), (4, 4));
        assert_eq!(up.data, expected.to_vec());
    }

    #[test]
    fn lerp_axis_indices() {
        // 3 -> 7: scale 3/7; dst 0 clamps to src 0; dst 6: src = 3/7 * 6.5 - 0.5 = 2.2857 →
        // i0 = 2, i1 = 2 (clamped), weights 1 - 0.2857 and 0.2857.
        let l = lerp_axis(3, 7);
        assert_eq!((l[0].i0, l[0].i1, l[0].w0, l[0].w1), (0, 1, 1.0, 0.0));
        assert_eq!((l[6].i0, l[6].i1), (2, 2));
        assert!((l[6].w1 - 0.285_714_3).abs() < 1e-6);
        // dst 3: src = 3/7 * 3.5 - 0.5 = 1.0 → exactly input 1.
        assert_eq!(l[3].i0, 1);
        assert!(l[3].w1.abs() < 1e-6);
    }

    #[test]
    fn upsample_8_to_64_is_exact_on_a_linear_ramp() {
        // f(x, y) = x + 2y on 8x8. Bilinear interpolation reproduces a linear function wherever
        // no clamping happens: output (X, Y) = sx + 2 sy with s = (d + 0.5) / 8 - 0.5, for
        // d in 4..=59. The 4 clamped outputs at each end mirror each other, so the mean of the
        // whole map stays the input mean 3.5 + 2 * 3.5 = 10.5.
        let data = (0..64).map(|i| (i % 8) as f32 + 2.0 * (i / 8) as f32).collect();
        let h = Heatmap::new(8, 8, data).unwrap();
        let up = h.upsample_bilinear(64, 64);
        let s = |d: u32| (d as f32 + 0.5) / 8.0 - 0.5;
        for y in 4..60 {
            for x in 4..60 {
                let v = up.get(x, y).unwrap();
                assert!((v - (s(x) + 2.0 * s(y))).abs() < 1e-5, "({x}, {y}) = {v}");
            }
        }
        assert_eq!(up.get(0, 0), Some(0.0));
        assert_eq!(up.get(63, 63), Some(21.0));
        assert!((up.mean() - 10.5).abs() < 1e-5);
        assert!((up.sum() - 10.5 * 4096.0).abs() < 0.05);
    }

    #[test]
    fn downsample_and_identity() {
        let h = Heatmap::new(4, 1, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        // 4 -> 2: src = 2 * (d + 0.5) - 0.5 = 0.5, 2.5 → 0.5 and 2.5.
        assert_eq!(h.upsample_bilinear(2, 1).data, vec![0.5, 2.5]);
        assert_eq!(h.upsample_bilinear(4, 1), h);
    }

    #[test]
    fn normalized_min_max() {
        let h = Heatmap::new(3, 1, vec![2.0, 4.0, 3.0]).unwrap();
        assert_eq!(h.normalized().unwrap().data, vec![0.0, 1.0, 0.5]);
        let c = Heatmap::new(2, 2, vec![7.5; 4]).unwrap();
        assert_eq!(c.normalized().unwrap().data, vec![0.0; 4]);
        let big = Heatmap::new(2, 1, vec![-3e38, 3e38]).unwrap();
        assert_eq!(big.normalized().unwrap().data, vec![0.0, 1.0]);
        let nan = Heatmap::new(2, 2, vec![0.0, 1.0, f32::NAN, 2.0]).unwrap();
        match nan.normalized() {
            Err(Error::Numerical(m)) => assert!(m.contains("(x=0, y=1)"), "{m}"),
            other => panic!("expected a numerical error, got {other:?}"),
        }
    }

    #[test]
    fn stats() {
        let h = Heatmap::new(3, 2, vec![1.0, 5.0, -2.0, 5.0, f32::NAN, 0.0]).unwrap();
        assert_eq!(h.argmax(), (1, 0));
        assert_eq!(h.min_max(), (-2.0, 5.0));
        let h = Heatmap::new(3, 2, vec![1.0, 5.0, -2.0, 6.0, 0.0, 0.0]).unwrap();
        assert_eq!(h.argmax(), (0, 1));
        assert_eq!(h.sum(), 10.0);
        let empty = Heatmap { width: 0, height: 0, data: vec![] };
        assert_eq!(empty.argmax(), (0, 0));
        assert!(empty.min_max().0.is_nan());
        assert!(empty.normalized().unwrap().data.is_empty());
    }
}
