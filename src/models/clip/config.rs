//! The shape of a dual encoder ([`ClipConfig`]), whichever family it comes from, and the
//! Hugging Face `CLIPConfig` reader (`config.json`, with HF's defaults for absent fields). The
//! other families' readers (`open_clip`, `siglip`) fill the same structure.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Activation inside the transformer MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU with erf.
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            _ => None,
        }
    }
}

/// The checkpoint family a dual encoder was loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Hugging Face `CLIPModel` (`config.json`, `model_type: "clip"`).
    Clip,
    /// open_clip with OpenAI-style towers (`open_clip_config.json`).
    OpenClip,
    /// Hugging Face `SiglipModel` (`model_type: "siglip"`).
    Siglip,
    /// open_clip with a timm ViT image tower and a Hugging Face BERT text tower (BiomedCLIP).
    BiomedClip,
}

impl Family {
    /// The family's usual name, for messages (`"CLIP"`, `"open_clip"`, `"SigLIP"`,
    /// `"BiomedCLIP"`).
    pub fn display_name(self) -> &'static str {
        match self {
            Family::Clip => "CLIP",
            Family::OpenClip => "open_clip",
            Family::Siglip => "SigLIP",
            Family::BiomedClip => "BiomedCLIP",
        }
    }

    /// The model kind string (`Model::load`, `ibex_model_load`, `model.kind`).
    pub fn kind(self) -> &'static str {
        match self {
            Family::Clip => "clip",
            Family::OpenClip => "open_clip",
            Family::Siglip => "siglip",
            Family::BiomedClip => "biomedclip",
        }
    }
}

/// Which text token's final state becomes the text embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextPool {
    /// The first occurrence of this end-of-text id (HF CLIP with a real `eos_token_id`).
    Eos(u32),
    /// The largest id, the end-of-text token in CLIP's vocabulary (open_clip; HF's rule for
    /// legacy configs with `eos_token_id == 2`).
    Argmax,
    /// The last position (SigLIP: after padding to the full context).
    Last,
    /// The first position, `[CLS]` (BERT).
    First,
}

/// One tower (text or vision) of a CLIP model.
#[derive(Clone, Debug)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

/// Vision tower: a [`TowerConfig`] plus the patch geometry.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    pub tower: TowerConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    /// Whether the sequence starts with a CLS token (not in SigLIP).
    pub class_token: bool,
}

impl VisionConfig {
    /// Patches per side (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Tokens including CLS.
    pub fn num_tokens(&self) -> usize {
        self.grid() * self.grid() + self.class_token as usize
    }
}

/// Text tower: a [`TowerConfig`] plus vocabulary and positions.
#[derive(Clone, Debug)]
pub struct TextConfig {
    pub tower: TowerConfig,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Where the embedding is read.
    pub pool: TextPool,
    /// SigLIP pads every caption to `max_position_embeddings` with this id (the model was
    /// trained that way and reads its embedding at the last position).
    pub pad_to_context: Option<u32>,
}

