//! Decoded RGB images: loading from files ([`RgbImage::load`]), importing raw caller buffers
//! ([`RgbImage::from_view`]) and exporting 8-bit pixels ([`RgbImage::to_rgb8`]).
//!
//! Pixels are kept as interleaved `f32` RGB on the 0..=255 scale, whatever the source depth, so
//! an 8-bit source keeps its exact integer values and a 16-bit or float source keeps its
//! precision. The [`RgbImage::eight_bit`] flag records that the source was 8-bit, which lets
//! [`crate::imaging::resize`] round between passes the way Pillow does for 8-bit images.

use std::path::Path;

use ::image::{DynamicImage, ImageError, ImageReader};

use crate::error::{Error, Result};

/// The largest number of pixels (width × height) an image may have: 2^28, about 268 million.
///
/// Larger images are refused with [`Error::InvalidArgument`] before anything is allocated for
/// them (their `f32` RGB buffer alone would take more than 3 GiB).
pub const MAX_PIXELS: u64 = 1 << 28;

/// An RGB image with interleaved `f32` channels on the 0..=255 scale.
///
/// `data` holds `width * height * 3` values, row-major, `[r, g, b, r, g, b, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Interleaved RGB values, row-major, on the 0..=255 scale.
    pub data: Vec<f32>,
    /// Whether the source had 8 bits per channel (values are then integers in 0..=255 and
    /// resizing emulates Pillow's 8-bit fixed-point arithmetic).
    pub eight_bit: bool,
}

/// The sample type of a raw pixel buffer described by an [`ImageView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    /// One byte per channel, 0..=255.
    U8,
    /// Two bytes per channel (native endianness), 0..=65535.
    U16,
    /// Four bytes per channel (native endianness), expected in [0, 1].
    F32,
}

impl PixelType {
    /// Bytes per channel sample.
    pub fn bytes(self) -> usize {
        match self {
            PixelType::U8 => 1,
            PixelType::U16 => 2,
            PixelType::F32 => 4,
        }
    }
}

/// The channel layout of a raw pixel buffer described by an [`ImageView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelLayout {
    /// One channel, replicated to R, G and B.
    Gray,
    /// Three channels, R, G, B.
    Rgb,
    /// Four channels, R, G, B, A; alpha is dropped (like Pillow's `convert("RGB")`).
    Rgba,
}

impl ChannelLayout {
    /// Channels per pixel.
    pub fn channels(self) -> usize {
        match self {
            ChannelLayout::Gray => 1,
            ChannelLayout::Rgb => 3,
            ChannelLayout::Rgba => 4,
        }
    }
}

/// A borrowed, caller-owned raw pixel buffer (for example an image handed over the C ABI).
///
/// Row `y` starts at byte `y * row_stride`; within a row, pixels are packed with
/// `layout.channels()` samples of `pixel.bytes()` bytes each, in native endianness. The buffer
/// need not be aligned.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes between the starts of two consecutive rows (at least one row's worth of bytes).
    pub row_stride: usize,
    /// The sample type.
    pub pixel: PixelType,
    /// The channel layout.
    pub layout: ChannelLayout,
    /// The pixel bytes; at least `(height - 1) * row_stride + width * bytes_per_pixel` long.
    pub data: &'a [u8],
}

/// Checks that `width × height` is non-zero and within [`MAX_PIXELS`]; returns the pixel count.
fn check_size(width: u32, height: u32) -> Result<usize> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!(
            "image size {width}x{height} is empty: width and height must be at least 1"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(Error::invalid(format!(
            "image size {width}x{height} has {pixels} pixels, more than the limit of {MAX_PIXELS}"
        )));
    }
    usize::try_from(pixels).map_err(|_| Error::invalid(format!("image size {width}x{height} does not fit in memory")))
}

/// Whether the file at `path` starts like a DICOM file ("DICM" at byte 128).
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read.
pub fn is_dicom_file(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 132];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(filled == head.len() && &head[128..] == b"DICM")
}

