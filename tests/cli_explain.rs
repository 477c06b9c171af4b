//! `ibex explain` on the bundled EfficientNet-Lite0: the README's first command, Grad-CAM, the
//! JSON report, the overlay on the original image, and clear errors.

mod common;
use common::run_cli as run;

#[test]
fn readme_first_command_explains_the_cat_with_iba() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("cat.png");
    let js = tmp.path().join("cat.json");
    let (ok, stdout, stderr, _) = run(&[
        "explain",
        "examples/images/chelsea.png",
        "--overlay",
        png.to_str().unwrap(),
        "--json",
        js.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("top-5") && stdout.contains("cat"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    assert_eq!(v["method"], "iba");
    assert!(v["target"]["label"].as_str().unwrap().contains("cat"), "{}", v["target"]);
    assert_eq!(v["top5"].as_array().unwrap().len(), 5);
    let p: f64 = v["top5"].as_array().unwrap().iter().map(|c| c["probability"].as_f64().unwrap()).sum();
    assert!(p > 0.0 && p <= 1.0 + 1e-6);
    let m0 = &v["maps"][0];
    assert_eq!((m0["name"].as_str(), m0["units"].as_str()), (Some("saliency"), Some("bits_per_pixel")));
    assert_eq!((m0["width"].as_u64(), m0["height"].as_u64()), (Some(224), Some(224)));
    let data: Vec<f64> = m0["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(data.len(), 224 * 224);
    assert!(data.iter().all(|x| x.is_finite() && *x >= -1e-6), "saliency in bits is non-negative");
    assert!(data.iter().sum::<f64>() > 100.0, "some information passes the bottleneck");
    assert_eq!(v["config"]["layer"], "blocks.10");
    assert_eq!(v["config"]["beta"], 10.0);
    // the overlay is drawn on the original 451x300 photo, not on the 224x224 crop
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (451, 300));
    let region = v["image"]["source_region"].as_array().unwrap();
    assert!((region[2].as_f64().unwrap() - region[0].as_f64().unwrap() - 300.0).abs() < 1.0, "{region:?}");
}

#[test]
fn gradcam_and_a_chosen_target() {
    let tmp = tempfile::tempdir().unwrap();
    let js = tmp.path().join("gc.json");
    let (ok, stdout, stderr, _) = run(&[
        "explain",
        "examples/images/coffee.png",
        "--method",
        "gradcam",
        "--target",
        "967",
        "--json",
        js.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    assert_eq!(v["method"], "gradcam");
    assert_eq!(v["target"]["index"], 967);
    assert_eq!(v["target"]["label"], "espresso");
    assert_eq!(v["maps"][0]["name"], "gradcam");
    assert_eq!(v["config"]["layer"], "head", "Grad-CAM defaults to the last feature map");
    let data: Vec<f64> = v["maps"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let max = data.iter().cloned().fold(0.0, f64::max);
    assert!((max - 1.0).abs() < 1e-5 && data.iter().all(|x| (0.0..=1.0 + 1e-6).contains(x)));
}

#[test]
fn bad_input_gives_clear_errors() {
    let (ok, _, err, code) = run(&["explain", "examples/images/chelsea.png", "--target", "1000", "-q"]);
    assert!(!ok && code == 2 && err.contains("target class 1000 is out of range") && err.contains("0..=999"), "{err}");
    let (ok, _, err, _) = run(&["explain", "examples/images/chelsea.png", "--method", "occlusionz"]);
    assert!(!ok && err.contains("occlusionz") && err.contains("iba"), "{err}");
    let (ok, _, err, code) = run(&["explain", "examples/images/chelsea.png", "--method", "gradcam", "--beta", "3"]);
    assert!(!ok && code == 2 && err.contains("unknown Grad-CAM option 'beta'"), "{err}");
    let (ok, _, err, _) = run(&["explain", "examples/images/chelsea.png", "--stats", "/nonexistent/stats.safetensors"]);
    assert!(!ok && err.contains("/nonexistent/stats.safetensors") && err.contains("ibex stats"), "{err}");
    let (ok, _, err, code) = run(&["explain", "examples/images/chelsea.png", "--layer", "blocks.99"]);
    assert!(!ok && code == 2 && err.contains("blocks.99") && err.contains("blocks.10"), "{err}");
    let (ok, _, err, _) = run(&["explain", "examples/images/chelsea.png", "--layer", "blocks.5"]);
    assert!(!ok && err.contains("[112, 14, 14]") && err.contains("blocks.5"), "statistics for another tap: {err}");
    let (ok, _, err, _) = run(&["explain", "no-such-image.png"]);
    assert!(!ok && err.contains("no-such-image.png"), "{err}");
}
