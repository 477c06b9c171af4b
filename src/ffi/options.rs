//! `ibex_options`: key/value settings for model loading and explainers.

use super::status::*;
use std::ffi::c_char;

/// Opaque key/value options. Keys are method hyper-parameters (`beta`, `steps`, `layer`, …) or
/// model settings (`device`).
pub struct ibex_options {
    pub(crate) map: serde_json::Map<String, serde_json::Value>,
}

/// Creates an empty options object.
///
/// # Safety
/// `out` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn ibex_options_create(out: *mut *mut ibex_options) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        let b = Box::new(ibex_options { map: serde_json::Map::new() });
        *out = Box::into_raw(b);
        Ok(())
    })
}

/// Creates options from a JSON object text, e.g. `{"beta": 1.0, "layer": 1}`.
///
/// # Safety
/// `json` must be a NUL-terminated string; `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn ibex_options_from_json(json: *const c_char, out: *mut *mut ibex_options) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        let s = c_str(json, "json")?;
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("options JSON: {e}")))?;
        let serde_json::Value::Object(map) = v else {
            return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, "options JSON must be an object".into()));
        };
        *out = Box::into_raw(Box::new(ibex_options { map }));
        Ok(())
    })
}

/// Frees options (NULL is fine).
///
/// # Safety
/// `opts` must come from `ibex_options_create`/`_from_json` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_options_free(opts: *mut ibex_options) {
    guard_value((), || {
        if !opts.is_null() {
            drop(Box::from_raw(opts));
        }
    })
}

unsafe fn set(opts: *mut ibex_options, key: *const c_char, v: serde_json::Value) -> i32 {
    guard(|| {
        non_null(opts, "opts")?;
        let k = c_str(key, "key")?;
        if k.is_empty() {
            return Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, "empty option key".into()));
        }
        (*opts).map.insert(k.to_string(), v);
        Ok(())
    })
}

/// Sets a floating-point option. NaN and infinities are rejected.
///
/// # Safety
/// `opts` valid, `key` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ibex_options_set_float(opts: *mut ibex_options, key: *const c_char, value: f64) -> i32 {
    match serde_json::Number::from_f64(value) {
        Some(n) => set(opts, key, serde_json::Value::Number(n)),
        None => guard(|| Err(FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("option value {value} is not finite")))),
    }
}

/// Sets an integer option.
///
/// # Safety
/// `opts` valid, `key` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ibex_options_set_int(opts: *mut ibex_options, key: *const c_char, value: i64) -> i32 {
    set(opts, key, serde_json::Value::from(value))
}

/// Sets a string option (e.g. `device` = `cuda:0`).
///
/// # Safety
/// `opts` valid, `key` and `value` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ibex_options_set_str(
    opts: *mut ibex_options,
    key: *const c_char,
    value: *const c_char,
) -> i32 {
    let v = match guard_value(None, || c_str(value, "value").ok().map(str::to_string)) {
        Some(v) => v,
        None => return guard(|| Err(FfiError(IBEX_ERR_NULL_POINTER, "argument 'value' is NULL or not UTF-8".into()))),
    };
    set(opts, key, serde_json::Value::String(v))
}

/// The options as a JSON object (empty when `opts` is NULL).
///
/// # Safety
/// `opts` NULL or valid.
pub(crate) unsafe fn to_json(opts: *const ibex_options) -> serde_json::Map<String, serde_json::Value> {
    if opts.is_null() {
        serde_json::Map::new()
    } else {
        (*opts).map.clone()
    }
}