/// Scales a 16-bit sample to the 0..=255 scale.
fn scale_u16(v: u16) -> f32 {
    (f64::from(v) / 65535.0 * 255.0) as f32
}

impl RgbImage {
    /// An image from interleaved RGB values on the 0..=255 scale.
    ///
    /// Fails if the size is empty or above [`MAX_PIXELS`], or if `data` does not hold exactly
    /// `width * height * 3` values.
    pub fn new(width: u32, height: u32, data: Vec<f32>, eight_bit: bool) -> Result<Self> {
        let pixels = check_size(width, height)?;
        if data.len() != pixels * 3 {
            return Err(Error::invalid(format!(
                "an RGB image of {width}x{height} needs {} values, got {}",
                pixels * 3,
                data.len()
            )));
        }
        Ok(RgbImage { width, height, data, eight_bit })
    }

    /// An 8-bit image copied from an `image` crate RGB buffer.
    pub fn from_rgb8(img: &::image::RgbImage) -> Result<Self> {
        let (width, height) = img.dimensions();
        check_size(width, height)?;
        let data = img.as_raw().iter().map(|&v| f32::from(v)).collect();
        Ok(RgbImage { width, height, data, eight_bit: true })
    }

    /// Decodes an image file (PNG, JPEG, WebP, BMP or TIFF; the format is guessed from the
    /// content, then from the extension), or frame 0 of a DICOM file (recognised by its "DICM"
    /// marker, read with [`crate::dicom::load`]'s defaults).
    ///
    /// Conversion follows Pillow's `convert("RGB")`: gray is replicated to three channels and
    /// alpha is dropped (not composited). 8-bit sources keep their integer values
    /// (`eight_bit = true`); 16-bit sources are scaled by 255/65535 and float sources by 255
    /// (`eight_bit = false`).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened, [`Error::Format`] naming the file and the
    /// decoder's reason if it cannot be decoded (including a truncated file), [`Error::InvalidArgument`] if the image is
    /// larger than [`MAX_PIXELS`].
    pub fn load(path: &Path) -> Result<Self> {
        if is_dicom_file(path)? {
            #[cfg(feature = "dicom")]
            return Ok(crate::dicom::load(path, &Default::default())?.image);
            #[cfg(not(feature = "dicom"))]
            return Err(Error::Unsupported(format!(
                "{} is a DICOM file, and this build of ibex has no `dicom` feature",
                path.display()
            )));
        }
        let reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
        let reader = reader.with_guessed_format().map_err(|e| Error::io(path, e))?;
        // The file opened, so a read failure while decoding means a truncated or corrupt file.
        let decoded = reader.decode().map_err(|e| match e {
            ImageError::Unsupported(u) => Error::format(path, format!("not a supported image format: {u}")),
            other => Error::format(path, format!("cannot decode image: {other}")),
        })?;
        Self::from_dynamic(decoded)
    }

