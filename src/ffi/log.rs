//! Forwarding ibex's log messages to a host callback.

use super::status::*;
use parking_lot::RwLock;
use std::ffi::{c_char, c_void, CString};

/// Log levels passed to the callback.
pub const IBEX_LOG_ERROR: i32 = 1;
pub const IBEX_LOG_WARN: i32 = 2;
pub const IBEX_LOG_INFO: i32 = 3;
pub const IBEX_LOG_DEBUG: i32 = 4;

/// Log callback: level (`IBEX_LOG_*`), message (valid during the call), the caller's pointer.
pub type ibex_log_fn = Option<unsafe extern "C" fn(level: i32, message: *const c_char, user: *mut c_void)>;

struct Sink {
    f: unsafe extern "C" fn(i32, *const c_char, *mut c_void),
    user: *mut c_void,
    max_level: i32,
}
// The host promises the callback may be called from any thread (documented in the header).
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("ibex") && SINK.read().as_ref().is_some_and(|s| level(m.level()) <= s.max_level)
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(s) = SINK.read().as_ref() {
            let msg = CString::new(record.args().to_string().replace('\0', " ")).unwrap_or_default();
            unsafe { (s.f)(level(record.level()), msg.as_ptr(), s.user) };
        }
    }
    fn flush(&self) {}
}

fn level(l: log::Level) -> i32 {
    match l {
        log::Level::Error => IBEX_LOG_ERROR,
        log::Level::Warn => IBEX_LOG_WARN,
        log::Level::Info => IBEX_LOG_INFO,
        log::Level::Debug | log::Level::Trace => IBEX_LOG_DEBUG,
    }
}

static FORWARDER: Forwarder = Forwarder;

/// Sends ibex's messages up to `max_level` (`IBEX_LOG_*`) to `callback` (NULL switches logging
/// off). The callback may be called from any thread that runs ibex code. If the host process
/// already installed another Rust `log` logger, this returns `IBEX_ERR_UNSUPPORTED`.
#[no_mangle]
pub extern "C" fn ibex_set_log_callback(callback: ibex_log_fn, max_level: i32, user: *mut c_void) -> i32 {
    guard(|| {
        if log::set_logger(&FORWARDER).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        } else if !std::ptr::eq(
            log::logger() as *const dyn log::Log as *const (),
            &FORWARDER as *const Forwarder as *const (),
        ) {
            return Err(FfiError(IBEX_ERR_UNSUPPORTED, "another logger is installed in this process".into()));
        }
        *SINK.write() = callback.map(|f| Sink { f, user, max_level });
        Ok(())
    })
}
