//! Stored samples to numbers: bit unpacking with sign extension, planar to interleaved colour,
//! YBR_FULL to RGB and the palette colour lookup.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::error::{Error, Result};

/// How one decoded frame's bytes are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub width: usize,
    pub height: usize,
    pub samples: usize,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    pub signed: bool,
    /// Planar Configuration 1: all reds, then all greens, then all blues.
    pub planar: bool,
}

impl Layout {
    /// Bytes one frame takes.
    pub fn frame_bytes(&self) -> usize {
        self.width * self.height * self.samples * usize::from(self.bits_allocated / 8)
    }
}

/// The smallest and largest value Bits Stored can hold (before rescale).
pub fn stored_range(layout: &Layout) -> (f64, f64) {
    let bits = i32::from(layout.bits_stored);
    if layout.signed {
        (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
    } else {
        (0.0, 2f64.powi(bits) - 1.0)
    }
}

/// Unpacks one frame of little-endian samples into numbers, interleaved: each sample is
/// shifted down to its High Bit, masked to Bits Stored and, for signed data, sign-extended
/// from bit Bits Stored − 1.
///
/// # Errors
/// [`Error::Format`] if `raw` holds fewer bytes than the frame needs.
pub fn samples(path: &Path, raw: &[u8], layout: &Layout) -> Result<Vec<f64>> {
    let need = layout.frame_bytes();
    if raw.len() < need {
        return Err(Error::format(
            path,
            format!(
                "the decoded frame has {} bytes, but {}x{} pixels x {} samples x {} bits need {need}",
                raw.len(),
                layout.width,
                layout.height,
                layout.samples,
                layout.bits_allocated
            ),
        ));
    }
    let bytes = usize::from(layout.bits_allocated / 8);
    let shift = u32::from(layout.high_bit + 1 - layout.bits_stored);
    let bits = u32::from(layout.bits_stored);
    let mask: u64 = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let value = |chunk: &[u8]| -> f64 {
        let mut word = 0u64;
        for (i, &b) in chunk.iter().enumerate() {
            word |= u64::from(b) << (8 * i);
        }
        let v = (word >> shift) & mask;
        if layout.signed && bits > 0 && v >> (bits - 1) & 1 == 1 {
            (v as i64 - (1i64 << bits)) as f64
        } else {
            v as f64
        }
    };
    let plane = layout.width * layout.height;
    let mut out = vec![0f64; plane * layout.samples];
    for (i, chunk) in raw[..need].chunks_exact(bytes).enumerate() {
        let at = if layout.planar {
            // sample i is channel i / plane of pixel i % plane
            (i % plane) * layout.samples + i / plane
        } else {
            i
        };
        out[at] = value(chunk);
    }
    Ok(out)
}

/// YBR_FULL (ITU-R BT.601, full range) to RGB, clamped to the stored range.
pub fn ybr_full_to_rgb(samples: &[f64], lo: f64, hi: f64) -> Vec<f32> {
    let mid = (hi + 1.0) / 2.0;
    samples
        .chunks_exact(3)
        .flat_map(|p| {
            let (y, cb, cr) = (p[0], p[1] - mid, p[2] - mid);
            [y + 1.402 * cr, y - 0.344_136 * cb - 0.714_136 * cr, y + 1.772 * cb]
                .map(|v| v.round().clamp(lo, hi) as f32)
        })
        .collect()
}

/// A PALETTE COLOR lookup: three LUTs with their descriptors (number of entries, first mapped
/// value, bits per entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    first: i64,
    bits: u16,
    red: Vec<u16>,
    green: Vec<u16>,
    blue: Vec<u16>,
}