/// A whole CLIP model configuration.
#[derive(Clone, Debug)]
pub struct ClipConfig {
    pub family: Family,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawTower {
    pub(crate) hidden_size: Option<usize>,
    pub(crate) intermediate_size: Option<usize>,
    pub(crate) num_hidden_layers: Option<usize>,
    pub(crate) num_attention_heads: Option<usize>,
    pub(crate) layer_norm_eps: Option<f64>,
    pub(crate) hidden_act: Option<String>,
    pub(crate) projection_dim: Option<usize>,
    // vision
    pub(crate) image_size: Option<usize>,
    pub(crate) patch_size: Option<usize>,
    pub(crate) num_channels: Option<usize>,
    // text
    pub(crate) vocab_size: Option<usize>,
    pub(crate) max_position_embeddings: Option<usize>,
    pub(crate) eos_token_id: Option<u32>,
    pub(crate) pad_token_id: Option<u32>,
    /// SigLIP's text head output size.
    pub(crate) projection_size: Option<usize>,
}

#[derive(Deserialize)]
pub(crate) struct RawConfig {
    pub(crate) model_type: Option<String>,
    pub(crate) text_config: Option<RawTower>,
    pub(crate) vision_config: Option<RawTower>,
    pub(crate) text_config_dict: Option<RawTower>,
    pub(crate) vision_config_dict: Option<RawTower>,
    pub(crate) projection_dim: Option<usize>,
}

impl ClipConfig {
    /// Reads `config.json` of an HF `CLIPModel`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::format(path, m),
            e => e,
        })
    }

    /// Parses the JSON text of an HF `CLIPModel` config.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_str(json).map_err(|e| Error::invalid(format!("not a CLIP config.json: {e}")))?;
        if let Some(t) = raw.model_type.as_deref() {
            if t != "clip" {
                return Err(Error::invalid(format!(
                    "model_type is '{t}', expected 'clip' (an HF CLIPModel directory)"
                )));
            }
        }
        let t = raw.text_config.or(raw.text_config_dict).unwrap_or_default();
        let v = raw.vision_config.or(raw.vision_config_dict).unwrap_or_default();
        let text = TextConfig {
            tower: tower(&t, 512, 2048, 12, 8, "text")?,
            vocab_size: t.vocab_size.unwrap_or(49408),
            max_position_embeddings: t.max_position_embeddings.unwrap_or(77),
            // HF's rule: the legacy default `eos_token_id == 2` means "the argmax of the ids"
            pool: match t.eos_token_id.unwrap_or(2) {
                2 => TextPool::Argmax,
                eos => TextPool::Eos(eos),
            },
            pad_to_context: None,
        };
        let vision = VisionConfig {
            tower: tower(&v, 768, 3072, 12, 12, "vision")?,
            image_size: v.image_size.unwrap_or(224),
            patch_size: v.patch_size.unwrap_or(32),
            num_channels: v.num_channels.unwrap_or(3),
            class_token: true,
        };
        if vision.patch_size == 0 || vision.image_size % vision.patch_size != 0 {
            return Err(Error::invalid(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                vision.image_size, vision.patch_size
            )));
        }
        if vision.num_channels != 3 {
            return Err(Error::invalid(format!("vision num_channels {} (only 3 is supported)", vision.num_channels)));
        }
        let projection_dim = raw.projection_dim.or(t.projection_dim).unwrap_or(512);
        Ok(ClipConfig { family: Family::Clip, text, vision, projection_dim })
    }
}

pub(crate) fn tower(
    r: &RawTower,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    name: &str,
) -> Result<TowerConfig> {
    let act = r.hidden_act.as_deref().unwrap_or("quick_gelu");
    let activation = Activation::parse(act).ok_or_else(|| {
        Error::invalid(format!("{name}_config.hidden_act '{act}' is not supported (quick_gelu, gelu, gelu_new)"))
    })?;
    let c = TowerConfig {
        hidden_size: r.hidden_size.unwrap_or(hidden),
        intermediate_size: r.intermediate_size.unwrap_or(inter),
        num_hidden_layers: r.num_hidden_layers.unwrap_or(layers),
        num_attention_heads: r.num_attention_heads.unwrap_or(heads),
        layer_norm_eps: r.layer_norm_eps.unwrap_or(1e-5),
        activation,
    };
    if c.num_attention_heads == 0 || c.hidden_size % c.num_attention_heads != 0 {
        return Err(Error::invalid(format!(
            "{name}_config: hidden_size {} is not divisible by num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        )));
    }
    if c.num_hidden_layers == 0 {
        return Err(Error::invalid(format!("{name}_config: num_hidden_layers is 0")));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_vit_b32_defaults() {
        let c = ClipConfig::from_json(r#"{"model_type":"clip"}"#).unwrap();
        assert_eq!(c.vision.grid(), 7);
        assert_eq!(c.vision.num_tokens(), 50);
        assert_eq!(c.text.tower.hidden_size, 512);
        assert_eq!(c.projection_dim, 512);
    }

    #[test]
    fn rejects_other_models_and_bad_geometry() {
        assert!(ClipConfig::from_json(r#"{"model_type":"bert"}"#).is_err());
        let e = ClipConfig::from_json(r#"{"vision_config":{"image_size":100,"patch_size":32}}"#).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        assert!(ClipConfig::from_json("{").is_err());
    }
}
