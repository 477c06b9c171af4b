//! `ibex dual-ib fit` and `ibex explain --method dual-ib` on the bundled EfficientNet-Lite0: a
//! short fit writes a resumable state; the explanation has the three maps in bits, the general
//! map never above its InfoNCE bound log2 K, redundancy = general − sufficient; bad states
//! (another model's, a corrupt file, a readout given as Dual-IB) are refused with clear messages.

mod common;
use common::*;
use std::process::Command;

fn ibex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ibex"))
}

#[test]
fn dual_ib_fit_explain_and_bad_states() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for n in ["coffee", "camera", "chelsea", "dog"] {
        std::fs::copy(fixtures().join(format!("images/photos/input224/{n}.png")), imgs.join(format!("{n}.png")))
            .unwrap();
    }
    let state = tmp.path().join("dual.safetensors");
    let fit = |extra: &[&str]| {
        let o = ibex()
            .args(["dual-ib", "fit", "-q", "--images"])
            .arg(&imgs)
            .arg("--out")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let out = fit(&["--epochs", "2", "--batch", "2", "--samples", "2"]);
    assert!(out.contains("epoch   2:") && out.contains("infonce_bits"), "{out}");
    assert!(fit(&["--resume"]).contains("already has 2 of 2 epochs"));
    // a resumed run keeps its settings and its images
    let o = ibex()
        .args(["dual-ib", "fit", "--resume", "--epochs", "5", "--images"])
        .arg(&imgs)
        .arg("--out")
        .arg(&state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("settings stored in the state"));
    let fewer = tmp.path().join("fewer");
    std::fs::create_dir(&fewer).unwrap();
    std::fs::copy(imgs.join("dog.png"), fewer.join("dog.png")).unwrap();
    let o =
        ibex().args(["dual-ib", "fit", "--resume", "--images"]).arg(&fewer).arg("--out").arg(&state).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("trained on other images"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let js = tmp.path().join("d.json");
    let o = ibex()
        .args(["explain", "--method", "dual-ib", "--state"])
        .arg(&state)
        .arg(imgs.join("coffee.png"))
        .arg("--json")
        .arg(&js)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    let maps = v["maps"].as_array().unwrap();
    let names: Vec<&str> = maps.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names[..4], ["sufficient", "general", "redundancy", "redundancy_clamped"]);
    assert_eq!((maps[0]["width"].as_u64(), maps[0]["units"].as_str()), (Some(224), Some("bits_per_pixel")));
    // the bank holds the 3 other photos (coffee itself is recognised and left out)
    assert_eq!(v["summary"]["candidates"], 4);
    let bound = v["summary"]["general_bound_bits_per_position"].as_f64().unwrap();
    assert!((bound - 2.0).abs() < 1e-6);
    let grid = |name: &str| -> Vec<f64> {
        let m = maps.iter().find(|m| m["name"] == name).unwrap();
        assert_eq!(m["width"], 56, "the grid of blocks.2, the stride-4 tap");
        m["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    };
    let (s, g, r) = (grid("sufficient_grid"), grid("general_grid"), grid("redundancy_grid"));
    assert!(g.iter().all(|&x| x <= bound + 1e-4), "general above log2 K");
    assert!(s.iter().all(|&x| x >= 0.0));
    assert!(r.iter().zip(g.iter().zip(&s)).all(|(r, (g, s))| (r - (g - s)).abs() < 1e-3 * (1.0 + s.abs())));
    // per-pixel maps keep the grid's total bits
    let per_pixel: f64 = maps[0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
    let total: f64 = s.iter().sum();
    assert!((per_pixel - total).abs() < 0.01 * total, "{per_pixel} vs {total}");

    // a target other than the top-1 needs the per-sample bottleneck
    let o = ibex()
        .args(["explain", "--method", "dual-ib", "--target", "1", "--state"])
        .arg(&state)
        .arg(imgs.join("coffee.png"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("per-sample"));
    let o = ibex()
        .args(["explain", "--method", "dual-ib", "--alpha", "per-sample", "--target", "1", "--state"])
        .arg(&state)
        .arg(imgs.join("coffee.png"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // another model's state, a corrupt state, a missing one
    let resnet = resnet_model_dir(tmp.path(), "basic");
    let corrupt = tmp.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a state").unwrap();
    for (model, st, want) in [
        (Some(&resnet), &state, "another model"),
        (None, &corrupt, "not a readable safetensors"),
        (None, &tmp.path().join("missing.safetensors"), "not found"),
    ] {
        let mut c = ibex();
        c.args(["explain", "--method", "dual-ib", "--state"]).arg(st).arg(imgs.join("coffee.png"));
        if let Some(m) = model {
            c.arg("--model").arg(m);
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(!o.status.success() && err.contains(want), "{want}: {err}");
    }
}
