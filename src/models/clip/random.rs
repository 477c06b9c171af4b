//! Random-weight dual encoders of any configuration (HF CLIP, SigLIP, BiomedCLIP-shaped
//! open_clip), for tests and benchmarks (shape checks, gradient checks, timing ViT-B-sized
//! models without downloading them).

use super::config::ClipConfig;
use crate::error::Result;
use crate::models::weights::Weights;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// Draws tensors N(center, std²) under a seed.
struct Gen {
    rng: ChaCha8Rng,
    normal: Normal<f64>,
    dtype: DType,
    device: Device,
    map: HashMap<String, Tensor>,
}

impl Gen {
    fn new(std: f64, seed: u64, dtype: DType, device: &Device) -> Self {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            normal: Normal::new(0.0f64, std).expect("std > 0"),
            dtype,
            device: device.clone(),
            map: HashMap::new(),
        }
    }

    fn put(&mut self, name: impl Into<String>, shape: &[usize], center: f64) -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|_| center + self.normal.sample(&mut self.rng)).collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&self.device)?;
        self.map.insert(name.into(), t);
        Ok(())
    }

    fn linear(&mut self, prefix: &str, inp: usize, out: usize, bias: bool) -> Result<()> {
        self.put(format!("{prefix}.weight"), &[out, inp], 0.0)?;
        if bias {
            self.put(format!("{prefix}.bias"), &[out], 0.0)?;
        }
        Ok(())
    }

    fn ln(&mut self, prefix: &str, d: usize) -> Result<()> {
        self.put(format!("{prefix}.weight"), &[d], 1.0)?;
        self.put(format!("{prefix}.bias"), &[d], 0.0)
    }

    /// HF `CLIPEncoderLayer` / `SiglipEncoderLayer` names.
    fn hf_layers(&mut self, prefix: &str, c: &super::config::TowerConfig) -> Result<()> {
        let d = c.hidden_size;
        for i in 0..c.num_hidden_layers {
            let l = format!("{prefix}.encoder.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                self.linear(&format!("{l}.self_attn.{proj}"), d, d, true)?;
            }
            self.ln(&format!("{l}.layer_norm1"), d)?;
            self.ln(&format!("{l}.layer_norm2"), d)?;
            self.linear(&format!("{l}.mlp.fc1"), d, c.intermediate_size, true)?;
            self.linear(&format!("{l}.mlp.fc2"), c.intermediate_size, d, true)?;
        }
        Ok(())
    }

    fn done(self) -> Weights {
        Weights::from_tensors(self.map)
    }
}

/// HF-named tensors for `config`, drawn from N(0, std²) (LayerNorm weights around 1), as
/// `dtype` on `device`.
pub fn random_weights(config: &ClipConfig, std: f64, seed: u64, dtype: DType, device: &Device) -> Result<Weights> {
    let mut g = Gen::new(std, seed, dtype, device);
    let v = &config.vision;
    let t = &config.text;
    let (dv, dt, p) = (v.tower.hidden_size, t.tower.hidden_size, config.projection_dim);
    g.put("vision_model.embeddings.patch_embedding.weight", &[dv, 3, v.patch_size, v.patch_size], 0.0)?;
    g.put("vision_model.embeddings.class_embedding", &[dv], 0.0)?;
    g.put("vision_model.embeddings.position_embedding.weight", &[v.num_tokens(), dv], 0.0)?;
    g.put("text_model.embeddings.token_embedding.weight", &[t.vocab_size, dt], 0.0)?;
    g.put("text_model.embeddings.position_embedding.weight", &[t.max_position_embeddings, dt], 0.0)?;
    // (the draw order of earlier versions, so a seed gives the same model)
    g.ln("vision_model.pre_layrnorm", dv)?;
    g.ln("vision_model.post_layernorm", dv)?;
    g.hf_layers("vision_model", &v.tower)?;
    g.ln("text_model.final_layer_norm", dt)?;
    g.hf_layers("text_model", &t.tower)?;
    g.linear("visual_projection", dv, p, false)?;
    g.linear("text_projection", dt, p, false)?;
    Ok(g.done())
}

