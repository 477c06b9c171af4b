//! ConvNeXt against torchvision on random weights (`tests/data/convnext`, made by
//! `tools/make_convnext_fixtures.py` with torchvision's own ConvNeXt class at reduced widths):
//! sizes read from the weights, every stage output and the logits within 1e-4, and the
//! written-out backward (LayerNorm2d, GELU, layer scale, depthwise 7×7) against finite
//! differences in float64.

mod common;

use candle_core::{DType, Device, Tensor};
use common::suffix_fd_worst;
use ibex::models::cnn::{convnext, ClassifierBundle};
use ibex::models::weights::Weights;
use std::path::PathBuf;

fn data(f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/convnext").join(f)
}

#[test]
fn stages_and_logits_match_torchvision() {
    let w = Weights::load(&data("model.safetensors"), &Device::Cpu).unwrap();
    let net = convnext::build(&w).unwrap();
    assert_eq!(net.num_classes, 6);
    let refs = candle_core::safetensors::load(data("outputs.safetensors"), &Device::Cpu).unwrap();
    let x = &refs["input"];
    for tap in (0..8).map(|i| format!("features.{i}")).chain(["pooled".to_string()]) {
        let ours = net.forward_until(&tap, x).unwrap();
        let want = &refs[&tap];
        let d =
            (&ours - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let s = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d <= 1e-4 * s.max(1.0), "{tap}: max |Δ| {d} (scale {s})");
    }
    let logits = net.forward(x).unwrap();
    let d = (&logits - &refs["logits"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("ConvNeXt logits max |Δ| {d:.1e}");
    assert!(d < 1e-4, "{d}");
}

#[test]
fn directory_detection_and_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(data("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    let b = ClassifierBundle::load(tmp.path(), None, &Device::Cpu).unwrap();
    assert_eq!(b.architecture.kind(), "convnext");
    assert!(b.network.taps().contains(&"features.3"));
    let w = Weights::load(&data("model.safetensors"), &Device::Cpu).unwrap();
    let mut t: std::collections::HashMap<String, Tensor> =
        w.names().map(|n| (n.to_string(), w.get(n, w.shape(n).unwrap()).unwrap())).collect();
    t.remove("features.3.0.layer_scale");
    let e = convnext::build(&Weights::from_tensors(t)).err().unwrap().to_string();
    assert!(e.contains("features.3.0.layer_scale"), "{e}");
}

#[test]
fn backward_matches_finite_differences() {
    let w = Weights::load(&data("model.safetensors"), &Device::Cpu).unwrap();
    let t: std::collections::HashMap<String, Tensor> = w
        .names()
        .map(|n| (n.to_string(), w.get(n, w.shape(n).unwrap()).unwrap().to_dtype(DType::F64).unwrap()))
        .collect();
    let net = convnext::build(&Weights::from_tensors(t)).unwrap();
    let refs = candle_core::safetensors::load(data("outputs.safetensors"), &Device::Cpu).unwrap();
    let x = refs["input"]
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 40)
        .unwrap()
        .narrow(3, 0, 36)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let wts =
        Tensor::from_vec((0..6).map(|i| (i as f64 - 2.5) / 2.0).collect::<Vec<_>>(), (1, 6), &Device::Cpu).unwrap();
    for tap in ["input", "features.0", "features.3", "features.6", "pooled"] {
        let worst = suffix_fd_worst(&net, tap, &x, &wts, 60);
        assert!(worst < 1e-5, "{tap}: worst relative error {worst}");
    }
}
