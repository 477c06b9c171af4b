//! `ibex tune` on the public CLIP benchmark (`fixtures/clip/bench`, all 100 pairs): every
//! candidate scored, the best by the declared label-free score written to `ibex.json` (and
//! read back by M2IB), each frozen prefix run once per layer and reused across β, progress and
//! cancellation. The ignored test prints the closing-note table: every setting's label-free
//! score next to its pointing game (labels the tuning never sees) and their rank correlation.

mod common;
use candle_core::Device;
use common::*;
use ibex::explain::m2ib::M2ibConfig;
use ibex::explain::tune::{tune, TunePair, TuneSettings};
use ibex::imaging::image::RgbImage;
use ibex::models::clip::ClipBundle;
use ibex::{Error, RunControl};

fn bench_pairs(n: usize) -> Vec<TunePair> {
    let cases = json("bench/cases.json");
    cases.as_array().unwrap()[..n]
        .iter()
        .map(|c| {
            let f = c["file"].as_str().unwrap();
            TunePair {
                name: f.into(),
                image: RgbImage::load(&clip_dir().join("bench").join(f)).unwrap(),
                caption: c["caption"].as_str().unwrap().into(),
            }
        })
        .collect()
}

fn model_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fmnist-clip");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(fmnist_model()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    (tmp, dir)
}

