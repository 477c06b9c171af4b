//! The metrics against the IBA / Grad-CAM reference figures
//! (`../shared/fixtures/cnn/iba-reference`): pointing game (strict and 15-px tolerance) and
//! energy on the stored maps, and the AUC rule on the stored deletion / LeRF curves.

mod common;

use candle_core::{Device, Tensor};

use ibex::imaging::heatmap::Heatmap;
use ibex::metrics::{auc, energy_in_boxes, pointing_hit};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// A little-endian F32 tensor: `(shape, values)`.
fn f32_tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let values = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (t.shape().to_vec(), values)
}

fn boxes_of(photo: &Value, target: &str) -> Vec<[f32; 4]> {
    photo["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["label"].as_str() == Some(target))
        .map(|o| {
            let b: Vec<f32> = o["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

#[test]
fn pointing_game_matches_the_reference() {
    let photos = common::json("../images/photos/photos.json");
    let reference = common::json("../cnn/iba-reference/reference.json");
    let mut counts = [[0usize; 2]; 2]; // [iba, gradcam] x [strict, tol15]
    let mut n = 0;
    for (name, photo) in photos["photos"].as_object().unwrap() {
        let Some(target) = photo["target_object"].as_str() else { continue };
        let boxes = boxes_of(photo, target);
        assert!(!boxes.is_empty(), "{name}: no box labelled {target:?}");
        let path = common::fixtures().join("cnn/iba-reference").join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).unwrap();

        let (shape, gradcam) = f32_tensor(&st, "gradcam");
        assert_eq!(shape, [224, 224]);
        let (shape, saliency) = f32_tensor(&st, "saliency_bits_per_pixel");
        assert_eq!(shape, [8, 224, 224]);
        // the reference's seed mean (numpy float32 `mean(axis=0)`)
        let iba_mean = common::numpy_mean0(&Tensor::from_vec(saliency, (8, 224 * 224), &Device::Cpu).unwrap());

        let expected = &reference["results"][name.as_str()]["pointing"];
        assert_eq!(expected["target_object"].as_str(), Some(target), "{name}");
        for (m, (key, data)) in [("iba_mean_map", iba_mean), ("gradcam", gradcam)].into_iter().enumerate() {
            let map = Heatmap::new(224, 224, data).unwrap();
            let want = &expected[key];
            let (x, y) = map.argmax();
            let want_xy: Vec<u64> = want["argmax_xy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!([x as u64, y as u64], want_xy[..], "{name} {key}: argmax");
            let hit = pointing_hit(&map, &boxes, 0.0);
            let hit15 = pointing_hit(&map, &boxes, 15.0);
            assert_eq!(hit, want["hit"].as_bool().unwrap(), "{name} {key}: hit");
            assert_eq!(hit15, want["hit_tol15"].as_bool().unwrap(), "{name} {key}: hit_tol15");
            let energy = energy_in_boxes(&map, &boxes);
            let want_energy = want["mass_in_box"].as_f64().unwrap();
            assert!((f64::from(energy) - want_energy).abs() < 1e-5, "{name} {key}: energy {energy} vs {want_energy}");
            counts[m][0] += hit as usize;
            counts[m][1] += hit15 as usize;
        }
        n += 1;
    }
    let agg = &reference["aggregate"]["pointing"];
    assert_eq!(n as u64, agg["n_images"].as_u64().unwrap());
    assert_eq!(counts[0][0] as u64, agg["iba_hits"].as_u64().unwrap());
    assert_eq!(counts[0][1] as u64, agg["iba_hits_tol15"].as_u64().unwrap());
    assert_eq!(counts[1][0] as u64, agg["gradcam_hits"].as_u64().unwrap());
    assert_eq!(counts[1][1] as u64, agg["gradcam_hits_tol15"].as_u64().unwrap());
    assert_eq!((n, counts), (8, [[8, 8], [4, 5]]));
}

#[test]
fn auc_matches_the_reference_curves() {
    let curves = common::json("../cnn/iba-reference/curves.json");
    let reference = common::json("../cnn/iba-reference/reference.json");
    let mut checked = 0;
    for (name, per_image) in curves["curves"].as_object().unwrap() {
        for (kind, values) in per_image.as_object().unwrap() {
            let y: Vec<f32> = values.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(y.len(), 51, "{name} {kind}");
            let want = reference["results"][name.as_str()]["auc"][kind.as_str()].as_f64().unwrap();
            // Curves are stored to 6 decimals and AUCs to 5.
            let got = f64::from(auc(&y));
            assert!((got - want).abs() <= 6e-6, "{name} {kind}: auc {got} vs reference {want}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12 * 5);
}
