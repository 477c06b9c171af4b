//! DICOM output: the Parametric Map and the Secondary Capture derived from real CT, MR and
//! colour fixtures pass `dciodvfy` (dicom3tools) without errors, carry the source's study and
//! references, and read back bit for bit; `ibex dicom` and `ibex explain --dicom-out`.
#![cfg(feature = "dicom")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use dicom_dictionary_std::tags;
use ibex::control::RunControl;
use ibex::dicom::{self, write, DicomOptions};
use ibex::explain::{Explanation, Method, NamedMap, Target};
use ibex::imaging::colormap::Colormap;
use ibex::imaging::heatmap::Heatmap;
use ibex::imaging::overlay::{overlay_on_original, resample_onto};
use ibex::models::Model;

fn fixture(name: &str) -> PathBuf {
    common::fixtures().join("images").join("dicom").join(format!("{name}.dcm"))
}

fn model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join("efficientnet-lite0");
    Model::load(None, &dir, &Device::Cpu).unwrap()
}

fn explain(model: &Model, method: &str, image: &dicom::DicomImage) -> Explanation {
    let m = Method::create(model, method, &serde_json::json!({})).unwrap();
    m.explain(model, &image.image, &Target::default(), &mut RunControl::default()).unwrap()
}

/// dciodvfy's error lines for `path` (warnings are allowed: local codes, extended IODs).
fn dciodvfy_errors(path: &Path) -> Vec<String> {
    let out = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (Debian dicom3tools) must be installed: .ci/run installs it");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().filter(|l| l.starts_with("Error")).map(String::from).collect()
}

fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_string()
}

