//! Deletion (MoRF) and LeRF curves on the bundled EfficientNet-Lite0: fed the reference's own
//! maps, our curves reproduce `curves.json`; then our IBA maps are scored the same way.

mod common;

use candle_core::Device;
use common::*;
use ibex::explain::classifier::{self, target_probability};
use ibex::explain::{Iba, IbaConfig};
use ibex::imaging::heatmap::Heatmap;
use ibex::metrics::{perturbation_curve, CurveSettings, Order};
use ibex::models::cnn::ClassifierBundle;
use ibex::RunControl;

fn curves(b: &ClassifierBundle, name: &str, target: usize, map: &Heatmap) -> (Vec<f32>, Vec<f32>, f32, f32) {
    let input = classifier::input(b, &photo224(name)).unwrap();
    let mut score = target_probability(b, target, 224, 224);
    let s = CurveSettings::default();
    let m = perturbation_curve(&input.pre.pixel_values, 3, 224, 224, map, Order::MoRF, &s, &mut score).unwrap();
    let l = perturbation_curve(&input.pre.pixel_values, 3, 224, 224, map, Order::LeRF, &s, &mut score).unwrap();
    (m.scores, l.scores, m.auc, l.auc)
}

#[test]
fn curves_reproduce_the_reference_and_our_iba_is_faithful() {
    let b = ClassifierBundle::load(&efficientnet_dir(), None, &Device::Cpu).unwrap();
    let reference = json("../cnn/iba-reference/reference.json");
    let stored = json("../cnn/iba-reference/curves.json");
    let iba = Iba::new(&b, IbaConfig::for_bundle(&b).unwrap()).unwrap();
    let (mut ours_gap, mut gc_gap, mut ref_gap) = (0f64, 0f64, 0f64);
    let (mut worst, mut worst_gc, mut worst_gc_auc) = (0f32, 0f32, 0f32);
    let mut failures = Vec::new();
    for name in PHOTOS {
        let r = &reference["results"][name];
        let target = r["target"].as_u64().unwrap() as usize;
        let refs = load_fixture(&format!("cnn/iba-reference/{name}.safetensors"));
        let iba_mean = Heatmap::new(224, 224, numpy_mean0(&refs["saliency_bits_per_pixel"])).unwrap();
        let gradcam = Heatmap::new(224, 224, vec_f32(&refs["gradcam"])).unwrap();
        let want = |k: &str| -> Vec<f32> {
            stored["curves"][name][k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
        };
        // IBA maps: every point within 1e-3. Grad-CAM maps are a 14x14 grid stretched 16x, so
        // hundreds of 8x8 tiles have nearly equal means and their order hinges on the last bit
        // of how the reference summed them (f32 vs f64 orders differ in up to 100 places): the
        // AUC is compared there, within 0.01.
        for (map, prefix) in [(&iba_mean, "iba"), (&gradcam, "gradcam")] {
            let (morf, lerf, morf_auc, lerf_auc) = curves(&b, name, target, map);
            for (ours, auc_ours, key) in
                [(morf, morf_auc, format!("{prefix}_morf")), (lerf, lerf_auc, format!("{prefix}_lerf"))]
            {
                let d = max_abs_diff(&ours, &want(&key));
                let auc_ref = r["auc"][&key].as_f64().unwrap() as f32;
                if prefix == "iba" {
                    worst = worst.max(d);
                    if d >= 1e-3 {
                        failures.push(format!("{name} {key}: max |Δ| per point {d}"));
                    }
                } else {
                    worst_gc = worst_gc.max(d);
                    worst_gc_auc = worst_gc_auc.max((auc_ours - auc_ref).abs());
                    if (auc_ours - auc_ref).abs() >= 0.01 {
                        failures.push(format!("{name} {key}: AUC {auc_ours} vs reference {auc_ref}"));
                    }
                }
            }
        }
        // our own IBA map (seed 0), scored the same way
        let ex = iba.explain_batch(&b, &[photo224(name)], Some(target), &mut RunControl::default()).unwrap();
        let (_, _, morf, lerf) = curves(&b, name, target, &ex[0].saliency);
        let auc = &r["auc"];
        let random = auc["random"].as_f64().unwrap();
        let ref_beats = auc["iba_lerf"].as_f64().unwrap() > random && auc["iba_morf"].as_f64().unwrap() < random;
        eprintln!(
            "{name:10} ours MoRF {morf:.3} LeRF {lerf:.3} | official IBA MoRF {:.3} LeRF {:.3} | random {random:.3}",
            auc["iba_morf"].as_f64().unwrap(),
            auc["iba_lerf"].as_f64().unwrap()
        );
        if ref_beats {
            assert!(
                (lerf as f64) > random && (morf as f64) < random,
                "{name}: the official IBA map beats random, ours does not (MoRF {morf}, LeRF {lerf}, random {random})"
            );
        }
        ours_gap += (lerf - morf) as f64 / 12.0;
        gc_gap += auc["gradcam_lerf_minus_morf"].as_f64().unwrap() / 12.0;
        ref_gap += auc["iba_lerf_minus_morf"].as_f64().unwrap() / 12.0;
    }
    eprintln!("IBA maps: worst curve point |Δ| vs curves.json {worst:.2e}");
    eprintln!("Grad-CAM maps: worst curve point |Δ| {worst_gc:.2e}, worst AUC |Δ| {worst_gc_auc:.2e}");
    assert!(failures.is_empty(), "curves differ from curves.json:\n{}", failures.join("\n"));
    eprintln!("mean LeRF − MoRF: ibex IBA {ours_gap:.3}, official IBA {ref_gap:.3}, Grad-CAM {gc_gap:.3}");
    assert!(ours_gap > gc_gap, "ours {ours_gap} should beat Grad-CAM's {gc_gap}");
}