    /// Converts a decoded `image` crate image (see [`RgbImage::load`] for the rules).
    pub fn from_dynamic(img: DynamicImage) -> Result<Self> {
        let (width, height) = (img.width(), img.height());
        check_size(width, height)?;
        fn gray<T: Copy>(px: &[T], stride: usize, f: impl Fn(T) -> f32) -> Vec<f32> {
            px.chunks_exact(stride).flat_map(|p| [f(p[0]); 3]).collect()
        }
        fn rgb<T: Copy>(px: &[T], stride: usize, f: impl Fn(T) -> f32) -> Vec<f32> {
            px.chunks_exact(stride).flat_map(|p| [f(p[0]), f(p[1]), f(p[2])]).collect()
        }
        let u8f = f32::from;
        let (data, eight_bit) = match &img {
            DynamicImage::ImageLuma8(b) => (gray(b.as_raw(), 1, u8f), true),
            DynamicImage::ImageLumaA8(b) => (gray(b.as_raw(), 2, u8f), true),
            DynamicImage::ImageRgb8(b) => (rgb(b.as_raw(), 3, u8f), true),
            DynamicImage::ImageRgba8(b) => (rgb(b.as_raw(), 4, u8f), true),
            DynamicImage::ImageLuma16(b) => (gray(b.as_raw(), 1, scale_u16), false),
            DynamicImage::ImageLumaA16(b) => (gray(b.as_raw(), 2, scale_u16), false),
            DynamicImage::ImageRgb16(b) => (rgb(b.as_raw(), 3, scale_u16), false),
            DynamicImage::ImageRgba16(b) => (rgb(b.as_raw(), 4, scale_u16), false),
            // Float sources (and any layout added to `image` later): via 32-bit float RGB.
            other => {
                let f = other.to_rgb32f();
                (f.as_raw().iter().map(|&v| v * 255.0).collect(), false)
            }
        };
        Self::new(width, height, data, eight_bit)
    }

    /// Imports a raw caller buffer, validating its size, stride and length.
    ///
    /// `U8` samples are taken as they are (`eight_bit = true`); `U16` samples are scaled by
    /// 255/65535 and `F32` samples (expected in [0, 1], clamped) by 255 (`eight_bit = false`).
    /// Gray is replicated; alpha is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or too large size, a stride shorter than a row,
    /// a buffer shorter than `(height - 1) * row_stride + row_bytes` (the message gives the
    /// required and the given length), or a NaN or infinite `F32` sample (the message gives
    /// its position).
    pub fn from_view(view: &ImageView<'_>) -> Result<Self> {
        let (width, height) = (view.width, view.height);
        let pixels = check_size(width, height)?;
        let channels = view.layout.channels();
        let sample = view.pixel.bytes();
        let bpp = channels * sample;
        let row_bytes = (width as usize)
            .checked_mul(bpp)
            .ok_or_else(|| Error::invalid(format!("image row of {width} pixels overflows the address space")))?;
        if view.row_stride < row_bytes {
            return Err(Error::invalid(format!(
                "row stride {} bytes is smaller than one row of {width} pixels ({row_bytes} bytes \
                 = {width} x {channels} channels x {sample} bytes)",
                view.row_stride
            )));
        }
        let required = (height as usize - 1)
            .checked_mul(view.row_stride)
            .and_then(|v| v.checked_add(row_bytes))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "image of {height} rows with stride {} overflows the address space",
                    view.row_stride
                ))
            })?;
        if view.data.len() < required {
            return Err(Error::invalid(format!(
                "pixel buffer too short for a {width}x{height} image with row stride {}: \
                 {required} bytes required, {} given",
                view.row_stride,
                view.data.len()
            )));
        }

        let mut data = Vec::with_capacity(pixels * 3);
        for y in 0..height as usize {
            let row = &view.data[y * view.row_stride..y * view.row_stride + row_bytes];
            for (x, px) in row.chunks_exact(bpp).enumerate() {
                let mut values = [0f32; 4];
                for (c, s) in px.chunks_exact(sample).enumerate() {
                    values[c] = match view.pixel {
                        PixelType::U8 => f32::from(s[0]),
                        PixelType::U16 => scale_u16(u16::from_ne_bytes([s[0], s[1]])),
                        PixelType::F32 => {
                            let v = f32::from_ne_bytes([s[0], s[1], s[2], s[3]]);
                            if !v.is_finite() {
                                return Err(Error::invalid(format!(
                                    "pixel (x={x}, y={y}) channel {c} is {v}: float pixels must \
                                     be finite (expected in [0, 1])"
                                )));
                            }
                            v.clamp(0.0, 1.0) * 255.0
                        }
                    };
                }
                match view.layout {
                    ChannelLayout::Gray => data.extend_from_slice(&[values[0]; 3]),
                    ChannelLayout::Rgb | ChannelLayout::Rgba => data.extend_from_slice(&values[..3]),
                }
            }
        }
        Ok(RgbImage { width, height, data, eight_bit: view.pixel == PixelType::U8 })
    }

    /// `(width, height)`.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The pixel at `(x, y)`, or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[f32; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.data.get(i..i + 3).map(|p| [p[0], p[1], p[2]])
    }

    /// The image as 8-bit RGB: each value rounded to the nearest integer and clamped to
    /// 0..=255 (NaN becomes 0). Missing values (a `data` shorter than the size says) read as 0.
    pub fn to_rgb8(&self) -> ::image::RgbImage {
        let n = self.width as usize * self.height as usize * 3;
        let mut bytes: Vec<u8> = self.data.iter().take(n).map(|&v| to_u8(v)).collect();
        bytes.resize(n, 0);
        ::image::RgbImage::from_raw(self.width, self.height, bytes)
            .unwrap_or_else(|| ::image::RgbImage::new(self.width, self.height))
    }
}

