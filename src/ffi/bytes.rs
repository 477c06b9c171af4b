//! `ibex_bytes`: a byte buffer made by ibex (a DICOM file, a PNG), owned by the caller.

use super::status::*;

/// Bytes made by ibex (a DICOM file, a PNG). Free with `ibex_bytes_free`.
pub struct ibex_bytes {
    data: Vec<u8>,
}

/// Points `*data` at the bytes (valid until `ibex_bytes_free`) and writes their length.
///
/// # Safety
/// `bytes` from an ibex function; `data` and `len` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_bytes_data(bytes: *const ibex_bytes, data: *mut *const u8, len: *mut usize) -> i32 {
    guard(|| {
        non_null(bytes, "bytes")?;
        non_null(data, "data")?;
        non_null(len, "len")?;
        *data = (*bytes).data.as_ptr();
        *len = (*bytes).data.len();
        Ok(())
    })
}

/// Frees bytes (NULL is fine).
///
/// # Safety
/// `bytes` from an ibex function, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_bytes_free(bytes: *mut ibex_bytes) {
    guard_value((), || {
        if !bytes.is_null() {
            drop(Box::from_raw(bytes));
        }
    })
}

/// Hands `data` to the caller through `out`.
///
/// # Safety
/// `out` valid.
pub(crate) unsafe fn put_bytes(out: *mut *mut ibex_bytes, data: Vec<u8>) {
    *out = Box::into_raw(Box::new(ibex_bytes { data }));
}
