//! Reading a DICOM file: the length check, the parse, the attributes a viewer needs
//! ([`DicomInfo`]) and one decoded frame ([`Frame`]) in real-world values.

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

use super::pixels::{self, Layout, Palette};
use super::scan;
use crate::error::{Error, Result};

/// The default ceiling on rows × columns × frames × samples per pixel: 2^30 samples (2 GiB of
/// 16-bit data). A header claiming more is refused before anything is decoded.
pub const DEFAULT_MAX_SAMPLES: u64 = 1 << 30;

/// A window (VOI LUT) centre and width, in rescaled units, as in (0028,1050) / (0028,1051).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowLevel {
    /// Window Center.
    pub center: f64,
    /// Window Width (at least 1 for the linear function).
    pub width: f64,
}

/// The modality rescale `value × slope + intercept` of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rescale {
    /// Rescale Slope (1 when absent).
    pub slope: f64,
    /// Rescale Intercept (0 when absent).
    pub intercept: f64,
}

impl Default for Rescale {
    fn default() -> Self {
        Rescale { slope: 1.0, intercept: 0.0 }
    }
}

/// What ibex read from a DICOM file's header: identity, geometry, encoding and pixel
/// description (the attributes a viewer needs to place a map over the image).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DicomInfo {
    /// The file the object was read from.
    pub path: PathBuf,
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Frame of Reference UID (0020,0052), empty when absent.
    pub frame_of_reference_uid: String,
    /// Modality (0008,0060).
    pub modality: String,
    /// Transfer Syntax UID.
    pub transfer_syntax_uid: String,
    /// The transfer syntax's name.
    pub transfer_syntax_name: String,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// Number of Frames (1 when absent).
    pub frames: u32,
    /// Samples per Pixel.
    pub samples_per_pixel: u16,
    /// Bits Allocated.
    pub bits_allocated: u16,
    /// Bits Stored.
    pub bits_stored: u16,
    /// High Bit.
    pub high_bit: u16,
    /// Pixel Representation: 0 unsigned, 1 two's complement.
    pub pixel_representation: u16,
    /// Photometric Interpretation as stored.
    pub photometric_interpretation: String,
    /// Planar Configuration (0 interleaved, 1 by plane) for colour data.
    pub planar_configuration: u16,
    /// Pixel Spacing (row spacing, column spacing) in mm, from the top level or the shared or
    /// first per-frame Pixel Measures; `None` when absent.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Image Position (Patient) of the first frame, when present.
    pub image_position: Option<[f64; 3]>,
    /// Image Orientation (Patient), when present.
    pub image_orientation: Option<[f64; 6]>,
    /// The rescale of each frame (one entry when it is the same for all frames).
    pub rescale: Vec<Rescale>,
    /// Rescale Type (0028,1054) or the Real World Value units, empty when absent.
    pub rescale_type: String,
    /// The windows the file offers (of the first frame for multi-frame objects).
    pub windows: Vec<WindowLevel>,
}

/// A parsed DICOM file, pixel data not yet decoded.
pub struct DicomFile {
    obj: DefaultDicomObject,
    /// What was read from the header.
    pub info: DicomInfo,
    palette: Option<Palette>,
}

impl std::fmt::Debug for DicomFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomFile").field("info", &self.info).finish_non_exhaustive()
    }
}

/// One decoded frame in real-world values.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The file the frame was read from (for messages).
    pub path: PathBuf,
    /// Width in pixels (Columns).
    pub width: u32,
    /// Height in pixels (Rows).
    pub height: u32,
    /// 1 (monochrome, after the modality rescale) or 3 (RGB: colour data as stored after
    /// YBR→RGB, or the palette lookup's output in the LUT's own units).
    pub channels: usize,
    /// Row-major values, channels interleaved.
    pub values: Vec<f32>,
    /// The frame's rescale (identity for colour).
    pub rescale: Rescale,
    /// The windows the file offers for this frame.
    pub windows: Vec<WindowLevel>,
    /// Whether the frame is MONOCHROME1 (low values bright).
    pub monochrome1: bool,
    /// The largest value the stored bits (or, for palette colour, the LUT entries) can hold
    /// before rescale: the range of 8-bit RGB is 255.
    pub stored_max: f64,
    /// The smallest value the stored bits can hold before rescale.
    pub stored_min: f64,
}