impl Palette {
    /// Reads the red, green and blue Palette Color Lookup Table Descriptors and Data.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for segmented palettes; [`Error::Format`] for missing or
    /// inconsistent tables.
    pub fn read(path: &Path, obj: &InMemDicomObject) -> Result<Self> {
        let bad = |msg: String| Error::format(path, msg);
        if obj.get(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA).is_some() {
            return Err(Error::Unsupported(format!("{}: segmented palette colour lookup tables", path.display())));
        }
        // The first mapped value has the data's signedness (US or SS).
        let signed = obj.get(tags::PIXEL_REPRESENTATION).and_then(|e| e.to_int::<u16>().ok()) == Some(1);
        let channel = |desc_tag, data_tag, name: &str| -> Result<(i64, u16, Vec<u16>)> {
            let desc: Vec<i64> =
                obj.get(desc_tag).and_then(|e| e.to_multi_int::<i64>().ok()).filter(|d| d.len() == 3).ok_or_else(
                    || bad(format!("PALETTE COLOR without a valid {name} Palette Color Lookup Table Descriptor")),
                )?;
            if !(0..=65535).contains(&desc[0]) || !(-32768..=65535).contains(&desc[1]) {
                return Err(bad(format!("{name} palette descriptor {desc:?} is out of range")));
            }
            let entries = if desc[0] == 0 { 65536 } else { desc[0] as usize };
            let first = if signed && desc[1] > 32767 { desc[1] - 65536 } else { desc[1] };
            let bits = desc[2] as u16;
            if bits != 8 && bits != 16 {
                return Err(bad(format!("{name} palette entries of {bits} bits (8 or 16 expected)")));
            }
            let raw = obj
                .get(data_tag)
                .and_then(|e| e.to_bytes().ok())
                .ok_or_else(|| bad(format!("PALETTE COLOR without {name} Palette Color Lookup Table Data")))?;
            // Entries are 16-bit words; 8-bit entries are packed two per word when the table
            // holds exactly half the words.
            let data: Vec<u16> = if bits == 8 && raw.len() == entries {
                raw.iter().map(|&b| u16::from(b)).collect()
            } else {
                raw.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect()
            };
            if data.len() < entries {
                return Err(bad(format!("{name} palette has {} entries, its descriptor says {entries}", data.len())));
            }
            Ok((first, bits, data[..entries].to_vec()))
        };
        let (first, bits, red) =
            channel(tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Red")?;
        let (_, _, green) = channel(
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "Green",
        )?;
        let (_, _, blue) = channel(
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "Blue",
        )?;
        Ok(Palette { first, bits, red, green, blue })
    }

    /// The largest value an entry can hold (255 or 65535).
    pub fn max_entry(&self) -> f64 {
        if self.bits == 8 {
            255.0
        } else {
            65535.0
        }
    }

    /// Looks every index up: indices below the first mapped value take the first entry, those
    /// past the table the last.
    pub fn apply(&self, indices: &[f64]) -> Vec<f32> {
        let look = |lut: &[u16], i: f64| -> f32 {
            let at = (i as i64).saturating_sub(self.first).clamp(0, lut.len() as i64 - 1) as usize;
            f32::from(lut[at])
        };
        indices.iter().flat_map(|&i| [look(&self.red, i), look(&self.green, i), look(&self.blue, i)]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(samples: usize, bits_allocated: u16, bits_stored: u16, signed: bool, planar: bool) -> Layout {
        Layout { width: 2, height: 1, samples, bits_allocated, bits_stored, high_bit: bits_stored - 1, signed, planar }
    }

    #[test]
    fn signed_samples_extend_from_bits_stored() {
        // 12 bits stored in 16, two's complement: 0x0FFF is -1, 0x0800 is -2048, with junk in
        // the unused high bits that must be masked off.
        let raw = [0xFF, 0xFF, 0x00, 0x08];
        let v = samples(Path::new("t"), &raw, &layout(1, 16, 12, true, false)).unwrap();
        assert_eq!(v, vec![-1.0, -2048.0]);
        let v = samples(Path::new("t"), &raw, &layout(1, 16, 12, false, false)).unwrap();
        assert_eq!(v, vec![4095.0, 2048.0]);
        assert_eq!(stored_range(&layout(1, 16, 12, true, false)), (-2048.0, 2047.0));
        let err = samples(Path::new("t"), &raw[..3], &layout(1, 16, 12, true, false)).unwrap_err();
        assert!(err.to_string().contains("has 3 bytes"), "{err}");
    }

    #[test]
    fn planar_configuration_1_is_interleaved() {
        // Two pixels: R plane, G plane, B plane.
        let raw = [1, 2, 10, 20, 100, 200];
        let v = samples(Path::new("t"), &raw, &layout(3, 8, 8, false, true)).unwrap();
        assert_eq!(v, vec![1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
        let v = samples(Path::new("t"), &raw, &layout(3, 8, 8, false, false)).unwrap();
        assert_eq!(v, vec![1.0, 2.0, 10.0, 20.0, 100.0, 200.0]);
    }

    #[test]
    fn ybr_full_converts_like_bt601() {
        // Grey stays grey; pure red's YCbCr (76, 85, 255) comes back near (255, 0, 0).
        let rgb = ybr_full_to_rgb(&[128.0, 128.0, 128.0, 76.0, 85.0, 255.0], 0.0, 255.0);
        assert_eq!(&rgb[..3], &[128.0, 128.0, 128.0]);
        assert!((rgb[3] - 254.0).abs() <= 1.0 && rgb[4] <= 1.0 && rgb[5] <= 1.0, "{rgb:?}");
    }

    #[test]
    fn palette_lookup_clamps_to_the_table() {
        let p = Palette { first: 10, bits: 8, red: vec![0, 100, 255], green: vec![1, 2, 3], blue: vec![9, 8, 7] };
        assert_eq!(p.apply(&[5.0, 11.0, 99.0]), vec![0.0, 1.0, 9.0, 100.0, 2.0, 8.0, 255.0, 3.0, 7.0]);
        assert_eq!(p.max_entry(), 255.0);
    }
}
