//! Heatmap overlays: a heatmap resized to the image, min-max normalised, coloured with a
//! [`Colormap`] and alpha-blended over the image; and PNG output.

use std::path::Path;

use ::image::{ImageError, ImageFormat};

use super::colormap::Colormap;
use super::heatmap::Heatmap;
use super::image::{to_u8, RgbImage};
use crate::error::{Error, Result};

/// Blends `heat` over `base`: `out = (1 - alpha) * base + alpha * colour`, per channel, rounded
/// to 8 bits.
///
/// The heatmap is resized to the image size with [`Heatmap::upsample_bilinear`] if the sizes
/// differ (also when shrinking), min-max normalised ([`Heatmap::normalized`]) and coloured with
/// `cmap`. `alpha = 0` gives the image, `alpha = 1` the coloured heatmap.
///
/// # Errors
/// [`Error::InvalidArgument`] if `alpha` is not in [0, 1], the image or heatmap is empty, or
/// the image's `data` length does not match its size; [`Error::Numerical`] if the heatmap has
/// NaN or infinite values.
pub fn overlay(base: &RgbImage, heat: &Heatmap, cmap: Colormap, alpha: f32) -> Result<::image::RgbImage> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::invalid(format!("overlay alpha must be in [0, 1], got {alpha}")));
    }
    let (w, h) = base.dimensions();
    let pixels = w as usize * h as usize;
    if pixels == 0 {
        return Err(Error::invalid(format!("cannot overlay onto an empty {w}x{h} image")));
    }
    if base.data.len() != pixels * 3 {
        return Err(Error::invalid(format!(
            "a {w}x{h} RGB image needs {} values, got {}",
            pixels * 3,
            base.data.len()
        )));
    }
    if heat.width == 0 || heat.height == 0 || heat.data.len() != heat.width as usize * heat.height as usize {
        return Err(Error::invalid(format!(
            "heatmap of {}x{} with {} values cannot be overlaid",
            heat.width,
            heat.height,
            heat.data.len()
        )));
    }
    let resized;
    let heat = if heat.dimensions() == (w, h) {
        heat
    } else {
        resized = heat.upsample_bilinear(w, h);
        &resized
    };
    let norm = heat.normalized()?;

    let mut out = Vec::with_capacity(pixels * 3);
    for (px, &v) in base.data.chunks_exact(3).zip(&norm.data) {
        let colour = cmap.rgb(v);
        for c in 0..3 {
            out.push(to_u8((1.0 - alpha) * px[c] + alpha * f32::from(colour[c])));
        }
    }
    ::image::RgbImage::from_raw(w, h, out)
        .ok_or_else(|| Error::invalid(format!("overlay buffer does not match {w}x{h}")))
}

/// Samples `heat` onto a `width` × `height` original image of which it covers `source_region`
/// (`[x0, y0, x1, y1]` in the original's pixels, as preprocessing reports it): bilinear with
/// half-pixel centres, clamped at the map's edges; `None` for pixels outside the region.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty or non-finite region or an empty map.
pub fn resample_onto(heat: &Heatmap, source_region: [f32; 4], width: u32, height: u32) -> Result<Vec<Option<f32>>> {
    let [x0, y0, x1, y1] = source_region;
    if !(source_region.iter().all(|v| v.is_finite()) && x1 > x0 && y1 > y0) {
        return Err(Error::invalid(format!("source region {source_region:?} is empty")));
    }
    if heat.width == 0 || heat.height == 0 || heat.data.len() != heat.width as usize * heat.height as usize {
        return Err(Error::invalid(format!("heatmap of {}x{} cannot be resampled", heat.width, heat.height)));
    }
    let (hw, hh) = (heat.width as usize, heat.height as usize);
    let axis = |n_out: u32, lo: f32, hi: f32, n_in: usize| -> Vec<Option<(usize, usize, f32)>> {
        (0..n_out)
            .map(|p| {
                let c = p as f32 + 0.5;
                if c < lo || c >= hi {
                    return None;
                }
                let src = ((c - lo) / (hi - lo) * n_in as f32 - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                Some((i0, i1, (src - i0 as f32).clamp(0.0, 1.0)))
            })
            .collect()
    };
    let xs = axis(width, x0, x1, hw);
    let ys = axis(height, y0, y1, hh);
    let at = |r: usize, c: usize| heat.data[r * hw + c];
    let mut out = Vec::with_capacity(width as usize * height as usize);
    for sy in &ys {
        for sx in &xs {
            out.push(match (*sy, *sx) {
                (Some((r0, r1, fy)), Some((c0, c1, fx))) => {
                    let top = at(r0, c0) * (1.0 - fx) + at(r0, c1) * fx;
                    let bottom = at(r1, c0) * (1.0 - fx) + at(r1, c1) * fx;
                    Some(top * (1.0 - fy) + bottom * fy)
                }
                _ => None,
            });
        }
    }
    Ok(out)
}

/// Blends `heat` over the ORIGINAL image at its own resolution: the map covers
/// `source_region` and is sampled as [`resample_onto`] does at each original pixel inside it;
/// pixels outside the region keep their colour. The map is min-max normalised first.
///
/// # Errors
/// As [`overlay`] and [`resample_onto`].
pub fn overlay_on_original(
    original: &RgbImage,
    heat: &Heatmap,
    source_region: [f32; 4],
    cmap: Colormap,
    alpha: f32,
) -> Result<::image::RgbImage> {
    let (w, h) = original.dimensions();
    let values = resample_onto(&heat.normalized()?, source_region, w, h)?;
    let mut base = original.to_rgb8();
    for (px, v) in base.pixels_mut().zip(values) {
        let Some(v) = v else { continue };
        let colour = cmap.rgb(v);
        for (p, &c) in px.0.iter_mut().zip(&colour) {
            *p = to_u8((1.0 - alpha) * f32::from(*p) + alpha * f32::from(c));
        }
    }
    Ok(base)
}

/// Writes `img` as a PNG file at `path`.
///
/// # Errors
/// [`Error::Io`] naming `path` if the file cannot be created or written (encoder failures are
/// reported the same way).
/// `img` encoded as PNG in memory.
///
/// # Errors
/// [`Error::InvalidArgument`] if the encoder fails (it does not for a valid RGB image).
pub fn encode_png(img: &::image::RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).map_err(|e| Error::invalid(format!("cannot encode PNG: {e}")))?;
    Ok(out.into_inner())
}

