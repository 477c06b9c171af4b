//! CLIP image preprocessing, reproducing Hugging Face `transformers`' `CLIPImageProcessor`:
//! bicubic resize of the shortest edge (Pillow's resampling, see [`super::resize`]), centre
//! crop (zero-padding images smaller than the crop), rescale and per-channel normalisation,
//! giving a CHW `f32` tensor.
//!
//! 8-bit images (the usual case: transformers hands Pillow a `uint8` image) are resized with
//! Pillow's 8-bit fixed-point arithmetic, so the model input matches the Python pipeline
//! exactly; 16-bit and float images are resized in floating point without intermediate
//! rounding. The resize uses current Pillow's (13.x) pass order (see
//! [`super::resize::PassOrder`]); it differs from Pillow 12's only for images more than twice
//! as tall as wide, by a few 8-bit levels.

use std::path::Path;

use serde_json::Value;

use super::image::{RgbImage, MAX_PIXELS};
use super::resize::{resize_with, Filter, PassOrder};
use crate::error::{Error, Result};

/// OpenAI CLIP's per-channel mean, `OPENAI_CLIP_MEAN` in transformers
/// (0.48145466, 0.4578275, 0.40821073).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation, `OPENAI_CLIP_STD` in transformers
/// (0.26862954, 0.26130258, 0.27577711, written here with the digits an `f32` keeps).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Pillow's resampling codes for bicubic and bilinear, the ones supported.
const PIL_BICUBIC: u64 = 3;
const PIL_BILINEAR: u64 = 2;

/// The settings of a `CLIPImageProcessor` (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocessor {
    /// Target length of the shorter image edge after resizing (`size.shortest_edge`).
    pub shortest_edge: u32,
    /// Width of the centre crop (`crop_size.width`).
    pub crop_width: u32,
    /// Height of the centre crop (`crop_size.height`).
    pub crop_height: u32,
    /// Whether to resize (`do_resize`).
    pub do_resize: bool,
    /// Whether to centre-crop (`do_center_crop`).
    pub do_center_crop: bool,
    /// Whether to multiply by `rescale_factor` (`do_rescale`).
    pub do_rescale: bool,
    /// The rescale factor, normally 1/255 (`rescale_factor`).
    pub rescale_factor: f32,
    /// Whether to normalise with `mean` and `std` (`do_normalize`).
    pub do_normalize: bool,
    /// Per-channel mean (`image_mean`).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (`image_std`).
    pub std: [f32; 3],
    /// The resize filter (`resample`: 3 bicubic, 2 bilinear).
    pub resample: Filter,
    /// A fixed `(width, height)` resize that ignores the aspect ratio (`size: {"height",
    /// "width"}`, SigLIP's processor) instead of the shortest-edge resize.
    pub resize_to: Option<(u32, u32)>,
}

/// The model input made from one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// Width of `pixel_values` (the crop width when cropping).
    pub width: u32,
    /// Height of `pixel_values` (the crop height when cropping).
    pub height: u32,
    /// Normalised values, channel-major (CHW): `3 * height * width` values.
    pub pixel_values: Vec<f32>,
    /// The resized and cropped image on the 0..=255 scale, before rescaling (for overlays).
    pub image: RgbImage,
    /// The rectangle `[x0, y0, x1, y1]` of the ORIGINAL image (pixel edges, may reach outside
    /// it where the crop pads) that the model input covers: place a map there to show it over
    /// the original.
    pub source_region: [f32; 4],
}

impl ClipPreprocessor {
    /// OpenAI CLIP's preprocessing for a model with `size × size` input: bicubic resize of the
    /// shortest edge to `size`, centre crop `size × size`, rescale by 1/255, normalise with
    /// [`CLIP_MEAN`] and [`CLIP_STD`].
    pub fn for_image_size(size: u32) -> Self {
        ClipPreprocessor {
            shortest_edge: size,
            crop_width: size,
            crop_height: size,
            do_resize: true,
            do_center_crop: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            resample: Filter::Bicubic,
            resize_to: None,
        }
    }

    /// A fixed `size × size` resize without crop (SigLIP's `SiglipImageProcessor`: bicubic,
    /// rescale by 1/255, mean and std 0.5).
    pub fn fixed(size: u32, mean: [f32; 3], std: [f32; 3], resample: Filter) -> Self {
        ClipPreprocessor {
            do_center_crop: false,
            resize_to: Some((size, size)),
            mean,
            std,
            resample,
            ..Self::for_image_size(size)
        }
    }

