//! A local-explanation sheet for prototype models (PIP-Net): the input with a coloured
//! rectangle per listed prototype, and below it each prototype's patch with a bar whose length
//! is its contribution to the class score (relative to the largest), in the same colour.
//! Everything is drawn at an integer zoom so small inputs (64 px) stay legible.

use super::image::RgbImage;
use crate::error::{Error, Result};

/// One listed prototype on the sheet.
pub struct SheetEntry {
    /// `[x0, y0, x1, y1]` in input pixels (the rectangle drawn on the input).
    pub rect: [u32; 4],
    /// `[h_min, h_max, w_min, w_max]`: the patch shown below.
    pub patch: [u32; 4],
    /// Contribution to the class score (presence × weight).
    pub contribution: f32,
}

const COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
];

/// Draws the sheet for `image` (the model input, `S × S`) with patches of side `patch`.
pub fn prototype_sheet(image: &RgbImage, entries: &[SheetEntry], patch: u32) -> Result<::image::RgbImage> {
    let (s, h) = (image.width, image.height);
    if s == 0 || h == 0 || patch == 0 {
        return Err(Error::invalid("an empty image or patch for the explanation sheet"));
    }
    let zoom = (256 / s.max(h)).clamp(1, 8);
    let (gap, bar) = (2 * zoom, 4 * zoom);
    let cell = patch * zoom;
    let n = entries.len() as u32;
    let width = (s * zoom).max(n * (cell + gap));
    let height = h * zoom + gap + if n > 0 { cell + gap + bar } else { 0 };
    let mut out = ::image::RgbImage::from_pixel(width, height, ::image::Rgb([255, 255, 255]));
    let src = image.to_rgb8();
    for y in 0..h * zoom {
        for x in 0..s * zoom {
            out.put_pixel(x, y, *src.get_pixel(x / zoom, y / zoom));
        }
    }
    let max = entries.iter().map(|e| e.contribution).fold(0f32, f32::max).max(f32::MIN_POSITIVE);
    for (i, e) in entries.iter().enumerate() {
        let c = ::image::Rgb(COLOURS[i % COLOURS.len()]);
        // rectangle on the input, 1 source pixel wide
        let [x0, y0, x1, y1] = e.rect.map(|v| v.min(s.max(h)));
        for t in 0..zoom {
            for x in x0 * zoom..(x1 * zoom).min(s * zoom) {
                for y in [y0 * zoom + t, (y1 * zoom).saturating_sub(1 + t)] {
                    if y < h * zoom {
                        out.put_pixel(x, y, c);
                    }
                }
            }
            for y in y0 * zoom..(y1 * zoom).min(h * zoom) {
                for x in [x0 * zoom + t, (x1 * zoom).saturating_sub(1 + t)] {
                    if x < s * zoom {
                        out.put_pixel(x, y, c);
                    }
                }
            }
        }
        // the patch (its last row may reach past the image: the official rule, kept)
        let (ox, oy) = (i as u32 * (cell + gap), h * zoom + gap);
        let [h0, h1, w0, w1] = e.patch;
        for y in h0..h1.min(h) {
            for x in w0..w1.min(s) {
                let p = *src.get_pixel(x, y);
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        out.put_pixel(ox + (x - w0) * zoom + dx, oy + (y - h0) * zoom + dy, p);
                    }
                }
            }
        }
        let len = ((e.contribution.max(0.0) / max) * cell as f32).round() as u32;
        for y in oy + cell + gap..oy + cell + gap + bar {
            for x in ox..ox + len.min(cell) {
                out.put_pixel(x, y, c);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sheet_shows_the_input_the_boxes_and_the_bars() {
        let img = RgbImage::new(64, 64, vec![100.0; 64 * 64 * 3], true).unwrap();
        let entries = [
            SheetEntry { rect: [6, 30, 38, 62], patch: [30, 62, 6, 38], contribution: 2.0 },
            SheetEntry { rect: [0, 0, 32, 32], patch: [0, 32, 0, 32], contribution: 1.0 },
        ];
        let s = prototype_sheet(&img, &entries, 32).unwrap();
        // zoom 4: the input is 256 px, two 128 px patches below, bars of 16 px
        assert_eq!((s.width(), s.height()), (2 * (128 + 8), 256 + 8 + 128 + 8 + 16));
        assert_eq!(s.get_pixel(6 * 4, 40 * 4).0, COLOURS[0]);
        assert_eq!(s.get_pixel(100, 100).0, [100, 100, 100]);
        // the first bar is full, the second half as long
        let bar_y = 256 + 8 + 128 + 8;
        assert_eq!(s.get_pixel(127, bar_y).0, COLOURS[0]);
        assert_eq!(s.get_pixel(136 + 63, bar_y).0, COLOURS[1]);
        assert_eq!(s.get_pixel(136 + 65, bar_y).0, [255, 255, 255]);
    }
}
