//! Hugging Face `SiglipModel` directories (`config.json` with `model_type: "siglip"`).
//!
//! The vision tower has no CLS token and no LayerNorm before its blocks; its embedding is the
//! output of an attention-pooling head (a learned probe attending to every token after
//! `post_layernorm`), with no further projection. The text tower attends bidirectionally and
//! reads its embedding at the **last** position through `text_model.head` (a linear map with
//! bias). SigLIP was trained on captions padded to the full context (64) with `</s>` and no
//! attention mask, so the pads take part in the computation and change the embedding: ibex
//! pads every caption the same way (the tokenizer does it, see [`super::tokenizer`]).

use super::config::{Activation, ClipConfig, Family, RawConfig, TextPool, VisionConfig};
use super::model::{ClipModel, Modality, Pooling, Projection, TextEmbeddings, Tower, VisionEmbeddings};
use crate::error::{Error, Result};
use crate::models::transformer::{Attention, AttentionPool, Block, LayerNorm, Linear, Mlp};
use crate::models::weights::Weights;
use candle_core::Device;

/// Parses a SigLIP `config.json` (transformers' defaults for absent fields: ViT-B/16 at 224,
/// 64 text positions, vocabulary 32000, `gelu_pytorch_tanh`, LayerNorm eps 1e-6).
pub fn config_from_json(json: &str) -> Result<(ClipConfig, u32)> {
    let raw: RawConfig =
        serde_json::from_str(json).map_err(|e| Error::invalid(format!("not a SigLIP config.json: {e}")))?;
    if raw.model_type.as_deref() != Some("siglip") {
        return Err(Error::invalid("model_type is not 'siglip'"));
    }
    let t = raw.text_config.unwrap_or_default();
    let v = raw.vision_config.unwrap_or_default();
    let defaults = |r: &super::config::RawTower, name| {
        let mut tower = super::config::tower(r, 768, 3072, 12, 12, name)?;
        if r.hidden_act.is_none() {
            tower.activation = Activation::GeluTanh;
        }
        if r.layer_norm_eps.is_none() {
            tower.layer_norm_eps = 1e-6;
        }
        Ok::<_, Error>(tower)
    };
    let text_tower = defaults(&t, "text")?;
    let projection_dim = t.projection_size.unwrap_or(text_tower.hidden_size);
    let pad = t.pad_token_id.unwrap_or(1);
    let text = super::config::TextConfig {
        tower: text_tower,
        vocab_size: t.vocab_size.unwrap_or(32000),
        max_position_embeddings: t.max_position_embeddings.unwrap_or(64),
        pool: TextPool::Last,
        pad_to_context: Some(pad),
    };
    let vision = VisionConfig {
        tower: defaults(&v, "vision")?,
        image_size: v.image_size.unwrap_or(224),
        patch_size: v.patch_size.unwrap_or(16),
        num_channels: v.num_channels.unwrap_or(3),
        class_token: false,
    };
    if vision.patch_size == 0 || vision.image_size % vision.patch_size != 0 || vision.num_channels != 3 {
        return Err(Error::invalid(format!(
            "vision image_size {} must be a multiple of patch_size {} with 3 channels",
            vision.image_size, vision.patch_size
        )));
    }
    if vision.tower.hidden_size != projection_dim {
        return Err(Error::invalid(format!(
            "the vision width {} differs from the text projection size {projection_dim}: the embeddings could not be compared",
            vision.tower.hidden_size
        )));
    }
    Ok((ClipConfig { family: Family::Siglip, text, vision, projection_dim }, pad))
}

/// Builds a SigLIP model from its HF tensors.
pub fn from_weights(config: ClipConfig, w: &Weights, device: &Device) -> Result<ClipModel> {
    let vc = &config.vision;
    let tc = &config.text;
    let (dv, dt, ps) = (vc.tower.hidden_size, tc.tower.hidden_size, vc.patch_size);
    let e = "vision_model.embeddings";
    let conv = w.get(&format!("{e}.patch_embedding.weight"), &[dv, 3, ps, ps])?;
    let vision_embeddings = VisionEmbeddings {
        patch: Linear {
            weight: conv.reshape((dv, 3 * ps * ps))?,
            bias: Some(w.get(&format!("{e}.patch_embedding.bias"), &[dv])?),
        },
        class: None,
        position: w.get(&format!("{e}.position_embedding.weight"), &[vc.num_tokens(), dv])?,
        pre_ln: None,
        patch_size: ps,
        grid: vc.grid(),
    };
    let blocks = |prefix: &str, c: &super::config::TowerConfig| {
        (0..c.num_hidden_layers)
            .map(|i| Block::load(w, &format!("{prefix}.encoder.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()
    };
    let h = "vision_model.head";
    let heads = vc.tower.num_attention_heads;
    let pool = AttentionPool {
        probe: w.get(&format!("{h}.probe"), &[1, 1, dv])?.reshape(dv)?,
        attn: Attention::load_torch(w, &format!("{h}.attention"), dv, heads)?,
        ln: LayerNorm::load(w, &format!("{h}.layernorm"), dv, vc.tower.layer_norm_eps)?,
        mlp: Mlp {
            fc1: Linear::load(w, &format!("{h}.mlp.fc1"), dv, vc.tower.intermediate_size, true)?,
            fc2: Linear::load(w, &format!("{h}.mlp.fc2"), vc.tower.intermediate_size, dv, true)?,
            activation: vc.tower.activation,
        },
    };
    let vision = Tower {
        modality: Modality::Vision,
        layers: blocks("vision_model", &vc.tower)?,
        final_ln: Some(LayerNorm::load(w, "vision_model.post_layernorm", dv, vc.tower.layer_norm_eps)?),
        pooling: Pooling::Attention(pool),
        projection: Projection::Identity,
        causal: false,
    };
    let te = "text_model.embeddings";
    let text_embeddings = TextEmbeddings {
        token: w.get(&format!("{te}.token_embedding.weight"), &[tc.vocab_size, dt])?,
        position: w.get(&format!("{te}.position_embedding.weight"), &[tc.max_position_embeddings, dt])?,
        token_type: None,
        ln: None,
    };
    let text = Tower {
        modality: Modality::Text,
        layers: blocks("text_model", &tc.tower)?,
        final_ln: Some(LayerNorm::load(w, "text_model.final_layer_norm", dt, tc.tower.layer_norm_eps)?),
        pooling: Pooling::Token,
        projection: Projection::Linear(Linear::load(w, "text_model.head", dt, config.projection_dim, true)?),
        causal: false,
    };
    let logit_scale = super::model::scalar_or(w, "logit_scale", 1.0)?;
    Ok(ClipModel { config, vision_embeddings, text_embeddings, vision, text, logit_scale, device: device.clone() })
}
