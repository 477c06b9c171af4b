//! Images in and out: decoding and raw-buffer import ([`image`]), Pillow-exact bicubic resizing
//! ([`resize`]), CLIP preprocessing ([`preprocess`]), heatmaps ([`heatmap`]), colormaps
//! ([`colormap`]) and heatmap overlays ([`mod@overlay`]).
//!
//! The numerics follow the Python reference stack so that maps computed here line up with
//! those of the original implementations: Pillow's `Image.resize(..., BICUBIC)` and
//! transformers' `CLIPImageProcessor` for the model input, torch's
//! `F.interpolate(mode="bilinear", align_corners=False)` for upsampling maps.

pub mod augment;
pub mod colormap;
pub mod folder;
pub mod heatmap;
pub mod image;
pub mod overlay;
pub mod preprocess;
pub mod resize;
pub mod sheet;
pub mod trivial_augment;

pub use self::colormap::Colormap;
pub use self::heatmap::Heatmap;
pub use self::image::{ChannelLayout, ImageView, PixelType, RgbImage, MAX_PIXELS};
pub use self::overlay::{overlay, write_png};
pub use self::preprocess::{ClipPreprocessor, Preprocessed};
pub use self::resize::{resize_bicubic, resize_bicubic_with, PassOrder};
