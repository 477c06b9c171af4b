//! `ibex_result`: maps (borrowed or copied out), tokens and scores of one explanation.

use super::image::check_size;
use super::status::*;
use crate::explain::Explanation;
use std::ffi::{c_char, CString};

/// An explanation: immutable, readable from several threads.
pub struct ibex_result {
    pub(crate) ex: Explanation,
    names: Vec<(CString, CString)>,
    tokens: Vec<Vec<CString>>,
    json: CString,
}

impl ibex_result {
    pub(crate) fn new(ex: Explanation) -> Self {
        let cs = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let names = ex.maps.iter().map(|m| (cs(&m.name), cs(&m.units))).collect();
        let tokens = ex.texts.iter().map(|t| t.tokens.iter().map(|s| cs(s)).collect()).collect();
        let json = cs(&ex.report(None, false).to_string());
        ibex_result { ex, names, tokens, json }
    }
}

/// Describes one map. Set `struct_size = sizeof(ibex_map_info)` before the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibex_map_info {
    pub struct_size: u32,
    pub width: u32,
    pub height: u32,
    /// The caption the map belongs to, or -1.
    pub text_index: i32,
    /// `image`, `image_capacity`, `text`, `text_capacity` (valid while the result lives).
    pub name: *const c_char,
    /// `normalized` or `nats` (valid while the result lives).
    pub units: *const c_char,
    pub min_value: f32,
    pub max_value: f32,
}

pub(crate) fn map_at(r: &ibex_result, index: u32) -> FfiResult<&crate::explain::NamedMap> {
    r.ex.maps.get(index as usize).ok_or_else(|| {
        FfiError(
            IBEX_ERR_OUT_OF_RANGE,
            format!("map index {index} out of range (the result has {} maps)", r.ex.maps.len()),
        )
    })
}

fn text_at(r: &ibex_result, index: u32) -> FfiResult<&crate::explain::TextResult> {
    r.ex.texts.get(index as usize).ok_or_else(|| {
        FfiError(
            IBEX_ERR_OUT_OF_RANGE,
            format!("text index {index} out of range (the result has {} texts)", r.ex.texts.len()),
        )
    })
}

/// Frees a result (NULL is fine); borrowed map pointers become invalid.
///
/// # Safety
/// `result` from `ibex_explain`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_free(result: *mut ibex_result) {
    guard_value((), || {
        if !result.is_null() {
            drop(Box::from_raw(result));
        }
    })
}

/// Number of maps.
///
/// # Safety
/// Pointers valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_map_count(result: *const ibex_result, out: *mut u32) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out, "out")?;
        *out = (*result).ex.maps.len() as u32;
        Ok(())
    })
}

/// Size, name, units and value range of map `index`.
///
/// # Safety
/// Pointers valid; `info->struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_map_info(result: *const ibex_result, index: u32, info: *mut ibex_map_info) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(info, "info")?;
        check_size((*info).struct_size, "ibex_map_info")?;
        let r = &*result;
        let m = map_at(r, index)?;
        let (lo, hi) = m.map.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (name, units) = &r.names[index as usize];
        *info = ibex_map_info {
            struct_size: std::mem::size_of::<ibex_map_info>() as u32,
            width: m.map.width,
            height: m.map.height,
            text_index: m.text_index.map(|i| i as i32).unwrap_or(-1),
            name: name.as_ptr(),
            units: units.as_ptr(),
            min_value: lo,
            max_value: hi,
        };
        Ok(())
    })
}

/// Borrowed pointer to map `index` (row-major `width × height` floats), valid until
/// `ibex_result_free`.
///
/// # Safety
/// Pointers valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_map_data(
    result: *const ibex_result,
    index: u32,
    out_data: *mut *const f32,
    out_len: *mut usize,
) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out_data, "out_data")?;
        non_null(out_len, "out_len")?;
        let m = map_at(&*result, index)?;
        *out_data = m.map.data.as_ptr();
        *out_len = m.map.data.len();
        Ok(())
    })
}

