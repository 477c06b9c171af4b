//! TrivialAugment (Müller & Hutter 2021) with the two restricted operation sets of PIP-Net's
//! training: one op drawn uniformly, applied with one magnitude drawn uniformly from 31 bins
//! (and a random sign for signed ops), as torchvision's `TrivialAugmentWide` does.
//!
//! - [`OpSet::Shape`] ("NoColor" in the official code): identity, shear x/y up to 0.5,
//!   translate x/y up to 16 px, rotate up to 60°, with nearest-neighbour sampling and black
//!   fill.
//! - [`OpSet::Colour`] ("NoShape"): identity, brightness, colour (saturation, up to 0.02),
//!   contrast and sharpness (factors 1 ± up to 0.5), posterize (8 … 2 bits), autocontrast,
//!   equalize — Pillow's `ImageEnhance` / `ImageOps` definitions.
//!
//! Geometry is close to, not bit-identical with, torchvision's (its pixel-centre conventions
//! differ by half a pixel between backends); these are random augmentations, so the
//! distribution is what matters.

use super::image::RgbImage;
use rand::Rng;

/// Which operations may be drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpSet {
    /// Identity, shear, translate, rotate.
    Shape,
    /// Identity, brightness, colour, contrast, sharpness, posterize, autocontrast, equalize.
    Colour,
}

const BINS: usize = 31;

fn bin(max: f64, i: usize) -> f64 {
    max * i as f64 / (BINS - 1) as f64
}

/// One TrivialAugment draw from `set` applied to `img`.
pub fn trivial_augment(img: &RgbImage, set: OpSet, rng: &mut impl Rng) -> RgbImage {
    let ops = match set {
        OpSet::Shape => 6,
        OpSet::Colour => 8,
    };
    let op = rng.random_range(0..ops);
    let i = rng.random_range(0..BINS);
    let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    match (set, op) {
        (_, 0) => img.clone(),
        (OpSet::Shape, 1) => affine(img, [1.0, sign * bin(0.5, i), 0.0, 0.0, 1.0, 0.0]),
        (OpSet::Shape, 2) => affine(img, [1.0, 0.0, 0.0, sign * bin(0.5, i), 1.0, 0.0]),
        (OpSet::Shape, 3) => affine(img, [1.0, 0.0, -(sign * bin(16.0, i)).trunc(), 0.0, 1.0, 0.0]),
        (OpSet::Shape, 4) => affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, -(sign * bin(16.0, i)).trunc()]),
        (OpSet::Shape, _) => rotate(img, sign * bin(60.0, i)),
        (OpSet::Colour, 1) => blend(img, &img.map_values(|_| 0.0), 1.0 + sign * bin(0.5, i)),
        (OpSet::Colour, 2) => blend(img, &grey(img), 1.0 + sign * bin(0.02, i)),
        (OpSet::Colour, 3) => {
            let n = (img.width * img.height) as f64;
            let mean = (grey_values(img).iter().map(|&v| v as f64).sum::<f64>() / n + 0.5).floor() as f32;
            blend(img, &img.map_values(|_| mean), 1.0 + sign * bin(0.5, i))
        }
        (OpSet::Colour, 4) => blend(img, &smooth(img), 1.0 + sign * bin(0.5, i)),
        (OpSet::Colour, 5) => {
            let bits = 8 - (i as f64 / ((BINS - 1) as f64 / 6.0)).round() as u32;
            let mask = (0xFFu32 << (8 - bits)) & 0xFF;
            img.map_values(|v| ((v.round().clamp(0.0, 255.0) as u32) & mask) as f32)
        }
        (OpSet::Colour, 6) => per_channel_lut(img, autocontrast_lut),
        (OpSet::Colour, _) => per_channel_lut(img, equalize_lut),
    }
}

impl RgbImage {
    fn map_values(&self, f: impl Fn(f32) -> f32) -> RgbImage {
        RgbImage { data: self.data.iter().map(|&v| f(v)).collect(), ..self.clone() }
    }
}

