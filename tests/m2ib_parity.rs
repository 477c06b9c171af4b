//! Deterministic parity with the official M2IB implementation: the same noise bank, step by
//! step (fixtures/clip/m2ib_deterministic, tolerances from its README).

mod common;
use candle_core::{Device, D};
use common::*;
use ibex::explain::m2ib::{M2ib, M2ibConfig, Noise};
use ibex::imaging::heatmap::Heatmap;
use ibex::models::clip::ClipBundle;
use ibex::RunControl;

fn check_terms(
    label: &str,
    ours: &[ibex::bottleneck::StepTrace],
    r: &std::collections::HashMap<String, candle_core::Tensor>,
    m: &str,
) -> f64 {
    let mut worst = 0f64;
    for (term, get) in [
        ("compression", (|s: &ibex::bottleneck::StepTrace| s.compression) as fn(&_) -> f32),
        ("fitting", |s| s.fitting),
        ("loss", |s| s.loss),
    ] {
        let want = vec_f32(&r[&format!("{m}.{term}")]);
        assert_eq!(want.len(), ours.len());
        for (k, (o, w)) in ours.iter().map(get).zip(&want).enumerate() {
            let rel = ((o - w).abs() / w.abs().max(1e-6)) as f64;
            assert!(rel < 1e-4, "{label} {m} step {k} {term}: ours {o} reference {w} (relative {rel:.2e})");
            worst = worst.max(rel);
        }
    }
    worst
}

#[test]
fn deterministic_parity_with_official_m2ib() {
    let bundle = ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap();
    let cfg = M2ibConfig::default().merged(&serde_json::json!({"layer": 1, "beta": 1.0})).unwrap();
    let m2ib = M2ib::new(cfg).unwrap();
    let (mut worst_term, mut worst_map, mut min_pearson, mut worst_frac, mut worst_elem) =
        (0f64, 0f32, 1f64, 1f64, 0f32);
    let files: Vec<String> =
        (0..5).map(|i| format!("case{i:03}")).chain((0..3).map(|i| format!("long{i:03}"))).collect();
    for f in &files {
        let r = load_st(&format!("m2ib_deterministic/{f}.safetensors"));
        let ids = ids(&r["input_ids"]);
        let noise = Noise::Banks { vision: r["vision.noise"].clone(), text: r["text.noise"].clone() };
        let out = m2ib
            .explain_tensors(&bundle.model, &r["pixel_values"], &[ids], &noise, &mut RunControl::default())
            .unwrap()
            .remove(0);
        worst_term = worst_term.max(check_terms(f, &out.vision_trace, &r, "vision"));
        worst_term = worst_term.max(check_terms(f, &out.text_trace, &r, "text"));

        // raw capacity maps
        let vtok = vec_f32(&out.vision_capacity.sum(D::Minus1).unwrap());
        let ttok = vec_f32(&out.text_capacity.sum(D::Minus1).unwrap());
        for (ours, key) in [(&vtok, "vision.capacity_tokens"), (&ttok, "text.capacity_tokens")] {
            let p = pearson(ours, &vec_f32(&r[key]));
            assert!(p >= 0.9999, "{f} {key}: Pearson {p}");
            min_pearson = min_pearson.min(p);
        }
        for (ours, key) in [(&out.vision_capacity, "vision.capacity_full"), (&out.text_capacity, "text.capacity_full")]
        {
            let (a, b) = (vec_f32(ours), vec_f32(&r[key]));
            let p = pearson(&a, &b);
            assert!(p >= 0.9999, "{f} {key} Pearson {p}");
            // per element (token x channel): a flipped Adam step would show as an O(1) deviation
            worst_elem = worst_elem.max(max_abs_diff(&a, &b));
        }

        // normalised maps: image at 64x64, text per token
        let cap8 = Heatmap::new(8, 8, vtok[1..].to_vec()).unwrap();
        let hm = cap8.upsample_bilinear(64, 64).normalized().unwrap();
        let want = vec_f32(&r["vision.heatmap_64"]);
        let th = Heatmap::new(ttok.len() as u32, 1, ttok.clone()).unwrap().normalized().unwrap();
        let twant = vec_f32(&r["text.heatmap"]);
        for (ours, want, what) in [(&hm.data, &want, "image"), (&th.data, &twant, "text")] {
            let close = ours.iter().zip(want.iter()).filter(|(a, b)| (*a - *b).abs() <= 1e-3).count();
            let frac = close as f64 / want.len() as f64;
            let d = max_abs_diff(ours, want);
            eprintln!("{f} {what} map: max |diff| {d:.2e}, within 1e-3 on {:.2}%", frac * 100.0);
            assert!(frac >= 0.999, "{f} {what} map: only {:.3}% within 1e-3 (max diff {d})", frac * 100.0);
            worst_map = worst_map.max(d);
            worst_frac = worst_frac.min(frac);
        }
    }
    eprintln!(
        "deterministic parity over {} runs: worst per-step relative error {worst_term:.2e}, min Pearson {min_pearson:.7}, worst map deviation {worst_map:.2e}, min fraction within 1e-3 {:.3}%, worst per-element capacity deviation {worst_elem:.2e} nats",
        files.len(),
        worst_frac * 100.0
    );
}

#[test]
fn samples_per_pass_bounds_memory_without_changing_results() {
    let bundle = ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap();
    let r = load_st("m2ib_deterministic/case000.safetensors");
    let ids = ids(&r["input_ids"]);
    let noise = Noise::Banks { vision: r["vision.noise"].clone(), text: r["text.noise"].clone() };
    let run = |per_pass: usize| {
        let cfg = M2ibConfig::default()
            .merged(&serde_json::json!({"layer": 1, "beta": 1.0, "samples_per_pass": per_pass}))
            .unwrap();
        M2ib::new(cfg)
            .unwrap()
            .explain_tensors(
                &bundle.model,
                &r["pixel_values"],
                std::slice::from_ref(&ids),
                &noise,
                &mut RunControl::default(),
            )
            .unwrap()
            .remove(0)
    };
    let (all, chunked) = (run(0), run(3));
    for (a, b) in [(&all.vision_capacity, &chunked.vision_capacity), (&all.text_capacity, &chunked.text_capacity)] {
        let d = max_abs_diff(&vec_f32(a), &vec_f32(b));
        assert!(d < 1e-4, "capacity differs by {d} nats with 3 samples per pass");
    }
    for (a, b) in all.vision_trace.iter().zip(&chunked.vision_trace) {
        assert!((a.loss - b.loss).abs() < 1e-5 * a.loss.abs().max(1.0), "{a:?} vs {b:?}");
    }
}
