//! Rendering a map over the image it explains, as PNG (a file, or bytes).

use super::bytes::{ibex_bytes, put_bytes};
use super::image::ibex_image;
use super::result::{ibex_result, map_at};
use super::status::*;
use crate::imaging::colormap::Colormap;
use crate::imaging::overlay::{encode_png, overlay, overlay_on_original, write_png};
use std::ffi::c_char;

/// The overlay image of map `map_index`: over `original` at its own size when given (the
/// image the result explains, e.g. a DICOM frame), else over the preprocessed image.
unsafe fn render(
    result: *const ibex_result,
    original: *const ibex_image,
    map_index: u32,
    colormap: *const c_char,
    opacity: f32,
) -> FfiResult<::image::RgbImage> {
    non_null(result, "result")?;
    let cmap: Colormap = if colormap.is_null() { Colormap::Turbo } else { c_str(colormap, "colormap")?.parse()? };
    let r = &(*result).ex;
    let m = map_at(&*result, map_index)?;
    if m.map.height == 1 && r.image.height > 1 {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!("map {map_index} ('{}') is a token map, not an image map", m.name),
        ));
    }
    if !(0.0..=1.0).contains(&opacity) {
        return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("opacity must be in [0, 1], got {opacity}")));
    }
    Ok(if original.is_null() {
        overlay(&r.image, &m.map, cmap, opacity)?
    } else {
        overlay_on_original(&(*original).image, &m.map, r.source_region, cmap, opacity)?
    })
}

/// Writes map `map_index` of `result` over the preprocessed image it refers to, coloured with
/// `colormap` (`turbo`, `jet`, `viridis`, `gray`; NULL = turbo) at `opacity` in [0, 1], to a PNG
/// file at `path`. Only maps with the image's aspect (not token maps) can be rendered.
///
/// # Safety
/// Pointers valid (colormap may be NULL); strings NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ibex_render_overlay_png(
    result: *const ibex_result,
    map_index: u32,
    colormap: *const c_char,
    opacity: f32,
    path: *const c_char,
) -> i32 {
    guard(|| {
        let path = c_str(path, "path")?;
        let img = render(result, std::ptr::null(), map_index, colormap, opacity)?;
        write_png(&img, std::path::Path::new(path))?;
        Ok(())
    })
}

/// Renders map `map_index` of `result` as a PNG in memory: over `original` at its own size
/// when it is given (the image the result explains, as loaded by ibex — a DICOM frame
/// windowed as it was read), else over the preprocessed image. `*out` receives the PNG's bytes
/// (free with `ibex_bytes_free`).
///
/// # Safety
/// `result` and `out` valid; `original` NULL or valid; `colormap` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ibex_render_overlay_png_bytes(
    result: *const ibex_result,
    original: *const ibex_image,
    map_index: u32,
    colormap: *const c_char,
    opacity: f32,
    out: *mut *mut ibex_bytes,
) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        let img = render(result, original, map_index, colormap, opacity)?;
        put_bytes(out, encode_png(&img)?);
        Ok(())
    })
}