/// Output pixel `(x, y)` takes input pixel `m · (x, y, 1)` (nearest; black outside).
fn affine(img: &RgbImage, m: [f64; 6]) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut out = vec![0f32; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
            let sx = (m[0] * xf + m[1] * yf + m[2]).floor();
            let sy = (m[3] * xf + m[4] * yf + m[5]).floor();
            if sx >= 0.0 && sy >= 0.0 && (sx as usize) < w && (sy as usize) < h {
                let (s, d) = ((sy as usize * w + sx as usize) * 3, (y * w + x) * 3);
                out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
            }
        }
    }
    RgbImage { data: out, ..img.clone() }
}

/// Rotation by `degrees` (counter-clockwise) about the image centre.
fn rotate(img: &RgbImage, degrees: f64) -> RgbImage {
    let (c, s) = (degrees.to_radians().cos(), degrees.to_radians().sin());
    let (cx, cy) = (img.width as f64 / 2.0, img.height as f64 / 2.0);
    // the inverse map: rotate the output position back by the angle
    affine(img, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])
}

/// Pillow's `L` conversion of each pixel.
fn grey_values(img: &RgbImage) -> Vec<f32> {
    img.data.chunks_exact(3).map(|p| ((p[0] * 299.0 + p[1] * 587.0 + p[2] * 114.0) / 1000.0).round()).collect()
}

fn grey(img: &RgbImage) -> RgbImage {
    RgbImage { data: grey_values(img).into_iter().flat_map(|v| [v; 3]).collect(), ..img.clone() }
}

/// `degenerate + factor · (img − degenerate)`, clipped to 0…255 (rounded for 8-bit images).
fn blend(img: &RgbImage, degenerate: &RgbImage, factor: f64) -> RgbImage {
    let f = factor as f32;
    let data = img
        .data
        .iter()
        .zip(&degenerate.data)
        .map(|(&v, &d)| {
            let r = (d + f * (v - d)).clamp(0.0, 255.0);
            if img.eight_bit {
                r.round()
            } else {
                r
            }
        })
        .collect();
    RgbImage { data, ..img.clone() }
}

/// Pillow's `SMOOTH` filter (3×3, centre 5, others 1, /13) inside, the border unchanged.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut out = img.clone();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            for ch in 0..3 {
                let mut acc = 0f32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let wgt = if dx == 1 && dy == 1 { 5.0 } else { 1.0 };
                        acc += wgt * img.data[((y + dy - 1) * w + x + dx - 1) * 3 + ch];
                    }
                }
                out.data[(y * w + x) * 3 + ch] = if img.eight_bit { (acc / 13.0).round() } else { acc / 13.0 };
            }
        }
    }
    out
}

fn histogram(values: impl Iterator<Item = f32>) -> [u64; 256] {
    let mut h = [0u64; 256];
    for v in values {
        h[v.round().clamp(0.0, 255.0) as usize] += 1;
    }
    h
}

fn per_channel_lut(img: &RgbImage, lut_of: fn(&[u64; 256]) -> [f32; 256]) -> RgbImage {
    let mut out = img.clone();
    for ch in 0..3 {
        let lut = lut_of(&histogram(img.data.iter().skip(ch).step_by(3).copied()));
        for v in out.data.iter_mut().skip(ch).step_by(3) {
            *v = lut[v.round().clamp(0.0, 255.0) as usize];
        }
    }
    out
}

/// `ImageOps.autocontrast` (no cut-off): stretch the channel's range to 0…255.
fn autocontrast_lut(h: &[u64; 256]) -> [f32; 256] {
    let lo = h.iter().position(|&c| c > 0).unwrap_or(0);
    let hi = h.iter().rposition(|&c| c > 0).unwrap_or(255);
    let mut lut = [0f32; 256];
    for (i, l) in lut.iter_mut().enumerate() {
        *l = if hi <= lo {
            i as f32
        } else {
            let scale = 255.0 / (hi - lo) as f64;
            ((i as f64 - lo as f64) * scale).clamp(0.0, 255.0).floor() as f32
        };
    }
    lut
}

