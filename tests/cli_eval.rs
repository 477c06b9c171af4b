//! `ibex eval`: Grad-CAM at `blocks.10` on two fixture photos scores as the reference's
//! Grad-CAM did (AUCs, pointing), with JSON and CSV output.

mod common;

use common::*;
use std::process::Command;

#[test]
fn eval_reproduces_the_reference_gradcam_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for n in ["camera", "coffee"] {
        std::fs::copy(fixtures().join(format!("images/photos/input224/{n}.png")), imgs.join(format!("{n}.png")))
            .unwrap();
    }
    let (js, csv) = (tmp.path().join("e.json"), tmp.path().join("e.csv"));
    let o = Command::new(env!("CARGO_BIN_EXE_ibex"))
        .args(["eval", "--method", "gradcam", "--layer", "blocks.10", "-q", "--images"])
        .arg(&imgs)
        .arg("--boxes")
        .arg(fixtures().join("images/photos/photos.json"))
        .arg("--json")
        .arg(&js)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("mean:") && stdout.contains("pointing 0/2"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    let reference = json("../cnn/iba-reference/reference.json");
    for row in v["images"].as_array().unwrap() {
        let name = row["image"].as_str().unwrap();
        let r = &reference["results"][name]["auc"];
        for (ours, theirs) in [("morf", "gradcam_morf"), ("lerf", "gradcam_lerf")] {
            let (a, b) = (row[ours].as_f64().unwrap(), r[theirs].as_f64().unwrap());
            assert!((a - b).abs() < 0.01, "{name} {ours}: {a} vs reference {b}");
        }
        assert_eq!(row["pointing_hit"], false, "{name}: the reference's Grad-CAM misses here");
        assert_eq!(row["morf_curve"].as_array().unwrap().len(), 51);
        let (e, want) = (
            row["energy_in_box"].as_f64().unwrap(),
            reference["results"][name]["pointing"]["gradcam"]["mass_in_box"].as_f64().unwrap(),
        );
        assert!((e - want).abs() < 1e-3, "{name}: energy in box {e} vs reference {want}");
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.starts_with("image,target_index,target_label"));
    assert!(text.contains("camera,872,\"tripod\""), "{text}");
}
