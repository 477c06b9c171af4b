//! EfficientNet-Lite0 (the bundled real ImageNet weights) against the reference PyTorch model:
//! logits of the 12 fixture photos and intermediate activations of one.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use ibex::explain::classifier;
use ibex::models::cnn::ClassifierBundle;

fn bundle() -> ClassifierBundle {
    ClassifierBundle::load(&efficientnet_dir(), None, &Device::Cpu).unwrap()
}

fn row_order() -> Vec<String> {
    let p = fixtures().join("cnn/efficientnet-lite0/reference_logits.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let rows = meta.metadata().as_ref().and_then(|m| m.get("rows").cloned()).expect("rows metadata");
    serde_json::from_str::<Vec<String>>(&rows)
        .unwrap_or_else(|_| rows.split(',').map(|s| s.trim().to_string()).collect())
}

#[test]
fn logits_of_the_twelve_photos_match_the_reference() {
    let b = bundle();
    assert_eq!(b.network.num_classes, 1000);
    let refs = load_fixture("cnn/efficientnet-lite0/reference_logits.safetensors");
    let logits = refs["logits"].to_dtype(candle_core::DType::F32).unwrap();
    let rows = row_order();
    assert_eq!(rows.len(), 12);
    let mut worst = 0f32;
    for (i, name) in rows.iter().enumerate() {
        let input = classifier::input(&b, &photo224(name)).unwrap();
        let ours = vec_f32(&b.network.forward(&input.pixels).unwrap());
        let want = vec_f32(&logits.get(i).unwrap());
        let d = max_abs_diff(&ours, &want);
        worst = worst.max(d);
        assert!(d < 1e-3, "{name}: max |Δlogit| {d}");
        let top = |v: &[f32]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
            idx.truncate(5);
            idx
        };
        assert_eq!(top(&ours), top(&want), "{name}: top-5 differ");
        let pred = classifier::predict(&b, &Tensor::new(ours.as_slice(), &Device::Cpu).unwrap(), None).unwrap();
        assert_eq!(pred.top5[0].index, top(&want)[0]);
    }
    eprintln!("worst |Δlogit| over 12 photos: {worst:.2e}");
    let p = classifier::predict(&b, &refs["logits"].get(1).unwrap(), None).unwrap();
    assert_eq!(rows[1], "chelsea");
    assert_eq!(p.target.label, "Egyptian cat");
}

#[test]
fn intermediate_activations_match_the_reference() {
    let b = bundle();
    let acts = load_fixture("cnn/efficientnet-lite0/activations_chelsea.safetensors");
    let input = classifier::input(&b, &photo224("chelsea")).unwrap();
    let d = max_abs_diff(&vec_f32(&input.pixels), &vec_f32(&acts["input"]));
    assert!(d < 1e-6, "preprocessed input differs by {d}");
    for tap in [
        "stem",
        "blocks.0",
        "blocks.2",
        "blocks.4",
        "blocks.7",
        "blocks.10",
        "blocks.14",
        "blocks.15",
        "head",
        "pooled",
    ] {
        let key = if acts.contains_key(tap) { tap.to_string() } else { tap.replace("blocks.", "blocks_") };
        let want = acts.get(&key).unwrap_or_else(|| panic!("no '{key}' in the fixture: {:?}", acts.keys()));
        let ours = b.network.forward_until(tap, &acts["input"]).unwrap();
        assert_eq!(ours.dims(), want.dims(), "{tap}");
        let (o, w) = (vec_f32(&ours), vec_f32(want));
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(&o, &w);
        assert!(d <= 1e-4 * scale.max(1.0), "{tap}: max |Δ| {d} (scale {scale})");
        // the suffix from this tap gives the reference logits
        let logits = b.network.forward_from(tap, want).unwrap();
        let dl = max_abs_diff(&vec_f32(&logits), &vec_f32(&acts["logits"]));
        assert!(dl < 1e-3, "logits from {tap}: {dl}");
    }
}

#[test]
fn taps_are_named_after_the_checkpoint_modules() {
    let b = bundle();
    let taps = b.network.taps();
    assert_eq!(taps.first(), Some(&"input"));
    assert!(taps.contains(&"blocks.10") && taps.contains(&"stem") && taps.contains(&"pooled"));
    assert_eq!(taps.len(), 1 + 1 + 16 + 3);
    let e = b
        .network
        .forward_until("blocks.99", &Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap());
    let msg = e.err().unwrap().to_string();
    assert!(msg.contains("blocks.99") && msg.contains("blocks.10"), "{msg}");
}
