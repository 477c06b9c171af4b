//! A CLIP dual encoder (HF `CLIPModel` tensor names) whose towers expose taps: run the frozen
//! prefix up to a layer once, then run (and differentiate) only the suffix.

use super::config::{ClipConfig, TextPool, TowerConfig};
use crate::error::{Error, Result};
use crate::models::transformer::{
    AttentionPool, AttentionPoolTape, Block, BlockTape, LayerNorm, LayerNormTape, Linear, Mlp, Rows,
};
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

/// How a tower reduces its last hidden state to one vector.
pub enum Pooling {
    /// One token's state: CLS, end-of-text, last or first, as the caller says (see
    /// [`ClipModel::text_pool_index`]).
    Token,
    /// SigLIP's attention-pooling head over every token.
    Attention(AttentionPool),
}

/// The map from the pooled vector into the shared embedding space.
pub enum Projection {
    /// SigLIP's vision tower: the pooled vector is the embedding.
    Identity,
    /// A linear map (with or without bias).
    Linear(Linear),
    /// open_clip's `mlp` projection of a Hugging Face text tower: `fc2(gelu(fc1(x)))`.
    Mlp(Mlp),
}

impl Projection {
    fn forward_tape(&self, x: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        Ok(match self {
            Projection::Identity => (x.clone(), None),
            Projection::Linear(l) => (l.forward(x)?, None),
            Projection::Mlp(m) => {
                let (y, f) = m.forward(x)?;
                (y, Some(f))
            }
        })
    }

    fn backward(&self, tape: &Option<Tensor>, dy: &Tensor) -> Result<Tensor> {
        match (self, tape) {
            (Projection::Identity, _) => Ok(dy.clone()),
            (Projection::Linear(l), _) => l.backward_input(dy),
            (Projection::Mlp(m), Some(f)) => m.backward(f, dy),
            (Projection::Mlp(_), None) => Err(Error::invalid("projection tape is missing")),
        }
    }

    /// The output dimension (`None` for the identity).
    pub fn out_dim(&self) -> Option<usize> {
        match self {
            Projection::Identity => None,
            Projection::Linear(l) => l.weight.dim(0).ok(),
            Projection::Mlp(m) => m.fc2.weight.dim(0).ok(),
        }
    }
}

/// The transformer part of a tower: blocks, final LayerNorm, pooling and projection.
pub struct Tower {
    pub modality: Modality,
    pub layers: Vec<Block>,
    /// Applied per token after the last block (none for BERT, whose blocks end normalised).
    pub final_ln: Option<LayerNorm>,
    pub pooling: Pooling,
    pub projection: Projection,
    pub causal: bool,
}

/// What the head (final LayerNorm, pooling, projection) kept for the backward pass.
enum HeadTape {
    Token { ln: Option<LayerNormTape>, proj: Option<Tensor> },
    Attention { ln: Option<LayerNormTape>, pool: AttentionPoolTape, proj: Option<Tensor> },
}

/// The suffix activations kept for [`Tower::suffix_backward`].
pub struct SuffixTape {
    layer: usize,
    blocks: Vec<BlockTape>,
    head: HeadTape,
    tokens: usize,
    pool: usize,
    /// Whether the tap is at the last layer and the pooling picks one token (the suffix then
    /// starts at that token).
    token_without_blocks: bool,
}

fn ln_tape(ln: &Option<LayerNorm>, x: &Tensor) -> Result<(Tensor, Option<LayerNormTape>)> {
    match ln {
        Some(ln) => {
            let (y, t) = ln.forward_tape(x)?;
            Ok((y, Some(t)))
        }
        None => Ok((x.clone(), None)),
    }
}

fn ln_back(ln: &Option<LayerNorm>, tape: &Option<LayerNormTape>, dy: &Tensor) -> Result<Tensor> {
    match (ln, tape) {
        (Some(ln), Some(t)) => ln.backward(t, dy),
        _ => Ok(dy.clone()),
    }
}

