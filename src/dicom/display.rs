//! A decoded frame to the RGB image the models take: the VOI window (from the file, chosen by
//! index, or given by the caller) on monochrome data, MONOCHROME1 inverted so that bright
//! means dense, colour scaled to 0..=255.

use serde::Serialize;

use super::read::{Frame, WindowLevel};
use crate::error::{Error, Result};
use crate::imaging::image::RgbImage;

/// Which VOI window maps a monochrome frame to display values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum WindowChoice {
    /// The file's first window; the frame's value range when the file has none.
    #[default]
    File,
    /// The file's window with this index (an error if it has fewer).
    FileIndex(usize),
    /// A window given by the caller, in rescaled units.
    Given(WindowLevel),
    /// The frame's own minimum to maximum.
    FullRange,
}

/// Minimum, maximum and mean of a set of values (all channels together).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    /// Statistics of `values`, accumulated in f64. Empty input gives NaNs.
    pub fn of(values: &[f32]) -> Stats {
        let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0f64);
        for &v in values {
            let v = f64::from(v);
            min = min.min(v);
            max = max.max(v);
            sum += v;
        }
        if values.is_empty() {
            return Stats { min: f64::NAN, max: f64::NAN, mean: f64::NAN };
        }
        Stats { min, max, mean: sum / values.len() as f64 }
    }

    /// Statistics of several sets weighted by their lengths.
    pub fn merge(parts: &[(Stats, usize)]) -> Stats {
        let n: usize = parts.iter().map(|p| p.1).sum();
        Stats {
            min: parts.iter().map(|p| p.0.min).fold(f64::INFINITY, f64::min),
            max: parts.iter().map(|p| p.0.max).fold(f64::NEG_INFINITY, f64::max),
            mean: parts.iter().map(|p| p.0.mean * p.1 as f64).sum::<f64>() / n as f64,
        }
    }
}

/// The window `choice` selects for `frame`; `None` for colour frames (no window applies).
///
/// # Errors
/// [`Error::InvalidArgument`] for a window index the file does not have, or a given width
/// below 1 or not finite.
pub fn resolve_window(frame: &Frame, choice: WindowChoice) -> Result<Option<WindowLevel>> {
    if frame.channels != 1 {
        return Ok(None);
    }
    let full = || {
        let s = Stats::of(&frame.values);
        // The linear VOI function maps [c − 0.5 − (w−1)/2, c − 0.5 + (w−1)/2] onto the output.
        let width = (s.max - s.min + 1.0).max(1.0);
        WindowLevel { center: s.min + 0.5 + (width - 1.0) / 2.0, width }
    };
    let from_file = matches!(choice, WindowChoice::File | WindowChoice::FileIndex(_)) && !frame.windows.is_empty();
    let w = match choice {
        WindowChoice::File => frame.windows.first().copied().unwrap_or_else(full),
        WindowChoice::FileIndex(i) => *frame.windows.get(i).ok_or_else(|| {
            Error::invalid(format!(
                "window index {i} requested, but the file offers {} window{}",
                frame.windows.len(),
                if frame.windows.len() == 1 { "" } else { "s" }
            ))
        })?,
        WindowChoice::Given(w) => w,
        WindowChoice::FullRange => full(),
    };
    if !(w.width >= 1.0 && w.width.is_finite() && w.center.is_finite()) {
        let msg =
            format!("window centre {} / width {}: the width must be at least 1 and both finite", w.center, w.width);
        // The file's own window is the file's fault; a given one the caller's.
        return Err(if from_file {
            Error::format(&frame.path, format!("{msg} (the file's window; give one to read it anyway)"))
        } else {
            Error::invalid(msg)
        });
    }
    Ok(Some(w))
}

/// The RGB image of `frame` under `window` (from [`resolve_window`]): monochrome through the
/// linear VOI function of PS3.3 C.11.2.1.2.1 onto 0..=255 (inverted for MONOCHROME1), colour
/// scaled by 255 / the largest stored value. 8-bit colour keeps its integers.
pub fn to_rgb(frame: &Frame, window: Option<WindowLevel>) -> Result<RgbImage> {
    let (w, h) = (frame.width, frame.height);
    match window {
        Some(WindowLevel { center, width }) => {
            let (lo, hi) = (center - 0.5 - (width - 1.0) / 2.0, center - 0.5 + (width - 1.0) / 2.0);
            let invert = frame.monochrome1;
            let data = frame
                .values
                .iter()
                .flat_map(|&v| {
                    let v = f64::from(v);
                    let y = if v <= lo {
                        0.0
                    } else if v > hi {
                        255.0
                    } else {
                        ((v - (center - 0.5)) / (width - 1.0).max(1e-9) + 0.5) * 255.0
                    };
                    let y = if invert { 255.0 - y } else { y } as f32;
                    [y; 3]
                })
                .collect();
            RgbImage::new(w, h, data, false)
        }
        None => {
            let eight_bit = frame.stored_max == 255.0;
            let scale = (255.0 / frame.stored_max) as f32;
            let data = if eight_bit { frame.values.clone() } else { frame.values.iter().map(|v| v * scale).collect() };
            RgbImage::new(w, h, data, eight_bit)
        }
    }
}
