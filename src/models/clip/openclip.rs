//! open_clip checkpoints (`open_clip_config.json` + `open_clip_model.safetensors` or
//! `open_clip_pytorch_model.bin`, the layout of open_clip's hub repositories).
//!
//! Two tower pairs are read:
//! - OpenAI-style towers (`visual.conv1`, `visual.transformer.resblocks.{i}`, `transformer.*`,
//!   `ln_final`, `text_projection`): the LAION checkpoints. GELU or QuickGELU as the config's
//!   `quick_gelu` says, LayerNorm eps 1e-5, causal text attention, the embedding read at the
//!   end-of-text token (the largest id).
//! - A timm ViT image tower (`visual.trunk.*`, `visual.head.proj`) and a Hugging Face BERT
//!   text tower (`text.transformer.*`, `text.proj`): BiomedCLIP. Their sizes exist only as a
//!   timm model name and a hub name, so every size is read from the tensors; the number of
//!   heads is width / 64 unless a BERT `config.json` lies beside the model (`bert_config.json`
//!   or `text_config.json`) or in the Hugging Face cache under the config's `hf_model_name`.
//!
//! Every size the config states is checked against the tensors: a disagreement names the
//! tensor.

use super::config::{Activation, ClipConfig, Family, TextConfig, TextPool, TowerConfig, VisionConfig};
use super::model::{ClipModel, Modality, Pooling, Projection, TextEmbeddings, Tower, VisionEmbeddings};
use crate::error::{Error, Result};
use crate::models::transformer::{Attention, Block, LayerNorm, Linear, Mlp, NormPlacement};
use crate::models::weights::Weights;
use candle_core::Device;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The weight files open_clip's hub repositories use, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// Tensor name fragments of open_clip / timm features this version does not implement.
const UNSUPPORTED: [&str; 10] =
    [".ls_1.", ".ls_2.", ".ls1.", ".ls2.", "attn_pool", ".ln_inner.", ".ln_attn.", ".mlp.ln.", ".q_norm.", ".k_norm."];

/// `open_clip_config.json`, the parts that matter here.
pub struct OpenClipConfig {
    pub path: PathBuf,
    pub model_cfg: Value,
    pub preprocess_cfg: Value,
}

