//! What every classifier method shares: the model input made from an image, the prediction
//! (softmax, top-5), the target class, and the checks on both.

use crate::error::{Error, Result};
use crate::imaging::image::RgbImage;
use crate::imaging::preprocess::Preprocessed;
use crate::models::cnn::ClassifierBundle;
use candle_core::{Tensor, D};
use serde::Serialize;

/// A class with its score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    pub index: usize,
    pub label: String,
    /// Softmax probability on the clean input.
    pub probability: f32,
    pub logit: f32,
}

/// The model's prediction on the clean input and the class being explained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub target: ClassScore,
    pub top5: Vec<ClassScore>,
}

/// A preprocessed image as a model input.
pub struct Input {
    pub pre: Preprocessed,
    /// `[1, 3, H, W]` on the model's device.
    pub pixels: Tensor,
}

/// Preprocesses `image` for `bundle` and checks the result is finite.
pub fn input(bundle: &ClassifierBundle, image: &RgbImage) -> Result<Input> {
    model_input(&bundle.preprocessor, &bundle.device, image)
}

/// Preprocesses `image` with `pre` for a model on `device` (any model kind) and checks the
/// result is finite.
pub fn model_input(
    pre: &crate::imaging::preprocess::ClipPreprocessor,
    device: &candle_core::Device,
    image: &RgbImage,
) -> Result<Input> {
    let pre = pre.preprocess(image)?;
    if let Some(i) = pre.pixel_values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "the input image has a NaN or infinite value (channel {}, after preprocessing)",
            i / (pre.width as usize * pre.height as usize)
        )));
    }
    let shape = (1, 3, pre.height as usize, pre.width as usize);
    let pixels = Tensor::from_vec(pre.pixel_values.clone(), shape, device)?;
    Ok(Input { pre, pixels })
}

/// The prediction from clean logits `[1, K]`, explaining `target` (the top-1 if `None`).
pub fn predict(bundle: &ClassifierBundle, logits: &Tensor, target: Option<usize>) -> Result<Prediction> {
    let logits = logits.flatten_all()?.to_dtype(candle_core::DType::F32)?;
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec1::<f32>()?;
    let logits = logits.to_vec1::<f32>()?;
    if logits.iter().any(|v| !v.is_finite()) {
        return Err(Error::Numerical("the model's logits contain NaN or infinity".into()));
    }
    let k = logits.len();
    if k == 0 {
        return Err(Error::invalid("the model has no classes"));
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let score = |i: usize| ClassScore { index: i, label: bundle.label(i), probability: probs[i], logit: logits[i] };
    let target = match target {
        Some(t) if t >= k => {
            return Err(Error::invalid(format!(
                "target class {t} is out of range: the model has classes 0..={}",
                k - 1
            )))
        }
        Some(t) => t,
        None => order[0],
    };
    Ok(Prediction { target: score(target), top5: order.iter().take(5).map(|&i| score(i)).collect() })
}

/// `∂ log_softmax(logits)[target] / ∂ logits = onehot(target) − softmax(logits)` for
/// `logits [n, K]`, with the per-row log-probabilities.
pub fn log_prob_and_grad(logits: &Tensor, target: usize) -> Result<(Vec<f32>, Tensor)> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let lp = lsm.narrow(1, target, 1)?.squeeze(1)?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    let p = lsm.exp()?;
    let onehot = one_hot(logits.dim(1)?, target, logits)?;
    Ok((lp, onehot.broadcast_sub(&p)?))
}

/// A `[1, K]` one-hot row like `like`'s dtype and device.
pub fn one_hot(k: usize, target: usize, like: &Tensor) -> Result<Tensor> {
    let mut v = vec![0f32; k];
    v[target] = 1.0;
    Ok(Tensor::from_vec(v, (1, k), like.device())?.to_dtype(like.dtype())?)
}

/// A scoring function for [`crate::metrics`]: the softmax probability of `target` for a batch
/// of `n` normalised inputs (each `3 × height × width`, CHW, concatenated).
pub fn target_probability(
    bundle: &ClassifierBundle,
    target: usize,
    width: u32,
    height: u32,
) -> impl FnMut(&[f32], usize) -> Result<Vec<f32>> + '_ {
    move |batch: &[f32], n: usize| {
        let shape = (n, 3, height as usize, width as usize);
        let x = Tensor::from_slice(batch, shape, &bundle.device)?;
        let p = candle_nn::ops::softmax(&bundle.network.forward(&x)?, D::Minus1)?;
        Ok(p.narrow(1, target, 1)?.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
    }
}

/// The skeleton every classifier method shares: `f` runs on each image's model input in
/// order, after a cancellation check; an empty batch is an error, and in a batch an error
/// names its image.
pub fn each_image<'a, T>(
    bundle: &ClassifierBundle,
    images: &[RgbImage],
    control: &mut crate::control::RunControl<'a>,
    mut f: impl FnMut(usize, Input, &mut crate::control::RunControl<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    if images.is_empty() {
        return Err(Error::invalid("no image to explain"));
    }
    let n = images.len();
    let name = |i: usize, e: Error| match e {
        Error::InvalidArgument(m) if n > 1 => Error::InvalidArgument(format!("image {i}: {m}")),
        Error::Numerical(m) if n > 1 => Error::Numerical(format!("image {i}: {m}")),
        e => e,
    };
    let mut out = Vec::with_capacity(n);
    for (i, image) in images.iter().enumerate() {
        control.check()?;
        let item = input(bundle, image).and_then(|inp| f(i, inp, control)).map_err(|e| name(i, e))?;
        out.push(item);
    }
    Ok(out)
}
