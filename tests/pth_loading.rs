//! A real PyTorch checkpoint (`pytorch_model.bin`, written by torch.save through transformers)
//! loads through candle's pickle reader and matches HF's own forward pass (tests/data, made by
//! tests/data/make_tiny_pth.py: GELU activations, legacy argmax pooling).

mod common;
use candle_core::Device;
use common::*;
use ibex::models::clip::{ClipConfig, ClipModel};
use ibex::models::weights::Weights;
use std::path::Path;

#[test]
fn pytorch_checkpoint_matches_hf_forward() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-clip-pth");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::load(&dir.join("pytorch_model.bin"), &Device::Cpu).unwrap();
    let m = ClipModel::from_weights(cfg, &w, &Device::Cpu).unwrap();
    let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids = ids(&r["input_ids"]);
    assert_eq!(m.text_pool_index(&ids), 0, "HF 4.30 pools the argmax of the ids");
    let vh = m.vision.hidden_states(&m.embed_image(&r["pixel_values"]).unwrap()).unwrap();
    let th = m.text.hidden_states(&m.embed_text(&ids).unwrap()).unwrap();
    for (ours, key) in [(&vh, "vision_hidden_states"), (&th, "text_hidden_states")] {
        for (k, h) in ours.iter().enumerate() {
            let d = max_abs_diff(&vec_f32(h), &vec_f32(&r[key].get(k).unwrap()));
            assert!(d < 1e-5, "{key}[{k}]: {d}");
        }
    }
    for (ours, key) in [
        (m.image_features(&r["pixel_values"]).unwrap(), "image_embeds"),
        (m.text_features(&ids).unwrap(), "text_embeds"),
    ] {
        let d = max_abs_diff(&vec_f32(&ours), &vec_f32(&r[key]));
        assert!(d < 1e-5, "{key}: {d}");
    }
    // the same checkpoint as a model directory (bin instead of safetensors) loads end to end
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    // a word-level tokenizer for the model's 1000 ids (CLIP's own has 49408: rejected)
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..1000).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    let tok = serde_json::json!({"version": "1.0", "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}});
    std::fs::write(tmp.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let model = ibex::models::Model::load(Some("clip"), tmp.path(), &Device::Cpu).unwrap();
    let ibex::models::Model::Clip(b) = model else { panic!("expected a CLIP model") };
    assert_eq!(
        b.preprocessor.crop_width, 32,
        "CLIP defaults for the vision tower's size without preprocessor_config.json"
    );
    // a corrupt pickle is a format error naming the file
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"PK\x03\x04 not really a zip").unwrap();
    let e = ibex::models::Model::load(Some("clip"), tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("pytorch_model.bin"), "{e}");
}
