//! Any HF CLIP config works: ViT-B/32, B/16, L/14 and L/14@336 geometries (tiny widths, random
//! weights, real loading path), with the token grid and default layers derived from the config.

mod common;
use candle_core::{DType, Device};
use common::*;
use ibex::explain::m2ib::{default_layer, M2ib, M2ibConfig};
use ibex::imaging::image::RgbImage;
use ibex::models::clip::{random::random_weights, ClipBundle, ClipConfig};
use ibex::RunControl;

fn write_model(dir: &std::path::Path, image: usize, patch: usize, vlayers: usize, tlayers: usize) {
    let cfg = format!(
        r#"{{"model_type":"clip","projection_dim":16,
        "text_config":{{"hidden_size":32,"intermediate_size":64,"num_hidden_layers":{tlayers},"num_attention_heads":2,"max_position_embeddings":77}},
        "vision_config":{{"hidden_size":48,"intermediate_size":96,"num_hidden_layers":{vlayers},"num_attention_heads":4,"image_size":{image},"patch_size":{patch}}}}}"#
    );
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    let c = ClipConfig::from_json(&cfg).unwrap();
    let w = random_weights(&c, 0.05, 1, DType::F32, &Device::Cpu).unwrap();
    w.save(&dir.join("model.safetensors")).unwrap();
    std::fs::copy(fmnist_model().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let pp = std::fs::read_to_string(fmnist_model().join("preprocessor_config.json"))
        .unwrap()
        .replace("\"height\": 64", &format!("\"height\": {image}"))
        .replace("\"width\": 64", &format!("\"width\": {image}"))
        .replace("\"shortest_edge\": 64", &format!("\"shortest_edge\": {image}"));
    std::fs::write(dir.join("preprocessor_config.json"), pp).unwrap();
}

#[test]
fn vit_geometries_load_and_explain() {
    // (name, image size, patch, vision layers, text layers, grid)
    for (name, image, patch, vl, tl, grid) in [
        ("ViT-B/32", 224, 32, 12, 12, 7),
        ("ViT-B/16", 224, 16, 12, 12, 14),
        ("ViT-L/14", 224, 14, 24, 12, 16),
        ("ViT-L/14@336", 336, 14, 24, 12, 24),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), image, patch, vl, tl);
        let b = ClipBundle::load(tmp.path(), &Device::Cpu).unwrap();
        assert_eq!(b.model.config.vision.grid(), grid, "{name}");
        assert_eq!(b.model.vision.depth(), vl);
        let cfg = M2ibConfig::default().merged(&serde_json::json!({"steps": 2, "samples": 2})).unwrap();
        let (lv, lt) = cfg.resolve_layers(&b.model).unwrap();
        assert_eq!((lv, lt), (default_layer(vl), default_layer(tl)));
        // a non-square photo-sized input goes through resize + centre crop
        let img = RgbImage::new(300, 200, (0..300 * 200 * 3).map(|i| (i % 251) as f32).collect(), true).unwrap();
        let ex = M2ib::new(cfg).unwrap().explain(&b, &img, &["a photo of a dog"], &mut RunControl::default()).unwrap();
        let c = &ex.captions[0];
        assert_eq!((c.image_capacity.width, c.image_capacity.height), (grid as u32, grid as u32), "{name}");
        assert_eq!((c.image_map.width, c.image_map.height), (image as u32, image as u32), "{name}");
        // 300x200 -> short edge 200 becomes `image`; the crop keeps the middle 200x200 of the original
        let r = ex.source_region;
        assert!(
            (r[0] - 50.0).abs() < 0.5 && r[1].abs() < 1e-3 && (r[2] - 250.0).abs() < 0.5 && (r[3] - 200.0).abs() < 1e-3,
            "{name}: {r:?}"
        );
        assert_eq!(c.text_scores.len(), 7);
        assert!(c.image_capacity.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
    assert_eq!(
        (default_layer(12), default_layer(24), default_layer(6), default_layer(4), default_layer(1)),
        (9, 19, 4, 2, 0)
    );
}
