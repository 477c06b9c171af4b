//! DICOM in and out (feature `dicom`, on by default).
//!
//! **Input.** [`load`] reads one frame of a DICOM file as the RGB image the models take:
//! - every declared length is checked against the file before the parser allocates anything
//!   ([`scan`]), and rows × columns × frames × samples against a ceiling
//!   ([`DicomOptions::max_samples`]) before anything is decoded;
//! - transfer syntaxes: implicit and explicit VR little endian, explicit big endian, deflated,
//!   RLE, JPEG baseline/extended (8-bit) and lossless, JPEG-LS (CharLS) and JPEG 2000 (the
//!   `openjp2` pure-Rust port of OpenJPEG: no C library to find or build, the same decoder);
//!   anything else is an "unsupported transfer syntax UID (name)" error;
//! - monochrome 8/12/16/32-bit, signed or not, with the modality rescale of the frame
//!   (per-frame functional groups too), then the VOI window — the file's first, one chosen by
//!   index, or the caller's — onto 0..=255, MONOCHROME1 inverted; RGB (planar configuration 0
//!   and 1), YBR_FULL converted to RGB (compressed YBR comes out of the decoder as RGB), and
//!   PALETTE COLOR looked up in its palette.
//!
//! **Output.** [`write`] derives a Parametric Map (the float map at the source's size) and a
//! Secondary Capture (the overlay) from a source image, in the source's study.

mod display;
mod pixels;
mod read;
pub mod scan;
pub mod write;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

pub use display::{resolve_window, to_rgb, Stats, WindowChoice};
pub use read::{DicomFile, DicomInfo, Frame, Rescale, WindowLevel, DEFAULT_MAX_SAMPLES};

use crate::error::Result;
use crate::imaging::image::RgbImage;

/// How to read a DICOM image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DicomOptions {
    /// The frame to read (0-based).
    pub frame: u32,
    /// The VOI window for monochrome data.
    pub window: WindowChoice,
    /// The ceiling on rows × columns × frames × samples per pixel.
    pub max_samples: u64,
}

impl Default for DicomOptions {
    fn default() -> Self {
        DicomOptions { frame: 0, window: WindowChoice::File, max_samples: DEFAULT_MAX_SAMPLES }
    }
}

/// Where a DICOM image came from: the parsed file, the frame and the window used.
#[derive(Debug, Clone)]
pub struct DicomSource {
    /// The parsed file (shared: outputs derived from this image reference it).
    pub file: Arc<DicomFile>,
    /// The frame read.
    pub frame: u32,
    /// The window applied (`None` for colour).
    pub window: Option<WindowLevel>,
}

/// One frame of a DICOM file, ready for a model, with where it came from.
#[derive(Debug, Clone)]
pub struct DicomImage {
    /// The file, frame and window.
    pub source: DicomSource,
    /// The frame's RGB image on the 0..=255 scale.
    pub image: RgbImage,
}

/// Reads frame `options.frame` of the DICOM file at `path` as an RGB image.
///
/// # Errors
/// See [`DicomFile::open`] and [`DicomFile::frame`]; a window index the file does not have is
/// an [`crate::Error::InvalidArgument`].
pub fn load(path: &Path, options: &DicomOptions) -> Result<DicomImage> {
    from_file(DicomFile::open(path, options.max_samples)?, options)
}

/// [`load`] from bytes in memory (a file received over the network); `name` only labels
/// messages.
pub fn load_bytes(name: &Path, bytes: &[u8], options: &DicomOptions) -> Result<DicomImage> {
    from_file(DicomFile::from_bytes(name, bytes, options.max_samples)?, options)
}

fn from_file(file: DicomFile, options: &DicomOptions) -> Result<DicomImage> {
    let frame = file.frame(options.frame)?;
    let window = resolve_window(&frame, options.window)?;
    let image = to_rgb(&frame, window)?;
    Ok(DicomImage { source: DicomSource { file: Arc::new(file), frame: options.frame, window }, image })
}

/// Statistics of one frame's real-world values (after rescale; RGB after the palette lookup).
#[derive(Debug, Clone, Serialize)]
pub struct FrameReport {
    pub frame: u32,
    pub rescale: Rescale,
    pub stats: Stats,
}

/// What `ibex dicom` prints: the header as read, and the decoded values of every frame (or of
/// the one asked for) and overall.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub info: DicomInfo,
    /// The window the display image would use for the first reported frame.
    pub window_applied: Option<WindowLevel>,
    pub frames_decoded: Vec<FrameReport>,
    pub overall: Stats,
}

/// Decodes the frames of `path` (all, or only `options.frame` when `only_frame`) and reports
/// their statistics.
pub fn report(path: &Path, options: &DicomOptions, only_frame: bool) -> Result<Report> {
    let file = DicomFile::open(path, options.max_samples)?;
    let frames = if only_frame { options.frame..options.frame + 1 } else { 0..file.info.frames };
    let (mut reports, mut parts) = (Vec::new(), Vec::new());
    let mut window_applied = None;
    for (i, f) in frames.enumerate() {
        let frame = file.frame(f)?;
        if i == 0 {
            window_applied = resolve_window(&frame, options.window)?;
        }
        let stats = Stats::of(&frame.values);
        parts.push((stats, frame.values.len()));
        reports.push(FrameReport { frame: f, rescale: frame.rescale, stats });
    }
    Ok(Report { info: file.info.clone(), window_applied, frames_decoded: reports, overall: Stats::merge(&parts) })
}
