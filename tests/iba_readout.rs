//! The amortised IBA (readout): trained with `ibex iba fit-readout` on 8 fixture photos with
//! augmentation, its one-pass maps beat a random order (LeRF − MoRF > 0) on the 4 photos left
//! out; a stopped fit resumes to exactly the state of an uninterrupted one; a state refuses
//! another model.

mod common;

use candle_core::Device;
use common::*;
use ibex::control::RunControl;
use ibex::explain::fit::{self, Learner, Views};
use ibex::explain::iba::readout::{IbaReadout, Readout, ReadoutConfig, ReadoutTrainer};
use ibex::models::cnn::ClassifierBundle;
use std::process::Command;

const HELD_OUT: [&str; 4] = ["chelsea", "dog", "eagle", "kite"];

fn photo_dir(dir: &std::path::Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for n in names {
        std::fs::copy(fixtures().join(format!("images/photos/input224/{n}.png")), dir.join(format!("{n}.png")))
            .unwrap();
    }
}

#[test]
fn readout_maps_beat_random_on_held_out_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let train: Vec<&str> = PHOTOS.iter().copied().filter(|p| !HELD_OUT.contains(p)).collect();
    photo_dir(&tmp.path().join("train"), &train);
    photo_dir(&tmp.path().join("held"), &HELD_OUT);
    let state = tmp.path().join("readout.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["iba", "fit-readout", "-q", "--images"])
        .arg(tmp.path().join("train"))
        .arg("--out")
        .arg(&state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("epoch  20:"), "{stdout}");
    let js = tmp.path().join("eval.json");
    let o = Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["eval", "--method", "iba-readout", "-q", "--state"])
        .arg(&state)
        .arg("--images")
        .arg(tmp.path().join("held"))
        .arg("--json")
        .arg(&js)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    let mut gaps = Vec::new();
    for row in v["images"].as_array().unwrap() {
        let gap = row["lerf"].as_f64().unwrap() - row["morf"].as_f64().unwrap();
        gaps.push((row["image"].as_str().unwrap().to_string(), gap));
    }
    eprintln!("readout LeRF - MoRF on held-out photos: {gaps:?}");
    assert_eq!(gaps.len(), 4);
    // a random order has LeRF = MoRF in expectation: every held-out map must beat it
    assert!(gaps.iter().all(|(_, g)| *g > 0.0), "{gaps:?}");

    // another model's readout is refused with a clear message
    let resnet = resnet_model_dir(tmp.path(), "bottleneck");
    let other = Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["explain", "--method", "iba-readout", "--model"])
        .arg(&resnet)
        .arg("--state")
        .arg(&state)
        .arg(fixtures().join("images/photos/input224/chelsea.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && err.contains("another model"), "{err}");
}

/// A fit stopped after its first epoch and resumed ends in exactly the state of a run that was
/// never stopped (same views, same noise, same optimiser state).
#[test]
fn a_resumed_fit_equals_an_uninterrupted_one() {
    let dev = Device::Cpu;
    let bundle = ClassifierBundle::load(&efficientnet_dir(), None, &dev).unwrap();
    let images: Vec<_> = ["coffee", "camera"].iter().map(|n| photo224(n)).collect();
    let config = ReadoutConfig {
        layer: Some("blocks.10".into()),
        taps: vec!["blocks.10".into(), "logits".into()],
        samples: 2,
        fit: fit::FitSettings { epochs: 2, batch: 1, lr: 1e-2, seed: 3 },
        ..ReadoutConfig::default()
    };
    let views = Views::photos(&bundle, &images, 3, true);
    let trainer = || {
        let r = Readout::init(&bundle.network, "blocks.10", &config.taps, None, &config, &views).unwrap();
        ReadoutTrainer::new(&bundle.network, r, config.clone(), (224, 224)).unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (full, part) = (tmp.path().join("full.safetensors"), tmp.path().join("part.safetensors"));
    let mut t = trainer();
    fit::run(&views, &config.fit, &mut t, &full, 0, &mut RunControl::default()).unwrap();

    let mut t = trainer();
    // cancel after the first epoch's 2 batches: the state of epoch 1 is on disk
    let mut stop = RunControl::with_progress(|done, _| done < 2);
    let e = fit::run(&views, &config.fit, &mut t, &part, 0, &mut stop).unwrap_err();
    assert!(matches!(e, ibex::Error::Cancelled), "{e}");
    t.save(&part, 1).unwrap();
    let (mut t, done) = ReadoutTrainer::resume(&bundle.network, &part, &dev).unwrap();
    assert_eq!(done, 1);
    fit::run(&views, &config.fit, &mut t, &part, done, &mut RunControl::default()).unwrap();

    let a = IbaReadout::load(&bundle.network, &full, &dev).unwrap();
    let b = IbaReadout::load(&bundle.network, &part, &dev).unwrap();
    for (la, lb) in a.readout.mlp.layers.iter().zip(&b.readout.mlp.layers) {
        let d = (&la.weight - &lb.weight).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "resumed weights differ by {d}");
    }
}
