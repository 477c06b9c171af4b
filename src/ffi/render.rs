//! Rendering a map over the image it explains, as PNG.

use super::result::ibex_result;
use super::status::*;
use crate::imaging::colormap::Colormap;
use crate::imaging::overlay::{overlay, write_png};
use std::ffi::c_char;

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
        non_null(result, "result")?;
        let path = c_str(path, "path")?;
        let cmap: Colormap = if colormap.is_null() { Colormap::Turbo } else { c_str(colormap, "colormap")?.parse()? };
        let r = &(*result).ex;
        let m = r.maps.get(map_index as usize).ok_or_else(|| {
            FfiError(
                IBEX_ERR_OUT_OF_RANGE,
                format!("map index {map_index} out of range (the result has {} maps)", r.maps.len()),
            )
        })?;
        if m.map.height == 1 && r.image.height > 1 {
            return Err(FfiError(
                IBEX_ERR_INVALID_ARGUMENT,
                format!("map {map_index} ('{}') is a token map, not an image map", m.name),
            ));
        }
        if !(0.0..=1.0).contains(&opacity) {
            return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("opacity must be in [0, 1], got {opacity}")));
        }
        let img = overlay(&r.image, &m.map, cmap, opacity)?;
        write_png(&img, std::path::Path::new(path))?;
        Ok(())
    })
}