impl DicomFile {
    /// Reads and checks a DICOM file (every declared length against the file, then the parse,
    /// then the pixel description against `max_samples`), without decoding pixel data.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Format`] for a file that is not DICOM,
    /// is truncated or corrupt, or has inconsistent pixel attributes; [`Error::Unsupported`]
    /// for a transfer syntax or photometric interpretation this build cannot decode;
    /// [`Error::InvalidArgument`] when rows × columns × frames × samples exceeds `max_samples`.
    pub fn open(path: &Path, max_samples: u64) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes, max_samples)
    }

    /// [`DicomFile::open`] over bytes already in memory; `path` only names them in messages.
    pub fn from_bytes(path: &Path, bytes: &[u8], max_samples: u64) -> Result<Self> {
        let bad = |msg: String| Error::format(path, msg);
        // An inflated data set is capped at the bytes that `max_samples` 32-bit samples take,
        // plus room for the header.
        let cap = usize::try_from(max_samples.saturating_mul(4).saturating_add(1 << 24)).unwrap_or(usize::MAX);
        let meta = scan::check_lengths(path, bytes, cap)?;
        let ts_uid = meta.transfer_syntax.clone();
        let ts = TransferSyntaxRegistry.get(&ts_uid);
        let ts_name = ts.map(|t| t.name().to_string()).unwrap_or_else(|| "unknown transfer syntax".into());
        match ts {
            None => {
                return Err(Error::Unsupported(format!(
                    "{}: unsupported transfer syntax {ts_uid} (unknown to this build's decoders)",
                    path.display()
                )))
            }
            Some(t) if !t.can_decode_dataset() => {
                return Err(Error::Unsupported(format!(
                    "{}: unsupported transfer syntax {ts_uid} ({}): its data set cannot be read",
                    path.display(),
                    t.name()
                )))
            }
            Some(_) => {}
        }
        let obj = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(&bytes[128..])
            .map_err(|e| bad(format!("cannot parse DICOM: {}", chain(&e))))?;
        let info = read_info(path, &obj, ts_uid, ts_name)?;
        check_pixels(path, &info, max_samples)?;
        let ts_ok = ts.is_some_and(|t| t.can_decode_all());
        // Decoders that exist but cannot do this bit depth (12-bit lossy JPEG).
        let jpeg_12 = matches!(info.transfer_syntax_uid.as_str(), "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.50")
            && info.bits_allocated > 8;
        if !ts_ok || jpeg_12 {
            return Err(Error::Unsupported(format!(
                "{}: unsupported transfer syntax {} ({}{})",
                path.display(),
                info.transfer_syntax_uid,
                info.transfer_syntax_name,
                if jpeg_12 {
                    format!(", {} bits: only 8-bit lossy JPEG is decoded", info.bits_stored)
                } else {
                    String::new()
                }
            )));
        }
        let palette =
            if info.photometric_interpretation == "PALETTE COLOR" { Some(Palette::read(path, &obj)?) } else { None };
        Ok(DicomFile { obj, info, palette })
    }

    /// Decodes frame `index` (0-based) into real-world values: monochrome data sign-extended
    /// from Bits Stored and rescaled with the frame's slope and intercept; colour data
    /// interleaved (Planar Configuration 1 too) and converted from YBR_FULL to RGB; palette
    /// indices looked up in the palette.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a frame index out of range; [`Error::Format`] when the
    /// decoder fails or returns fewer bytes than the frame needs.
    pub fn frame(&self, index: u32) -> Result<Frame> {
        let info = &self.info;
        let path = &info.path;
        if index >= info.frames {
            return Err(Error::invalid(format!(
                "{}: frame {index} requested, but the file has {} frame{} (0..{})",
                path.display(),
                info.frames,
                if info.frames == 1 { "" } else { "s" },
                info.frames - 1
            )));
        }
        self.check_native_length()?;
        let decoded = self.obj.decode_pixel_data_frame(index).map_err(|e| {
            Error::format(
                path,
                format!(
                    "cannot decode frame {index} ({}, {}): {}",
                    info.transfer_syntax_name,
                    info.photometric_interpretation,
                    chain(&e)
                ),
            )
        })?;
        // The decoders report colour output as RGB whatever the stored interpretation was.
        let decoded_pi = decoded.photometric_interpretation().as_str().to_string();
        let layout = Layout {
            width: info.columns as usize,
            height: info.rows as usize,
            samples: usize::from(info.samples_per_pixel),
            bits_allocated: info.bits_allocated,
            bits_stored: info.bits_stored,
            high_bit: info.high_bit,
            signed: info.pixel_representation == 1,
            planar: decoded.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst
                && info.samples_per_pixel > 1,
        };
        let raw = decoded.data();
        let samples = pixels::samples(path, raw, &layout)?;
        let rescale = frame_rescale(&self.obj, index).unwrap_or_default();
        let windows = frame_windows(&self.obj, index);
        let (lo, hi) = pixels::stored_range(&layout);
        let mut frame = Frame {
            path: path.clone(),
            width: info.columns,
            height: info.rows,
            channels: layout.samples,
            values: Vec::new(),
            rescale,
            windows,
            monochrome1: info.photometric_interpretation == "MONOCHROME1",
            stored_min: lo,
            stored_max: hi,
        };
        frame.values = match (layout.samples, decoded_pi.as_str()) {
            (1, "PALETTE COLOR") => {
                let palette = self.palette.as_ref().ok_or_else(|| {
                    Error::format(path, "the decoder reports PALETTE COLOR, the header does not".to_string())
                })?;
                frame.channels = 3;
                frame.stored_min = 0.0;
                frame.stored_max = palette.max_entry();
                frame.rescale = Rescale::default();
                palette.apply(&samples)
            }
            (1, _) => {
                let Rescale { slope, intercept } = rescale;
                samples.iter().map(|&v| (v * slope + intercept) as f32).collect()
            }
            (3, "RGB") => samples.iter().map(|&v| v as f32).collect(),
            (3, "YBR_FULL") => pixels::ybr_full_to_rgb(&samples, lo, hi),
            (s, pi) => {
                return Err(Error::Unsupported(format!(
                    "{}: photometric interpretation {pi} with {s} samples per pixel is not supported \
                     (supported: MONOCHROME1/2, PALETTE COLOR, RGB, YBR_FULL, and YBR_FULL_422 when compressed)",
                    path.display()
                )))
            }
        };
        if layout.samples == 3 {
            frame.rescale = Rescale::default();
        }
        Ok(frame)
    }
}