/// Rounds half away from zero and clamps to 0..=255; NaN gives 0.
pub(crate) fn to_u8(v: f32) -> u8 {
    // `as` saturates and maps NaN to 0.
    v.round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ibex-imaging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    #[test]
    fn view_u8_rgb_with_padding_stride() {
        // 2x2 RGB, stride 8 (2 bytes of padding per row).
        let buf = [1u8, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12];
        let view = ImageView {
            width: 2,
            height: 2,
            row_stride: 8,
            pixel: PixelType::U8,
            layout: ChannelLayout::Rgb,
            data: &buf,
        };
        let img = RgbImage::from_view(&view).unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert!(img.eight_bit);
        assert_eq!(img.data, (1..=12).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn view_gray_rgba_u16_f32() {
        let gray = [10u8, 200];
        let img = RgbImage::from_view(&ImageView {
            width: 2,
            height: 1,
            row_stride: 2,
            pixel: PixelType::U8,
            layout: ChannelLayout::Gray,
            data: &gray,
        })
        .unwrap();
        assert_eq!(img.data, vec![10.0, 10.0, 10.0, 200.0, 200.0, 200.0]);

        let rgba = [1u8, 2, 3, 255, 4, 5, 6, 0];
        let img = RgbImage::from_view(&ImageView {
            width: 2,
            height: 1,
            row_stride: 8,
            pixel: PixelType::U8,
            layout: ChannelLayout::Rgba,
            data: &rgba,
        })
        .unwrap();
        assert_eq!(img.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        // U16: 65535 -> 255, 0 -> 0, 257 -> 1; placed at an odd offset (unaligned).
        let mut buf = vec![0u8];
        for v in [65535u16, 0, 257] {
            buf.extend_from_slice(&v.to_ne_bytes());
        }
        let img = RgbImage::from_view(&ImageView {
            width: 1,
            height: 1,
            row_stride: 6,
            pixel: PixelType::U16,
            layout: ChannelLayout::Rgb,
            data: &buf[1..],
        })
        .unwrap();
        assert!(!img.eight_bit);
        assert_eq!(img.data, vec![255.0, 0.0, 1.0]);

        // F32: 0.5 -> 127.5, out-of-range values clamp.
        let mut buf = vec![0u8];
        for v in [0.5f32, -0.25, 1.5] {
            buf.extend_from_slice(&v.to_ne_bytes());
        }
        let img = RgbImage::from_view(&ImageView {
            width: 1,
            height: 1,
            row_stride: 12,
            pixel: PixelType::F32,
            layout: ChannelLayout::Rgb,
            data: &buf[1..],
        })
        .unwrap();
        assert_eq!(img.data, vec![127.5, 0.0, 255.0]);
    }

    #[test]
    fn view_rejects_bad_input() {
        let buf = [0u8; 16];
        let base = ImageView {
            width: 2,
            height: 2,
            row_stride: 6,
            pixel: PixelType::U8,
            layout: ChannelLayout::Rgb,
            data: &buf[..11],
        };
        let msg = RgbImage::from_view(&base).unwrap_err().to_string();
        assert!(msg.contains("12 bytes required, 11 given"), "{msg}");
        let msg = RgbImage::from_view(&ImageView { row_stride: 5, ..base }).unwrap_err().to_string();
        assert!(msg.contains("row stride 5"), "{msg}");
        let msg = RgbImage::from_view(&ImageView { width: 0, ..base }).unwrap_err().to_string();
        assert!(msg.contains("empty"), "{msg}");
        let msg = RgbImage::from_view(&ImageView { width: 1 << 15, height: 1 << 14, ..base }).unwrap_err().to_string();
        assert!(msg.contains("limit"), "{msg}");

        let mut fbuf = Vec::new();
        for v in [0.1f32, 0.2, 0.3, 0.4, f32::NAN, 0.6] {
            fbuf.extend_from_slice(&v.to_ne_bytes());
        }
        let err = RgbImage::from_view(&ImageView {
            width: 2,
            height: 1,
            row_stride: 24,
            pixel: PixelType::F32,
            layout: ChannelLayout::Rgb,
            data: &fbuf,
        })
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.to_string().contains("(x=1, y=0) channel 1"), "{err}");
    }

    #[test]
    fn to_rgb8_rounds_and_clamps() {
        let img = RgbImage::new(2, 1, vec![-3.0, 0.49, 0.5, 254.5, 300.0, f32::NAN], false).unwrap();
        assert_eq!(img.to_rgb8().as_raw(), &vec![0u8, 0, 1, 255, 255, 0]);
        assert!(RgbImage::new(2, 1, vec![0.0; 5], false).is_err());
    }

    #[test]
    fn load_png_gray_rgba_and_16_bit() {
        let rgb = ::image::RgbImage::from_raw(2, 1, vec![1, 2, 3, 250, 251, 252]).unwrap();
        let p = temp_path("rgb.png");
        rgb.save(&p).unwrap();
        let img = RgbImage::load(&p).unwrap();
        assert!(img.eight_bit);
        assert_eq!(img.data, vec![1.0, 2.0, 3.0, 250.0, 251.0, 252.0]);

        let la = ::image::GrayAlphaImage::from_raw(1, 1, vec![77, 10]).unwrap();
        let p = temp_path("la.png");
        la.save(&p).unwrap();
        assert_eq!(RgbImage::load(&p).unwrap().data, vec![77.0, 77.0, 77.0]);

        let rgba = ::image::RgbaImage::from_raw(1, 1, vec![9, 8, 7, 0]).unwrap();
        let p = temp_path("rgba.png");
        rgba.save(&p).unwrap();
        assert_eq!(RgbImage::load(&p).unwrap().data, vec![9.0, 8.0, 7.0]);

        let g16 = ::image::ImageBuffer::<::image::Luma<u16>, _>::from_raw(1, 1, vec![65535u16]).unwrap();
        let p = temp_path("g16.png");
        g16.save(&p).unwrap();
        let img = RgbImage::load(&p).unwrap();
        assert!(!img.eight_bit);
        assert_eq!(img.data, vec![255.0, 255.0, 255.0]);
    }

    #[test]
    fn load_errors_name_the_file() {
        let missing = temp_path("does-not-exist.png");
        assert!(matches!(RgbImage::load(&missing), Err(Error::Io { .. })));

        let garbage = temp_path("garbage.png");
        std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
        match RgbImage::load(&garbage) {
            Err(Error::Format { path, message }) => {
                assert_eq!(path, garbage);
                assert!(!message.is_empty());
            }
            other => panic!("expected a format error, got {other:?}"),
        }
        let text = temp_path("notes.txt");
        std::fs::write(&text, b"hello").unwrap();
        assert!(matches!(RgbImage::load(&text), Err(Error::Format { .. })));
    }
}