    /// The size `(width, height)` of the model input this preprocessor makes, when it does not
    /// depend on the image (a crop or a fixed resize).
    pub fn output_size(&self) -> Option<(u32, u32)> {
        if self.do_center_crop {
            Some((self.crop_width, self.crop_height))
        } else if self.do_resize {
            self.resize_to
        } else {
            None
        }
    }

    /// Reads a Hugging Face `preprocessor_config.json` for a `CLIPImageProcessor` (or a
    /// `SiglipImageProcessor`, whose `size` is a fixed `{"height", "width"}`).
    ///
    /// Understood keys (missing ones take `CLIPImageProcessor`'s defaults, those of
    /// [`ClipPreprocessor::for_image_size`]`(224)`): `size` (`{"shortest_edge": n}`, `n`, or
    /// `{"height": h, "width": w}` for a resize that ignores the aspect ratio),
    /// `crop_size` (`{"height": h, "width": w}` or `n`), `do_resize`, `do_center_crop`,
    /// `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`, `image_std` (three numbers
    /// or one for all channels) and `resample` (3 bicubic or 2 bilinear). Other keys are ignored.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Format`] naming the file if it is not
    /// JSON, a value has the wrong type or range, or `resample` is not bicubic or bilinear.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with(path, Self::for_image_size(224))
    }

    /// Like [`from_file`](Self::from_file), with `defaults` for the missing keys (another image
    /// processor's, e.g. [`ClipPreprocessor::fixed`] for SigLIP's).
    pub fn from_file_with(path: &Path, defaults: Self) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&json, defaults).map_err(|msg| Error::format(path, msg))
    }

    /// Parses the config object; errors are messages for [`Error::format`].
    fn from_json(json: &Value, defaults: Self) -> std::result::Result<Self, String> {
        let obj = json.as_object().ok_or_else(|| "expected a JSON object at the top level".to_string())?;
        let mut pp = defaults;

        let positive = |key: &str, v: &Value| -> std::result::Result<u32, String> {
            v.as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("\"{key}\" must be a positive integer, got {v}"))
        };
        let flag = |key: &str| -> std::result::Result<Option<bool>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(v) => Err(format!("\"{key}\" must be true or false, got {v}")),
            }
        };
        let channels = |key: &str, v: &Value| -> std::result::Result<[f32; 3], String> {
            let bad = || format!("\"{key}\" must be one finite number or a list of 3, got {v}");
            let nums: Vec<f64> = match v {
                Value::Number(n) => vec![n.as_f64().ok_or_else(bad)?; 3],
                Value::Array(a) => {
                    a.iter().map(|x| x.as_f64().ok_or_else(bad)).collect::<std::result::Result<_, _>>()?
                }
                _ => return Err(bad()),
            };
            match nums.as_slice() {
                [a, b, c] if nums.iter().all(|x| x.is_finite()) => Ok([*a as f32, *b as f32, *c as f32]),
                _ => Err(bad()),
            }
        };

        match obj.get("size") {
            None | Some(Value::Null) => {}
            Some(Value::Object(size)) => match size.get("shortest_edge") {
                Some(n) => pp.shortest_edge = positive("size.shortest_edge", n)?,
                None if size.contains_key("height") || size.contains_key("width") => {
                    let get = |k: &str| {
                        size.get(k)
                            .ok_or_else(|| format!("\"size\" has no \"{k}\""))
                            .and_then(|v| positive(&format!("size.{k}"), v))
                    };
                    pp.resize_to = Some((get("width")?, get("height")?));
                }
                None => return Err(format!("\"size\" {} has no \"shortest_edge\"", Value::Object(size.clone()))),
            },
            Some(n) => pp.shortest_edge = positive("size", n)?,
        }
        match obj.get("crop_size") {
            None | Some(Value::Null) => {}
            Some(Value::Object(crop)) => {
                let get = |k: &str| {
                    crop.get(k)
                        .ok_or_else(|| format!("\"crop_size\" has no \"{k}\""))
                        .and_then(|v| positive(&format!("crop_size.{k}"), v))
                };
                pp.crop_height = get("height")?;
                pp.crop_width = get("width")?;
            }
            Some(n) => {
                let n = positive("crop_size", n)?;
                pp.crop_height = n;
                pp.crop_width = n;
            }
        }
        if let Some(b) = flag("do_resize")? {
            pp.do_resize = b;
        }
        if let Some(b) = flag("do_center_crop")? {
            pp.do_center_crop = b;
        }
        if let Some(b) = flag("do_rescale")? {
            pp.do_rescale = b;
        }
        if let Some(b) = flag("do_normalize")? {
            pp.do_normalize = b;
        }
        if let Some(v) = obj.get("rescale_factor").filter(|v| !v.is_null()) {
            pp.rescale_factor = v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("\"rescale_factor\" must be a finite number, got {v}"))?
                as f32;
        }
        if let Some(v) = obj.get("image_mean").filter(|v| !v.is_null()) {
            pp.mean = channels("image_mean", v)?;
        }
        if let Some(v) = obj.get("image_std").filter(|v| !v.is_null()) {
            pp.std = channels("image_std", v)?;
            if pp.std.contains(&0.0) {
                return Err(format!("\"image_std\" must not contain 0, got {v}"));
            }
        }
        if let Some(v) = obj.get("resample").filter(|v| !v.is_null()) {
            match v.as_u64() {
                Some(PIL_BICUBIC) => pp.resample = Filter::Bicubic,
                Some(PIL_BILINEAR) => pp.resample = Filter::Bilinear,
                _ => {
                    let name = match v.as_u64() {
                        Some(0) => " (nearest)",
                        Some(1) => " (lanczos)",
                        Some(2) => " (bilinear)",
                        Some(4) => " (box)",
                        Some(5) => " (hamming)",
                        _ => "",
                    };
                    return Err(format!("\"resample\" is {v}{name}; only 3 (bicubic) and 2 (bilinear) are supported"));
                }
            }
        }
        Ok(pp)
    }

    /// The size `(width, height)` an image of `width × height` has after the resize step:
    /// transformers' `get_resize_output_image_size` with `default_to_square=False` (the short
    /// edge becomes `shortest_edge`, the long edge `int(shortest_edge * long / short)`).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        if !self.do_resize || width == 0 || height == 0 {
            return (width, height);
        }
        if let Some(size) = self.resize_to {
            return size;
        }
        let (short, long) = if width <= height { (width, height) } else { (height, width) };
        let new_short = self.shortest_edge;
        // Python's `int(new_short * long / short)`: an exact integer product, a correctly
        // rounded division (exact in f64 below 2^53), then truncation.
        let product = u64::from(new_short) * u64::from(long);
        let new_long = (product as f64 / f64::from(short)) as u32;
        if width <= height {
            (new_short, new_long)
        } else {
            (new_long, new_short)
        }
    }

    /// The normalised model-input value of the raw pixel value `v` (0..=255) in each channel.
    pub fn normalise_value(&self, v: [f32; 3]) -> [f32; 3] {
        let mut out = [0f32; 3];
        for c in 0..3 {
            let x = if self.do_rescale { v[c] * self.rescale_factor } else { v[c] };
            out[c] = if self.do_normalize { (x - self.mean[c]) / self.std[c] } else { x };
        }
        out
    }

    /// Resizes, crops, rescales and normalises `img` (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty image, an image whose `data` length does not
    /// match its size, a zero `shortest_edge` or crop size, or a resize that would exceed
    /// [`MAX_PIXELS`].
    pub fn preprocess(&self, img: &RgbImage) -> Result<Preprocessed> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::invalid(format!("cannot preprocess an empty {w}x{h} image")));
        }
        if img.data.len() as u64 != u64::from(w) * u64::from(h) * 3 {
            return Err(Error::invalid(format!(
                "a {w}x{h} RGB image needs {} values, got {}",
                u64::from(w) * u64::from(h) * 3,
                img.data.len()
            )));
        }
        if self.do_resize && self.shortest_edge == 0 {
            return Err(Error::invalid("preprocessor shortest_edge must be at least 1"));
        }
        if self.do_center_crop && (self.crop_width == 0 || self.crop_height == 0) {
            return Err(Error::invalid(format!(
                "preprocessor crop size {}x{} is empty",
                self.crop_width, self.crop_height
            )));
        }

        let (rw, rh) = self.resized_size(w, h);
        if u64::from(rw) * u64::from(rh) > MAX_PIXELS {
            return Err(Error::invalid(format!(
                "resizing a {w}x{h} image to shortest edge {} gives {rw}x{rh}, more than \
                 {MAX_PIXELS} pixels",
                self.shortest_edge
            )));
        }
        let resized = if (rw, rh) == (w, h) {
            img.clone()
        } else {
            resize_with(img, rw, rh, self.resample, PassOrder::default())
        };
        let (sx, sy) = (f64::from(w) / f64::from(rw), f64::from(h) / f64::from(rh));
        let source_region = if self.do_center_crop {
            let left = (i64::from(rw) - i64::from(self.crop_width)).div_euclid(2) as f64;
            let top = (i64::from(rh) - i64::from(self.crop_height)).div_euclid(2) as f64;
            [
                (left * sx) as f32,
                (top * sy) as f32,
                ((left + f64::from(self.crop_width)) * sx) as f32,
                ((top + f64::from(self.crop_height)) * sy) as f32,
            ]
        } else {
            [0.0, 0.0, w as f32, h as f32]
        };
        let image =
            if self.do_center_crop { center_crop(&resized, self.crop_width, self.crop_height) } else { resized };

        // transformers rescales in float64 and casts to float32; 1/255 is recovered exactly
        // from its f32 rounding so the result matches `x * (1/255)` computed in f64.
        let factor =
            if self.rescale_factor == (1.0f64 / 255.0) as f32 { 1.0 / 255.0 } else { f64::from(self.rescale_factor) };
        let (ow, oh) = image.dimensions();
        let plane = ow as usize * oh as usize;
        let mut pixel_values = vec![0f32; 3 * plane];
        for (i, px) in image.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut v = px[c];
                if self.do_rescale {
                    v = (f64::from(v) * factor) as f32;
                }
                if self.do_normalize {
                    v = (v - self.mean[c]) / self.std[c];
                }
                pixel_values[c * plane + i] = v;
            }
        }
        Ok(Preprocessed { width: ow, height: oh, pixel_values, image, source_region })
    }
}

