//! The C ABI with a classifier: EfficientNet-Lite0 loaded by kind or detected, IBA and
//! Grad-CAM explainers, the target class, the prediction in the result JSON, and bad input
//! (out-of-range class, NaN pixels, weights of the wrong shape, options of another method).

mod common;
use common::*;
use ibex::ffi::explain::*;
use ibex::ffi::image::*;
use ibex::ffi::model::*;
use ibex::ffi::options::*;
use ibex::ffi::result::*;
use ibex::ffi::status::*;
use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

fn msg() -> String {
    unsafe { CStr::from_ptr(ibex_last_error_message()) }.to_string_lossy().into_owned()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn load(kind: Option<&str>, dir: &std::path::Path) -> (i32, *mut ibex_model) {
    let mut m = null_mut();
    let k = kind.map(cs);
    let st = unsafe {
        ibex_model_load(k.as_ref().map_or(null(), |k| k.as_ptr()), cs(dir.to_str().unwrap()).as_ptr(), null(), &mut m)
    };
    (st, m)
}

fn explainer(model: *const ibex_model, method: &str, json: &str) -> (i32, *mut ibex_explainer) {
    let mut opts = null_mut();
    let mut e = null_mut();
    unsafe {
        assert_eq!(ibex_options_from_json(cs(json).as_ptr(), &mut opts), IBEX_OK, "{}", msg());
        let st = ibex_explainer_create(model, cs(method).as_ptr(), opts, &mut e);
        ibex_options_free(opts);
        (st, e)
    }
}

fn view(data: &[u8], w: u32, h: u32) -> ibex_image_view {
    ibex_image_view {
        struct_size: std::mem::size_of::<ibex_image_view>() as u32,
        width: w,
        height: h,
        row_stride: w * 3,
        pixel_type: IBEX_PIXEL_U8,
        layout: IBEX_LAYOUT_RGB,
        data: data.as_ptr() as *const std::ffi::c_void,
        data_len: data.len(),
    }
}

/// A float view (values in [0, 1]).
fn view_f32(data: &[f32], w: u32, h: u32) -> ibex_image_view {
    ibex_image_view {
        struct_size: std::mem::size_of::<ibex_image_view>() as u32,
        width: w,
        height: h,
        row_stride: w * 3 * 4,
        pixel_type: IBEX_PIXEL_F32,
        layout: IBEX_LAYOUT_RGB,
        data: data.as_ptr() as *const std::ffi::c_void,
        data_len: data.len() * 4,
    }
}

fn target(class: i32) -> ibex_target {
    ibex_target {
        struct_size: std::mem::size_of::<ibex_target>() as u32,
        class_index: class,
        text: null(),
        texts: null(),
        text_count: 0,
    }
}

/// The fixture's chelsea input as 8-bit RGB.
fn chelsea() -> Vec<u8> {
    photo224("chelsea").data.iter().map(|&v| v as u8).collect()
}

#[test]
fn iba_and_gradcam_through_the_c_abi() {
    let (st, model) = load(None, &efficientnet_dir());
    assert_eq!(st, IBEX_OK, "auto detection: {}", msg());
    let px = chelsea();
    let v = view(&px, 224, 224);
    let (st, e) = explainer(model, "iba", r#"{"steps": 3, "seed": 1}"#);
    assert_eq!(st, IBEX_OK, "{}", msg());
    let mut res = null_mut();
    assert_eq!(unsafe { ibex_explain(e, &v, &target(-1), null(), &mut res) }, IBEX_OK, "{}", msg());
    let mut json = null();
    assert_eq!(unsafe { ibex_result_json(res, &mut json) }, IBEX_OK);
    let j: serde_json::Value = serde_json::from_str(&unsafe { CStr::from_ptr(json) }.to_string_lossy()).unwrap();
    assert_eq!(j["method"], "iba");
    assert_eq!(j["target"]["label"], "Egyptian cat");
    assert_eq!(j["top5"].as_array().unwrap().len(), 5);
    assert_eq!(j["maps"][0]["name"], "saliency");
    assert_eq!(j["config"]["steps"], 3);
    let mut data = null();
    let mut n = 0usize;
    assert_eq!(unsafe { ibex_result_map_data(res, 0, &mut data, &mut n) }, IBEX_OK);
    assert_eq!(n, 224 * 224);
    let map = unsafe { std::slice::from_raw_parts(data, n) };
    assert!(map.iter().all(|x| x.is_finite()) && map.iter().sum::<f32>() > 10.0);
    unsafe { ibex_result_free(res) };
    // an explicit class
    assert_eq!(unsafe { ibex_explain(e, &v, &target(281), null(), &mut res) }, IBEX_OK, "{}", msg());
    unsafe { ibex_result_json(res, &mut json) };
    let j: serde_json::Value = serde_json::from_str(&unsafe { CStr::from_ptr(json) }.to_string_lossy()).unwrap();
    assert_eq!(j["target"]["index"], 281);
    unsafe { ibex_result_free(res) };
    // out of range
    assert_eq!(unsafe { ibex_explain(e, &v, &target(1000), null(), &mut res) }, IBEX_ERR_INVALID_ARGUMENT);
    assert!(msg().contains("out of range"), "{}", msg());
    assert_eq!(unsafe { ibex_explain(e, &v, &target(-2), null(), &mut res) }, IBEX_ERR_INVALID_ARGUMENT);
    assert!(msg().contains("-1 for the predicted class"), "{}", msg());
    // NaN pixels
    let mut bad: Vec<f32> = px.iter().map(|&v| v as f32 / 255.0).collect();
    bad[777] = f32::NAN;
    let vb = view_f32(&bad, 224, 224);
    assert_ne!(unsafe { ibex_explain(e, &vb, &target(-1), null(), &mut res) }, IBEX_OK);
    assert!(msg().contains("NaN"), "{}", msg());
    unsafe { ibex_explainer_free(e) };

    let (st, g) = explainer(model, "gradcam", r#"{"layer": "blocks.10"}"#);
    assert_eq!(st, IBEX_OK, "{}", msg());
    assert_eq!(unsafe { ibex_explain(g, &v, &target(-1), null(), &mut res) }, IBEX_OK, "{}", msg());
    let mut count = 0u32;
    unsafe { ibex_result_map_count(res, &mut count) };
    assert_eq!(count, 2);
    unsafe { ibex_result_free(res) };
    unsafe { ibex_explainer_free(g) };
    // options of another method, a method of another model family
    let (st, _) = explainer(model, "gradcam", r#"{"beta": 1}"#);
    assert_eq!(st, IBEX_ERR_INVALID_ARGUMENT);
    assert!(msg().contains("'beta'"), "{}", msg());
    let (st, _) = explainer(model, "m2ib", "{}");
    assert_eq!(st, IBEX_ERR_UNSUPPORTED);
    assert!(msg().contains("m2ib") && msg().contains("efficientnet_lite"), "{}", msg());
    let (st, _) = explainer(model, "iba", r#"{"statistics": "missing.safetensors"}"#);
    assert_eq!(st, IBEX_ERR_NOT_FOUND, "{}", msg());
    // the trained methods need their state; a size limit refuses larger images; a 1x1 image
    let (st, _) = explainer(model, "dual-ib", "{}");
    assert_eq!(st, IBEX_ERR_INVALID_ARGUMENT);
    assert!(msg().contains("ibex dual-ib fit"), "{}", msg());
    let (st, _) = explainer(model, "iba-readout", r#"{"state": "missing.safetensors"}"#);
    assert_eq!(st, IBEX_ERR_NOT_FOUND, "{}", msg());
    let (st, small) = explainer(model, "gradcam", r#"{"max_pixels": 40000}"#);
    assert_eq!(st, IBEX_OK, "{}", msg());
    assert_eq!(unsafe { ibex_explain(small, &v, &target(-1), null(), &mut res) }, IBEX_ERR_INVALID_ARGUMENT);
    assert!(msg().contains("50176 pixels") && msg().contains("max_pixels"), "{}", msg());
    let one = [0u8; 3];
    assert_eq!(
        unsafe { ibex_explain(small, &view(&one, 1, 1), &target(-1), null(), &mut res) },
        IBEX_ERR_INVALID_ARGUMENT
    );
    assert!(msg().contains("too small"), "{}", msg());
    unsafe { ibex_explainer_free(small) };
    let (st, _) = explainer(model, "gradcam", r#"{"max_pixels": 0}"#);
    assert_eq!(st, IBEX_ERR_INVALID_ARGUMENT);
    unsafe { ibex_model_free(model) };
}

#[test]
fn mismatched_weights_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = efficientnet_dir();
    for f in ["config.json", "preprocessor_config.json", "classes.txt"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut w = candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    w.insert(
        "_blocks.3._project_conv.weight".into(),
        candle_core::Tensor::zeros((41, 144, 1, 1), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&w, tmp.path().join("model.safetensors")).unwrap();
    let (st, _) = load(Some("efficientnet_lite"), tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT);
    assert!(msg().contains("_blocks.3.") && msg().contains("expected"), "{}", msg());
    w.remove("_fc.bias");
    w.insert(
        "_blocks.3._project_conv.weight".into(),
        candle_core::Tensor::zeros((40, 144, 1, 1), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&w, tmp.path().join("model.safetensors")).unwrap();
    let (st, _) = load(Some("efficientnet_lite"), tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT);
    assert!(msg().contains("'_fc.bias'"), "{}", msg());
    // a stride of 0 in the config
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap().replace("\"stride\": 1", "\"stride\": 0");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    w.insert(
        "_fc.bias".into(),
        candle_core::Tensor::zeros(1000, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&w, tmp.path().join("model.safetensors")).unwrap();
    let (st, _) = load(Some("efficientnet_lite"), tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT);
    assert!(msg().contains("strides"), "{}", msg());
    // corrupt file
    std::fs::write(tmp.path().join("model.safetensors"), b"not a checkpoint").unwrap();
    let (st, _) = load(None, tmp.path());
    assert_eq!(st, IBEX_ERR_FORMAT, "{}", msg());
    let (st, _) = load(Some("resnet9000"), tmp.path());
    assert_eq!(st, IBEX_ERR_UNSUPPORTED);
    assert!(msg().contains("efficientnet_lite"), "{}", msg());
}