impl DicomFile {
    /// The parsed object (header and pixel data).
    pub fn object(&self) -> &InMemDicomObject {
        &self.obj
    }

    /// For uncompressed pixel data: the Pixel Data element must hold every frame the header
    /// describes.
    fn check_native_length(&self) -> Result<()> {
        let info = &self.info;
        let Some(element) = self.obj.get(tags::PIXEL_DATA) else {
            return Err(Error::format(&info.path, "no Pixel Data (7FE0,0010): not an image"));
        };
        if let dicom_core::DicomValue::Primitive(value) = element.value() {
            let frame = u64::from(info.rows)
                * u64::from(info.columns)
                * u64::from(info.samples_per_pixel)
                * u64::from(info.bits_allocated / 8);
            let need = frame * u64::from(info.frames);
            let have = value.calculate_byte_len() as u64;
            if have < need {
                return Err(Error::format(
                    &info.path,
                    format!(
                        "Pixel Data holds {have} bytes, but {} rows x {} columns x {} frames x {} samples x {} bits need {need}",
                        info.rows, info.columns, info.frames, info.samples_per_pixel, info.bits_allocated
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
        .unwrap_or_default()
}

fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag).and_then(|e| e.to_multi_float64().ok()).filter(|v| !v.is_empty())
}

/// The first item of sequence `seq` in `obj`.
fn first_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    obj.get(seq).and_then(|e| e.items()).and_then(|items| items.first())
}

/// The functional-group items that describe `frame`, most specific first: the frame's item of
/// the Per-frame Functional Groups, then the Shared Functional Groups, then the top level.
fn frame_scopes(obj: &InMemDicomObject, frame: u32) -> Vec<&InMemDicomObject> {
    let mut scopes = Vec::new();
    if let Some(item) = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.get(frame as usize))
    {
        scopes.push(item);
    }
    if let Some(item) = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE) {
        scopes.push(item);
    }
    scopes
}

/// Attribute `tag` for `frame`: inside macro sequence `group` of the frame's functional groups,
/// else at the top level.
fn frame_attr<T>(
    obj: &InMemDicomObject,
    frame: u32,
    group: Tag,
    read: impl Fn(&InMemDicomObject) -> Option<T>,
) -> Option<T> {
    frame_scopes(obj, frame)
        .into_iter()
        .filter_map(|scope| first_item(scope, group))
        .find_map(&read)
        .or_else(|| read(obj))
}

fn frame_rescale(obj: &InMemDicomObject, frame: u32) -> Option<Rescale> {
    frame_attr(obj, frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |o| {
        let slope = floats(o, tags::RESCALE_SLOPE).map(|v| v[0]);
        let intercept = floats(o, tags::RESCALE_INTERCEPT).map(|v| v[0]);
        (slope.is_some() || intercept.is_some())
            .then(|| Rescale { slope: slope.unwrap_or(1.0), intercept: intercept.unwrap_or(0.0) })
    })
}

fn frame_windows(obj: &InMemDicomObject, frame: u32) -> Vec<WindowLevel> {
    frame_attr(obj, frame, tags::FRAME_VOILUT_SEQUENCE, |o| {
        let centers = floats(o, tags::WINDOW_CENTER)?;
        let widths = floats(o, tags::WINDOW_WIDTH)?;
        Some(centers.iter().zip(&widths).map(|(&center, &width)| WindowLevel { center, width }).collect::<Vec<_>>())
    })
    .unwrap_or_default()
}

fn read_info(path: &Path, obj: &DefaultDicomObject, ts_uid: String, ts_name: String) -> Result<DicomInfo> {
    let bad = |msg: String| Error::format(path, msg);
    let required = |tag: Tag, name: &str| {
        uint(obj, tag).ok_or_else(|| bad(format!("no {name} {tag}: not an image, or a corrupt header")))
    };
    let rows = required(tags::ROWS, "Rows")?;
    let columns = required(tags::COLUMNS, "Columns")?;
    let bits_allocated = required(tags::BITS_ALLOCATED, "Bits Allocated")? as u16;
    let bits_stored = uint(obj, tags::BITS_STORED).map(|v| v as u16).unwrap_or(bits_allocated);
    let high_bit = uint(obj, tags::HIGH_BIT).map(|v| v as u16).unwrap_or(bits_stored.saturating_sub(1));
    let frames = match obj.get(tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(e) => e.to_int::<i64>().ok().filter(|&n| n >= 1 && n <= i64::from(u32::MAX)).ok_or_else(|| {
            bad(format!("Number of Frames {:?} is not a positive integer", e.to_str().unwrap_or_default()))
        })? as u32,
    };
    let (first_frame, spacing_from) = (0, tags::PIXEL_MEASURES_SEQUENCE);
    let pixel_spacing = frame_attr(obj, first_frame, spacing_from, |o| {
        // "0\\0" (as some CR files carry) means unknown
        floats(o, tags::PIXEL_SPACING).filter(|v| v.len() == 2 && v.iter().all(|&s| s > 0.0 && s.is_finite()))
    })
    .map(|v| [v[0], v[1]]);
    let image_position = frame_attr(obj, 0, tags::PLANE_POSITION_SEQUENCE, |o| {
        floats(o, tags::IMAGE_POSITION_PATIENT).filter(|v| v.len() == 3)
    })
    .map(|v| [v[0], v[1], v[2]]);
    let image_orientation = frame_attr(obj, 0, tags::PLANE_ORIENTATION_SEQUENCE, |o| {
        floats(o, tags::IMAGE_ORIENTATION_PATIENT).filter(|v| v.len() == 6)
    })
    .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]);
    let rescale: Vec<Rescale> = {
        let all: Vec<Rescale> = (0..frames.min(4096)).map(|f| frame_rescale(obj, f).unwrap_or_default()).collect();
        if all.iter().all(|r| *r == all[0]) {
            vec![all[0]]
        } else {
            all
        }
    };
    let rescale_type = frame_attr(obj, 0, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |o| {
        Some(text(o, tags::RESCALE_TYPE)).filter(|s| !s.is_empty())
    })
    .unwrap_or_default();
    Ok(DicomInfo {
        path: path.to_path_buf(),
        sop_class_uid: text(obj, tags::SOP_CLASS_UID),
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID),
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(obj, tags::SERIES_INSTANCE_UID),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID),
        modality: text(obj, tags::MODALITY),
        transfer_syntax_uid: ts_uid,
        transfer_syntax_name: ts_name,
        rows,
        columns,
        frames,
        samples_per_pixel: uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        bits_allocated,
        bits_stored,
        high_bit,
        pixel_representation: uint(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) as u16,
        photometric_interpretation: text(obj, tags::PHOTOMETRIC_INTERPRETATION),
        planar_configuration: uint(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) as u16,
        pixel_spacing,
        image_position,
        image_orientation,
        rescale,
        rescale_type,
        windows: frame_windows(obj, 0),
    })
}

