//! A CLIP dual encoder (HF `CLIPModel` tensor names) whose towers expose taps: run the frozen
//! prefix up to a layer once, then run (and differentiate) only the suffix.

use super::config::{ClipConfig, TowerConfig};
use crate::error::{Error, Result};
use crate::models::transformer::{Block, BlockTape, LayerNorm, Rows};
use crate::models::weights::Weights;
use candle_core::{Device, Tensor};

/// Which tower of a dual encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Modality {
    Vision,
    Text,
}

impl Modality {
    pub fn name(self) -> &'static str {
        match self {
            Modality::Vision => "vision",
            Modality::Text => "text",
        }
    }
}

/// The transformer part of a tower: blocks, final LayerNorm and projection.
pub struct Tower {
    pub modality: Modality,
    pub layers: Vec<Block>,
    pub final_ln: LayerNorm,
    /// `[projection_dim, hidden]`, no bias.
    pub projection: Tensor,
    pub causal: bool,
}

/// The suffix activations kept for [`Tower::suffix_backward`].
pub struct SuffixTape {
    blocks: Vec<BlockTape>,
    pooled_ln: crate::models::transformer::LayerNormTape,
    tokens: usize,
    pool: usize,
    /// Whether the tap is at the last layer (the suffix has no block).
    no_blocks: bool,
}

impl Tower {
    fn load(
        w: &Weights,
        prefix: &str,
        c: &TowerConfig,
        final_ln: &str,
        proj: &str,
        proj_dim: usize,
        modality: Modality,
    ) -> Result<Self> {
        let layers = (0..c.num_hidden_layers)
            .map(|i| Block::load(w, &format!("{prefix}.encoder.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tower {
            modality,
            layers,
            final_ln: LayerNorm::load(w, &format!("{prefix}.{final_ln}"), c.hidden_size, c.layer_norm_eps)?,
            projection: w.get(proj, &[proj_dim, c.hidden_size])?,
            causal: modality == Modality::Text,
        })
    }

    /// Number of encoder layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer >= self.layers.len() {
            return Err(Error::invalid(format!(
                "{} layer {layer} does not exist: the tower has layers 0..={}",
                self.modality.name(),
                self.layers.len() - 1
            )));
        }
        Ok(())
    }

    /// Every hidden state: `[embeddings, after layer 0, …, after the last layer]` (HF
    /// `hidden_states`, before the final LayerNorm).
    pub fn hidden_states(&self, emb: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = vec![emb.clone()];
        let mut x = emb.clone();
        for blk in &self.layers {
            x = blk.forward(&x, self.causal)?;
            out.push(x.clone());
        }
        Ok(out)
    }

    /// The output of layer `layer` (0-based): the frozen prefix, run once.
    pub fn forward_until(&self, emb: &Tensor, layer: usize) -> Result<Tensor> {
        self.check_layer(layer)?;
        let mut x = emb.clone();
        for blk in &self.layers[..=layer] {
            x = blk.forward(&x, self.causal)?;
        }
        Ok(x)
    }

    /// From the output `h [B, T, D]` of layer `layer` to the projected embedding `[B, P]`,
    /// pooling token `pool`.
    pub fn forward_from(&self, layer: usize, h: &Tensor, pool: usize) -> Result<Tensor> {
        self.check_layer(layer)?;
        let mut x = h.clone();
        for blk in &self.layers[layer + 1..] {
            x = blk.forward(&x, self.causal)?;
        }
        self.head(&x.narrow(1, pool, 1)?.squeeze(1)?)
    }

    fn head(&self, pooled: &Tensor) -> Result<Tensor> {
        let y = self.final_ln.forward(pooled)?;
        Ok(y.matmul(&self.projection.t()?)?)
    }

    /// Differentiable suffix: like [`Tower::forward_from`], but keeps a tape. The last block
    /// only computes the pooled token (the others cannot reach the embedding).
    pub fn suffix_forward(&self, layer: usize, h: &Tensor, pool: usize) -> Result<(Tensor, SuffixTape)> {
        self.check_layer(layer)?;
        let blocks = &self.layers[layer + 1..];
        let (_, t, _) = h.dims3()?;
        let mut tapes = Vec::with_capacity(blocks.len());
        let mut x = h.clone();
        for (i, blk) in blocks.iter().enumerate() {
            let rows = if i + 1 == blocks.len() { Rows::One(pool) } else { Rows::All };
            let (y, tape) = blk.forward_tape(&x, self.causal, rows)?;
            tapes.push(tape);
            x = y;
        }
        let no_blocks = blocks.is_empty();
        let pooled = if no_blocks { x.narrow(1, pool, 1)?.squeeze(1)? } else { x };
        let (y, ln_tape) = self.final_ln.forward_tape(&pooled)?;
        let emb = y.matmul(&self.projection.t()?)?;
        Ok((emb, SuffixTape { blocks: tapes, pooled_ln: ln_tape, tokens: t, pool, no_blocks }))
    }

    /// `d loss / d h` from `d loss / d embedding` (`[B, P]` → `[B, T, D]`).
    pub fn suffix_backward(&self, layer: usize, tape: &SuffixTape, demb: &Tensor) -> Result<Tensor> {
        let blocks = &self.layers[layer + 1..];
        let dpooled = self.final_ln.backward(&tape.pooled_ln, &demb.matmul(&self.projection)?)?;
        if tape.no_blocks {
            let (b, d) = dpooled.dims2()?;
            let zeros = Tensor::zeros((b, tape.tokens, d), dpooled.dtype(), dpooled.device())?;
            let parts: Vec<Tensor> = (0..tape.tokens)
                .map(|i| if i == tape.pool { dpooled.unsqueeze(1) } else { Ok(zeros.narrow(1, i, 1)?) })
                .collect::<candle_core::Result<_>>()?;
            return Ok(Tensor::cat(&parts, 1)?);
        }
        let mut g = dpooled;
        for (blk, tp) in blocks.iter().zip(tape.blocks.iter()).rev() {
            g = blk.backward(tp, &g)?;
        }
        Ok(g)
    }
}

