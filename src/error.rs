//! The one error type of ibex. Every fallible function returns [`Result`]; the C ABI maps each
//! variant to a fixed status code (see `ffi::status`).

use std::path::PathBuf;

/// Errors reported by ibex. Messages say what was wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied value is out of range, of the wrong size, or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model, tokenizer, config or image file exists but is corrupt or not what was expected.
    #[error("bad file {path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A model or file was not found (locally, or in the Hugging Face cache).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is valid but not supported by this build or this model.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The run was cancelled through a cancel token or a progress callback.
    #[error("cancelled (by the progress callback or the cancel token)")]
    Cancelled,
    /// A computation produced NaN or infinity (the message says where).
    #[error("numerical error: {0}")]
    Numerical(String),
    /// An error from the tensor backend.
    #[error("tensor backend: {0}")]
    Backend(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::InvalidArgument`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), message: msg.into() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
