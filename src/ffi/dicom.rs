//! DICOM over the C ABI: images read with options (from a file or from memory), the
//! geometry a viewer needs to place a map, and derived objects (Parametric Map, Secondary
//! Capture) and overlays as byte buffers. Built without the `dicom` feature, every function
//! here answers `IBEX_ERR_UNSUPPORTED`.

use super::bytes::ibex_bytes;
#[cfg(feature = "dicom")]
use super::bytes::put_bytes;
use super::image::{check_size, ibex_image};
use super::result::ibex_result;
use super::status::*;
use std::ffi::c_char;

/// Options for reading a DICOM image. Set `struct_size = sizeof(ibex_dicom_options)`; a NULL
/// options pointer means all defaults (frame 0, the file's first window or the frame's full
/// range, the default size ceiling).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibex_dicom_options {
    pub struct_size: u32,
    /// The frame to read (0-based).
    pub frame: u32,
    /// The file's window to use (0-based). 0 (or -1) is the file's first window, or the frame's
    /// full range when the file has none, so a zero-initialised struct means the defaults; an
    /// index past the file's windows is an error.
    pub window_index: i32,
    /// Nonzero: use `window_center` / `window_width` (rescaled units) instead of the file's.
    pub use_window: i32,
    pub window_center: f64,
    pub window_width: f64,
    /// Refuse files whose rows × columns × frames × samples exceed this; 0 = the default
    /// (2^30).
    pub max_samples: u64,
}

/// What ibex read from a DICOM image's header, for placing a map over it. Set
/// `struct_size = sizeof(ibex_dicom_info)`. Strings are NUL-terminated (UIDs are at most 64
/// characters); absent values are empty strings, and the `has_*` flags say which numbers are
/// present.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibex_dicom_info {
    pub struct_size: u32,
    pub rows: u32,
    pub columns: u32,
    pub frames: u32,
    /// The frame this image holds.
    pub frame: u32,
    pub samples_per_pixel: u32,
    pub bits_allocated: u32,
    pub bits_stored: u32,
    /// Pixel Spacing: (row spacing, column spacing) in mm.
    pub has_pixel_spacing: i32,
    pub pixel_spacing: [f64; 2],
    /// Image Position (Patient) of the frame's first pixel, mm.
    pub has_image_position: i32,
    pub image_position: [f64; 3],
    /// Image Orientation (Patient): row and column direction cosines.
    pub has_image_orientation: i32,
    pub image_orientation: [f64; 6],
    /// The frame's modality rescale.
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    /// The window applied to make the image (monochrome only).
    pub has_window: i32,
    pub window_center: f64,
    pub window_width: f64,
    pub sop_class_uid: [c_char; 65],
    pub sop_instance_uid: [c_char; 65],
    pub series_instance_uid: [c_char; 65],
    pub study_instance_uid: [c_char; 65],
    pub frame_of_reference_uid: [c_char; 65],
    pub transfer_syntax_uid: [c_char; 65],
    pub modality: [c_char; 17],
    pub photometric_interpretation: [c_char; 17],
}

/// A Parametric Map (float values at the source's size).
pub const IBEX_DICOM_PARAMETRIC_MAP: i32 = 0;
/// A Secondary Capture (the overlay on the windowed source, 8-bit RGB).
pub const IBEX_DICOM_SECONDARY_CAPTURE: i32 = 1;

#[cfg(feature = "dicom")]
mod imp {
    use super::*;
    use crate::dicom::{self, DicomOptions, WindowChoice, WindowLevel};
    use crate::imaging::colormap::Colormap;

    pub(super) unsafe fn options(o: *const ibex_dicom_options) -> FfiResult<DicomOptions> {
        if o.is_null() {
            return Ok(DicomOptions::default());
        }
        let o = &*o;
        check_size(o.struct_size, "ibex_dicom_options")?;
        let window = if o.use_window != 0 {
            WindowChoice::Given(WindowLevel { center: o.window_center, width: o.window_width })
        } else if o.window_index > 0 {
            WindowChoice::FileIndex(o.window_index as usize)
        } else if o.window_index == 0 || o.window_index == -1 {
            WindowChoice::File
        } else {
            return Err(FfiError(
                IBEX_ERR_INVALID_ARGUMENT,
                format!("window_index {} (a window's index; 0 or -1 for the file's first)", o.window_index),
            ));
        };
        Ok(DicomOptions {
            frame: o.frame,
            window,
            max_samples: if o.max_samples == 0 { dicom::DEFAULT_MAX_SAMPLES } else { o.max_samples },
        })
    }

    pub(super) fn image(d: dicom::DicomImage) -> ibex_image {
        let dicom::DicomImage { source, image } = d;
        let mut im = ibex_image::new(image);
        im.dicom = Some(source);
        im
    }

    fn copy_str<const N: usize>(dst: &mut [c_char; N], s: &str) {
        *dst = [0; N];
        for (d, &b) in dst.iter_mut().zip(s.as_bytes().iter().take(N - 1)) {
            *d = b as c_char;
        }
    }