/// transformers' `center_crop`: `top = (h - crop_h) // 2`, `left = (w - crop_w) // 2` (floor
/// division); where the crop reaches outside the image (an image smaller than the crop) the
/// pixels are zero, the image centred as transformers pads it.
pub fn center_crop(img: &RgbImage, crop_width: u32, crop_height: u32) -> RgbImage {
    let (w, h) = (i64::from(img.width), i64::from(img.height));
    let top = (h - i64::from(crop_height)).div_euclid(2);
    let left = (w - i64::from(crop_width)).div_euclid(2);
    let mut data = vec![0f32; crop_width as usize * crop_height as usize * 3];
    for (r, out_row) in data.chunks_exact_mut(crop_width as usize * 3).enumerate() {
        let y = top + r as i64;
        if !(0..h).contains(&y) {
            continue;
        }
        // Columns of the crop that fall inside the image.
        let x0 = left.max(0);
        let x1 = (left + i64::from(crop_width)).min(w);
        if x0 >= x1 {
            continue;
        }
        let src_start = ((y * w + x0) * 3) as usize;
        let src_end = ((y * w + x1) * 3) as usize;
        let dst_start = ((x0 - left) * 3) as usize;
        if let Some(src) = img.data.get(src_start..src_end) {
            out_row[dst_start..dst_start + src.len()].copy_from_slice(src);
        }
    }
    RgbImage { width: crop_width, height: crop_height, data, eight_bit: img.eight_bit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_json(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ibex-preprocess-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    use crate::imaging::resize::tests::pattern;

    #[test]
    fn source_region_maps_the_crop_back_to_the_original() {
        let pp = ClipPreprocessor::for_image_size(224);
        // 640x480 -> 298x224, crop 224 from x = 37: original x in [37, 261) * 640/298
        let out = pp.preprocess(&pattern(640, 480)).unwrap();
        let s = 640.0 / 298.0;
        let want = [37.0 * s, 0.0, 261.0 * s, 480.0];
        for (a, b) in out.source_region.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{:?} vs {want:?}", out.source_region);
        }
        // already the input size: the whole image
        let pp = ClipPreprocessor::for_image_size(64);
        assert_eq!(pp.preprocess(&pattern(64, 64)).unwrap().source_region, [0.0, 0.0, 64.0, 64.0]);
    }

    #[test]
    fn parses_old_and_new_configs() {
        let old = temp_json(
            "old.json",
            r#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true,
                "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}"#,
        );
        assert_eq!(ClipPreprocessor::from_file(&old).unwrap(), ClipPreprocessor::for_image_size(224));

        let new = temp_json(
            "new.json",
            r#"{"crop_size": {"height": 336, "width": 320}, "do_center_crop": true,
                "do_convert_rgb": true, "do_normalize": false, "do_rescale": true,
                "do_resize": true, "image_mean": 0.5, "image_std": [0.5, 0.25, 2],
                "image_processor_type": "CLIPImageProcessor", "resample": 3,
                "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}}"#,
        );
        let pp = ClipPreprocessor::from_file(&new).unwrap();
        assert_eq!(pp.shortest_edge, 336);
        assert_eq!((pp.crop_width, pp.crop_height), (320, 336));
        assert!(!pp.do_normalize);
        assert_eq!(pp.mean, [0.5; 3]);
        assert_eq!(pp.std, [0.5, 0.25, 2.0]);
        assert_eq!(pp.rescale_factor, 1.0 / 255.0);

        let defaults = temp_json("empty.json", "{}");
        assert_eq!(ClipPreprocessor::from_file(&defaults).unwrap(), ClipPreprocessor::for_image_size(224));
    }

    #[test]
    fn rejects_bad_configs() {
        let cases = [
            (r#"{"resample": 1}"#, "lanczos"),
            (r#"{"size": {"height": 224}}"#, "width"),
            (r#"{"size": {"longest_edge": 224}}"#, "shortest_edge"),
            (r#"{"size": 0}"#, "positive integer"),
            (r#"{"crop_size": {"height": 224}}"#, "width"),
            (r#"{"image_std": [1, 0, 1]}"#, "must not contain 0"),
            (r#"{"image_mean": [1, 2]}"#, "list of 3"),
            (r#"{"do_resize": "yes"}"#, "true or false"),
            ("[1, 2]", "object"),
            ("{not json", "JSON"),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let p = temp_json(&format!("bad{i}.json"), text);
            match ClipPreprocessor::from_file(&p) {
                Err(Error::Format { path, message }) => {
                    assert_eq!(path, p);
                    assert!(message.contains(needle), "{text}: {message}");
                }
                other => panic!("{text}: expected a format error, got {other:?}"),
            }
        }
        let missing = std::env::temp_dir().join("ibex-no-such-config.json");
        assert!(matches!(ClipPreprocessor::from_file(&missing), Err(Error::Io { .. })));
    }

    #[test]
    fn fixed_size_resize_has_no_crop() {
        let p = temp_json("siglip.json", r#"{"size": {"height": 20, "width": 30}, "resample": 3}"#);
        let siglip = ClipPreprocessor::fixed(224, [0.5; 3], [0.5; 3], Filter::Bicubic);
        let pp = ClipPreprocessor::from_file_with(&p, siglip).unwrap();
        assert_eq!(pp.mean, [0.5; 3]);
        // CLIPImageProcessor's default (crop) holds for a CLIP file with a fixed size
        assert!(ClipPreprocessor::from_file(&p).unwrap().do_center_crop);
        assert_eq!((pp.resize_to, pp.do_center_crop, pp.output_size()), (Some((30, 20)), false, Some((30, 20))));
        assert_eq!(pp.resized_size(640, 480), (30, 20));
        let img = RgbImage::new(8, 4, vec![100.0; 8 * 4 * 3], false).unwrap();
        let out = pp.preprocess(&img).unwrap();
        assert_eq!((out.width, out.height, out.source_region), (30, 20, [0.0, 0.0, 8.0, 4.0]));
    }

    #[test]
    fn resized_size_follows_transformers() {
        let pp = ClipPreprocessor::for_image_size(224);
        // 640x480: short 480 → 224, long int(224 * 640 / 480) = int(298.67) = 298.
        assert_eq!(pp.resized_size(640, 480), (298, 224));
        assert_eq!(pp.resized_size(480, 640), (224, 298));
        assert_eq!(pp.resized_size(100, 100), (224, 224));
        // 224 * 333 / 250 = 298.368 → 298.
        assert_eq!(pp.resized_size(250, 333), (224, 298));
    }

    #[test]
    fn same_size_is_only_rescaled_and_normalised() {
        let img = pattern(64, 64);
        let pp = ClipPreprocessor::for_image_size(64);
        let out = pp.preprocess(&img).unwrap();
        assert_eq!((out.width, out.height), (64, 64));
        assert_eq!(out.image, img);
        for c in 0..3 {
            for i in 0..64 * 64 {
                let x = img.data[3 * i + c];
                let expected = ((f64::from(x) / 255.0) as f32 - CLIP_MEAN[c]) / CLIP_STD[c];
                assert_eq!(out.pixel_values[c * 4096 + i], expected);
            }
        }
        // The first pixel is (0, 53, 106): (0 - 0.48145466) / 0.26862954 = -1.7922626.
        assert!((out.pixel_values[0] + 1.792_262_6).abs() < 1e-6);
    }

    #[test]
    fn resize_then_crop_matches_pillow() {
        // 10x6 → short 6 → 4, long int(4 * 10 / 6) = 6: resized 6x4, crop 4x4 at left 1, top 0.
        // Expected: Pillow 13 Image.fromarray(pattern).resize((6, 4), BICUBIC), red channel,
        // columns 1..5.
        let pp = ClipPreprocessor { crop_width: 4, crop_height: 4, ..ClipPreprocessor::for_image_size(4) };
        let out = pp.preprocess(&pattern(10, 6)).unwrap();
        let red: Vec<f32> = out.image.data.iter().step_by(3).copied().collect();
        assert_eq!(red, PILLOW_10X6_RESIZED_6X4_CROP_R.to_vec());
        let v = (f64::from(red[5]) / 255.0) as f32;
        assert_eq!(out.pixel_values[5], (v - CLIP_MEAN[0]) / CLIP_STD[0]);
    }

    #[test]
    fn crop_pads_small_images_like_transformers() {
        // 3x2 image, crop 4 wide x 3 tall: top = (2 - 3) // 2 = -1, left = (3 - 4) // 2 = -1,
        // so the image sits at rows 1..3, columns 1..4 of the crop; the rest is zero.
        let img = RgbImage::new(3, 2, (1..=18).map(|v| v as f32).collect(), true).unwrap();
        let out = center_crop(&img, 4, 3);
        let red: Vec<f32> = out.data.iter().step_by(3).copied().collect();
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 1.0, 4.0, 7.0,
            0.0, 10.0, 13.0, 16.0,
        ];
        assert_eq!(red, expected.to_vec());

        // Tall and narrow: 3x6 into 5 wide x 2 tall: top = 2, left = -1.
        let img = RgbImage::new(3, 6, (0..54).map(|v| v as f32).collect(), true).unwrap();
        let out = center_crop(&img, 5, 2);
        let red: Vec<f32> = out.data.iter().step_by(3).copied().collect();
        assert_eq!(red, vec![0.0, 18.0, 21.0, 24.0, 0.0, 0.0, 27.0, 30.0, 33.0, 0.0]);

        // Through the preprocessor, padding becomes (0 - mean) / std.
        let pp =
            ClipPreprocessor { do_resize: false, crop_width: 4, crop_height: 3, ..ClipPreprocessor::for_image_size(4) };
        let out = pp.preprocess(&RgbImage::new(3, 2, vec![255.0; 18], true).unwrap()).unwrap();
        assert_eq!(out.pixel_values[0], -CLIP_MEAN[0] / CLIP_STD[0]);
        assert_eq!(out.pixel_values[5], (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]);
    }

    #[test]
    fn odd_crop_offsets_floor() {
        // 7x5, crop 4x2: top = (5 - 2) // 2 = 1, left = (7 - 4) // 2 = 1.
        let img = RgbImage::new(7, 5, (0..105).map(|v| v as f32).collect(), false).unwrap();
        let out = center_crop(&img, 4, 2);
        let red: Vec<f32> = out.data.iter().step_by(3).copied().collect();
        assert_eq!(red, vec![24.0, 27.0, 30.0, 33.0, 45.0, 48.0, 51.0, 54.0]);
    }

    #[test]
    fn rejects_bad_images() {
        let pp = ClipPreprocessor::for_image_size(8);
        let empty = RgbImage { width: 0, height: 4, data: vec![], eight_bit: true };
        assert!(pp.preprocess(&empty).is_err());
        let short = RgbImage { width: 2, height: 2, data: vec![0.0; 11], eight_bit: true };
        assert!(pp.preprocess(&short).is_err());
        let sliver = RgbImage { width: 1, height: 60_000, data: vec![0.0; 180_000], eight_bit: true };
        let big = ClipPreprocessor::for_image_size(10_000);
        let err = big.preprocess(&sliver).unwrap_err().to_string();
        assert!(err.contains("pixels"), "{err}");
    }

    #[rustfmt::skip]
    const PILLOW_10X6_RESIZED_6X4_CROP_R: [f32; 16] = [
        118.0, 121.0, 148.0, 89.0,
        122.0, 112.0, 140.0, 112.0,
        148.0, 163.0, 140.0, 144.0,
        117.0, 150.0, 136.0, 123.0,
    ];
}
