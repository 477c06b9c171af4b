//! `ibex_model` (load/free) and `ibex_explainer` (create/free).

use super::options::{ibex_options, to_json};
use super::status::*;
use crate::explain::Method;
use crate::models::Model;
use std::ffi::c_char;
use std::sync::Arc;

/// A loaded model: immutable, safe to share between threads (each with its own explainer).
pub struct ibex_model {
    pub(crate) inner: Arc<Model>,
}

/// A method configured for a model. Use from one thread at a time.
pub struct ibex_explainer {
    pub(crate) model: Arc<Model>,
    pub(crate) method: Method,
}

/// Loads a model. `kind`: `"clip"` (any dual encoder: HF CLIP, open_clip, SigLIP,
/// BiomedCLIP), `"open_clip"`, `"siglip"`, `"biomedclip"` (that family only),
/// `"efficientnet_lite"`, `"resnet"`, `"convnext"`, `"pipnet"` (a directory written by
/// `ibex pipnet convert`), or NULL/`"auto"` to detect from `config.json` /
/// `open_clip_config.json` or the tensor names. `path`: a model directory or a Hugging Face id (resolved from the local HF cache, downloaded when
/// online). Options: `device` (`cpu`, `cuda`, `cuda:N`).
///
/// # Safety
/// String arguments NUL-terminated; `options` NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_model_load(
    kind: *const c_char,
    path: *const c_char,
    options: *const ibex_options,
    out: *mut *mut ibex_model,
) -> i32 {
    guard(|| {
        non_null(out, "out")?;
        let kind = if kind.is_null() { None } else { Some(c_str(kind, "kind")?) };
        let path = c_str(path, "path")?;
        let mut device = "cpu".to_string();
        for (k, v) in to_json(options) {
            match (k.as_str(), v) {
                ("device", serde_json::Value::String(s)) => device = s,
                (k, _) => {
                    return Err(FfiError(
                        IBEX_ERR_INVALID_ARGUMENT,
                        format!("unknown model option '{k}' (model options: device = \"cpu\" | \"cuda:N\")"),
                    ))
                }
            }
        }
        let device = crate::device::parse_device(&device)?;
        let dir = crate::hub::resolve_model(path)?;
        let model = Model::load(kind, &dir, &device)?;
        *out = Box::into_raw(Box::new(ibex_model { inner: Arc::new(model) }));
        Ok(())
    })
}

/// Frees a model (NULL is fine). Explainers created from it stay valid.
///
/// # Safety
/// `model` from `ibex_model_load`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_model_free(model: *mut ibex_model) {
    guard_value((), || {
        if !model.is_null() {
            drop(Box::from_raw(model));
        }
    })
}

/// Creates an explainer for `method` on `model`: `"m2ib"` or `"occlusion"` (CLIP, with the
/// target's text); `"iba"`, `"iba-readout"`, `"dual-ib"`, `"gradcam"`, `"saliency"`, `"ig"` or
/// `"occlusion"` (classifiers); `"pipnet"` (PIP-Net: clamped scores, abstention and the
/// contributing prototypes with boxes in the result JSON's `summary`). Options override the
/// method's defaults — every method:
/// `max_pixels` (larger images are refused); M2IB: `beta`, `steps`, `lr`, `samples`,
/// `samples_per_pass`, `seed`, `layer`, `vision_layer`, `text_layer`, `alpha_init`; IBA: `layer`
/// (a tap such as `"blocks.10"`), `statistics` (file), `beta`, `steps`, `lr`, `samples`,
/// `samples_per_pass`, `seed`, `sigma`, `min_std`, `active_threshold`, `alpha_init`; IBA
/// readout: `state` (file from `ibex iba fit-readout`); Dual-IB: `state` (file from `ibex
/// dual-ib fit`), `alpha` (`"readout"` or `"per-sample"`), `seed`; Grad-CAM: `layer`; IG:
/// `steps`, `baseline`, `batch`; occlusion: `window`, `stride`, `fill`, `fill_rgb`, `batch`.
/// Unknown keys are errors; a state trained for another model is refused.
///
/// # Safety
/// `model` valid; `method` NUL-terminated; `options` NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_explainer_create(
    model: *const ibex_model,
    method: *const c_char,
    options: *const ibex_options,
    out: *mut *mut ibex_explainer,
) -> i32 {
    guard(|| {
        non_null(model, "model")?;
        non_null(out, "out")?;
        let name = c_str(method, "method")?;
        let m = &(*model).inner;
        let method = Method::create(m, name, &serde_json::Value::Object(to_json(options)))?;
        *out = Box::into_raw(Box::new(ibex_explainer { model: Arc::clone(m), method }));
        Ok(())
    })
}

/// Frees an explainer (NULL is fine).
///
/// # Safety
/// `explainer` from `ibex_explainer_create`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ibex_explainer_free(explainer: *mut ibex_explainer) {
    guard_value((), || {
        if !explainer.is_null() {
            drop(Box::from_raw(explainer));
        }
    })
}

/// Describes a model as JSON into `*out` (free with `ibex_bytes_free`): `kind` (as
/// `ibex_model_load` takes it; a dual encoder's family) and `methods` (the names `ibex_explainer_create` takes).
///
/// # Safety
/// `model` and `out` valid.
#[no_mangle]
pub unsafe extern "C" fn ibex_model_describe_json(
    model: *const ibex_model,
    out: *mut *mut super::bytes::ibex_bytes,
) -> i32 {
    guard(|| {
        non_null(model, "model")?;
        non_null(out, "out")?;
        let m = &*(*model).inner;
        let v = serde_json::json!({ "kind": m.kind(), "methods": crate::explain::Method::names(m) });
        super::bytes::put_bytes(out, v.to_string().into_bytes());
        Ok(())
    })
}