/// `ImageOps.equalize`: the cumulative histogram as the mapping.
fn equalize_lut(h: &[u64; 256]) -> [f32; 256] {
    let mut lut = [0f32; 256];
    let last = h.iter().rposition(|&c| c > 0).map(|i| h[i]).unwrap_or(0);
    let step = (h.iter().sum::<u64>() - last) / 255;
    if step == 0 {
        for (i, l) in lut.iter_mut().enumerate() {
            *l = i as f32;
        }
        return lut;
    }
    let mut n = step / 2;
    for (i, l) in lut.iter_mut().enumerate() {
        *l = (n / step).min(255) as f32;
        n += h[i];
    }
    lut
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h).flat_map(|i| [((i * 7) % 200 + 20) as f32; 3]).collect();
        RgbImage::new(w, h, data, true).unwrap()
    }

    #[test]
    fn identity_geometry_and_exact_shifts() {
        let img = ramp(9, 7);
        assert_eq!(affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).data, img.data);
        // translate right by 2: column x shows column x − 2, the first two are black
        let t = affine(&img, [1.0, 0.0, -2.0, 0.0, 1.0, 0.0]);
        assert_eq!(t.pixel(4, 3), img.pixel(2, 3));
        assert_eq!(t.pixel(1, 3), Some([0.0; 3]));
        // a full turn is the identity, a half turn mirrors both axes
        assert_eq!(rotate(&img, 360.0).data, img.data);
        let r = rotate(&ramp(8, 8), 180.0);
        assert_eq!(r.pixel(0, 0), ramp(8, 8).pixel(7, 7));
    }

    #[test]
    fn colour_ops_follow_pillow() {
        let img = ramp(6, 5);
        // brightness 1 and contrast 1 are identities; brightness 0 is black
        assert_eq!(blend(&img, &img.map_values(|_| 0.0), 1.0).data, img.data);
        assert!(blend(&img, &img.map_values(|_| 0.0), 0.0).data.iter().all(|&v| v == 0.0));
        // autocontrast stretches to the full range; equalize keeps the order of values
        let a = per_channel_lut(&img, autocontrast_lut);
        assert_eq!(a.data.iter().cloned().fold(f32::MAX, f32::min), 0.0);
        assert_eq!(a.data.iter().cloned().fold(0.0, f32::max), 255.0);
        // (equalize leaves an image unchanged when fewer than 255 pixels are not of its brightest
        // value, as Pillow does: this 30-pixel one; check the mapping on a larger one)
        let big = ramp(40, 40);
        assert_eq!(per_channel_lut(&img, equalize_lut).data, img.data);
        let e = per_channel_lut(&big, equalize_lut);
        let pairs: Vec<(f32, f32)> = big.data.iter().copied().zip(e.data.iter().copied()).collect();
        for &(a, ea) in &pairs {
            for &(b, eb) in &pairs {
                assert!(a >= b || ea <= eb, "equalize reversed {a} < {b}: {ea} > {eb}");
            }
        }
        // and it spreads the values: the darkest maps to 0, the range grows to ≥ 200 levels
        let (lo, hi) = e.data.iter().fold((f32::MAX, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert_eq!(lo, 0.0);
        assert!(hi - lo >= 200.0, "equalized range {lo}..{hi}");
    }

    #[test]
    fn every_op_keeps_size_and_range_and_is_seeded() {
        let img = ramp(20, 20);
        for set in [OpSet::Shape, OpSet::Colour] {
            let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            for _ in 0..200 {
                let x = trivial_augment(&img, set, &mut a);
                assert_eq!(x.data, trivial_augment(&img, set, &mut b).data);
                assert_eq!((x.width, x.height), (20, 20));
                assert!(x.data.iter().all(|v| (0.0..=255.0).contains(v)));
            }
        }
    }
}