/// HF `SiglipModel` tensors for `config` (see [`super::siglip::config_from_json`]).
pub fn random_siglip_weights(
    config: &ClipConfig,
    std: f64,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Weights> {
    let mut g = Gen::new(std, seed, dtype, device);
    let v = &config.vision;
    let t = &config.text;
    let (dv, dt, ps) = (v.tower.hidden_size, t.tower.hidden_size, v.patch_size);
    g.put("vision_model.embeddings.patch_embedding.weight", &[dv, 3, ps, ps], 0.0)?;
    g.put("vision_model.embeddings.patch_embedding.bias", &[dv], 0.0)?;
    g.put("vision_model.embeddings.position_embedding.weight", &[v.num_tokens(), dv], 0.0)?;
    g.hf_layers("vision_model", &v.tower)?;
    g.ln("vision_model.post_layernorm", dv)?;
    g.put("vision_model.head.probe", &[1, 1, dv], 0.0)?;
    g.put("vision_model.head.attention.in_proj_weight", &[3 * dv, dv], 0.0)?;
    g.put("vision_model.head.attention.in_proj_bias", &[3 * dv], 0.0)?;
    g.linear("vision_model.head.attention.out_proj", dv, dv, true)?;
    g.ln("vision_model.head.layernorm", dv)?;
    g.linear("vision_model.head.mlp.fc1", dv, v.tower.intermediate_size, true)?;
    g.linear("vision_model.head.mlp.fc2", v.tower.intermediate_size, dv, true)?;
    g.put("text_model.embeddings.token_embedding.weight", &[t.vocab_size, dt], 0.0)?;
    g.put("text_model.embeddings.position_embedding.weight", &[t.max_position_embeddings, dt], 0.0)?;
    g.hf_layers("text_model", &t.tower)?;
    g.ln("text_model.final_layer_norm", dt)?;
    g.linear("text_model.head", dt, config.projection_dim, true)?;
    Ok(g.done())
}

/// Sizes of a BiomedCLIP-shaped open_clip checkpoint (timm ViT + BERT).
#[derive(Clone, Copy, Debug)]
pub struct BiomedClipShape {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_width: usize,
    pub vision_layers: usize,
    pub vocab_size: usize,
    pub text_width: usize,
    pub text_layers: usize,
    pub text_intermediate: usize,
    pub positions: usize,
    pub embed_dim: usize,
}

impl BiomedClipShape {
    /// microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224: ViT-B/16 at 224, BERT-base
    /// (vocabulary 30522, 512 positions), 512-dimensional embeddings.
    pub fn base() -> Self {
        BiomedClipShape {
            image_size: 224,
            patch_size: 16,
            vision_width: 768,
            vision_layers: 12,
            vocab_size: 30522,
            text_width: 768,
            text_layers: 12,
            text_intermediate: 3072,
            positions: 512,
            embed_dim: 512,
        }
    }

    /// Its `open_clip_config.json` (the real one's structure).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({"model_cfg": {"embed_dim": self.embed_dim,
            "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": false, "timm_pool": "",
                           "timm_proj": "linear", "image_size": self.image_size},
            "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                         "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                         "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256}},
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}})
    }
}

/// open_clip-named tensors of a BiomedCLIP-shaped model (`visual.trunk.*`, `text.transformer.*`).
pub fn random_biomedclip_weights(
    s: &BiomedClipShape,
    std: f64,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Weights> {
    let mut g = Gen::new(std, seed, dtype, device);
    let (d, p) = (s.vision_width, s.patch_size);
    let grid = s.image_size / p;
    let tr = "visual.trunk";
    g.put(format!("{tr}.cls_token"), &[1, 1, d], 0.0)?;
    g.put(format!("{tr}.pos_embed"), &[1, grid * grid + 1, d], 0.0)?;
    g.put(format!("{tr}.patch_embed.proj.weight"), &[d, 3, p, p], 0.0)?;
    g.put(format!("{tr}.patch_embed.proj.bias"), &[d], 0.0)?;
    for i in 0..s.vision_layers {
        let b = format!("{tr}.blocks.{i}");
        g.ln(&format!("{b}.norm1"), d)?;
        g.ln(&format!("{b}.norm2"), d)?;
        g.linear(&format!("{b}.attn.qkv"), d, 3 * d, true)?;
        g.linear(&format!("{b}.attn.proj"), d, d, true)?;
        g.linear(&format!("{b}.mlp.fc1"), d, 4 * d, true)?;
        g.linear(&format!("{b}.mlp.fc2"), 4 * d, d, true)?;
    }
    g.ln(&format!("{tr}.norm"), d)?;
    g.linear("visual.head.proj", d, s.embed_dim, false)?;
    let (t, e) = (s.text_width, "text.transformer.embeddings");
    g.put(format!("{e}.word_embeddings.weight"), &[s.vocab_size, t], 0.0)?;
    g.put(format!("{e}.position_embeddings.weight"), &[s.positions, t], 0.0)?;
    g.put(format!("{e}.token_type_embeddings.weight"), &[2, t], 0.0)?;
    g.ln(&format!("{e}.LayerNorm"), t)?;
    for i in 0..s.text_layers {
        let b = format!("text.transformer.encoder.layer.{i}");
        for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            g.linear(&format!("{b}.{n}"), t, t, true)?;
        }
        g.ln(&format!("{b}.attention.output.LayerNorm"), t)?;
        g.linear(&format!("{b}.intermediate.dense"), t, s.text_intermediate, true)?;
        g.linear(&format!("{b}.output.dense"), s.text_intermediate, t, true)?;
        g.ln(&format!("{b}.output.LayerNorm"), t)?;
    }
    let hidden = (t + s.embed_dim) / 2;
    g.linear("text.proj.0", t, hidden, false)?;
    g.linear("text.proj.2", hidden, s.embed_dim, false)?;
    Ok(g.done())
}