#[test]
fn tune_scores_every_candidate_and_writes_the_best_into_ibex_json() {
    let (_tmp, dir) = model_copy();
    std::fs::write(dir.join("ibex.json"), r#"{"m2ib": {"layer": 3, "steps": 4, "samples": 4}}"#).unwrap();
    let report = dir.join("report.json");
    let bench = clip_dir().join("bench");
    let (ok, out, err, _) = run_cli(&[
        "tune",
        "--model",
        dir.to_str().unwrap(),
        "--images",
        bench.to_str().unwrap(),
        "--texts",
        bench.join("cases.json").to_str().unwrap(),
        "--vision-layers",
        "1",
        "--text-layers",
        "1,2",
        "--betas",
        "0.3,1",
        "--curve-steps",
        "8",
        "--json",
        report.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("100 pairs"), "{err}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let cands = r["candidates"].as_array().unwrap();
    // every (vision layer, text layer, beta) scored, with finite numbers
    assert_eq!(cands.len(), 2 * 2);
    assert!(cands.iter().all(|c| c["vision_layer"] == 1));
    for c in cands {
        for k in ["score", "image_deletion_auc", "image_insertion_auc", "image_drop", "text_drop"] {
            assert!(c[k].as_f64().is_some_and(f64::is_finite), "{k}: {c}");
        }
        let s = c["image_insertion_auc"].as_f64().unwrap() - c["image_deletion_auc"].as_f64().unwrap();
        assert!((c["score"].as_f64().unwrap() - s).abs() < 1e-6, "{c}");
    }
    // one frozen prefix per pair and layer (1 vision + 2 text), not one per beta
    assert_eq!(r["pairs"], 100);
    assert_eq!(r["prefix_passes"], 100 * 3);
    // the best is the highest declared score, and it is what ibex.json now says
    let best = r["best"].as_u64().unwrap() as usize;
    let max = cands.iter().map(|c| c["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(cands[best]["score"].as_f64().unwrap(), max);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ibex.json")).unwrap()).unwrap();
    let m = &written["m2ib"];
    assert_eq!(m["vision_layer"], cands[best]["vision_layer"]);
    assert_eq!(m["text_layer"], cands[best]["text_layer"]);
    assert_eq!(m["beta"], cands[best]["beta"]);
    assert!(m.get("layer").is_none() && m["steps"] == 4 && m["samples"] == 4, "the setting as scored: {m}");
    assert_eq!(written["tuned"]["pairs"], 100);
    assert_eq!(written["tuned"]["data"]["betas"], serde_json::json!([0.3, 1.0]));
    assert!((written["tuned"]["score"].as_f64().unwrap() - max).abs() < 1e-6);
    assert!(out.contains("<- best"), "{out}");
    // M2IB now uses the tuned setting by default
    let b = ClipBundle::load(&dir, &Device::Cpu).unwrap();
    let cfg = M2ibConfig::for_bundle(&b).unwrap();
    assert_eq!(cfg.vision_layer, cands[best]["vision_layer"].as_u64().map(|v| v as usize));
    assert_eq!(cfg.bottleneck.beta, cands[best]["beta"].as_f64().unwrap());
}

#[test]
fn tune_reports_progress_and_can_be_cancelled() {
    let b = ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap();
    let base = M2ibConfig::default().merged(&serde_json::json!({"steps": 2, "samples": 2})).unwrap();
    let mut settings = TuneSettings::for_model(&b.model, base);
    settings.vision_layers = vec![1];
    settings.text_layers = vec![1];
    settings.betas = vec![1.0, 2.0];
    settings.curve_steps = 4;
    let pairs = bench_pairs(3);
    let mut seen = Vec::new();
    let r = tune(
        &b,
        &pairs,
        &settings,
        &mut RunControl::with_progress(|d, t| {
            seen.push((d, t));
            true
        }),
    )
    .unwrap();
    // 3 pairs x 2 betas x (1 vision + 1 text run) x 2 steps
    assert_eq!(seen.last(), Some(&(24, 24)));
    assert_eq!(r.prefix_passes, 3 * 2);
    let e = tune(&b, &pairs, &settings, &mut RunControl::with_progress(|d, _| d < 5)).unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    // bad candidates are clear errors
    settings.vision_layers = vec![4];
    let e = tune(&b, &pairs, &settings, &mut RunControl::default()).unwrap_err().to_string();
    assert!(e.contains("vision layer 4") && e.contains("0..=3"), "{e}");
}

/// The closing note's table: run with `cargo test --release --test tune -- --ignored --nocapture`.
#[test]
#[ignore]
fn tune_table_with_pointing_game() {
    use ibex::metrics::correlation::spearman;
    use ibex::metrics::pointing_hit;
    let b = ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap();
    let mut settings = TuneSettings::for_model(&b.model, M2ibConfig::default());
    settings.vision_layers = vec![0, 1, 2, 3];
    settings.text_layers = vec![2];
    settings.betas = vec![0.1, 1.0, 10.0];
    let pairs = bench_pairs(100);
    let t = std::time::Instant::now();
    let r = tune(&b, &pairs, &settings, &mut RunControl::default()).unwrap();
    eprintln!("tuned in {:.0} s", t.elapsed().as_secs_f64());
    let cases = json("bench/cases.json");
    let mut scores = Vec::new();
    let mut pointing = Vec::new();
    for ((lv, beta), maps) in &r.image_maps {
        let hits = maps
            .iter()
            .zip(cases.as_array().unwrap())
            .filter(|(m, c)| {
                let cell = c["target_cell"].as_u64().unwrap() as f32;
                let (x0, y0) = ((cell % 2.0) * 32.0, (cell / 2.0).floor() * 32.0);
                let map = m.upsample_bilinear(64, 64).normalized().unwrap();
                pointing_hit(&map, &[[x0, y0, x0 + 32.0, y0 + 32.0]], 0.0)
            })
            .count();
        let c = r.candidates.iter().find(|c| c.vision_layer == *lv && c.beta == *beta).unwrap();
        eprintln!(
            "vision layer {lv} beta {beta:>4}: score {:.4} (deletion {:.4}, insertion {:.4}), drop {:.2} %, increase {:.0} %, pointing {hits} %",
            c.score, c.image_deletion_auc, c.image_insertion_auc, c.image_drop, c.image_increase
        );
        scores.push(c.score);
        pointing.push(hits as f32);
    }
    eprintln!("best: {} ; Spearman(score, pointing) = {:.3}", r.best_options(), spearman(&scores, &pointing));
}
