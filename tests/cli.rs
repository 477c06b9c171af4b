//! The `ibex` command line: the README's first command, the JSON report, and clear errors.

use std::process::Command;

fn ibex() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ibex"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn readme_command_writes_overlay_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("sandal.png");
    let js = tmp.path().join("out.json");
    let out = ibex()
        .args([
            "m2ib",
            "--image",
            "examples/images/four_items.png",
            "--text",
            "a sandal",
            "--text",
            "a dress",
            "--overlay",
        ])
        .arg(&png)
        .arg("--json")
        .arg(&js)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("sandal") && stdout.contains("<|startoftext|>"), "{stdout}");
    for i in 0..2 {
        let p = tmp.path().join(format!("sandal_{i}.png"));
        let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    assert_eq!(v["method"], "m2ib");
    assert_eq!(v["image"]["width"], 64);
    assert_eq!(v["image"]["source_region"], serde_json::json!([0.0, 0.0, 64.0, 64.0]));
    assert_eq!(v["image"]["heatmap"].as_array().unwrap().len(), 64 * 64);
    let texts = v["text"].as_array().unwrap();
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[0]["tokens"].as_array().unwrap().len(), texts[0]["scores"].as_array().unwrap().len());
    assert!(texts[0]["similarity"].as_f64().unwrap().abs() <= 1.0);
    // the demo model's recommended setting from models/fmnist-clip/ibex.json
    assert_eq!(v["config"]["beta"], 1.0);
    assert_eq!(v["config"]["vision_layer"], 1);
    assert!(v["elapsed_ms"].as_f64().unwrap() > 0.0);
    let hm: Vec<f64> = v["image"]["heatmap"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(hm.iter().all(|x| (0.0..=1.0).contains(x)) && hm.contains(&1.0));
}

#[test]
fn flags_override_the_model_recommendation_and_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let js = tmp.path().join("o.json");
    let out = ibex()
        .args([
            "m2ib",
            "--image",
            "examples/images/four_items.png",
            "--text",
            "a sandal",
            "--layer",
            "2",
            "--beta",
            "0.5",
            "--steps",
            "3",
            "--quiet",
            "--json",
        ])
        .arg(&js)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    assert_eq!((v["config"]["vision_layer"].as_u64(), v["config"]["text_layer"].as_u64()), (Some(2), Some(2)));
    assert_eq!(v["config"]["beta"], 0.5);
    assert_eq!(v["text"][0]["trace"]["vision"].as_array().unwrap().len(), 3);

    for (args, want) in [
        (vec!["--image", "missing.png", "--text", "a"], "missing.png"),
        (vec!["--image", "examples/images/four_items.png", "--text", ""], "empty"),
        (vec!["--image", "examples/images/four_items.png", "--text", "a", "--layer", "9"], "layer 9"),
        (vec!["--image", "examples/images/four_items.png", "--text", "a", "--beta=-1"], "beta"),
        (vec!["--image", "examples/images/four_items.png", "--text", "a", "--model", "/no/such/dir"], "/no/such/dir"),
        (vec!["--image", "examples/images/four_items.png", "--text", "a", "--device", "tpu"], "tpu"),
    ] {
        let out = ibex().arg("m2ib").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains("ibex: error") && err.contains(want), "{args:?}: {err}");
    }
}
