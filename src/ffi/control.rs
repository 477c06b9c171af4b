//! Cancel tokens and the run control passed to long calls.

use super::status::*;
use crate::control::{CancelToken, RunControl};
use std::ffi::c_void;

/// A thread-safe cancel flag: `ibex_cancel_token_cancel` may be called from any thread while
/// `ibex_explain` runs on another.
pub struct ibex_cancel_token {
    pub(crate) inner: CancelToken,
}

/// Progress callback: steps done, total steps, the caller's pointer. Return false to cancel.
pub type ibex_progress_fn = Option<unsafe extern "C" fn(done: u32, total: u32, user: *mut c_void) -> bool>;

/// Observes and stops a long call. Set `struct_size = sizeof(ibex_run_control)`.
#[repr(C)]
pub struct ibex_run_control {
    pub struct_size: u32,
    /// Called after every optimisation step (may be NULL).
    pub progress: ibex_progress_fn,
    /// Passed to `progress` unchanged.
    pub user: *mut c_void,
    /// Checked before every step (may be NULL).
    pub cancel: *const ibex_cancel_token,
}

/// Creates a cancel token.
///
/// # Safety
/// `out` must be a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn ibex_cancel_token_create(out: *mut *mut ibex_cancel_token) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        *out = Box::into_raw(Box::new(ibex_cancel_token { inner: CancelToken::new() }));
        Ok(())
    })
}

/// Requests cancellation (thread-safe).
///
/// # Safety
/// `token` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_cancel_token_cancel(token: *const ibex_cancel_token) -> i32 {
    guard(|| {
        non_null(token, "token")?;
        (*token).inner.cancel();
        Ok(())
    })
}

/// Clears the flag for reuse.
///
/// # Safety
/// `token` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_cancel_token_reset(token: *const ibex_cancel_token) -> i32 {
    guard(|| {
        non_null(token, "token")?;
        (*token).inner.reset();
        Ok(())
    })
}

/// Frees a token (NULL is fine). Must not be in use by a running call.
///
/// # Safety
/// `token` from `ibex_cancel_token_create`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_cancel_token_free(token: *mut ibex_cancel_token) {
    guard_value((), || {
        if !token.is_null() {
            drop(Box::from_raw(token));
        }
    })
}

struct UserPtr(*mut c_void);

/// Converts an optional C run control into a Rust [`RunControl`].
///
/// # Safety
/// `rc` NULL or valid for the duration of the call.
pub(crate) unsafe fn run_control<'a>(rc: *const ibex_run_control) -> FfiResult<RunControl<'a>> {
    if rc.is_null() {
        return Ok(RunControl::default());
    }
    let rc = &*rc;
    if (rc.struct_size as usize) < std::mem::size_of::<ibex_run_control>() {
        return Err(FfiError(
            IBEX_ERR_INVALID_ARGUMENT,
            format!(
                "ibex_run_control.struct_size is {}, expected {}",
                rc.struct_size,
                std::mem::size_of::<ibex_run_control>()
            ),
        ));
    }
    let cancel = if rc.cancel.is_null() { None } else { Some((*rc.cancel).inner.clone()) };
    let progress = rc.progress.map(|f| {
        let user = UserPtr(rc.user);
        Box::new(move |done: u32, total: u32| {
            let u = &user;
            f(done, total, u.0)
        }) as Box<crate::control::ProgressFn<'a>>
    });
    Ok(RunControl { cancel, progress })
}