/// Vision embeddings: patchify + CLS + positions, then `pre_layrnorm`.
pub struct VisionEmbeddings {
    /// Patch projection as a matrix `[D, 3·p·p]` (the conv kernel, flattened).
    pub patch: Tensor,
    pub class: Tensor,
    pub position: Tensor,
    pub pre_ln: LayerNorm,
    pub patch_size: usize,
    pub grid: usize,
}

/// Text embeddings: token + position.
pub struct TextEmbeddings {
    pub token: Tensor,
    pub position: Tensor,
}

/// A loaded CLIP model.
pub struct ClipModel {
    pub config: ClipConfig,
    pub vision_embeddings: VisionEmbeddings,
    pub text_embeddings: TextEmbeddings,
    pub vision: Tower,
    pub text: Tower,
    pub logit_scale: f32,
    pub device: Device,
}

impl ClipModel {
    /// Builds the model from HF `CLIPModel` tensors.
    pub fn from_weights(config: ClipConfig, w: &Weights, device: &Device) -> Result<Self> {
        let vc = &config.vision;
        let tc = &config.text;
        let (dv, dt, p) = (vc.tower.hidden_size, tc.tower.hidden_size, config.projection_dim);
        let ps = vc.patch_size;
        let conv = w.get("vision_model.embeddings.patch_embedding.weight", &[dv, 3, ps, ps])?;
        let vision_embeddings = VisionEmbeddings {
            patch: conv.reshape((dv, 3 * ps * ps))?,
            class: w.get("vision_model.embeddings.class_embedding", &[dv])?,
            position: w.get("vision_model.embeddings.position_embedding.weight", &[vc.num_tokens(), dv])?,
            pre_ln: LayerNorm::load(w, "vision_model.pre_layrnorm", dv, vc.tower.layer_norm_eps)?,
            patch_size: ps,
            grid: vc.grid(),
        };
        let text_embeddings = TextEmbeddings {
            token: w.get("text_model.embeddings.token_embedding.weight", &[tc.vocab_size, dt])?,
            position: w.get("text_model.embeddings.position_embedding.weight", &[tc.max_position_embeddings, dt])?,
        };
        let vision = Tower::load(
            w,
            "vision_model",
            &vc.tower,
            "post_layernorm",
            "visual_projection.weight",
            p,
            Modality::Vision,
        )?;
        let text =
            Tower::load(w, "text_model", &tc.tower, "final_layer_norm", "text_projection.weight", p, Modality::Text)?;
        let logit_scale = if w.contains("logit_scale") {
            w.get("logit_scale", &[])?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?
        } else {
            2.6592
        };
        Ok(ClipModel { config, vision_embeddings, text_embeddings, vision, text, logit_scale, device: device.clone() })
    }

