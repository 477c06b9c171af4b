//! Gradient-free occlusion on CLIP similarity, beside M2IB on the fixture's localisation
//! benchmark (100 composites, the caption names the item in one quadrant): 8×8 black patches
//! reproduce the reference's occlusion pointing (75 %), which beats M2IB's (56 %). And M2IB's
//! average drop / increase in confidence with the map applied to the whole image, against the
//! same map turned by 180° (same values, pointing at the opposite quadrant).

mod common;
use candle_core::Device;
use common::*;
use ibex::explain::{evaluation, Method, Target};
use ibex::imaging::heatmap::Heatmap;
use ibex::imaging::image::RgbImage;
use ibex::models::Model;
use ibex::RunControl;

fn cell_of(x: u32, y: u32) -> u64 {
    ((y >= 32) as u64) * 2 + (x >= 32) as u64
}

#[test]
fn occlusion_localises_like_the_reference_and_m2ib_keeps_confidence() {
    let model = Model::load(Some("clip"), &fmnist_model(), &Device::Cpu).unwrap();
    let Model::Clip(bundle) = &model else { unreachable!() };
    let cases = json("bench/cases.json");
    let official = json("bench/official.json");
    let occ = Method::create(
        &model,
        "occlusion",
        &serde_json::json!({"window": 8, "stride": 8, "fill_rgb": [0, 0, 0], "batch": 64}),
    )
    .unwrap();
    let (mut occ_hits, mut n) = (0usize, 0usize);
    let (mut drop_map, mut drop_inv, mut inc_map) = (0f64, 0f64, 0usize);
    for (i, c) in cases.as_array().unwrap().iter().enumerate() {
        let img = RgbImage::load(&clip_dir().join("bench").join(c["file"].as_str().unwrap())).unwrap();
        let target = Target { class_index: None, texts: vec![c["caption"].as_str().unwrap().to_string()] };
        let ex = occ.explain(&model, &img, &target, &mut RunControl::default()).unwrap();
        let map = &ex.maps[0].map;
        assert_eq!((map.width, map.height, ex.maps[0].units.as_str()), (64, 64, "similarity_drop"));
        let (x, y) = map.argmax();
        occ_hits += (cell_of(x, y) == c["target_cell"].as_u64().unwrap()) as usize;

        // M2IB at the fixture's setting, and its confidence with the map and the inverted map
        let m2ib = Method::create(&model, "m2ib", &serde_json::json!({"layer": 1, "beta": 1.0, "seed": i})).unwrap();
        let mut ex = m2ib.explain(&model, &img, &target, &mut RunControl::default()).unwrap();
        let c_map = evaluation::clip_confidence(bundle, &ex, &img, 0).unwrap();
        let m = &mut ex.maps[0].map;
        *m = Heatmap::new(m.width, m.height, m.data.iter().rev().copied().collect()).unwrap();
        let c_inv = evaluation::clip_confidence(bundle, &ex, &img, 0).unwrap();
        assert!((0.0..=1.0).contains(&c_map.drop) && c_map.full == c_inv.full);
        drop_map += c_map.drop as f64;
        drop_inv += c_inv.drop as f64;
        inc_map += c_map.increase as usize;
        n += 1;
    }
    let occ_pointing = occ_hits as f64 / n as f64;
    let ref_occ = official["baselines_224"]["patch_occlusion"]["hit_rate"].as_f64().unwrap();
    let ref_m2ib = official["chosen_summary"]["map_64"]["pointing"].as_f64().unwrap();
    let (drop_map, drop_inv) = (100.0 * drop_map / n as f64, 100.0 * drop_inv / n as f64);
    eprintln!(
        "CLIP occlusion pointing {:.1} % (reference occlusion {:.1} %, official M2IB {:.1} %); M2IB average drop \
         {drop_map:.1} % (the map turned 180°: {drop_inv:.1} %), increase in confidence {:.1} %",
        100.0 * occ_pointing,
        100.0 * ref_occ,
        100.0 * ref_m2ib,
        100.0 * inc_map as f64 / n as f64
    );
    assert_eq!(n, 100);
    assert!((occ_pointing - ref_occ).abs() <= 0.03, "occlusion pointing {occ_pointing} vs reference {ref_occ}");
    assert!(occ_pointing > ref_m2ib, "occlusion out-localises M2IB on this model");
    assert!(
        drop_map < drop_inv,
        "M2IB's map keeps more of the similarity than the turned map: {drop_map} vs {drop_inv}"
    );
}