fn first(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> &dicom_object::InMemDicomObject {
    &obj.element(tag).unwrap().items().unwrap()[0]
}

#[test]
fn parametric_map_and_secondary_capture_pass_dciodvfy_and_read_back() {
    let model = model();
    let tmp = tempfile::tempdir().unwrap();
    // A CT (with its geometry), an MR, a colour ultrasound (no geometry), a palette image.
    for (name, method) in
        [("CT_small", "iba"), ("MR_small", "gradcam"), ("US1_UNCR", "gradcam"), ("OBXXXX1A", "gradcam")]
    {
        let source = dicom::load(&fixture(name), &DicomOptions::default()).unwrap();
        let ex = explain(&model, method, &source);
        let map = &ex.maps[0];
        let options =
            write::DerivedOptions { method: ex.method.clone(), target: "predicted".into(), ..Default::default() };
        let pm = write::parametric_map(&source.source, map, ex.source_region, &options).unwrap();
        let sc = write::secondary_capture(&source.source, &source.image, map, ex.source_region, &options).unwrap();
        let pm_path = write::write_into(tmp.path(), &format!("{name}_pm"), &pm).unwrap();
        let sc_path = write::write_into(tmp.path(), &format!("{name}_sc"), &sc).unwrap();
        for p in [&pm_path, &sc_path] {
            let errors = dciodvfy_errors(p);
            assert!(errors.is_empty(), "{name}: dciodvfy on {}:\n{}", p.display(), errors.join("\n"));
        }

        let info = &source.source.file.info;
        let src = source.source.file.object();
        let back = dicom_object::open_file(&pm_path).unwrap();
        assert_eq!(text(&back, tags::SOP_CLASS_UID), write::PARAMETRIC_MAP_STORAGE);
        assert_eq!(text(&back, tags::STUDY_INSTANCE_UID), info.study_instance_uid, "{name}: same study");
        assert_ne!(text(&back, tags::SERIES_INSTANCE_UID), info.series_instance_uid, "{name}: a new series");
        assert!(text(&back, tags::SOP_INSTANCE_UID).starts_with("2.25."));
        assert_eq!(back.element(tags::ROWS).unwrap().to_int::<u32>().unwrap(), info.rows);
        assert_eq!(back.element(tags::COLUMNS).unwrap().to_int::<u32>().unwrap(), info.columns);
        for tag in [tags::PATIENT_ID, tags::PATIENT_NAME, tags::ACCESSION_NUMBER] {
            let want = src.get(tag).map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string());
            assert_eq!(Some(text(&back, tag)), Some(want.unwrap_or_default()), "{name}: {tag} copied");
        }
        // The references: the source series and instance, and the derivation's source image.
        let series = first(&back, tags::REFERENCED_SERIES_SEQUENCE);
        assert_eq!(text(series, tags::SERIES_INSTANCE_UID), info.series_instance_uid);
        let inst = first(series, tags::REFERENCED_INSTANCE_SEQUENCE);
        assert_eq!(text(inst, tags::REFERENCED_SOP_INSTANCE_UID), info.sop_instance_uid);
        let shared = first(&back, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let derivation = first(shared, tags::DERIVATION_IMAGE_SEQUENCE);
        let src_img = first(derivation, tags::SOURCE_IMAGE_SEQUENCE);
        assert_eq!(text(src_img, tags::REFERENCED_SOP_INSTANCE_UID), info.sop_instance_uid);
        // Same frame of reference where the source has one.
        if let (false, Some(position)) = (info.frame_of_reference_uid.is_empty(), info.image_position) {
            assert_eq!(text(&back, tags::FRAME_OF_REFERENCE_UID), info.frame_of_reference_uid, "{name}");
            let pos = first(first(&back, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE), tags::PLANE_POSITION_SEQUENCE);
            let got = pos.element(tags::IMAGE_POSITION_PATIENT).unwrap().to_multi_float64().unwrap();
            assert_eq!(got, position.to_vec());
        } else {
            assert_ne!(text(&back, tags::FRAME_OF_REFERENCE_UID), info.frame_of_reference_uid);
        }
        // Units coded in the Real World Value Mapping.
        let rwvm = first(shared, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE);
        let units = first(rwvm, tags::MEASUREMENT_UNITS_CODE_SEQUENCE);
        let want_units = match map.units.as_str() {
            "bits_per_pixel" => "bit/{pixel}",
            "normalized" => "1",
            other => panic!("units {other}"),
        };
        assert_eq!(text(units, tags::CODE_VALUE), want_units, "{name}");
        assert_eq!(text(units, tags::CODING_SCHEME_DESIGNATOR), "UCUM");
        // The float map, bit for bit.
        let want: Vec<f32> = resample_onto(&map.map, ex.source_region, info.columns, info.rows)
            .unwrap()
            .into_iter()
            .map(|v| v.unwrap_or(0.0))
            .collect();
        let got = back.element(tags::FLOAT_PIXEL_DATA).unwrap().to_bytes().unwrap();
        let got: Vec<f32> = got.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: float map differs");

        // The Secondary Capture: the overlay on the windowed source, RGB, same references.
        let back = dicom_object::open_file(&sc_path).unwrap();
        assert_eq!(text(&back, tags::SOP_CLASS_UID), write::SECONDARY_CAPTURE_STORAGE);
        assert_eq!(text(&back, tags::STUDY_INSTANCE_UID), info.study_instance_uid);
        assert_eq!(text(&back, tags::PHOTOMETRIC_INTERPRETATION), "RGB");
        let src_img = first(&back, tags::SOURCE_IMAGE_SEQUENCE);
        assert_eq!(text(src_img, tags::REFERENCED_SOP_INSTANCE_UID), info.sop_instance_uid);
        let overlay = overlay_on_original(&source.image, &map.map, ex.source_region, Colormap::Turbo, 0.5).unwrap();
        assert_eq!(back.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().as_ref(), overlay.as_raw().as_slice());
        eprintln!("{name}: {method} map '{}' ({}) written and verified", map.name, map.units);
    }
}

#[test]
fn a_map_at_the_source_size_is_kept_exactly_and_bad_maps_are_refused() {
    let source = dicom::load(&fixture("MR_small"), &DicomOptions::default()).unwrap();
    let (w, h) = (source.image.width, source.image.height);
    // Values no resampling would keep: a ramp of odd floats, in nats.
    let data: Vec<f32> = (0..w * h).map(|i| (i as f32 * 0.7311).sin() * 1e-3 + i as f32 / 3.0).collect();
    let map = NamedMap {
        name: "capacity".into(),
        units: "nats".into(),
        text_index: None,
        map: Heatmap::new(w, h, data.clone()).unwrap(),
    };
    let region = [0.0, 0.0, w as f32, h as f32];
    let pm = write::parametric_map(&source.source, &map, region, &Default::default()).unwrap();
    let bytes = write::to_bytes(&pm).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pm.dcm");
    std::fs::write(&path, bytes).unwrap();
    assert!(dciodvfy_errors(&path).is_empty());
    let back = dicom_object::open_file(&path).unwrap();
    let got = back.element(tags::FLOAT_PIXEL_DATA).unwrap().to_bytes().unwrap();
    let got: Vec<f32> = got.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(got.iter().zip(&data).all(|(a, b)| a.to_bits() == b.to_bits()));
    let units = first(
        first(first(&back, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE), tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE),
        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
    );
    assert_eq!(text(units, tags::CODE_VALUE), "nat");

    let mut nan = map.clone();
    nan.map.data[5] = f32::NAN;
    let err = write::parametric_map(&source.source, &nan, region, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    let tokens = NamedMap {
        name: "text".into(),
        units: "normalized".into(),
        text_index: Some(0),
        map: Heatmap::new(7, 1, vec![0.5; 7]).unwrap(),
    };
    let err =
        write::secondary_capture(&source.source, &source.image, &tokens, region, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("token map"), "{err}");
    let odd = NamedMap { units: "furlongs".into(), ..map.clone() };
    let err = write::parametric_map(&source.source, &odd, region, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("no DICOM coding"), "{err}");
}

#[test]
fn cli_dicom_report_and_dicom_out() {
    let tmp = tempfile::tempdir().unwrap();
    let js = tmp.path().join("emri.json");
    let f = fixture("emri_small");
    let (ok, stdout, stderr, _) = common::run_cli(&["dicom", f.to_str().unwrap(), "--json", js.to_str().unwrap()]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("10 frames") && stdout.contains("overall:    min 0 max 467"), "{stdout}");
    let v = common::json_at(&js);
    assert_eq!(v["frames"], 10);
    assert_eq!(v["frames_decoded"].as_array().unwrap().len(), 10);
    let car = common::json_at(&f.with_extension("json"));
    let means = car["decoded"]["per_frame_mean_stored"].as_array().unwrap();
    for (got, want) in v["frames_decoded"].as_array().unwrap().iter().zip(means) {
        assert!((got["stats"]["mean"].as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-9);
    }
    // One frame only, and a frame that does not exist.
    let (ok, stdout, _, _) = common::run_cli(&["dicom", f.to_str().unwrap(), "--frame", "3"]);
    assert!(ok && stdout.contains("frame    3:") && !stdout.contains("frame    4:"), "{stdout}");
    let (ok, _, stderr, code) = common::run_cli(&["dicom", f.to_str().unwrap(), "--frame", "10"]);
    assert!(!ok && code == 2 && stderr.contains("frame 10 requested, but the file has 10 frames"), "{stderr}");

    // explain --dicom-out on a CT with a soft-tissue window.
    let out = tmp.path().join("derived");
    let ct = fixture("CT_small");
    let (ok, stdout, stderr, _) = common::run_cli(&[
        "explain",
        ct.to_str().unwrap(),
        "--method",
        "gradcam",
        "--window",
        "40,400",
        "--dicom-out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let files: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for p in &files {
        assert!(dciodvfy_errors(p).is_empty(), "{}", p.display());
    }
    // --dicom-out needs DICOM input; a bad window is refused.
    let (ok, _, stderr, code) =
        common::run_cli(&["explain", "examples/images/chelsea.png", "--dicom-out", out.to_str().unwrap(), "-q"]);
    assert!(!ok && code == 2 && stderr.contains("--dicom-out needs a DICOM image"), "{stderr}");
    let (ok, _, stderr, _) = common::run_cli(&["explain", ct.to_str().unwrap(), "--window", "40", "-q"]);
    assert!(!ok && stderr.contains("CENTER,WIDTH"), "{stderr}");
}
