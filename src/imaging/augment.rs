//! Data augmentation for estimating feature statistics: torchvision's `RandomResizedCrop`
//! parameter rule, crop, bicubic resize and a horizontal flip (the recipe of the IBA
//! reference's statistics), from a seeded generator.

use super::image::RgbImage;
use super::resize::resize_bicubic;
use crate::error::Result;
use rand::Rng;

/// A crop `(x, y, width, height)` by torchvision's `RandomResizedCrop.get_params`: up to ten
/// tries of an area fraction in `scale` and a log-uniform aspect ratio in `ratio` that fit the
/// image, else the centre crop with the ratio clamped.
pub fn random_resized_crop_params(
    w: u32,
    h: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    let area = (w as f64) * (h as f64);
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let r = rng.random_range(lr0..=lr1).exp();
        let cw = (target * r).sqrt().round() as u32;
        let ch = (target / r).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            return (x, y, cw, ch);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64 / ratio.0).round() as u32).max(1))
    } else if in_ratio > ratio.1 {
        (((h as f64 * ratio.1).round() as u32).max(1), h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// The `(x, y, w, h)` region of `img`.
pub fn crop(img: &RgbImage, (x, y, cw, ch): (u32, u32, u32, u32)) -> Result<RgbImage> {
    let fits = |o: u32, len: u32, n: u32| len > 0 && o.checked_add(len).is_some_and(|e| e <= n);
    if !fits(x, cw, img.width) || !fits(y, ch, img.height) {
        return Err(crate::error::Error::invalid(format!(
            "crop ({x}, {y}) {cw}x{ch} does not lie inside the {}x{} image",
            img.width, img.height
        )));
    }
    let w = img.width as usize;
    let mut data = Vec::with_capacity(cw as usize * ch as usize * 3);
    for row in y as usize..(y + ch) as usize {
        data.extend_from_slice(&img.data[(row * w + x as usize) * 3..(row * w + (x + cw) as usize) * 3]);
    }
    RgbImage::new(cw, ch, data, img.eight_bit)
}

/// Mirrors `img` left to right.
pub fn flip_horizontal(img: &RgbImage) -> RgbImage {
    let w = img.width as usize;
    let mut out = img.clone();
    for (src, dst) in img.data.chunks_exact(w * 3).zip(out.data.chunks_exact_mut(w * 3)) {
        for x in 0..w {
            dst[x * 3..x * 3 + 3].copy_from_slice(&src[(w - 1 - x) * 3..(w - x) * 3]);
        }
    }
    out
}

/// `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))` with bicubic resampling, then
/// a horizontal flip with probability ½.
pub fn random_resized_crop_flip(img: &RgbImage, width: u32, height: u32, rng: &mut impl Rng) -> Result<RgbImage> {
    let p = random_resized_crop_params(img.width, img.height, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), rng);
    let out = resize_bicubic(&crop(img, p)?, width, height);
    Ok(if rng.random_bool(0.5) { flip_horizontal(&out) } else { out })
}

/// An augmented model input: a [`random_resized_crop_flip`] of `img` at the preprocessor's
/// crop size, normalised like the model's input (the views of `ibex stats` and of training).
pub fn augmented_input(
    pre: &crate::imaging::preprocess::ClipPreprocessor,
    img: &RgbImage,
    rng: &mut impl Rng,
) -> Result<crate::imaging::preprocess::Preprocessed> {
    let view = random_resized_crop_flip(img, pre.crop_width, pre.crop_height, rng)?;
    // the view is already model-sized: only normalise it
    let mut normalise = pre.clone();
    normalise.do_resize = false;
    normalise.do_center_crop = false;
    normalise.preprocess(&view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crops_fit_follow_the_limits_and_flip_mirrors() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let (x, y, w, h) = random_resized_crop_params(300, 200, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(x + w <= 300 && y + h <= 200 && w > 0 && h > 0);
            let frac = (w * h) as f64 / 60000.0;
            assert!((0.07..=1.0).contains(&frac), "{frac}");
        }
        // a very wide image cannot hold the ratio: the fallback clamps it
        let p = random_resized_crop_params(1000, 10, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!(p, (493, 0, 13, 10));
        let img = RgbImage::new(3, 1, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0], true).unwrap();
        assert_eq!(flip_horizontal(&img).data, vec![3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]);
        let c = crop(&img, (1, 0, 2, 1)).unwrap();
        assert_eq!(c.data, vec![2.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
        assert!(
            crop(&img, (2, 0, 2, 1)).is_err() && crop(&img, (0, 0, 0, 1)).is_err() && crop(&img, (0, 1, 1, 1)).is_err()
        );
    }
}
