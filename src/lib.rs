//! # ibex — information-bottleneck explanations for vision and vision-language models
//!
//! ibex computes heatmaps that say which image regions (and which caption tokens) carry the
//! information a model uses, with the information-bottleneck family of methods:
//!
//! * **M2IB** ([`explain::m2ib`]) — multi-modal information bottleneck for CLIP-style models.
//!
//! Compute runs on [candle](https://github.com/huggingface/candle) (CPU by default, CUDA with the
//! `cuda` feature). The same functionality is exported as a C ABI (see `include/ibex.h`).
//!
//! Layers, top to bottom: [`ffi`] (C ABI) → [`explain`] (one module per method) →
//! [`bottleneck`] (the shared optimisation), [`models`] (forward passes with taps),
//! [`imaging`] (decode, preprocess, heatmaps) → candle.

pub mod bottleneck;
pub mod control;
pub mod device;
#[cfg(feature = "dicom")]
pub mod dicom;
pub mod error;
pub mod explain;
pub mod ffi;
pub mod hub;
pub mod imaging;
pub mod metrics;
pub mod models;
pub mod numerics;
pub mod train;

pub use control::{CancelToken, RunControl};
pub use error::{Error, Result};

/// The version of this library (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
