//! Random-weight CLIP models of any configuration, for tests and benchmarks (shape checks,
//! gradient checks, timing a ViT-B/32-sized model without downloading it).

use super::config::ClipConfig;
use crate::error::Result;
use crate::models::weights::Weights;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// HF-named tensors for `config`, drawn from N(0, std²) (LayerNorm weights around 1), as
/// `dtype` on `device`.
pub fn random_weights(config: &ClipConfig, std: f64, seed: u64, dtype: DType, device: &Device) -> Result<Weights> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f64, std).expect("std > 0");
    let mut map = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>, center: f64| -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|_| center + normal.sample(&mut rng)).collect();
        map.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?);
        Ok(())
    };
    let v = &config.vision;
    let t = &config.text;
    let (dv, dt, p) = (v.tower.hidden_size, t.tower.hidden_size, config.projection_dim);
    put("vision_model.embeddings.patch_embedding.weight".into(), vec![dv, 3, v.patch_size, v.patch_size], 0.0)?;
    put("vision_model.embeddings.class_embedding".into(), vec![dv], 0.0)?;
    put("vision_model.embeddings.position_embedding.weight".into(), vec![v.num_tokens(), dv], 0.0)?;
    put("text_model.embeddings.token_embedding.weight".into(), vec![t.vocab_size, dt], 0.0)?;
    put("text_model.embeddings.position_embedding.weight".into(), vec![t.max_position_embeddings, dt], 0.0)?;
    for (prefix, c, lns) in [
        ("vision_model", &v.tower, vec!["pre_layrnorm", "post_layernorm"]),
        ("text_model", &t.tower, vec!["final_layer_norm"]),
    ] {
        let d = c.hidden_size;
        for ln in lns {
            put(format!("{prefix}.{ln}.weight"), vec![d], 1.0)?;
            put(format!("{prefix}.{ln}.bias"), vec![d], 0.0)?;
        }
        for i in 0..c.num_hidden_layers {
            let l = format!("{prefix}.encoder.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                put(format!("{l}.self_attn.{proj}.weight"), vec![d, d], 0.0)?;
                put(format!("{l}.self_attn.{proj}.bias"), vec![d], 0.0)?;
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                put(format!("{l}.{ln}.weight"), vec![d], 1.0)?;
                put(format!("{l}.{ln}.bias"), vec![d], 0.0)?;
            }
            put(format!("{l}.mlp.fc1.weight"), vec![c.intermediate_size, d], 0.0)?;
            put(format!("{l}.mlp.fc1.bias"), vec![c.intermediate_size], 0.0)?;
            put(format!("{l}.mlp.fc2.weight"), vec![d, c.intermediate_size], 0.0)?;
            put(format!("{l}.mlp.fc2.bias"), vec![d], 0.0)?;
        }
    }
    put("visual_projection.weight".into(), vec![p, dv], 0.0)?;
    put("text_projection.weight".into(), vec![p, dt], 0.0)?;
    Ok(Weights::from_tensors(map))
}
