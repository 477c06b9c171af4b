//! Status codes, the per-thread last error, and the panic guard every export runs in.

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const IBEX_OK: i32 = 0;
/// An argument is out of range, of the wrong size, or inconsistent.
pub const IBEX_ERR_INVALID_ARGUMENT: i32 = 1;
/// A required pointer argument was NULL.
pub const IBEX_ERR_NULL_POINTER: i32 = 2;
/// A file could not be read or written.
pub const IBEX_ERR_IO: i32 = 3;
/// A file is corrupt or not of the expected kind (model, tokenizer, config, image).
pub const IBEX_ERR_FORMAT: i32 = 4;
/// A model or file was not found (locally or in the Hugging Face cache).
pub const IBEX_ERR_NOT_FOUND: i32 = 5;
/// Valid request that this build or model does not support.
pub const IBEX_ERR_UNSUPPORTED: i32 = 6;
/// Cancelled through a cancel token or the progress callback.
pub const IBEX_ERR_CANCELLED: i32 = 7;
/// NaN or infinity appeared in a computation or an input.
pub const IBEX_ERR_NUMERICAL: i32 = 8;
/// The tensor backend failed (e.g. out of device memory).
pub const IBEX_ERR_BACKEND: i32 = 9;
/// A caller-supplied buffer is too small (the required size is reported).
pub const IBEX_ERR_BUFFER_TOO_SMALL: i32 = 10;
/// An index (map, text, token) is out of range.
pub const IBEX_ERR_OUT_OF_RANGE: i32 = 11;
/// A panic inside ibex was caught at the boundary (a bug: please report it).
pub const IBEX_ERR_PANIC: i32 = 12;

/// An error raised inside the FFI layer itself, with its status.
pub(crate) struct FfiError(pub i32, pub String);

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) => IBEX_ERR_INVALID_ARGUMENT,
            Error::Io { .. } => IBEX_ERR_IO,
            Error::Format { .. } => IBEX_ERR_FORMAT,
            Error::NotFound(_) => IBEX_ERR_NOT_FOUND,
            Error::Unsupported(_) => IBEX_ERR_UNSUPPORTED,
            Error::Cancelled => IBEX_ERR_CANCELLED,
            Error::Numerical(_) => IBEX_ERR_NUMERICAL,
            Error::Backend(_) => IBEX_ERR_BACKEND,
        };
        FfiError(code, e.to_string())
    }
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs an export body: converts errors and panics into a status and the last-error message.
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            IBEX_OK
        }
        Ok(Err(FfiError(code, msg))) => {
            log::debug!("ibex call failed ({code}): {msg}");
            set_last_error(&msg);
            code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic caught at the C boundary): {what}"));
            IBEX_ERR_PANIC
        }
    }
}

/// Runs a body that returns a value and cannot report a status (e.g. accessors returning a
/// pointer); a panic yields `fallback`.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Fails with `IBEX_ERR_NULL_POINTER` naming the argument when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> FfiResult<()> {
    if p.is_null() {
        Err(FfiError(IBEX_ERR_NULL_POINTER, format!("argument '{name}' is NULL")))
    } else {
        Ok(())
    }
}

/// A UTF-8 `&str` from a non-NULL C string.
///
/// # Safety
/// `p` must point to a NUL-terminated string valid for the call.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    non_null(p, name)?;
    std::ffi::CStr::from_ptr(p)
        .to_str()
        .map_err(|_| FfiError(IBEX_ERR_INVALID_ARGUMENT, format!("argument '{name}' is not valid UTF-8")))
}

/// The message of the last failed ibex call on this thread (empty after a success). Valid until
/// the next ibex call on the same thread; never NULL.
#[no_mangle]
pub extern "C" fn ibex_last_error_message() -> *const c_char {
    guard_value(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// A static description of a status code (never NULL).
#[no_mangle]
pub extern "C" fn ibex_status_string(status: i32) -> *const c_char {
    guard_value(c"unknown status".as_ptr(), || status_text(status).as_ptr() as *const c_char)
}

fn status_text(status: i32) -> &'static [u8] {
    match status {
        IBEX_OK => b"ok\0",
        IBEX_ERR_INVALID_ARGUMENT => b"invalid argument\0",
        IBEX_ERR_NULL_POINTER => b"null pointer\0",
        IBEX_ERR_IO => b"i/o error\0",
        IBEX_ERR_FORMAT => b"bad file format\0",
        IBEX_ERR_NOT_FOUND => b"not found\0",
        IBEX_ERR_UNSUPPORTED => b"unsupported\0",
        IBEX_ERR_CANCELLED => b"cancelled\0",
        IBEX_ERR_NUMERICAL => b"numerical error (NaN or infinity)\0",
        IBEX_ERR_BACKEND => b"tensor backend error\0",
        IBEX_ERR_BUFFER_TOO_SMALL => b"buffer too small\0",
        IBEX_ERR_OUT_OF_RANGE => b"index out of range\0",
        IBEX_ERR_PANIC => b"internal error (panic)\0",
        _ => b"unknown status\0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        unsafe { CStr::from_ptr(ibex_last_error_message()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn guard_turns_errors_and_panics_into_statuses() {
        assert_eq!(guard(|| Ok(())), IBEX_OK);
        assert_eq!(last(), "");
        assert_eq!(guard(|| Err(Error::Cancelled.into())), IBEX_ERR_CANCELLED);
        assert!(last().contains("cancelled"));
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let st = guard(|| panic!("boom {}", 7));
        std::panic::set_hook(prev);
        assert_eq!(st, IBEX_ERR_PANIC);
        assert!(last().contains("boom 7"), "{}", last());
        // messages are per thread
        std::thread::spawn(|| assert_eq!(last(), "")).join().unwrap();
        assert_eq!(guard_value(5, || -> i32 { panic!("x") }), 5);
    }
}
