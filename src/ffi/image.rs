//! Images: `ibex_image` (decoded from a file) and `ibex_image_view` (a borrowed raw buffer).

use super::status::*;
use crate::imaging::image::{ChannelLayout, ImageView, PixelType, RgbImage};
use std::ffi::{c_char, c_void};

/// 8-bit unsigned samples.
pub const IBEX_PIXEL_U8: i32 = 0;
/// 16-bit unsigned samples (full range 0..65535).
pub const IBEX_PIXEL_U16: i32 = 1;
/// 32-bit float samples in [0, 1].
pub const IBEX_PIXEL_F32: i32 = 2;
/// One channel.
pub const IBEX_LAYOUT_GRAY: i32 = 0;
/// Three interleaved channels.
pub const IBEX_LAYOUT_RGB: i32 = 1;
/// Four interleaved channels (alpha is ignored).
pub const IBEX_LAYOUT_RGBA: i32 = 2;

/// A borrowed image buffer. Set `struct_size = sizeof(ibex_image_view)`. `row_stride` is in
/// bytes between the starts of consecutive rows (at least width × channels × sample size).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibex_image_view {
    pub struct_size: u32,
    pub width: u32,
    pub height: u32,
    pub row_stride: u32,
    /// `IBEX_PIXEL_*`.
    pub pixel_type: i32,
    /// `IBEX_LAYOUT_*`.
    pub layout: i32,
    pub data: *const c_void,
    /// Length of `data` in bytes (checked against the size the other fields imply).
    pub data_len: usize,
}

/// An image decoded by ibex (PNG, JPEG, WebP, BMP, TIFF, or a DICOM frame).
pub struct ibex_image {
    pub(crate) image: RgbImage,
    /// Pixels in view form: RGB u8 for 8-bit sources, RGB f32 in [0, 1] otherwise.
    bytes: Vec<u8>,
    pixel: i32,
    /// The DICOM file, frame and window the image was read from.
    #[cfg(feature = "dicom")]
    pub(crate) dicom: Option<crate::dicom::DicomSource>,
}

impl ibex_image {
    pub(crate) fn new(image: RgbImage) -> Self {
        let (bytes, pixel) = if image.eight_bit {
            (image.data.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect(), IBEX_PIXEL_U8)
        } else {
            (image.data.iter().flat_map(|v| (v / 255.0).to_ne_bytes()).collect(), IBEX_PIXEL_F32)
        };
        ibex_image {
            image,
            bytes,
            pixel,
            #[cfg(feature = "dicom")]
            dicom: None,
        }
    }
}

/// Decodes an image file: PNG, JPEG, WebP, BMP, TIFF, or DICOM (frame 0 with the file's
/// window; `ibex_image_load_dicom` takes options).
///
/// # Safety
/// `path` NUL-terminated; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_load_file(path: *const c_char, out: *mut *mut ibex_image) -> i32 {
    super::dicom::ibex_image_load_dicom_or_other(path, out)
}

/// Fills `view` with a view of `image`'s pixels (valid until `ibex_image_free`). The caller
/// sets `view->struct_size`.
///
/// # Safety
/// `image` and `view` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_get_view(image: *const ibex_image, view: *mut ibex_image_view) -> i32 {
    guard(|| {
        non_null(image, "image")?;
        non_null(view, "view")?;
        check_size((*view).struct_size, "ibex_image_view")?;
        let im = &*image;
        let sample = if im.pixel == IBEX_PIXEL_U8 { 1 } else { 4 };
        *view = ibex_image_view {
            struct_size: std::mem::size_of::<ibex_image_view>() as u32,
            width: im.image.width,
            height: im.image.height,
            row_stride: im.image.width * 3 * sample,
            pixel_type: im.pixel,
            layout: IBEX_LAYOUT_RGB,
            data: im.bytes.as_ptr() as *const c_void,
            data_len: im.bytes.len(),
        };
        Ok(())
    })
}

/// Frees an image (NULL is fine).
///
/// # Safety
/// `image` from `ibex_image_load_file`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_image_free(image: *mut ibex_image) {
    guard_value((), || {
        if !image.is_null() {
            drop(Box::from_raw(image));
        }
    })
}

pub(crate) fn check_size(size: u32, what: &str) -> FfiResult<()> {
    let need = match what {
        "ibex_image_view" => std::mem::size_of::<ibex_image_view>(),
        "ibex_target" => std::mem::size_of::<super::explain::ibex_target>(),
        "ibex_map_info" => std::mem::size_of::<super::result::ibex_map_info>(),
        "ibex_dicom_options" => std::mem::size_of::<super::dicom::ibex_dicom_options>(),
        "ibex_dicom_info" => std::mem::size_of::<super::dicom::ibex_dicom_info>(),
        _ => 0,
    };
    if (size as usize) < need {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!("{what}.struct_size is {size}, expected {need} (set it to sizeof({what}))"),
        ));
    }
    Ok(())
}

/// Decodes a C view into an [`RgbImage`] (validating sizes, strides and values).
///
/// # Safety
/// `view` valid; its `data` must hold the bytes the view describes.
pub(crate) unsafe fn from_view(view: *const ibex_image_view) -> FfiResult<RgbImage> {
    non_null(view, "image")?;
    let v = &*view;
    check_size(v.struct_size, "ibex_image_view")?;
    non_null(v.data, "image->data")?;
    let pixel = match v.pixel_type {
        IBEX_PIXEL_U8 => PixelType::U8,
        IBEX_PIXEL_U16 => PixelType::U16,
        IBEX_PIXEL_F32 => PixelType::F32,
        p => {
            return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("unknown pixel_type {p} (IBEX_PIXEL_U8/U16/F32)")))
        }
    };
    let (layout, channels) = match v.layout {
        IBEX_LAYOUT_GRAY => (ChannelLayout::Gray, 1usize),
        IBEX_LAYOUT_RGB => (ChannelLayout::Rgb, 3),
        IBEX_LAYOUT_RGBA => (ChannelLayout::Rgba, 4),
        l => {
            return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("unknown layout {l} (IBEX_LAYOUT_GRAY/RGB/RGBA)")))
        }
    };
    let sample = match pixel {
        PixelType::U8 => 1usize,
        PixelType::U16 => 2,
        PixelType::F32 => 4,
    };
    if v.width == 0 || v.height == 0 {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!("image is {}x{}: both sides must be > 0", v.width, v.height),
        ));
    }
    let row = v.width as usize * channels * sample;
    if (v.row_stride as usize) < row {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!(
                "row_stride {} is smaller than one row ({} px x {channels} channels x {sample} bytes = {row})",
                v.row_stride, v.width
            ),
        ));
    }
    let len = (v.height as usize - 1)
        .checked_mul(v.row_stride as usize)
        .and_then(|n| n.checked_add(row))
        .ok_or_else(|| FfiError(IBEX_ERR_INVALID_ARGUMENT, "image size overflows".into()))?;
    if v.data_len < len {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!(
                "image buffer is {} bytes, but {}x{} pixels with row_stride {} need {len}",
                v.data_len, v.width, v.height, v.row_stride
            ),
        ));
    }
    let data = std::slice::from_raw_parts(v.data as *const u8, len);
    let view = ImageView { width: v.width, height: v.height, row_stride: v.row_stride as usize, pixel, layout, data };
    Ok(RgbImage::from_view(&view)?)
}
