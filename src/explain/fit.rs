//! The training loop shared by the amortised methods (`ibex iba fit-readout`, `ibex dual-ib
//! fit`): epochs over the images in seeded random order, batches of views, progress and cancel
//! after every batch, and the learner's state written after every epoch so a stopped run
//! resumes where it stopped (`--resume`).
//!
//! A view of image `i` in epoch `e` is a reproducible function of `(seed, e, i)`: for photos a
//! random resized crop with flips (the augmentation of `ibex stats`); a resumed run therefore
//! sees exactly the views the uninterrupted run would have seen.

use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::imaging::augment::augmented_input;
use crate::imaging::image::RgbImage;
use crate::models::cnn::{ClassifierBundle, Network};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How long and how fast to train. Effects: more `epochs` → better fit, linearly more time;
/// larger `batch` → smoother but fewer updates per epoch; `lr` is Adam's step size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitSettings {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Seeds the initial weights, the order of the images and the augmentation.
    pub seed: u64,
}

impl FitSettings {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > 100_000 {
            return Err(Error::invalid(format!("epochs must be in 1..=100000, got {}", self.epochs)));
        }
        if self.batch == 0 || self.batch > 4096 {
            return Err(Error::invalid(format!("batch must be in 1..=4096, got {}", self.batch)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr < 10.0) {
            return Err(Error::invalid(format!("lr must be in (0, 10), got {}", self.lr)));
        }
        Ok(())
    }
}

/// Named loss terms of one update.
pub type Terms = Vec<(&'static str, f32)>;

/// What is trained.
pub trait Learner {
    /// One update from a batch of model inputs `[B, 3, H, W]`; returns named loss terms.
    fn step(&mut self, pixels: &Tensor) -> Result<Terms>;
    /// Writes the state after `epochs_done` epochs.
    fn save(&self, path: &Path, epochs_done: usize) -> Result<()>;
}

/// The mean loss terms of one epoch.
#[derive(Clone, Debug, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub terms: Vec<(String, f32)>,
}

/// Where the training views come from: `view(epoch, i)` is image `i`'s view `[1, 3, H, W]`.
pub struct Views<'a> {
    pub count: usize,
    pub view: Box<dyn Fn(usize, usize) -> Result<Tensor> + 'a>,
}

impl<'a> Views<'a> {
    /// Fixed inputs (no augmentation), each `[1, 3, H, W]` or `[3, H, W]`.
    pub fn fixed(inputs: &'a [Tensor]) -> Self {
        Views {
            count: inputs.len(),
            view: Box::new(move |_, i| {
                let t = &inputs[i];
                Ok(if t.rank() == 3 { t.unsqueeze(0)? } else { t.clone() })
            }),
        }
    }

    /// Views of photos for `bundle`: with `augment`, a random resized crop (scale 0.08–1) with
    /// a horizontal flip with probability ½, normalised like the model's input, different in
    /// every epoch; without, the plain preprocessed photo every time.
    pub fn photos(bundle: &'a ClassifierBundle, images: &'a [RgbImage], seed: u64, augment: bool) -> Self {
        Views {
            count: images.len(),
            view: Box::new(move |epoch, i| {
                let pre = if augment {
                    let key = seed ^ ((epoch as u64) << 32 | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(key);
                    augmented_input(&bundle.preprocessor, &images[i], &mut rng)?
                } else {
                    bundle.preprocessor.preprocess(&images[i])?
                };
                if pre.pixel_values.iter().any(|v| !v.is_finite()) {
                    return Err(Error::invalid(format!("training image {i} has NaN or infinite pixels")));
                }
                Ok(Tensor::from_vec(pre.pixel_values, (1, 3, pre.height as usize, pre.width as usize), &bundle.device)?)
            }),
        }
    }

    /// Views `indices` of epoch `epoch` as one batch.
    pub fn batch(&self, epoch: usize, indices: &[usize]) -> Result<Tensor> {
        let views: Vec<Tensor> = indices.iter().map(|&i| (self.view)(epoch, i)).collect::<Result<_>>()?;
        Ok(Tensor::cat(&views, 0)?)
    }
}

/// Trains `learner` from epoch `start_epoch` to `settings.epochs`, saving to `out` after every
/// epoch. Progress counts batches over the whole run (including epochs done before a resume).
pub fn run(
    views: &Views<'_>,
    settings: &FitSettings,
    learner: &mut dyn Learner,
    out: &Path,
    start_epoch: usize,
    control: &mut RunControl<'_>,
) -> Result<Vec<EpochLog>> {
    settings.validate()?;
    if views.count == 0 {
        return Err(Error::invalid("no training images"));
    }
    let per_epoch = views.count.div_ceil(settings.batch);
    let total = u32::try_from(per_epoch * settings.epochs).unwrap_or(u32::MAX);
    let mut logs = Vec::new();
    for epoch in start_epoch..settings.epochs {
        let mut order: Vec<usize> = (0..views.count).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed ^ (epoch as u64 + 1) << 20));
        let mut sums: Vec<(String, f64)> = Vec::new();
        for (b, chunk) in order.chunks(settings.batch).enumerate() {
            control.check()?;
            let terms = learner.step(&views.batch(epoch, chunk)?)?;
            for (k, v) in terms {
                if !v.is_finite() {
                    return Err(Error::Numerical(format!("training diverged: {k} = {v} in epoch {epoch}")));
                }
                match sums.iter_mut().find(|(n, _)| n == k) {
                    Some(s) => s.1 += v as f64,
                    None => sums.push((k.to_string(), v as f64)),
                }
            }
            control.report((epoch * per_epoch + b + 1) as u32, total)?;
        }
        learner.save(out, epoch + 1)?;
        let terms = sums.into_iter().map(|(k, s)| (k, (s / per_epoch as f64) as f32)).collect();
        logs.push(EpochLog { epoch: epoch + 1, terms });
        log::info!("epoch {}/{}: {:?}", epoch + 1, settings.epochs, logs.last().map(|l| &l.terms));
    }
    Ok(logs)
}