/// Copies map `index` into `dst` (capacity `dst_len` floats). With `dst == NULL`, only writes the
/// required length to `*out_len`. A too-small `dst` gives `IBEX_ERR_BUFFER_TOO_SMALL` (and the
/// required length).
///
/// # Safety
/// `result`, `out_len` valid; `dst` NULL or valid for `dst_len` floats.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_copy_map(
    result: *const ibex_result,
    index: u32,
    dst: *mut f32,
    dst_len: usize,
    out_len: *mut usize,
) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out_len, "out_len")?;
        let m = map_at(&*result, index)?;
        let n = m.map.data.len();
        *out_len = n;
        if dst.is_null() {
            return Ok(());
        }
        if dst_len < n {
            return Err(FfiError(
                IBEX_ERR_BUFFER_TOO_SMALL,
                format!("map {index} has {n} floats, the buffer holds {dst_len}"),
            ));
        }
        std::ptr::copy_nonoverlapping(m.map.data.as_ptr(), dst, n);
        Ok(())
    })
}

/// Number of captions explained.
///
/// # Safety
/// Pointers valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_text_count(result: *const ibex_result, out: *mut u32) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out, "out")?;
        *out = (*result).ex.texts.len() as u32;
        Ok(())
    })
}

/// Cosine similarity between the (unperturbed) image and caption `text_index` embeddings.
///
/// # Safety
/// Pointers valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_similarity(result: *const ibex_result, text_index: u32, out: *mut f32) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out, "out")?;
        *out = text_at(&*result, text_index)?.similarity;
        Ok(())
    })
}

/// Number of tokens of caption `text_index` (start/end tokens included).
///
/// # Safety
/// Pointers valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_token_count(result: *const ibex_result, text_index: u32, out: *mut u32) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out, "out")?;
        *out = text_at(&*result, text_index)?.tokens.len() as u32;
        Ok(())
    })
}

/// Token `token_index` of caption `text_index`: its text (UTF-8, valid while the result lives)
/// and its normalised score. Either output may be NULL.
///
/// # Safety
/// `result` valid; outputs NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_token(
    result: *const ibex_result,
    text_index: u32,
    token_index: u32,
    out_text: *mut *const c_char,
    out_score: *mut f32,
) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        let r = &*result;
        let t = text_at(r, text_index)?;
        let i = token_index as usize;
        if i >= t.tokens.len() {
            return Err(FfiError(
                IBEX_ERR_OUT_OF_RANGE,
                format!("token index {i} out of range (caption has {} tokens)", t.tokens.len()),
            ));
        }
        if !out_text.is_null() {
            *out_text = r.tokens[text_index as usize][i].as_ptr();
        }
        if !out_score.is_null() {
            *out_score = t.scores[i];
        }
        Ok(())
    })
}

/// The result's metadata as JSON (`Explanation::report` without map data: method, target and
/// top-5 for classifiers, texts with tokens and scores, map names/units/sizes, settings, timing);
/// valid while the result lives.
///
/// # Safety
/// Pointers valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_json(result: *const ibex_result, out: *mut *const c_char) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out, "out")?;
        *out = (*result).json.as_ptr();
        Ok(())
    })
}

/// Where the image maps lie on the ORIGINAL image: writes `x0, y0, x1, y1` (pixel edges; the
/// rectangle may reach outside the image where preprocessing padded it) to `out[0..4]`. Draw an
/// image map stretched over this rectangle to overlay it on the original.
///
/// # Safety
/// `result` valid; `out` points to 4 floats.
#[no_mangle]
pub unsafe extern "C" fn ibex_result_source_region(result: *const ibex_result, out: *mut f32) -> i32 {
    guard(|| {
        non_null(result, "result")?;
        non_null(out, "out")?;
        std::ptr::copy_nonoverlapping((*result).ex.source_region.as_ptr(), out, 4);
        Ok(())
    })
}