/// Refuses pixel descriptions that are inconsistent or claim more than `max_samples` samples,
/// before any decoder allocates for them.
fn check_pixels(path: &Path, info: &DicomInfo, max_samples: u64) -> Result<()> {
    let bad = |msg: String| Error::format(path, msg);
    if info.rows == 0 || info.columns == 0 {
        return Err(bad(format!("image size {}x{} is empty", info.columns, info.rows)));
    }
    if !matches!(info.samples_per_pixel, 1 | 3) {
        return Err(bad(format!("Samples per Pixel is {}: only 1 and 3 exist for images", info.samples_per_pixel)));
    }
    if !matches!(info.bits_allocated, 8 | 16 | 32) {
        return Err(Error::Unsupported(format!(
            "{}: Bits Allocated {} is not supported (8, 16 or 32)",
            path.display(),
            info.bits_allocated
        )));
    }
    if info.bits_stored == 0
        || info.bits_stored > info.bits_allocated
        || info.high_bit >= info.bits_allocated
        || info.high_bit + 1 < info.bits_stored
    {
        return Err(bad(format!(
            "Bits Stored {} / High Bit {} do not fit in Bits Allocated {}",
            info.bits_stored, info.high_bit, info.bits_allocated
        )));
    }
    let samples =
        u64::from(info.rows) * u64::from(info.columns) * u64::from(info.frames) * u64::from(info.samples_per_pixel);
    if samples > max_samples {
        return Err(Error::invalid(format!(
            "{}: {} rows x {} columns x {} frames x {} samples = {samples} samples, more than the limit of \
             {max_samples} (raise it with the max-samples option if the file is genuine)",
            path.display(),
            info.rows,
            info.columns,
            info.frames,
            info.samples_per_pixel
        )));
    }
    Ok(())
}