pub fn write_png(img: &::image::RgbImage, path: &Path) -> Result<()> {
    img.save_with_format(path, ImageFormat::Png).map_err(|e| match e {
        ImageError::IoError(io) => Error::io(path, io),
        other => Error::io(path, std::io::Error::other(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RgbImage {
        let data = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as f32).collect();
        RgbImage::new(4, 3, data, true).unwrap()
    }

    #[test]
    fn alpha_zero_is_the_base_and_one_is_the_colormap() {
        let img = base();
        let heat = Heatmap::new(2, 2, vec![0.0, 1.0, 2.0, 4.0]).unwrap();
        let out = overlay(&img, &heat, Colormap::Turbo, 0.0).unwrap();
        assert_eq!(out, img.to_rgb8());

        let out = overlay(&img, &heat, Colormap::Viridis, 1.0).unwrap();
        let norm = heat.upsample_bilinear(4, 3).normalized().unwrap();
        for (i, p) in out.pixels().enumerate() {
            assert_eq!(p.0, Colormap::Viridis.rgb(norm.data[i]));
        }
        // The corners take the extreme values: top-left is the minimum, bottom-right the max.
        assert_eq!(out.get_pixel(0, 0).0, [68, 1, 84]);
        assert_eq!(out.get_pixel(3, 2).0, [253, 231, 37]);
    }

    #[test]
    fn blends_halfway() {
        // Gray base 100 and a gray colormap: a 1x2 heat [0, 1] gives colours 0 and 255;
        // alpha 0.5 → 50 and 177.5 → 178.
        let img = RgbImage::new(2, 1, vec![100.0; 6], true).unwrap();
        let heat = Heatmap::new(2, 1, vec![3.0, 5.0]).unwrap();
        let out = overlay(&img, &heat, Colormap::Gray, 0.5).unwrap();
        assert_eq!(out.as_raw(), &vec![50u8, 50, 50, 178, 178, 178]);
    }

    #[test]
    fn rejects_bad_arguments() {
        let img = base();
        let heat = Heatmap::new(2, 2, vec![0.0; 4]).unwrap();
        assert!(overlay(&img, &heat, Colormap::Jet, 1.5).is_err());
        assert!(overlay(&img, &heat, Colormap::Jet, f32::NAN).is_err());
        let nan = Heatmap::new(2, 2, vec![0.0, f32::NAN, 0.0, 0.0]).unwrap();
        assert!(matches!(overlay(&img, &nan, Colormap::Jet, 0.5), Err(Error::Numerical(_))));
        let broken = Heatmap { width: 2, height: 2, data: vec![0.0; 3] };
        assert!(overlay(&img, &broken, Colormap::Jet, 0.5).is_err());
    }

    #[test]
    fn writes_and_reads_back_png() {
        let dir = std::env::temp_dir().join(format!("ibex-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("overlay.png");
        let img = base().to_rgb8();
        write_png(&img, &path).unwrap();
        let back = RgbImage::load(&path).unwrap();
        assert_eq!(back.to_rgb8(), img);

        let bad = dir.join("no-such-dir").join("x.png");
        assert!(matches!(write_png(&img, &bad), Err(Error::Io { .. })));
    }
}
