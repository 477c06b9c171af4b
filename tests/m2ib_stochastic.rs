//! Stochastic parity: with our own RNG, our maps agree with the official implementation's maps
//! (seeds 0-7) about as well as the official seeds agree with each other.

mod common;
use candle_core::{Device, D};
use common::*;
use ibex::explain::m2ib::{M2ib, M2ibConfig, Noise};
use ibex::models::clip::ClipBundle;
use ibex::RunControl;

#[test]
fn maps_agree_with_reference_seeds_as_well_as_they_agree_with_each_other() {
    let bundle = ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap();
    let meta = json("m2ib_stochastic/meta.json");
    for (case, m) in meta["cases"].as_array().unwrap().iter().enumerate() {
        let r = load_st(&format!("m2ib_stochastic/case{case:03}.safetensors"));
        let ids = ids(&r["input_ids"]);
        let ref_v = &r["vision.capacity_8x8"];
        let ref_t = &r["text.capacity_tokens"];
        let (mut sv, mut st) = (Vec::new(), Vec::new());
        for seed in 0..8u64 {
            let cfg =
                M2ibConfig::default().merged(&serde_json::json!({"layer": 1, "beta": 1.0, "seed": seed})).unwrap();
            let out = M2ib::new(cfg)
                .unwrap()
                .explain_tensors(
                    &bundle.model,
                    &r["pixel_values"],
                    std::slice::from_ref(&ids),
                    &Noise::Seeded,
                    &mut RunControl::default(),
                )
                .unwrap()
                .remove(0);
            let v = vec_f32(&out.vision_capacity.sum(D::Minus1).unwrap());
            let t = vec_f32(&out.text_capacity.sum(D::Minus1).unwrap());
            for k in 0..8 {
                sv.push(spearman(&v[1..], &vec_f32(&ref_v.get(k).unwrap())));
                let rt = vec_f32(&ref_t.get(k).unwrap());
                let n = t.len();
                st.push(spearman(&t[1..n - 1], &rt[1..n - 1]));
            }
        }
        let (ours_v, ours_t) = (median(sv), median(st));
        let ref_vv = m["ref_vs_ref_spearman_vision_8x8"]["median"].as_f64().unwrap();
        let ref_tt = m["ref_vs_ref_spearman_text_inner"]["median"].as_f64().unwrap();
        eprintln!("case {case}: vision Spearman ours-vs-ref median {ours_v:.4} (ref-vs-ref {ref_vv:.4}); text inner {ours_t:.4} (ref {ref_tt:.4})");
        assert!(ours_v >= ref_vv - 0.02, "case {case}: vision median Spearman {ours_v} < {ref_vv} - 0.02");
        assert!(ours_t >= ref_tt - 0.02, "case {case}: text median Spearman {ours_t} < {ref_tt} - 0.02");
    }
}