    /// The tower of a modality.
    pub fn tower(&self, m: Modality) -> &Tower {
        match m {
            Modality::Vision => &self.vision,
            Modality::Text => &self.text,
        }
    }

    /// Vision embeddings (after `pre_layrnorm`) of normalised pixels `[B, 3, S, S]`.
    pub fn embed_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let e = &self.vision_embeddings;
        let (b, c, hh, ww) = pixels.dims4()?;
        let s = self.config.vision.image_size;
        if c != 3 || hh != s || ww != s {
            return Err(Error::invalid(format!("pixel tensor is {b}x{c}x{hh}x{ww}, the model expects Bx3x{s}x{s}")));
        }
        let (g, p) = (e.grid, e.patch_size);
        let patches =
            pixels.reshape((b, 3, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((b * g * g, 3 * p * p))?;
        let d = e.class.dim(0)?;
        let x = patches.matmul(&e.patch.t()?)?.reshape((b, g * g, d))?;
        let cls = e.class.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&e.position.unsqueeze(0)?)?;
        e.pre_ln.forward(&x)
    }

    /// Text embeddings of token ids `[L]` (one caption, unpadded): `[1, L, D]`.
    pub fn embed_text(&self, ids: &[u32]) -> Result<Tensor> {
        let tc = &self.config.text;
        if ids.is_empty() {
            return Err(Error::invalid("empty token sequence"));
        }
        if ids.len() > tc.max_position_embeddings {
            return Err(Error::invalid(format!(
                "the caption is {} tokens long; the model takes at most {} (including start and end tokens)",
                ids.len(),
                tc.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= tc.vocab_size) {
            return Err(Error::invalid(format!("token id {bad} is outside the vocabulary ({} ids)", tc.vocab_size)));
        }
        let t = Tensor::new(ids, &self.device)?;
        let x = self.text_embeddings.token.index_select(&t, 0)?;
        let x = (x + self.text_embeddings.position.narrow(0, 0, ids.len())?)?;
        Ok(x.unsqueeze(0)?)
    }

    /// The token whose final state is the text embedding: HF's rule (argmax of the ids for
    /// legacy configs with `eos_token_id == 2`, else the first `eos_token_id`).
    pub fn text_pool_index(&self, ids: &[u32]) -> usize {
        let eos = self.config.text.eos_token_id;
        if eos != 2 {
            if let Some(i) = ids.iter().position(|&i| i == eos) {
                return i;
            }
        }
        // first maximum, like torch.argmax
        let mut best = 0;
        for (i, &v) in ids.iter().enumerate() {
            if v > ids[best] {
                best = i;
            }
        }
        best
    }

    /// Projected image embedding `[B, P]` (HF `get_image_features`).
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let emb = self.embed_image(pixels)?;
        let last = self.vision.depth() - 1;
        let h = self.vision.forward_until(&emb, last)?;
        self.vision.forward_from(last, &h, 0)
    }

    /// Projected text embedding `[1, P]` (HF `get_text_features`).
    pub fn text_features(&self, ids: &[u32]) -> Result<Tensor> {
        let emb = self.embed_text(ids)?;
        let last = self.text.depth() - 1;
        let h = self.text.forward_until(&emb, last)?;
        self.text.forward_from(last, &h, self.text_pool_index(ids))
    }
}