impl OpenClipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON ({e})")))?;
        Self::from_value(path, &v)
    }

    /// From the parsed JSON (`path` names it in errors).
    pub fn from_value(path: &Path, v: &Value) -> Result<Self> {
        let model_cfg = v
            .get("model_cfg")
            .filter(|m| m.is_object())
            .cloned()
            .ok_or_else(|| Error::format(path, "no \"model_cfg\" object (not an open_clip_config.json)"))?;
        Ok(OpenClipConfig {
            path: path.to_path_buf(),
            model_cfg,
            preprocess_cfg: v.get("preprocess_cfg").cloned().unwrap_or(Value::Null),
        })
    }

    fn vision(&self) -> &Value {
        self.model_cfg.get("vision_cfg").unwrap_or(&Value::Null)
    }

    fn text(&self) -> &Value {
        self.model_cfg.get("text_cfg").unwrap_or(&Value::Null)
    }

    /// The family the config describes.
    pub fn family(&self) -> Result<Family> {
        let timm = self.vision().get("timm_model_name").is_some_and(|v| !v.is_null());
        let hf = self.text().get("hf_model_name").is_some_and(|v| !v.is_null());
        match (timm, hf) {
            (false, false) => Ok(Family::OpenClip),
            (true, true) => Ok(Family::BiomedClip),
            _ => Err(Error::Unsupported(format!(
                "{}: a {} image tower with a {} text tower (supported: OpenAI-style towers, or a timm ViT with a \
                 Hugging Face BERT as in BiomedCLIP)",
                self.path.display(),
                if timm { "timm" } else { "OpenAI-style" },
                if hf { "Hugging Face" } else { "OpenAI-style" }
            ))),
        }
    }

    fn num(&self, v: &Value, key: &str) -> Result<Option<f64>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::format(&self.path, format!("\"{key}\" must be a number, got {x}"))),
        }
    }

    fn string<'a>(&self, v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }

    /// A size the config states, checked against the one the tensors have (`[n, n]` counts as
    /// `n`).
    fn check(&self, v: &Value, key: &str, actual: usize, tensor: &str) -> Result<()> {
        if let Some(Value::Array(a)) = v.get(key) {
            let n: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
            if n.len() != a.len() || n.iter().any(|&x| x != actual as f64) {
                return Err(Error::format(
                    &self.path,
                    format!(
                        "\"{key}\" is {} but tensor '{tensor}' says {actual}: the config and the weights disagree",
                        Value::Array(a.clone())
                    ),
                ));
            }
            return Ok(());
        }
        if let Some(n) = self.num(v, key)? {
            if n as usize != actual || n < 0.0 {
                return Err(Error::format(
                    &self.path,
                    format!(
                        "\"{key}\" is {n} but tensor '{tensor}' says {actual}: the config and the weights disagree"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Image mean and std from `preprocess_cfg` (OpenAI's when absent).
    pub fn mean_std(&self) -> Result<Option<([f32; 3], [f32; 3])>> {
        let get = |k: &str| -> Result<Option<[f32; 3]>> {
            match self.preprocess_cfg.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)) => {
                    let f = |i: usize| a[i].as_f64().unwrap_or(0.0) as f32;
                    Ok(Some([f(0), f(1), f(2)]))
                }
                Some(x) => Err(Error::format(&self.path, format!("preprocess_cfg.{k} must be 3 numbers, got {x}"))),
            }
        };
        match (get("mean")?, get("std")?) {
            (Some(m), Some(s)) if s.iter().all(|&x| x > 0.0) => Ok(Some((m, s))),
            (None, None) => Ok(None),
            _ => Err(Error::format(&self.path, "preprocess_cfg needs both \"mean\" and positive \"std\"")),
        }
    }

    /// `preprocess_cfg.interpolation` / `resize_mode`: only bicubic (or bilinear) resize of the
    /// shortest edge then a centre crop, open_clip's default, is implemented.
    pub fn check_preprocess(&self) -> Result<bool> {
        if let Some(m) = self.string(&self.preprocess_cfg, "resize_mode") {
            if m != "shortest" {
                return Err(Error::Unsupported(format!(
                    "{}: preprocess_cfg.resize_mode '{m}' (only 'shortest' is implemented)",
                    self.path.display()
                )));
            }
        }
        match self.string(&self.preprocess_cfg, "interpolation").unwrap_or("bicubic") {
            "bicubic" => Ok(true),
            "bilinear" => Ok(false),
            other => Err(Error::Unsupported(format!(
                "{}: preprocess_cfg.interpolation '{other}' (bicubic or bilinear)",
                self.path.display()
            ))),
        }
    }
}

/// Builds the model of an open_clip checkpoint.
pub fn load_model(cfg: &OpenClipConfig, dir: &Path, w: &mut Weights, device: &Device) -> Result<ClipModel> {
    if let Some(name) = w.find_any("", &UNSUPPORTED) {
        return Err(Error::Unsupported(format!(
            "{}: tensor '{name}' belongs to a feature this version does not implement (layer scale, attention \
             pooling, extra attention / MLP norms)",
            w.path().display()
        )));
    }
    let family = cfg.family()?;
    let (vision_cfg, vision_emb, vision) = match family {
        Family::OpenClip => openai_vision(cfg, w)?,
        _ => timm_vision(cfg, w)?,
    };
    let (text_cfg, text_emb, text) = match family {
        Family::OpenClip => openai_text(cfg, w)?,
        _ => bert_text(cfg, dir, w)?,
    };
    let (pv, pt) = (vision.projection.out_dim(), text.projection.out_dim());
    let projection_dim = match (pv, pt) {
        (Some(a), Some(b)) if a == b => a,
        _ => {
            return Err(Error::format(
                w.path(),
                format!("the image projection gives {pv:?} dimensions and the text projection {pt:?}: they must agree"),
            ))
        }
    };
    cfg.check(&cfg.model_cfg, "embed_dim", projection_dim, "the projections")?;
    let logit_scale = super::model::scalar_or(w, "logit_scale", 2.6592)?;
    let config = ClipConfig { family, text: text_cfg, vision: vision_cfg, projection_dim };
    Ok(ClipModel {
        config,
        vision_embeddings: vision_emb,
        text_embeddings: text_emb,
        vision,
        text,
        logit_scale,
        device: device.clone(),
    })
}

/// The patch-embedding convolution `[D, 3, p, p]` as a matrix, with its bias if present.
fn patch_embedding(w: &Weights, weight: &str, bias: Option<&str>) -> Result<(Linear, usize, usize)> {
    let s = w.dims(weight, "the patch embedding")?;
    let [d, c, p, q] = s[..] else {
        return Err(Error::format(w.path(), format!("tensor '{weight}' has shape {s:?}, expected [width, 3, p, p]")));
    };
    if c != 3 || p != q || p == 0 {
        return Err(Error::format(w.path(), format!("tensor '{weight}' has shape {s:?}, expected [width, 3, p, p]")));
    }
    let weight = w.get(weight, &s)?.reshape((d, 3 * p * p))?;
    let bias = match bias {
        Some(b) if w.contains(b) => Some(w.get(b, &[d])?),
        _ => None,
    };
    Ok((Linear { weight, bias }, d, p))
}

/// Grid side from the number of position rows (`grid² + class`), naming the tensor otherwise.
fn grid_of(w: &Weights, name: &str, rows: usize, class: usize) -> Result<usize> {
    let n = rows.checked_sub(class).unwrap_or(0);
    let g = (n as f64).sqrt().round() as usize;
    if g == 0 || g * g != n {
        return Err(Error::format(
            w.path(),
            format!(
                "tensor '{name}' has {rows} positions, not a square patch grid{}",
                if class > 0 { " plus CLS" } else { "" }
            ),
        ));
    }
    Ok(g)
}

fn heads_for(width: usize, head_width: usize, what: &str, path: &Path) -> Result<usize> {
    if head_width == 0 || width % head_width != 0 {
        return Err(Error::format(
            path,
            format!("{what}: width {width} is not a multiple of the head width {head_width}"),
        ));
    }
    Ok(width / head_width)
}

/// A pre-norm block with open_clip names (`ln_1`, `attn.in_proj_weight`, `mlp.c_fc`, …).
fn openai_block(w: &Weights, p: &str, d: usize, heads: usize, act: Activation, eps: f64) -> Result<Block> {
    let inter = w.dims(&format!("{p}.mlp.c_fc.weight"), "the MLP")?[0];
    Ok(Block {
        ln1: LayerNorm::load(w, &format!("{p}.ln_1"), d, eps)?,
        attn: Attention::load_torch(w, &format!("{p}.attn"), d, heads)?,
        ln2: LayerNorm::load(w, &format!("{p}.ln_2"), d, eps)?,
        mlp: Mlp {
            fc1: Linear::load(w, &format!("{p}.mlp.c_fc"), d, inter, true)?,
            fc2: Linear::load(w, &format!("{p}.mlp.c_proj"), inter, d, true)?,
            activation: act,
        },
        norm: NormPlacement::Pre,
    })
}

/// open_clip stores projections as `[width, embed]` for `x @ proj`.
fn matrix_projection(w: &Weights, name: &str, width: usize) -> Result<Projection> {
    if w.contains(&format!("{name}.weight")) {
        let out = w.dims(&format!("{name}.weight"), "the projection")?[0];
        let bias = w.contains(&format!("{name}.bias"));
        return Ok(Projection::Linear(Linear::load(w, name, width, out, bias)?));
    }
    let s = w.dims(name, "the projection")?;
    if s.len() != 2 || s[0] != width {
        return Err(Error::format(w.path(), format!("tensor '{name}' has shape {s:?}, expected [{width}, embed_dim]")));
    }
    Ok(Projection::Linear(Linear { weight: w.get(name, &s)?.t()?.contiguous()?, bias: None }))
}

fn activation(cfg: &OpenClipConfig) -> Activation {
    if cfg.model_cfg.get("quick_gelu").and_then(Value::as_bool).unwrap_or(false) {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    }
}

/// The LayerNorm eps of a tower (`norm_kwargs.eps`, else PyTorch's 1e-5); `act_kwargs` (another
/// activation) is not implemented.
fn tower_eps(cfg: &OpenClipConfig, v: &Value) -> Result<f64> {
    if v.get("act_kwargs").is_some_and(|a| !a.is_null()) {
        return Err(Error::Unsupported(format!("{}: act_kwargs (only GELU / QuickGELU)", cfg.path.display())));
    }
    match v.get("norm_kwargs").and_then(|n| n.get("eps")) {
        None | Some(Value::Null) => Ok(1e-5),
        Some(e) => e
            .as_f64()
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| Error::format(&cfg.path, format!("norm_kwargs.eps must be a positive number, got {e}"))),
    }
}

fn check_pool(cfg: &OpenClipConfig, v: &Value, allowed: &[&str]) -> Result<Option<String>> {
    match cfg.string(v, "pool_type") {
        None => Ok(None),
        Some(p) if allowed.contains(&p) => Ok(Some(p.to_string())),
        Some(p) => Err(Error::Unsupported(format!(
            "{}: pool_type '{p}' (this version supports {})",
            cfg.path.display(),
            allowed.join(", ")
        ))),
    }
}

type Vision = (VisionConfig, VisionEmbeddings, Tower);
type Text = (TextConfig, TextEmbeddings, Tower);

fn openai_vision(cfg: &OpenClipConfig, w: &Weights) -> Result<Vision> {
    let v = cfg.vision();
    check_pool(cfg, v, &["tok"])?;
    let (patch, d, p) = patch_embedding(w, "visual.conv1.weight", None)?;
    let pos = w.dims("visual.positional_embedding", "the vision positions")?;
    let g = grid_of(w, "visual.positional_embedding", pos[0], 1)?;
    let layers = w.layer_count("visual.transformer.resblocks.")?;
    cfg.check(v, "width", d, "visual.conv1.weight")?;
    cfg.check(v, "patch_size", p, "visual.conv1.weight")?;
    cfg.check(v, "image_size", g * p, "visual.positional_embedding")?;
    cfg.check(v, "layers", layers, "visual.transformer.resblocks.*")?;
    let head_width = cfg.num(v, "head_width")?.map(|x| x as usize).unwrap_or(64);
    let heads = heads_for(d, head_width, "vision tower", w.path())?;
    let act = activation(cfg);
    let eps = tower_eps(cfg, v)?;
    let blocks = (0..layers)
        .map(|i| openai_block(w, &format!("visual.transformer.resblocks.{i}"), d, heads, act, eps))
        .collect::<Result<Vec<_>>>()?;
    let inter = blocks.first().map(|b| b.mlp.fc1.weight.dims()[0]).unwrap_or(0);
    let emb = VisionEmbeddings {
        patch,
        class: Some(w.get("visual.class_embedding", &[d])?),
        position: w.get("visual.positional_embedding", &[g * g + 1, d])?,
        pre_ln: Some(LayerNorm::load(w, "visual.ln_pre", d, eps)?),
        patch_size: p,
        grid: g,
    };
    let tower = Tower {
        modality: Modality::Vision,
        layers: blocks,
        final_ln: Some(LayerNorm::load(w, "visual.ln_post", d, eps)?),
        pooling: Pooling::Token,
        projection: matrix_projection(w, "visual.proj", d)?,
        causal: false,
    };
    let config = VisionConfig {
        tower: tower_config(d, inter, layers, heads, eps, act),
        image_size: g * p,
        patch_size: p,
        num_channels: 3,
        class_token: true,
    };
    Ok((config, emb, tower))
}

fn tower_config(d: usize, inter: usize, layers: usize, heads: usize, eps: f64, act: Activation) -> TowerConfig {
    TowerConfig {
        hidden_size: d,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        layer_norm_eps: eps,
        activation: act,
    }
}

fn openai_text(cfg: &OpenClipConfig, w: &Weights) -> Result<Text> {
    let t = cfg.text();
    // ("last" reads the position of the padded context; ibex does not pad open_clip captions)
    let pool = match check_pool(cfg, t, &["argmax", "first"])?.as_deref() {
        Some("first") => TextPool::First,
        _ => TextPool::Argmax,
    };
    if t.get("embed_cls").and_then(Value::as_bool).unwrap_or(false) {
        return Err(Error::Unsupported(format!("{}: text_cfg.embed_cls (CoCa)", cfg.path.display())));
    }
    let tok = w.dims("token_embedding.weight", "the token embedding")?;
    let (vocab, d) = (tok[0], *tok.get(1).unwrap_or(&0));
    let ctx = w.dims("positional_embedding", "the text positions")?[0];
    let layers = w.layer_count("transformer.resblocks.")?;
    cfg.check(t, "vocab_size", vocab, "token_embedding.weight")?;
    cfg.check(t, "width", d, "token_embedding.weight")?;
    cfg.check(t, "context_length", ctx, "positional_embedding")?;
    cfg.check(t, "layers", layers, "transformer.resblocks.*")?;
    // open_clip's CLIPTextCfg default
    let heads = cfg.num(t, "heads")?.map(|h| h as usize).unwrap_or(8);
    if heads == 0 || d % heads != 0 {
        return Err(Error::format(&cfg.path, format!("text_cfg.heads {heads} does not divide the width {d}")));
    }
    let act = activation(cfg);
    let eps = tower_eps(cfg, t)?;
    let blocks = (0..layers)
        .map(|i| openai_block(w, &format!("transformer.resblocks.{i}"), d, heads, act, eps))
        .collect::<Result<Vec<_>>>()?;
    let inter = blocks.first().map(|b| b.mlp.fc1.weight.dims()[0]).unwrap_or(0);
    let emb = TextEmbeddings {
        token: w.get("token_embedding.weight", &[vocab, d])?,
        position: w.get("positional_embedding", &[ctx, d])?,
        token_type: None,
        ln: None,
    };
    let tower = Tower {
        modality: Modality::Text,
        layers: blocks,
        final_ln: Some(LayerNorm::load(w, "ln_final", d, eps)?),
        pooling: Pooling::Token,
        projection: matrix_projection(w, "text_projection", d)?,
        causal: !t.get("no_causal_mask").and_then(Value::as_bool).unwrap_or(false),
    };
    let config = TextConfig {
        tower: tower_config(d, inter, layers, heads, eps, act),
        vocab_size: vocab,
        max_position_embeddings: ctx,
        pool,
        pad_to_context: None,
    };
    Ok((config, emb, tower))
}

/// timm's `VisionTransformer` under `visual.trunk` (LayerNorm eps 1e-6, exact GELU, CLS
/// pooling) with open_clip's `visual.head.proj`.
fn timm_vision(cfg: &OpenClipConfig, w: &Weights) -> Result<Vision> {
    let v = cfg.vision();
    let pool = cfg.string(v, "timm_pool").unwrap_or("");
    if !(pool.is_empty() || pool == "token") {
        return Err(Error::Unsupported(format!(
            "{}: timm_pool '{pool}' (only the ViT's CLS token, '' or 'token', is implemented)",
            cfg.path.display()
        )));
    }
    let proj = cfg.string(v, "timm_proj").unwrap_or("linear");
    if proj != "linear" {
        return Err(Error::Unsupported(format!("{}: timm_proj '{proj}' (only 'linear')", cfg.path.display())));
    }
    let tr = "visual.trunk";
    let (patch, d, p) =
        patch_embedding(w, &format!("{tr}.patch_embed.proj.weight"), Some(&format!("{tr}.patch_embed.proj.bias")))?;
    let pos = w.dims(&format!("{tr}.pos_embed"), "the vision positions")?;
    if pos.len() != 3 || pos[0] != 1 || pos[2] != d {
        return Err(Error::format(
            w.path(),
            format!("tensor '{tr}.pos_embed' has shape {pos:?}, expected [1, tokens, {d}]"),
        ));
    }
    let g = grid_of(w, &format!("{tr}.pos_embed"), pos[1], 1)?;
    cfg.check(v, "image_size", g * p, &format!("{tr}.pos_embed"))?;
    let layers = w.layer_count(&format!("{tr}.blocks."))?;
    let heads = heads_for(d, 64, "vision tower", w.path())?;
    let eps = 1e-6;
    let blocks = (0..layers)
        .map(|i| {
            let b = format!("{tr}.blocks.{i}");
            let inter = w.dims(&format!("{b}.mlp.fc1.weight"), "the MLP")?[0];
            Ok(Block {
                ln1: LayerNorm::load(w, &format!("{b}.norm1"), d, eps)?,
                attn: Attention::new(
                    Linear::load(w, &format!("{b}.attn.qkv"), d, 3 * d, true)?,
                    Linear::load(w, &format!("{b}.attn.proj"), d, d, true)?,
                    heads,
                )?,
                ln2: LayerNorm::load(w, &format!("{b}.norm2"), d, eps)?,
                mlp: Mlp {
                    fc1: Linear::load(w, &format!("{b}.mlp.fc1"), d, inter, true)?,
                    fc2: Linear::load(w, &format!("{b}.mlp.fc2"), inter, d, true)?,
                    activation: Activation::Gelu,
                },
                norm: NormPlacement::Pre,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let inter = blocks.first().map(|b| b.mlp.fc1.weight.dims()[0]).unwrap_or(0);
    let pre_ln = if w.contains(&format!("{tr}.norm_pre.weight")) {
        Some(LayerNorm::load(w, &format!("{tr}.norm_pre"), d, eps)?)
    } else {
        None
    };
    let emb = VisionEmbeddings {
        patch,
        class: Some(w.get(&format!("{tr}.cls_token"), &[1, 1, d])?.reshape(d)?),
        position: w.get(&format!("{tr}.pos_embed"), &[1, g * g + 1, d])?.reshape((g * g + 1, d))?,
        pre_ln,
        patch_size: p,
        grid: g,
    };
    let head = "visual.head.proj";
    let out = w.dims(&format!("{head}.weight"), "the image projection")?[0];
    let tower = Tower {
        modality: Modality::Vision,
        layers: blocks,
        final_ln: Some(LayerNorm::load(w, &format!("{tr}.norm"), d, eps)?),
        pooling: Pooling::Token,
        projection: Projection::Linear(Linear::load(w, head, d, out, w.contains(&format!("{head}.bias")))?),
        causal: false,
    };
    let config = VisionConfig {
        tower: tower_config(d, inter, layers, heads, eps, Activation::Gelu),
        image_size: g * p,
        patch_size: p,
        num_channels: 3,
        class_token: true,
    };
    Ok((config, emb, tower))
}

/// What a BERT `config.json` may say; everything else comes from the tensors.
struct BertSettings {
    heads: Option<usize>,
    eps: f64,
    act: Activation,
    source: Option<PathBuf>,
}

/// A BERT `config.json` beside the model, or in the Hugging Face cache under `hub_name`.
fn bert_settings(dir: &Path, hub_name: Option<&str>) -> Result<BertSettings> {
    let mut candidates = vec![dir.join("bert_config.json"), dir.join("text_config.json")];
    if let Some(name) = hub_name {
        // the snapshot `refs/main` names, else any snapshot (in name order)
        let repo = crate::hub::hf_cache_dir().join(format!("models--{}", name.replace('/', "--")));
        if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
            candidates.push(repo.join("snapshots").join(rev.trim()).join("config.json"));
        }
        if let Ok(rd) = std::fs::read_dir(repo.join("snapshots")) {
            let mut found: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path().join("config.json")).collect();
            found.sort();
            candidates.extend(found);
        }
    }
    for path in candidates.into_iter().filter(|p| p.is_file()) {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("not valid JSON ({e})")))?;
        let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu");
        let act = Activation::parse(act).ok_or_else(|| {
            Error::format(&path, format!("hidden_act '{act}' is not supported (gelu, gelu_new, quick_gelu)"))
        })?;
        return Ok(BertSettings {
            heads: v.get("num_attention_heads").and_then(Value::as_u64).map(|h| h as usize),
            eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12),
            act,
            source: Some(path),
        });
    }
    Ok(BertSettings { heads: None, eps: 1e-12, act: Activation::Gelu, source: None })
}

/// A Hugging Face `BertModel` under `text.transformer` (post-LayerNorm blocks, bidirectional,
/// the `[CLS]` state) with open_clip's `text.proj` (`mlp`: Linear, GELU, Linear; or `linear`).
fn bert_text(cfg: &OpenClipConfig, dir: &Path, w: &mut Weights) -> Result<Text> {
    let t = cfg.text();
    let pooler = cfg.string(t, "hf_pooler_type").unwrap_or("mean_pooler");
    if pooler != "cls_last_hidden_state_pooler" {
        return Err(Error::Unsupported(format!(
            "{}: hf_pooler_type '{pooler}' (only 'cls_last_hidden_state_pooler', BiomedCLIP's, is implemented)",
            cfg.path.display()
        )));
    }
    // the real BiomedCLIP checkpoint carries this stale buffer; it is not a weight
    w.remove("text.transformer.embeddings.position_ids");
    let settings = bert_settings(dir, cfg.string(t, "hf_model_name"))?;
    if let Some(src) = &settings.source {
        log::info!("BERT settings from {}", src.display());
    }
    let e = "text.transformer.embeddings";
    let tok = w.dims(&format!("{e}.word_embeddings.weight"), "the token embedding")?;
    let (vocab, d) = (tok[0], *tok.get(1).unwrap_or(&0));
    let positions = w.dims(&format!("{e}.position_embeddings.weight"), "the text positions")?[0];
    let ctx = match cfg.num(t, "context_length")? {
        Some(c) if (c as usize) <= positions && c >= 1.0 => c as usize,
        Some(c) => {
            return Err(Error::format(
                &cfg.path,
                format!("text_cfg.context_length {c} exceeds the {positions} rows of '{e}.position_embeddings.weight'"),
            ))
        }
        None => positions,
    };
    let heads = match settings.heads {
        Some(h) => h,
        None => heads_for(d, 64, "text tower", w.path())?,
    };
    if heads == 0 || d % heads != 0 {
        return Err(Error::format(w.path(), format!("BERT num_attention_heads {heads} does not divide the width {d}")));
    }
    let layers = w.layer_count("text.transformer.encoder.layer.")?;
    let eps = settings.eps;
    let blocks = (0..layers)
        .map(|i| {
            let b = format!("text.transformer.encoder.layer.{i}");
            let inter = w.dims(&format!("{b}.intermediate.dense.weight"), "the MLP")?[0];
            let lin = |n: &str, i: usize, o: usize| Linear::load(w, &format!("{b}.{n}"), i, o, true);
            Ok(Block {
                ln1: LayerNorm::load(w, &format!("{b}.attention.output.LayerNorm"), d, eps)?,
                attn: Attention::from_parts(
                    lin("attention.self.query", d, d)?,
                    lin("attention.self.key", d, d)?,
                    lin("attention.self.value", d, d)?,
                    lin("attention.output.dense", d, d)?,
                    heads,
                )?,
                ln2: LayerNorm::load(w, &format!("{b}.output.LayerNorm"), d, eps)?,
                mlp: Mlp {
                    fc1: lin("intermediate.dense", d, inter)?,
                    fc2: lin("output.dense", inter, d)?,
                    activation: settings.act,
                },
                norm: NormPlacement::Post,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let inter = blocks.first().map(|b| b.mlp.fc1.weight.dims()[0]).unwrap_or(0);
    let token_type = w.dims(&format!("{e}.token_type_embeddings.weight"), "the token types")?;
    let emb = TextEmbeddings {
        token: w.get(&format!("{e}.word_embeddings.weight"), &[vocab, d])?,
        position: w.get(&format!("{e}.position_embeddings.weight"), &[positions, d])?.narrow(0, 0, ctx)?,
        token_type: Some(w.get(&format!("{e}.token_type_embeddings.weight"), &token_type)?.get(0)?),
        ln: Some(LayerNorm::load(w, &format!("{e}.LayerNorm"), d, eps)?),
    };
    // open_clip's default for Hugging Face text towers
    let projection = match cfg.string(t, "hf_proj_type").unwrap_or("mlp") {
        "mlp" => {
            let hidden = w.dims("text.proj.0.weight", "the text projection")?[0];
            let out = w.dims("text.proj.2.weight", "the text projection")?[0];
            Projection::Mlp(Mlp {
                fc1: Linear::load(w, "text.proj.0", d, hidden, w.contains("text.proj.0.bias"))?,
                fc2: Linear::load(w, "text.proj.2", hidden, out, w.contains("text.proj.2.bias"))?,
                activation: Activation::Gelu,
            })
        }
        "linear" => {
            let out = w.dims("text.proj.weight", "the text projection")?[0];
            Projection::Linear(Linear::load(w, "text.proj", d, out, w.contains("text.proj.bias"))?)
        }
        other => {
            return Err(Error::Unsupported(format!("{}: hf_proj_type '{other}' (mlp or linear)", cfg.path.display())))
        }
    };
    let tower = Tower {
        modality: Modality::Text,
        layers: blocks,
        final_ln: None,
        pooling: Pooling::Token,
        projection,
        causal: false,
    };
    let config = TextConfig {
        tower: tower_config(d, inter, layers, heads, eps, settings.act),
        vocab_size: vocab,
        max_position_embeddings: ctx,
        pool: TextPool::First,
        pad_to_context: None,
    };
    Ok((config, emb, tower))
}