    pub(super) fn info(im: &ibex_image, out: &mut ibex_dicom_info) -> FfiResult<()> {
        let src = source_of(im)?;
        let i = &src.file.info;
        let rescale = i.rescale.get(src.frame as usize).or(i.rescale.first()).copied().unwrap_or_default();
        let mut o = ibex_dicom_info {
            struct_size: std::mem::size_of::<ibex_dicom_info>() as u32,
            rows: i.rows,
            columns: i.columns,
            frames: i.frames,
            frame: src.frame,
            samples_per_pixel: u32::from(i.samples_per_pixel),
            bits_allocated: u32::from(i.bits_allocated),
            bits_stored: u32::from(i.bits_stored),
            has_pixel_spacing: i32::from(i.pixel_spacing.is_some()),
            pixel_spacing: i.pixel_spacing.unwrap_or_default(),
            has_image_position: i32::from(i.image_position.is_some()),
            image_position: i.image_position.unwrap_or_default(),
            has_image_orientation: i32::from(i.image_orientation.is_some()),
            image_orientation: i.image_orientation.unwrap_or_default(),
            rescale_slope: rescale.slope,
            rescale_intercept: rescale.intercept,
            has_window: i32::from(src.window.is_some()),
            window_center: src.window.map_or(0.0, |w| w.center),
            window_width: src.window.map_or(0.0, |w| w.width),
            sop_class_uid: [0; 65],
            sop_instance_uid: [0; 65],
            series_instance_uid: [0; 65],
            study_instance_uid: [0; 65],
            frame_of_reference_uid: [0; 65],
            transfer_syntax_uid: [0; 65],
            modality: [0; 17],
            photometric_interpretation: [0; 17],
        };
        copy_str(&mut o.sop_class_uid, &i.sop_class_uid);
        copy_str(&mut o.sop_instance_uid, &i.sop_instance_uid);
        copy_str(&mut o.series_instance_uid, &i.series_instance_uid);
        copy_str(&mut o.study_instance_uid, &i.study_instance_uid);
        copy_str(&mut o.frame_of_reference_uid, &i.frame_of_reference_uid);
        copy_str(&mut o.transfer_syntax_uid, &i.transfer_syntax_uid);
        copy_str(&mut o.modality, &i.modality);
        copy_str(&mut o.photometric_interpretation, &i.photometric_interpretation);
        *out = o;
        Ok(())
    }

    pub(super) fn source_of(im: &ibex_image) -> FfiResult<&dicom::DicomSource> {
        im.dicom
            .as_ref()
            .ok_or_else(|| FfiError(IBEX_ERR_INVALID_ARGUMENT, "the image was not read from a DICOM file".to_string()))
    }

    pub(super) unsafe fn colormap(name: *const c_char) -> FfiResult<Colormap> {
        Ok(if name.is_null() { Colormap::Turbo } else { c_str(name, "colormap")?.parse()? })
    }

    pub(super) fn derived(
        r: &ibex_result,
        im: &ibex_image,
        map_index: u32,
        kind: i32,
        cmap: Colormap,
        opacity: f32,
    ) -> FfiResult<Vec<u8>> {
        use crate::dicom::write;
        let src = source_of(im)?;
        let ex = &r.ex;
        let map = super::super::result::map_at(r, map_index)?;
        let options = write::DerivedOptions {
            method: ex.method.clone(),
            target: ex.target_description(),
            colormap: cmap,
            opacity,
        };
        let obj = match kind {
            IBEX_DICOM_PARAMETRIC_MAP => write::parametric_map(src, map, ex.source_region, &options)?,
            IBEX_DICOM_SECONDARY_CAPTURE => write::secondary_capture(src, &im.image, map, ex.source_region, &options)?,
            k => {
                return Err(FfiError(
                    IBEX_ERR_INVALID_ARGUMENT,
                    format!("unknown kind {k} (IBEX_DICOM_PARAMETRIC_MAP or IBEX_DICOM_SECONDARY_CAPTURE)"),
                ))
            }
        };
        Ok(write::to_bytes(&obj)?)
    }

    pub(super) fn report_json(im: &ibex_image) -> FfiResult<String> {
        let src = source_of(im)?;
        let mut v = serde_json::to_value(&src.file.info).unwrap_or_default();
        v["frame"] = src.frame.into();
        v["window_applied"] = serde_json::to_value(src.window).unwrap_or_default();
        Ok(v.to_string())
    }
}

/// `ibex_image_load_file`: DICOM files (by their "DICM" marker) keep their source.
///
/// # Safety
/// As `ibex_image_load_file`.
pub(crate) unsafe fn ibex_image_load_dicom_or_other(path: *const c_char, out: *mut *mut ibex_image) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        let p = std::path::Path::new(c_str(path, "path")?);
        #[cfg(feature = "dicom")]
        {
            if crate::imaging::image::is_dicom_file(p)? {
                *out = Box::into_raw(Box::new(imp::image(crate::dicom::load(p, &Default::default())?)));
                return Ok(());
            }
        }
        let img = crate::imaging::image::RgbImage::load(p)?;
        *out = Box::into_raw(Box::new(ibex_image::new(img)));
        Ok(())
    })
}

