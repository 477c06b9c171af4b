//! open_clip, SigLIP and BiomedCLIP: parity with the reference packages (open_clip_torch,
//! transformers, timm) on small random-weight models in each family's real on-disk layout
//! (`tests/data/vlm`, made by `tools/make_vlm_fixtures.py`): hidden states after every layer
//! and both embeddings within 1e-4, tokenizer ids identical on 200 captions, finite-difference
//! checks of every new layer kind, M2IB end to end, and clear errors for bad checkpoints.

mod common;
use candle_core::{DType, Device, Tensor, D};
use common::*;
use ibex::bottleneck::Objective;
use ibex::explain::m2ib::{M2ib, M2ibConfig};
use ibex::imaging::image::RgbImage;
use ibex::models::clip::{openclip, siglip, ClipBundle, ClipModel, Tower};
use ibex::models::weights::Weights;
use ibex::RunControl;
use std::path::{Path, PathBuf};

fn vlm(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vlm").join(name)
}

/// A family's model directory as its hub repository has it. The open_clip fixture shares the
/// CLIP tokenizer of the fmnist-clip model (too large to commit twice), copied in beside it.
fn model_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(vlm(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    if name == "openclip" {
        std::fs::copy(fmnist_model().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    }
    (tmp, dir)
}

fn reference(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(vlm(name).join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

const FAMILIES: [(&str, &str); 3] = [("openclip", "open_clip"), ("siglip", "siglip"), ("biomedclip", "biomedclip")];

#[test]
fn hidden_states_and_embeddings_match_the_reference_packages() {
    for (name, kind) in FAMILIES {
        let (_tmp, dir) = model_dir(name);
        let b = ClipBundle::load(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(b.model.config.family.kind(), kind);
        let r = reference(name);
        let m = &b.model;
        let ids = ids(&r["input_ids"]);
        let pv = &r["pixel_values"];
        let mut worst = 0f32;
        for (tower, emb, refs) in [
            (&m.vision, m.embed_image(pv).unwrap(), &r["vision_hidden_states"]),
            (&m.text, m.embed_text(&ids).unwrap(), &r["text_hidden_states"]),
        ] {
            let hs = tower.hidden_states(&emb).unwrap();
            assert_eq!(hs.len(), refs.dim(0).unwrap(), "{name}: number of hidden states");
            for (k, h) in hs.iter().enumerate() {
                let e = max_abs(h, &refs.get(k).unwrap());
                assert!(e < 1e-4, "{name} {:?} hidden state {k}: max |diff| {e}", tower.modality);
                worst = worst.max(e);
            }
        }
        let ei = max_abs(&m.image_features(pv).unwrap(), &r["image_embeds"]);
        let et = max_abs(&m.text_features(&ids).unwrap(), &r["text_embeds"]);
        assert!(ei < 1e-4 && et < 1e-4, "{name}: image embedding {ei}, text embedding {et}");
        eprintln!("{name}: hidden states max |diff| {worst:.2e}, image embedding {ei:.2e}, text embedding {et:.2e}");
        // the tokenizer gives the reference run's ids for its caption (SigLIP: padded to 64)
        let caption = json_file(&vlm(name).join("meta.json"))["caption"].as_str().unwrap().to_string();
        assert_eq!(b.tokenizer.ids(&caption).unwrap(), ids, "{name}: ids of the reference caption");
    }
}

fn json_file(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn tokenizers_match_the_reference_ids_on_200_captions() {
    for (name, _) in FAMILIES {
        let (_tmp, dir) = model_dir(name);
        let b = ClipBundle::load(&dir, &Device::Cpu).unwrap();
        let cases = json_file(&vlm(name).join("tokenizer_cases.json"));
        let cases = cases.as_array().unwrap();
        assert_eq!(cases.len(), 200);
        let mut bad = Vec::new();
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = b.tokenizer.raw_ids(text).unwrap();
            if got != want {
                bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(bad.is_empty(), "{name}: {} of 200 differ:\n{}", bad.len(), bad.join("\n"));
    }
}

/// The checkpoint's tensors in float64 (for finite differences).
fn weights_f64(path: &Path) -> Weights {
    let w = Weights::load(path, &Device::Cpu).unwrap();
    let names: Vec<String> = w.names().map(str::to_string).collect();
    let map = names
        .into_iter()
        .map(|n| {
            let s = w.shape(&n).unwrap().to_vec();
            let t = w.get(&n, &s).unwrap().to_dtype(DType::F64).unwrap();
            (n, t)
        })
        .collect();
    Weights::from_tensors(map)
}

fn f64_model(name: &str) -> ClipModel {
    let dir = vlm(name);
    if name == "siglip" {
        let (cfg, _) = siglip::config_from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        siglip::from_weights(cfg, &weights_f64(&dir.join("model.safetensors")), &Device::Cpu).unwrap()
    } else {
        let cfg = openclip::OpenClipConfig::from_file(&dir.join("open_clip_config.json")).unwrap();
        let file = if name == "openclip" { "open_clip_model.safetensors" } else { "open_clip_pytorch_model.bin" };
        let mut w = weights_f64(&dir.join(file));
        openclip::load_model(&cfg, &dir, &mut w, &Device::Cpu).unwrap()
    }
}

struct Probe<'a> {
    tower: &'a Tower,
    layer: usize,
    pool: usize,
    w: Tensor,
}

impl Probe<'_> {
    fn fit(&self, z: &Tensor) -> f64 {
        let e = self.tower.suffix_forward(self.layer, z, self.pool).unwrap().0;
        (e * &self.w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    }
}

impl Objective for Probe<'_> {
    fn evaluate(&self, z: &Tensor, grad: bool) -> ibex::Result<(Vec<f32>, Option<Tensor>)> {
        let (e, tape) = self.tower.suffix_forward(self.layer, z, self.pool)?;
        let fits = (&e * &self.w)?.sum(D::Minus1)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let dz = if grad { Some(self.tower.suffix_backward(self.layer, &tape, &self.w)?) } else { None };
        Ok((fits, dz))
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.iter().product::<usize>()).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Post-LayerNorm BERT blocks, the BERT-side MLP projection, SigLIP's attention-pooling head,
/// bidirectional last-token pooling and the timm / open_clip towers: the written-out backward
/// pass against central differences.
#[test]
fn new_layer_kinds_backward_matches_finite_differences() {
    for (name, _) in FAMILIES {
        let m = f64_model(name);
        for (tower, tokens, pools) in [
            (&m.vision, m.config.vision.num_tokens(), vec![0]),
            (&m.text, 9, if name == "biomedclip" { vec![0] } else { vec![8, 5] }),
        ] {
            let width = tower.layers[0].ln1.weight.dim(0).unwrap();
            for layer in 0..tower.depth() {
                for &pool in &pools {
                    let z = randn(&[2, tokens, width], 1);
                    let w = randn(&[2, m.config.projection_dim], 2);
                    let p = Probe { tower, layer, pool, w: w.clone() };
                    let g = p.evaluate(&z, true).unwrap().1.unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
                    let zf = z.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                    let h = 1e-5;
                    let mut nonzero = 0;
                    for i in (0..zf.len()).step_by(7) {
                        let at = |d: f64| {
                            let mut v = zf.clone();
                            v[i] += d;
                            p.fit(&Tensor::from_vec(v, z.shape(), &Device::Cpu).unwrap())
                        };
                        let fd = (at(h) - at(-h)) / (2.0 * h);
                        let err = (fd - g[i]).abs() / (1.0 + fd.abs());
                        assert!(
                            err < 1e-6,
                            "{name} {:?} layer {layer} pool {pool} coordinate {i}: fd {fd}, backward {}",
                            tower.modality,
                            g[i]
                        );
                        nonzero += (fd.abs() > 1e-6) as usize;
                    }
                    assert!(nonzero >= 2, "{name} {:?} layer {layer}: gradient is zero", tower.modality);
                }
            }
        }
    }
}

fn photo() -> RgbImage {
    let (w, h) = (48u32, 40u32);
    let data = (0..w * h * 3).map(|i| ((i * 37 + i / 97) % 256) as f32).collect();
    RgbImage::new(w, h, data, true).unwrap()
}

#[test]
fn m2ib_runs_end_to_end_on_every_family_seeded_and_reproducible() {
    for (name, _) in FAMILIES {
        let (_tmp, dir) = model_dir(name);
        let b = ClipBundle::load(&dir, &Device::Cpu).unwrap();
        let cfg = M2ibConfig::default().merged(&serde_json::json!({"steps": 3, "samples": 4, "seed": 5})).unwrap();
        let run = || {
            M2ib::new(cfg.clone())
                .unwrap()
                .explain(&b, &photo(), &["a photo of a bag"], &mut RunControl::default())
                .unwrap()
        };
        let (a, again) = (run(), run());
        let c = &a.captions[0];
        let s = b.model.config.vision.image_size as u32;
        let g = b.model.config.vision.grid() as u32;
        assert_eq!((c.image_map.width, c.image_map.height), (s, s), "{name}");
        assert_eq!((c.image_capacity.width, c.image_capacity.height), (g, g), "{name}");
        assert_eq!(c.text_scores.len(), c.tokens.ids.len(), "{name}");
        assert!(c.image_capacity.data.iter().chain(&c.text_capacity).all(|v| v.is_finite() && *v >= 0.0), "{name}");
        assert!(c.image_capacity.data.iter().any(|&v| v > 0.0) && c.text_capacity.iter().any(|&v| v > 0.0), "{name}");
        assert_eq!(c.image_capacity.data, again.captions[0].image_capacity.data, "{name}: same seed, same map");
        assert_eq!(c.text_capacity, again.captions[0].text_capacity, "{name}");
        if name == "siglip" {
            // padded to the context with </s>; every position is bottlenecked and reported
            assert_eq!(c.tokens.ids.len(), 64);
            assert_eq!(c.tokens.text.last().map(String::as_str), Some("</s>"));
        }
    }
}

fn load_err(dir: &Path) -> String {
    match ClipBundle::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    // the config and the tensors disagree: the error names the tensor
    let (_t1, dir) = model_dir("openclip");
    let p = dir.join("open_clip_config.json");
    let cfg = std::fs::read_to_string(&p).unwrap().replacen("\"width\": 64", "\"width\": 768", 1);
    std::fs::write(&p, cfg).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("visual.conv1.weight") && e.contains("768") && e.contains("disagree"), "{e}");

    // a tensor of the wrong shape
    let (_t2, dir) = model_dir("siglip");
    let p = dir.join("config.json");
    let cfg =
        std::fs::read_to_string(&p).unwrap().replacen("\"intermediate_size\": 64", "\"intermediate_size\": 65", 1);
    std::fs::write(&p, cfg).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("mlp.fc1.weight") && e.contains("65"), "{e}");

    // an unknown family
    let (_t3, dir) = model_dir("siglip");
    let p = dir.join("config.json");
    let cfg = std::fs::read_to_string(&p).unwrap().replacen("\"siglip\"", "\"blip\"", 1);
    std::fs::write(&p, cfg).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model_type 'blip'") && e.contains("siglip"), "{e}");
    let (_t4, dir) = model_dir("openclip");
    std::fs::write(
        dir.join("open_clip_config.json"),
        r#"{"model_cfg": {"vision_cfg": {"timm_model_name": "convnext_tiny"}, "text_cfg": {}}}"#,
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(e.contains("timm") && e.contains("supported"), "{e}");

    // a tokenizer that belongs to another model
    let (_t5, dir) = model_dir("siglip");
    std::fs::copy(fmnist_model().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("49408") && e.contains("1000") && e.contains("tokenizer"), "{e}");
    let (_t6, dir) = model_dir("biomedclip");
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    std::fs::write(dir.join("vocab.txt"), vocab.lines().take(600).collect::<Vec<_>>().join("\n")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("600") && e.contains("1000"), "{e}");

    // a corrupt spiece.model
    let (_t7, dir) = model_dir("siglip");
    std::fs::write(dir.join("spiece.model"), b"\x0a\xff\xff\xff\xff\x0f").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("spiece.model") && e.contains("SentencePiece"), "{e}");
    // a well-formed protobuf whose normaliser charsmap claims 2 GB: refused before any allocation
    let mut proto = Vec::new();
    for (piece, kind) in [("<unk>", 2u8), ("</s>", 3)] {
        let mut inner = vec![0x0a, piece.len() as u8];
        inner.extend(piece.as_bytes());
        inner.push(0x15);
        inner.extend(0f32.to_le_bytes());
        inner.extend([0x18, kind]);
        proto.extend([0x0a, inner.len() as u8]);
        proto.extend(inner);
    }
    proto.extend([0x1a, 10, 0x12, 8, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    std::fs::write(dir.join("spiece.model"), &proto).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("precompiled_charsmap") && e.contains("corrupt"), "{e}");

    // a checkpoint with a layer missing in the middle
    let (_t8, dir) = model_dir("openclip");
    let path = dir.join("open_clip_model.safetensors");
    let mut w = Weights::load(&path, &Device::Cpu).unwrap();
    let gone: Vec<String> =
        w.names().filter(|n| n.starts_with("visual.transformer.resblocks.1.")).map(String::from).collect();
    for n in &gone {
        w.remove(n);
    }
    w.save(&path).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("resblocks.2.") && e.contains("resblocks.1.") && e.contains("missing"), "{e}");

    // a caption that is empty once cleaned as SigLIP's tokenizer does
    let b = ClipBundle::load(&vlm("siglip"), &Device::Cpu).unwrap();
    let e = b.tokenizer.encode("... !?").unwrap_err().to_string();
    assert!(e.contains("empty once cleaned"), "{e}");
}

#[test]
fn every_family_through_the_cli_and_the_c_abi() {
    use ibex::ffi::explain::*;
    use ibex::ffi::image::*;
    use ibex::ffi::model::*;
    use ibex::ffi::options::*;
    use ibex::ffi::result::*;
    use ibex::ffi::status::*;
    use std::ffi::{CStr, CString};
    use std::ptr::{null, null_mut};
    let img = tempfile::tempdir().unwrap();
    let png = img.path().join("photo.png");
    photo().to_rgb8().save(&png).unwrap();
    for (name, kind) in FAMILIES {
        let (_tmp, dir) = model_dir(name);
        // CLI: M2IB with a JSON report
        let js = img.path().join(format!("{name}.json"));
        let (ok, out, err, _) = run_cli(&[
            "m2ib",
            "--model",
            dir.to_str().unwrap(),
            "--image",
            png.to_str().unwrap(),
            "--text",
            "a photo of a bag",
            "--steps",
            "2",
            "--samples",
            "2",
            "--json",
            js.to_str().unwrap(),
            "-q",
        ]);
        assert!(ok, "{name}: {out}\n{err}");
        let report = json_file(&js);
        let text = report.to_string();
        assert!(text.contains("a photo of a bag"), "{name}: {text:.300}");
        let (ok, out, err, _) = run_cli(&["info", "--model", dir.to_str().unwrap()]);
        assert!(ok && out.contains(kind), "{name}: {out}\n{err}");

        // C ABI: kind detected, M2IB maps finite
        let c = |s: &str| CString::new(s).unwrap();
        let msg =
            || unsafe { CStr::from_ptr(ibex::ffi::status::ibex_last_error_message()) }.to_string_lossy().into_owned();
        unsafe {
            let mut m = null_mut();
            assert_eq!(
                ibex_model_load(null(), c(dir.to_str().unwrap()).as_ptr(), null(), &mut m),
                IBEX_OK,
                "{}",
                msg()
            );
            let mut bytes = null_mut();
            assert_eq!(ibex_model_describe_json(m, &mut bytes), IBEX_OK);
            let mut p = null();
            let mut n = 0usize;
            assert_eq!(ibex::ffi::bytes::ibex_bytes_data(bytes, &mut p, &mut n), IBEX_OK);
            let d: serde_json::Value = serde_json::from_slice(std::slice::from_raw_parts(p, n)).unwrap();
            ibex::ffi::bytes::ibex_bytes_free(bytes);
            assert_eq!(d["kind"], kind, "{name}");
            let mut opts = null_mut();
            assert_eq!(ibex_options_from_json(c(r#"{"steps": 2, "samples": 2}"#).as_ptr(), &mut opts), IBEX_OK);
            let mut e = null_mut();
            assert_eq!(ibex_explainer_create(m, c("m2ib").as_ptr(), opts, &mut e), IBEX_OK, "{}", msg());
            ibex_options_free(opts);
            let mut image = null_mut();
            assert_eq!(ibex_image_load_file(c(png.to_str().unwrap()).as_ptr(), &mut image), IBEX_OK, "{}", msg());
            let mut view = std::mem::zeroed::<ibex_image_view>();
            view.struct_size = std::mem::size_of::<ibex_image_view>() as u32;
            assert_eq!(ibex_image_get_view(image, &mut view), IBEX_OK);
            let caption = c("a photo of a bag");
            let t = ibex_target {
                struct_size: std::mem::size_of::<ibex_target>() as u32,
                class_index: -1,
                text: caption.as_ptr(),
                texts: null(),
                text_count: 0,
            };
            let mut r = null_mut();
            assert_eq!(ibex_explain(e, &view, &t, null(), &mut r), IBEX_OK, "{name}: {}", msg());
            let mut count = 0u32;
            assert_eq!(ibex_result_map_count(r, &mut count), IBEX_OK);
            assert!(count >= 2, "{name}: {count} maps");
            for i in 0..count {
                let (mut p, mut n) = (null(), 0usize);
                assert_eq!(ibex_result_map_data(r, i, &mut p, &mut n), IBEX_OK);
                assert!(n > 0 && std::slice::from_raw_parts(p, n).iter().all(|v| v.is_finite()), "{name} map {i}");
            }
            ibex_result_free(r);
            ibex_image_free(image);
            ibex_explainer_free(e);
            ibex_model_free(m);
        }
    }
}