/// A fixed model input for recognising a model: smooth waves in input units.
fn probe_input(h: usize, w: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            ((x as f32 + 1.0) * 0.11 * (c as f32 + 1.0)).sin() + 0.5 * ((y as f32 + 1.0) * 0.07).cos()
        })
        .collect();
    Ok(Tensor::from_vec(v, (1, 3, h, w), device)?)
}

/// What identifies a model for a state file: classes, taps and the logits of a fixed input.
pub fn model_signature(net: &Network, input: (usize, usize), device: &Device) -> Result<serde_json::Value> {
    let logits = net.forward(&probe_input(input.0, input.1, device)?)?.flatten_all()?.to_dtype(DType::F32)?;
    let probe: Vec<f32> = logits.to_vec1::<f32>()?.into_iter().take(16).collect();
    Ok(
        serde_json::json!({ "classes": net.num_classes, "taps": net.taps(), "input": [input.0, input.1], "probe": probe }),
    )
}

/// Fails unless `net` is the model `signature` was taken from.
pub fn check_signature(net: &Network, signature: &serde_json::Value, what: &str, device: &Device) -> Result<()> {
    let input =
        signature["input"].as_array().and_then(|a| Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize)));
    let Some((h, w)) = input.filter(|&(h, w)| (1..=4096).contains(&h) && (1..=4096).contains(&w)) else {
        return Err(Error::invalid(format!("the {what} has no valid model signature")));
    };
    let mine = model_signature(net, (h, w), device)?;
    let other = |why: String| {
        Err(Error::invalid(format!("the {what} was trained for another model ({why}); fit it again for this one")))
    };
    if mine["classes"] != signature["classes"] {
        return other(format!("{} classes, this model has {}", signature["classes"], mine["classes"]));
    }
    if mine["taps"] != signature["taps"] {
        return other("different layers".into());
    }
    let f = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default()
    };
    let (a, b) = (f(&mine["probe"]), f(&signature["probe"]));
    let scale = a.iter().chain(&b).fold(1.0f64, |m, v| m.max(v.abs()));
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3 * scale) {
        return other("different weights: its outputs on a probe input differ".into());
    }
    Ok(())
}

/// Reads a state file of `kind` (`iba-readout`, `dual-ib`) and checks it was made for `net`.
pub fn load_checked(
    path: &Path,
    kind: &str,
    net: &crate::models::cnn::Network,
    device: &candle_core::Device,
) -> Result<(std::collections::HashMap<String, Tensor>, serde_json::Value)> {
    let (map, header) = load_state(path)?;
    if header["kind"] != kind {
        return Err(Error::format(path, format!("a {} state, not {kind}", header["kind"])));
    }
    check_signature(net, &header["signature"], &format!("{kind} state"), device)?;
    Ok((map, header))
}

/// A header field that must be a non-negative integer.
pub fn header_count(header: &serde_json::Value, key: &str, path: &Path) -> Result<u64> {
    header[key].as_u64().ok_or_else(|| Error::format(path, format!("the state header has no valid '{key}'")))
}

/// Reads a state file written by a learner: its tensors and its JSON header (the
/// `ibex_state_json` byte tensor).
pub fn load_state(path: &Path) -> Result<(std::collections::HashMap<String, Tensor>, serde_json::Value)> {
    if !path.is_file() {
        return Err(Error::NotFound(format!("state file {}", path.display())));
    }
    let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| Error::format(path, format!("not a readable safetensors file ({e})")))?;
    let header = map
        .get("ibex_state_json")
        .ok_or_else(|| Error::format(path, "not an ibex state file (no 'ibex_state_json')"))?
        .to_vec1::<u8>()?;
    let json =
        serde_json::from_slice(&header).map_err(|e| Error::format(path, format!("corrupt state header ({e})")))?;
    Ok((map, json))
}

/// Writes `map` plus the JSON `header` as a state file (through a temporary file, so an
/// interrupted write never leaves a half-written state behind).
pub fn save_state(
    path: &Path,
    mut map: std::collections::HashMap<String, Tensor>,
    header: &serde_json::Value,
) -> Result<()> {
    let bytes = serde_json::to_vec(header)?;
    let n = bytes.len();
    map.insert("ibex_state_json".into(), Tensor::from_vec(bytes, n, &candle_core::Device::Cpu)?);
    let map: std::collections::HashMap<String, Tensor> =
        map.into_iter().map(|(k, t)| Ok((k, t.to_device(&candle_core::Device::Cpu)?))).collect::<Result<_>>()?;
    let tmp = path.with_extension("partial");
    candle_core::safetensors::save(&map, &tmp).map_err(|e| Error::format(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
