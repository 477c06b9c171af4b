//! Loader parity: our CLIP forward against the fixture's plain HF forward pass, and tokenizer
//! ids against HF's fast tokenizer.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use ibex::models::clip::ClipBundle;

fn bundle() -> ClipBundle {
    ClipBundle::load(&fmnist_model(), &Device::Cpu).unwrap()
}

#[test]
fn hidden_states_and_embeddings_match_reference() {
    let b = bundle();
    let m = &b.model;
    let mut worst = 0f32;
    for case in 0..5 {
        let r = load_st(&format!("forward/case{case:03}.safetensors"));
        let pixels = &r["pixel_values"];
        let ids = ids(&r["input_ids"]);
        let vh = m.vision.hidden_states(&m.embed_image(pixels).unwrap()).unwrap();
        let th = m.text.hidden_states(&m.embed_text(&ids).unwrap()).unwrap();
        let rv = &r["vision_hidden_states"];
        let rt = &r["text_hidden_states"];
        assert_eq!(vh.len(), rv.dim(0).unwrap());
        for (k, h) in vh.iter().enumerate() {
            let d = max_abs_diff(&vec_f32(h), &vec_f32(&rv.get(k).unwrap()));
            assert!(d < 1e-4, "case {case} vision hidden state {k}: max |diff| {d}");
            worst = worst.max(d);
        }
        for (k, h) in th.iter().enumerate() {
            let d = max_abs_diff(&vec_f32(h), &vec_f32(&rt.get(k).unwrap()));
            assert!(d < 1e-4, "case {case} text hidden state {k}: max |diff| {d}");
            worst = worst.max(d);
        }
        let ie = m.image_features(pixels).unwrap();
        let te = m.text_features(&ids).unwrap();
        for (ours, key) in [(&ie, "image_embeds"), (&te, "text_embeds")] {
            let (a, b) = (vec_f32(ours), vec_f32(&r[key]));
            let d = max_abs_diff(&a, &b);
            assert!(d < 1e-4, "case {case} {key}: max |diff| {d}");
            let cos = cosine(&a, &b);
            assert!(cos >= 0.99999, "case {case} {key}: cosine {cos}");
            worst = worst.max(d);
        }
        let cos = cosine(&vec_f32(&ie), &vec_f32(&te));
        let want = vec_f32(&r["cosine"])[0];
        assert!((cos - want as f64).abs() < 1e-5, "case {case}: cosine {cos} vs {want}");
    }
    eprintln!("loader parity: worst max |diff| over all hidden states and embeddings = {worst:.2e}");
}

#[test]
fn prompt_embeddings_match_reference() {
    let b = bundle();
    let meta = json("forward/meta.json");
    let want = load_st("forward/prompts.safetensors")["text_embeds"].clone();
    for (i, p) in meta["prompts"].as_array().unwrap().iter().enumerate() {
        let ids = b.tokenizer.ids(p["text"].as_str().unwrap()).unwrap();
        let ref_ids: Vec<u32> = p["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, ref_ids, "prompt {i}");
        let te = b.model.text_features(&ids).unwrap();
        let d = max_abs_diff(&vec_f32(&te), &vec_f32(&want.get(i).unwrap()));
        assert!(d < 1e-4, "prompt {i}: {d}");
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn tokenizer_matches_hf_fast_ids() {
    let b = bundle();
    let cases = json("tokenizer_cases.json");
    let mut checked = 0;
    for c in cases.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["hf_fast_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        if text.trim().is_empty() {
            // ibex refuses empty captions (nothing to explain) with a clear error
            let e = b.tokenizer.encode(text).unwrap_err().to_string();
            assert!(e.contains("empty"), "{e}");
            assert_eq!(want, vec![49406, 49407]);
            continue;
        }
        let got = b.tokenizer.ids(text).unwrap();
        assert_eq!(got, want, "caption {text:?}");
        checked += 1;
    }
    assert!(checked >= 190, "only {checked} captions checked");
    let bench = json("bench/cases.json");
    for c in bench.as_array().unwrap() {
        let want: Vec<u32> = c["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(b.tokenizer.ids(c["caption"].as_str().unwrap()).unwrap(), want);
    }
}

#[test]
fn token_strings_are_readable_and_long_captions_are_refused() {
    let b = bundle();
    let t = b.tokenizer.encode("there is a coat").unwrap();
    assert_eq!(t.text, vec!["<|startoftext|>", "there", "is", "a", "coat", "<|endoftext|>"]);
    let long = "a photo of a coat ".repeat(20);
    let e = b.tokenizer.encode(&long).unwrap_err().to_string();
    assert!(e.contains("at most 77"), "{e}");
    let _ = Tensor::new(&[0f32], &Device::Cpu).unwrap();
}