#[cfg(not(feature = "dicom"))]
fn no_dicom<T>() -> FfiResult<T> {
    Err(FfiError(IBEX_ERR_UNSUPPORTED, "this build of ibex has no DICOM support (feature `dicom`)".into()))
}

/// Reads one frame of a DICOM file as an image (`options` may be NULL for the defaults). The
/// image remembers its source: `ibex_image_dicom_info` describes it and `ibex_result_to_dicom`
/// derives objects from it. `ibex_image_load_file` also reads DICOM, with the defaults.
///
/// # Safety
/// `path` NUL-terminated; `options` NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_load_dicom(
    path: *const c_char,
    options: *const ibex_dicom_options,
    out: *mut *mut ibex_image,
) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        let p = c_str(path, "path")?;
        #[cfg(feature = "dicom")]
        {
            let d = crate::dicom::load(std::path::Path::new(p), &imp::options(options)?)?;
            *out = Box::into_raw(Box::new(imp::image(d)));
            Ok(())
        }
        #[cfg(not(feature = "dicom"))]
        {
            let _ = (p, options);
            no_dicom()
        }
    })
}

/// [`ibex_image_load_dicom`] from `len` bytes of a DICOM file in memory (as received from a
/// PACS); `name` (may be NULL) labels error messages.
///
/// # Safety
/// `data` holds `len` bytes; `name` NULL or NUL-terminated; `options` NULL or valid; `out`
/// valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_load_dicom_memory(
    data: *const u8,
    len: usize,
    name: *const c_char,
    options: *const ibex_dicom_options,
    out: *mut *mut ibex_image,
) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        non_null(data, "data")?;
        let name = if name.is_null() { "<memory>" } else { c_str(name, "name")? };
        let bytes = std::slice::from_raw_parts(data, len);
        #[cfg(feature = "dicom")]
        {
            let d = crate::dicom::load_bytes(std::path::Path::new(name), bytes, &imp::options(options)?)?;
            *out = Box::into_raw(Box::new(imp::image(d)));
            Ok(())
        }
        #[cfg(not(feature = "dicom"))]
        {
            let _ = (name, bytes, options);
            no_dicom()
        }
    })
}

/// Fills `info` for an image read from DICOM (`IBEX_ERR_INVALID_ARGUMENT` for other images).
///
/// # Safety
/// `image` and `info` valid; `info->struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_dicom_info(image: *const ibex_image, info: *mut ibex_dicom_info) -> i32 {
    guard(|| {
        non_null(image, "image")?;
        non_null(info, "info")?;
        check_size((*info).struct_size, "ibex_dicom_info")?;
        #[cfg(feature = "dicom")]
        {
            imp::info(&*image, &mut *info)
        }
        #[cfg(not(feature = "dicom"))]
        no_dicom()
    })
}

/// The DICOM header as ibex read it, as JSON (geometry, transfer syntax, photometric
/// interpretation, rescale, windows, the frame and the window applied), into `*out`: free
/// with `ibex_bytes_free`.
///
/// # Safety
/// `image` and `out` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_dicom_json(image: *const ibex_image, out: *mut *mut ibex_bytes) -> i32 {
    guard(|| {
        non_null(image, "image")?;
        non_null(out, "out")?;
        #[cfg(feature = "dicom")]
        {
            put_bytes(out, imp::report_json(&*image)?.into_bytes());
            Ok(())
        }
        #[cfg(not(feature = "dicom"))]
        no_dicom()
    })
}

/// Derives a DICOM object from map `map_index` of `result` and the DICOM image it explains:
/// `IBEX_DICOM_PARAMETRIC_MAP` (the float map at the source's size) or
/// `IBEX_DICOM_SECONDARY_CAPTURE` (the overlay with `colormap` — NULL = turbo — at `opacity`
/// on the windowed source). Both are in the source's study, in a new series, and reference
/// the source. `*out` receives the file's bytes (free with `ibex_bytes_free`).
///
/// # Safety
/// `result`, `source`, `out` valid; `colormap` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_to_dicom(
    result: *const ibex_result,
    source: *const ibex_image,
    map_index: u32,
    kind: i32,
    colormap: *const c_char,
    opacity: f32,
    out: *mut *mut ibex_bytes,
) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(source, "source")?;
        non_null(out, "out")?;
        #[cfg(feature = "dicom")]
        {
            let cmap = imp::colormap(colormap)?;
            put_bytes(out, imp::derived(&*result, &*source, map_index, kind, cmap, opacity)?);
            Ok(())
        }
        #[cfg(not(feature = "dicom"))]
        {
            let _ = (map_index, kind, colormap, opacity);
            no_dicom()
        }
    })
}
