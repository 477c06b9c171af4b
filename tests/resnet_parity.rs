//! ResNet against torchvision on random weights (`tests/data/resnet`, made by
//! `tools/make_resnet_fixtures.py` from torchvision's own BasicBlock and Bottleneck): the
//! architecture inferred from the state dict, every stage output and the logits within 1e-4,
//! a training-script checkpoint (nested `model_state_dict`, `module.` prefixes) loaded as is,
//! and the written-out backward (max-pool included) against finite differences.

mod common;

use candle_core::{DType, Device, Tensor};
use common::suffix_fd_worst;
use ibex::models::cnn::{resnet, ClassifierBundle};
use ibex::models::weights::Weights;
use std::path::PathBuf;

fn data(f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/resnet").join(f)
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let s = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    d / s.max(1.0)
}

#[test]
fn basic_and_bottleneck_match_torchvision() {
    for (name, classes, blocks) in [("basic", 7, [2, 1, 2, 1]), ("bottleneck", 5, [1, 2, 1, 1])] {
        let w = Weights::load(&data(&format!("{name}.pth")), &Device::Cpu).unwrap();
        assert!(w.contains("layer1.0.conv1.weight"), "nested state dict and module. prefix handled");
        let net = resnet::build(&w, [1, 2, 2, 2]).unwrap();
        assert_eq!(net.num_classes, classes);
        let refs = candle_core::safetensors::load(data(&format!("{name}_outputs.safetensors")), &Device::Cpu).unwrap();
        let x = &refs["input"];
        for tap in ["stem", "layer1", "layer2", "layer3", "layer4", "pooled"] {
            let ours = net.forward_until(tap, x).unwrap();
            let d = max_rel(&ours, &refs[tap]);
            assert!(d < 1e-4, "{name} {tap}: max rel. error {d}");
        }
        let d = max_rel(&net.forward(x).unwrap(), &refs["logits"]);
        eprintln!("{name}: blocks {blocks:?}, logits max rel. error {d:.1e}");
        assert!(d < 1e-4, "{name} logits: {d}");
    }
}

#[test]
fn a_bare_checkpoint_directory_is_detected_and_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(data("bottleneck.pth"), tmp.path().join("checkpoint.pth")).unwrap();
    let b = ClassifierBundle::load(tmp.path(), None, &Device::Cpu).unwrap();
    assert_eq!(b.architecture.kind(), "resnet");
    assert_eq!(b.network.taps(), ["input", "stem", "layer1", "layer2", "layer3", "layer4", "pooled", "logits"]);
    // PIP-Net's variant: the last two stages at stride 1
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "resnet", "strides": [1, 2, 1, 1]}"#).unwrap();
    let b = ClassifierBundle::load(tmp.path(), None, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(b.network.forward_until("layer4", &x).unwrap().dims(), [1, 96, 8, 8]);
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "resnet", "strides": [1, 2]}"#).unwrap();
    let e = ClassifierBundle::load(tmp.path(), None, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("strides"), "{e}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let w = Weights::load(&data("basic.pth"), &Device::Cpu).unwrap();
    let mut t: std::collections::HashMap<String, Tensor> =
        w.names().map(|n| (n.to_string(), w.get(n, w.shape(n).unwrap()).unwrap())).collect();
    t.remove("layer2.0.downsample.0.weight");
    let e = resnet::build(&Weights::from_tensors(t.clone()), [1, 2, 2, 2]).err().unwrap().to_string();
    assert!(e.contains("layer2.0.downsample.0.weight"), "{e}");
    t.insert("layer2.0.downsample.0.weight".into(), Tensor::zeros((16, 8, 1, 1), DType::F32, &Device::Cpu).unwrap());
    t.insert("layer3.1.bn2.running_var".into(), Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap());
    let e = resnet::build(&Weights::from_tensors(t), [1, 2, 2, 2]).err().unwrap().to_string();
    assert!(e.contains("layer3.1.bn2.running_var") && e.contains("[5]"), "{e}");
}

#[test]
fn backward_through_resnet_matches_finite_differences() {
    let w = Weights::load(&data("basic.pth"), &Device::Cpu).unwrap();
    let t: std::collections::HashMap<String, Tensor> = w
        .names()
        .map(|n| (n.to_string(), w.get(n, w.shape(n).unwrap()).unwrap().to_dtype(DType::F64).unwrap()))
        .collect();
    let net = resnet::build(&Weights::from_tensors(t), [1, 2, 2, 2]).unwrap();
    let x = candle_core::safetensors::load(data("basic_outputs.safetensors"), &Device::Cpu).unwrap()["input"]
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 33)
        .unwrap()
        .narrow(3, 0, 31)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let wts =
        Tensor::from_vec((0..7).map(|i| (i as f64 - 3.0) / 3.0).collect::<Vec<_>>(), (1, 7), &Device::Cpu).unwrap();
    for tap in ["input", "stem", "layer2"] {
        let worst = suffix_fd_worst(&net, tap, &x, &wts, 50);
        assert!(worst < 1e-5, "{tap}: worst relative error {worst}");
    }
}