impl Tower {
    /// A tower with HF `CLIPModel` names: `{prefix}.encoder.layers.{i}`, `{prefix}.{final_ln}`,
    /// a bias-free projection `proj`.
    pub(crate) fn load_hf_clip(
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
            final_ln: Some(LayerNorm::load(w, &format!("{prefix}.{final_ln}"), c.hidden_size, c.layer_norm_eps)?),
            pooling: Pooling::Token,
            projection: Projection::Linear(Linear::load(w, proj, c.hidden_size, proj_dim, false)?),
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
    /// pooling token `pool` (ignored by attention pooling).
    pub fn forward_from(&self, layer: usize, h: &Tensor, pool: usize) -> Result<Tensor> {
        self.check_layer(layer)?;
        let mut x = h.clone();
        for blk in &self.layers[layer + 1..] {
            x = blk.forward(&x, self.causal)?;
        }
        self.head(&x, pool)
    }

    /// Final LayerNorm, pooling and projection of the last hidden state `[B, T, D]`.
    fn head(&self, x: &Tensor, pool: usize) -> Result<Tensor> {
        let pooled = match &self.pooling {
            Pooling::Token => {
                let p = x.narrow(1, pool, 1)?.squeeze(1)?;
                match &self.final_ln {
                    Some(ln) => ln.forward(&p)?,
                    None => p,
                }
            }
            Pooling::Attention(ap) => {
                let n = match &self.final_ln {
                    Some(ln) => ln.forward(x)?,
                    None => x.clone(),
                };
                ap.forward_tape(&n)?.0
            }
        };
        Ok(self.projection.forward_tape(&pooled)?.0)
    }

    /// Differentiable suffix: like [`Tower::forward_from`], but keeps a tape. With token
    /// pooling the last block only computes the pooled token (the others cannot reach the
    /// embedding).
    pub fn suffix_forward(&self, layer: usize, h: &Tensor, pool: usize) -> Result<(Tensor, SuffixTape)> {
        self.check_layer(layer)?;
        let blocks = &self.layers[layer + 1..];
        let (_, t, _) = h.dims3()?;
        let token = matches!(self.pooling, Pooling::Token);
        let mut tapes = Vec::with_capacity(blocks.len());
        let mut x = h.clone();
        for (i, blk) in blocks.iter().enumerate() {
            let rows = if token && i + 1 == blocks.len() { Rows::One(pool) } else { Rows::All };
            let (y, tape) = blk.forward_tape(&x, self.causal, rows)?;
            tapes.push(tape);
            x = y;
        }
        let token_without_blocks = token && blocks.is_empty();
        let (emb, head) = match &self.pooling {
            Pooling::Token => {
                let pooled = if blocks.is_empty() { x.narrow(1, pool, 1)?.squeeze(1)? } else { x };
                let (y, ln) = ln_tape(&self.final_ln, &pooled)?;
                let (emb, proj) = self.projection.forward_tape(&y)?;
                (emb, HeadTape::Token { ln, proj })
            }
            Pooling::Attention(ap) => {
                let (y, ln) = ln_tape(&self.final_ln, &x)?;
                let (p, pool_tape) = ap.forward_tape(&y)?;
                let (emb, proj) = self.projection.forward_tape(&p)?;
                (emb, HeadTape::Attention { ln, pool: pool_tape, proj })
            }
        };
        Ok((emb, SuffixTape { layer, blocks: tapes, head, tokens: t, pool, token_without_blocks }))
    }

    /// `d loss / d h` from `d loss / d embedding` (`[B, P]` → `[B, T, D]`).
    pub fn suffix_backward(&self, layer: usize, tape: &SuffixTape, demb: &Tensor) -> Result<Tensor> {
        self.check_layer(layer)?;
        if tape.layer != layer {
            return Err(Error::invalid(format!("the tape was recorded from layer {}, not {layer}", tape.layer)));
        }
        let blocks = &self.layers[layer + 1..];
        let mut g = match (&tape.head, &self.pooling) {
            (HeadTape::Token { ln, proj }, Pooling::Token) => {
                ln_back(&self.final_ln, ln, &self.projection.backward(proj, demb)?)?
            }
            (HeadTape::Attention { ln, pool, proj }, Pooling::Attention(ap)) => {
                let dp = self.projection.backward(proj, demb)?;
                ln_back(&self.final_ln, ln, &ap.backward(pool, &dp)?)?
            }
            _ => return Err(Error::invalid("suffix tape does not match the tower's pooling")),
        };
        if tape.token_without_blocks {
            let (b, d) = g.dims2()?;
            let zeros = Tensor::zeros((b, tape.tokens, d), g.dtype(), g.device())?;
            let parts: Vec<Tensor> = (0..tape.tokens)
                .map(|i| if i == tape.pool { g.unsqueeze(1) } else { Ok(zeros.narrow(1, i, 1)?) })
                .collect::<candle_core::Result<_>>()?;
            return Ok(Tensor::cat(&parts, 1)?);
        }
        for (blk, tp) in blocks.iter().zip(tape.blocks.iter()).rev() {
            g = blk.backward(tp, &g)?;
        }
        Ok(g)
    }
}

/// Vision embeddings: patchify (+ CLS) + positions (+ a LayerNorm).
pub struct VisionEmbeddings {
    /// Patch projection as a matrix `[D, 3·p·p]` (the conv kernel, flattened; SigLIP's and
    /// timm's have a bias).
    pub patch: Linear,
    /// The CLS token (`None` for SigLIP).
    pub class: Option<Tensor>,
    /// `[tokens, D]`.
    pub position: Tensor,
    /// CLIP's `pre_layrnorm` / open_clip's `ln_pre`.
    pub pre_ln: Option<LayerNorm>,
    pub patch_size: usize,
    pub grid: usize,
}

/// Text embeddings: token + position (+ BERT's token type 0 and LayerNorm).
pub struct TextEmbeddings {
    pub token: Tensor,
    pub position: Tensor,
    /// BERT's token-type embedding of type 0, `[D]`.
    pub token_type: Option<Tensor>,
    /// BERT's embedding LayerNorm.
    pub ln: Option<LayerNorm>,
}

/// A loaded dual encoder (CLIP, open_clip, SigLIP, BiomedCLIP).
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
            patch: Linear { weight: conv.reshape((dv, 3 * ps * ps))?, bias: None },
            class: Some(w.get("vision_model.embeddings.class_embedding", &[dv])?),
            position: w.get("vision_model.embeddings.position_embedding.weight", &[vc.num_tokens(), dv])?,
            pre_ln: Some(LayerNorm::load(w, "vision_model.pre_layrnorm", dv, vc.tower.layer_norm_eps)?),
            patch_size: ps,
            grid: vc.grid(),
        };
        let text_embeddings = TextEmbeddings {
            token: w.get("text_model.embeddings.token_embedding.weight", &[tc.vocab_size, dt])?,
            position: w.get("text_model.embeddings.position_embedding.weight", &[tc.max_position_embeddings, dt])?,
            token_type: None,
            ln: None,
        };
        let vision = Tower::load_hf_clip(
            w,
            "vision_model",
            &vc.tower,
            "post_layernorm",
            "visual_projection",
            p,
            Modality::Vision,
        )?;
        let text =
            Tower::load_hf_clip(w, "text_model", &tc.tower, "final_layer_norm", "text_projection", p, Modality::Text)?;
        let logit_scale = scalar_or(w, "logit_scale", 2.6592)?;
        Ok(ClipModel { config, vision_embeddings, text_embeddings, vision, text, logit_scale, device: device.clone() })
    }

    /// The tower of a modality.
    pub fn tower(&self, m: Modality) -> &Tower {
        match m {
            Modality::Vision => &self.vision,
            Modality::Text => &self.text,
        }
    }

    /// Tokens before the patch tokens in the vision sequence (1 with a CLS token, else 0).
    pub fn vision_prefix_tokens(&self) -> usize {
        self.vision_embeddings.class.is_some() as usize
    }

    /// Per-token values of the vision sequence (`[tokens]`) as a map on the patch grid (the
    /// CLS token, where there is one, dropped).
    pub fn patch_map(&self, per_token: &[f32]) -> Result<crate::imaging::heatmap::Heatmap> {
        let g = self.config.vision.grid() as u32;
        let patches = per_token.get(self.vision_prefix_tokens()..).unwrap_or(&[]);
        crate::imaging::heatmap::Heatmap::new(g, g, patches.to_vec())
    }

    /// The vision token the embedding is read from (the CLS token; unused by attention pooling).
    pub fn vision_pool_index(&self) -> usize {
        0
    }

    /// Vision embeddings (the first block's input) of normalised pixels `[B, 3, S, S]`.
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
        let d = e.position.dim(1)?;
        let x = e.patch.forward(&patches)?.reshape((b, g * g, d))?;
        let x = match &e.class {
            Some(class) => {
                let cls = class.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
                Tensor::cat(&[&cls, &x], 1)?
            }
            None => x,
        };
        let x = x.broadcast_add(&e.position.unsqueeze(0)?)?;
        match &e.pre_ln {
            Some(ln) => ln.forward(&x),
            None => Ok(x),
        }
    }

    /// Text embeddings of token ids `[L]` (one caption, as the tokenizer gives it): `[1, L, D]`.
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
        let e = &self.text_embeddings;
        let t = Tensor::new(ids, &self.device)?;
        let mut x = (e.token.index_select(&t, 0)? + e.position.narrow(0, 0, ids.len())?)?;
        if let Some(tt) = &e.token_type {
            x = x.broadcast_add(tt)?;
        }
        if let Some(ln) = &e.ln {
            x = ln.forward(&x)?;
        }
        Ok(x.unsqueeze(0)?)
    }

    /// The token whose final state is the text embedding, by the family's rule (see
    /// [`TextPool`]).
    pub fn text_pool_index(&self, ids: &[u32]) -> usize {
        let argmax = || {
            // first maximum, like torch.argmax
            let mut best = 0;
            for (i, &v) in ids.iter().enumerate() {
                if v > ids[best] {
                    best = i;
                }
            }
            best
        };
        match self.config.text.pool {
            TextPool::Eos(eos) => ids.iter().position(|&i| i == eos).unwrap_or_else(argmax),
            TextPool::Argmax => argmax(),
            TextPool::Last => ids.len().saturating_sub(1),
            TextPool::First => 0,
        }
    }

    /// Projected image embedding `[B, P]` (HF `get_image_features`).
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let emb = self.embed_image(pixels)?;
        let last = self.vision.depth() - 1;
        let h = self.vision.forward_until(&emb, last)?;
        self.vision.forward_from(last, &h, self.vision_pool_index())
    }

    /// Projected text embedding `[1, P]` (HF `get_text_features`).
    pub fn text_features(&self, ids: &[u32]) -> Result<Tensor> {
        let emb = self.embed_text(ids)?;
        let last = self.text.depth() - 1;
        let h = self.text.forward_until(&emb, last)?;
        self.text.forward_from(last, &h, self.text_pool_index(ids))
    }
}

/// A scalar tensor such as `logit_scale`, or `default` when the checkpoint has none.
pub(crate) fn scalar_or(w: &Weights, name: &str, default: f32) -> Result<f32> {
    match w.shape(name) {
        None => Ok(default),
        Some(s) => {
            let s = s.to_vec();
            let t = w.get(name, &s)?;
            if t.elem_count() != 1 {
                return Err(Error::format(w.path(), format!("tensor '{name}' has shape {s:?}, expected a scalar")));
            }
            Ok(t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?[0])
        }
    }
}
