//! `ibex stats`: feature statistics estimated over augmented views of a folder, read back by
//! IBA, reproducible from the seed, and close to the official estimate's means.

mod common;

use candle_core::Device;
use common::*;
use ibex::explain::iba::stats::FeatureStats;
use std::process::Command;

#[test]
fn estimated_statistics_are_reproducible_usable_and_close_to_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = fixtures().join("images/photos/input224");
    let run = |out: &str, samples: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_ibex"))
            .args(["stats", "--layer", "blocks.10", "--samples", samples, "--seed", "5", "--images"])
            .arg(&photos)
            .arg("--out")
            .arg(tmp.path().join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run("b.safetensors", "16");
    run("c.safetensors", "16");
    let b = std::fs::read(tmp.path().join("b.safetensors")).unwrap();
    assert_eq!(b, std::fs::read(tmp.path().join("c.safetensors")).unwrap(), "same seed, same file");
    run("a.safetensors", "384");
    let ours = FeatureStats::load(&tmp.path().join("a.safetensors"), 0.01, 0.01, &Device::Cpu).unwrap();
    assert_eq!(ours.dims(), [112, 14, 14]);
    let refs = load_fixture("cnn/iba-reference/feature_stats.safetensors");
    let r = pearson(&vec_f32(&ours.mean), &vec_f32(&refs["feature_mean"]));
    let rs = pearson(&vec_f32(&ours.std), &vec_f32(&refs["feature_std"]));
    // the reference averaged 10,000 views of 24 images, 12 of which are not in the fixtures:
    // 384 views of the 12 photos give 0.91 / 0.90
    eprintln!("384 views vs the official 10,000: Pearson of means {r:.3}, of stds {rs:.3}");
    assert!(r > 0.85 && rs > 0.85, "means {r}, stds {rs}");
    // IBA runs with them
    let o = Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["explain", "examples/images/chelsea.png", "--steps", "2", "-q", "--stats"])
        .arg(tmp.path().join("a.safetensors"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // bad input
    let o = Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["stats", "--layer", "blocks.10", "--images", "/nonexistent-dir", "--out", "x.safetensors"])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("/nonexistent-dir"));
}
