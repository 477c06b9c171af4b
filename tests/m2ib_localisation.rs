//! Localisation on the fixture benchmark (100 composites, the caption names one item): pointing
//! game and energy of our 64x64 image maps against the official implementation's figures.

mod common;
use candle_core::Device;
use common::*;
use ibex::explain::m2ib::{M2ib, M2ibConfig};
use ibex::imaging::image::RgbImage;
use ibex::models::clip::ClipBundle;
use ibex::RunControl;

fn cell_of(x: u32, y: u32) -> u64 {
    ((y >= 32) as u64) * 2 + (x >= 32) as u64
}

#[test]
fn pointing_and_energy_at_least_the_official_minus_two_points() {
    let bundle = ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap();
    let cases = json("bench/cases.json");
    let official = json("bench/official.json");
    let (mut hits, mut energy, mut n) = (0usize, 0f64, 0usize);
    for (i, c) in cases.as_array().unwrap().iter().enumerate() {
        let img = RgbImage::load(&clip_dir().join("bench").join(c["file"].as_str().unwrap())).unwrap();
        let cfg = M2ibConfig::default().merged(&serde_json::json!({"layer": 1, "beta": 1.0, "seed": i})).unwrap();
        let ex = M2ib::new(cfg)
            .unwrap()
            .explain(&bundle, &img, &[c["caption"].as_str().unwrap()], &mut RunControl::default())
            .unwrap();
        let map = &ex.captions[0].image_map;
        assert_eq!((map.width, map.height), (64, 64));
        let target = c["target_cell"].as_u64().unwrap();
        let (x, y) = map.argmax();
        hits += (cell_of(x, y) == target) as usize;
        let total: f64 = map.data.iter().map(|&v| v as f64).sum();
        let inside: f64 = map
            .data
            .iter()
            .enumerate()
            .filter(|(k, _)| cell_of(*k as u32 % 64, *k as u32 / 64) == target)
            .map(|(_, &v)| v as f64)
            .sum();
        energy += inside / total;
        n += 1;
    }
    let pointing = hits as f64 / n as f64;
    let energy = energy / n as f64;
    let ref_p = official["chosen_summary"]["map_64"]["pointing"].as_f64().unwrap();
    let ref_e = official["chosen_summary"]["map_64"]["energy"].as_f64().unwrap();
    eprintln!(
        "localisation over {n} cases: pointing {:.1}% (official {:.1}%), energy {:.1}% (official {:.1}%)",
        pointing * 100.0,
        ref_p * 100.0,
        energy * 100.0,
        ref_e * 100.0
    );
    assert_eq!(n, 100);
    assert!(pointing >= ref_p - 0.02, "pointing {pointing} < official {ref_p} - 0.02");
    assert!(energy >= ref_e - 0.02, "energy {energy} < official {ref_e} - 0.02");
}
