//! Convolutional classifiers with taps: layers with written-out backward passes, the
//! [`Network`] that chains them, the architectures, and model-directory loading.

pub mod convnext;
pub mod depthwise;
pub mod efficientnet_lite;
pub mod layers;
pub mod network;
pub mod resnet;

pub use network::{Network, Stages, SuffixTape};

use crate::error::{Error, Result};
use crate::imaging::preprocess::ClipPreprocessor;
use crate::models::weights::Weights;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// The classifier architectures ibex reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    EfficientNetLite,
    ResNet,
    ConvNeXt,
}

impl Architecture {
    /// The model kind string (`efficientnet_lite`).
    pub fn kind(self) -> &'static str {
        match self {
            Architecture::EfficientNetLite => "efficientnet_lite",
            Architecture::ResNet => "resnet",
            Architecture::ConvNeXt => "convnext",
        }
    }

    /// Parses a kind string.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "efficientnet_lite" | "efficientnet-lite" => Some(Architecture::EfficientNetLite),
            "resnet" => Some(Architecture::ResNet),
            "convnext" => Some(Architecture::ConvNeXt),
            _ => None,
        }
    }

    /// Recognises an architecture from a config (`model_type` or `model`) or, failing that,
    /// from the tensor names of the checkpoint.
    pub fn detect(config: &serde_json::Value, weights: Option<&Weights>) -> Option<Self> {
        let name = config.get("model_type").or_else(|| config.get("model")).and_then(|v| v.as_str()).unwrap_or("");
        if name.starts_with("efficientnet-lite") || name.starts_with("efficientnet_lite") {
            return Some(Architecture::EfficientNetLite);
        }
        if name.starts_with("resnet") {
            return Some(Architecture::ResNet);
        }
        if name.starts_with("convnext") {
            return Some(Architecture::ConvNeXt);
        }
        let w = weights?;
        if w.contains("_conv_stem.weight") && w.contains("_blocks.0._depthwise_conv.weight") {
            return Some(Architecture::EfficientNetLite);
        }
        if w.contains("conv1.weight") && w.contains("layer1.0.conv1.weight") {
            return Some(Architecture::ResNet);
        }
        if w.contains("features.0.0.weight") && w.contains("features.1.0.block.0.weight") {
            return Some(Architecture::ConvNeXt);
        }
        None
    }
}

/// A classifier directory loaded for explanation: the network, class names, preprocessing and
/// the settings the directory recommends.
///
/// Layout: `config.json` (architecture facts the weights do not hold, e.g. strides),
/// `model.safetensors` (or another single `*.safetensors`, or `pytorch_model.bin`),
/// `preprocessor_config.json` (resize/crop/mean/std; EfficientNet-Lite's `(x − 127)/128` if
/// absent), optional `classes.txt` (one name per line) and optional `ibex.json` (per-method
/// recommended settings, e.g. the IBA tap and its feature statistics).
pub struct ClassifierBundle {
    pub architecture: Architecture,
    pub network: Network,
    pub labels: Vec<String>,
    pub preprocessor: ClipPreprocessor,
    /// `{"iba": {...}, ...}` from `ibex.json` (empty object if absent).
    pub recommended: serde_json::Value,
    pub dir: PathBuf,
    pub device: Device,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON ({e})")))
}

/// The checkpoint file of a model directory.
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    for f in ["model.safetensors", "pytorch_model.bin"] {
        if dir.join(f).is_file() {
            return Ok(dir.join(f));
        }
    }
    let mut st: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors" || e == "pth" || e == "pt"))
        .collect();
    st.sort();
    match st.len() {
        1 => Ok(st.remove(0)),
        0 => Err(Error::NotFound(format!("{}: no model.safetensors, pytorch_model.bin or *.pth", dir.display()))),
        _ => Err(Error::invalid(format!(
            "{}: several checkpoints ({}); keep one, or name it model.safetensors / pytorch_model.bin (matching its format)",
            dir.display(),
            st.iter().filter_map(|p| p.file_name()?.to_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl ClassifierBundle {
    /// Loads a classifier directory; `architecture` `None` detects it.
    pub fn load(dir: &Path, architecture: Option<Architecture>, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("{} is not a model directory", dir.display())));
        }
        let cfg_path = dir.join("config.json");
        let config = if cfg_path.is_file() { read_json(&cfg_path)? } else { serde_json::json!({}) };
        let weights = Weights::load(&weights_file(dir)?, device)?;
        let architecture = match architecture.or_else(|| Architecture::detect(&config, Some(&weights))) {
            Some(a) => a,
            None => {
                return Err(Error::Unsupported(format!(
                    "{}: cannot tell the architecture from config.json or the tensor names",
                    dir.display()
                )))
            }
        };
        let network = match architecture {
            Architecture::EfficientNetLite => {
                let strides = efficientnet_lite::strides_from_config(&config).ok_or_else(|| {
                    Error::format(
                        &cfg_path,
                        "EfficientNet-Lite needs the block strides (each 1..=4): 'blocks[i].stride' or 'stages'",
                    )
                })?;
                efficientnet_lite::build(&weights, &strides)?
            }
            Architecture::ResNet => resnet::build(&weights, resnet::strides_from_config(&config)?)?,
            Architecture::ConvNeXt => convnext::build(&weights)?,
        };
        drop(weights);
        let pp = dir.join("preprocessor_config.json");
        let preprocessor = if pp.is_file() {
            ClipPreprocessor::from_file(&pp)?
        } else {
            let mut p = ClipPreprocessor::for_image_size(224);
            match architecture {
                // TF Lite's inception-style input
                Architecture::EfficientNetLite => {
                    p.do_rescale = false;
                    p.mean = [127.0; 3];
                    p.std = [128.0; 3];
                }
                // torchvision's ImageNet evaluation: shorter side 256, centre 224, mean/std
                Architecture::ResNet | Architecture::ConvNeXt => {
                    p.shortest_edge = 256;
                    p.mean = [0.485, 0.456, 0.406];
                    p.std = [0.229, 0.224, 0.225];
                }
            }
            p
        };
        let labels = match dir.join("classes.txt") {
            p if p.is_file() => {
                let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                let l: Vec<String> = text.lines().map(|s| s.trim().to_string()).collect();
                if l.len() != network.num_classes {
                    return Err(Error::format(
                        &p,
                        format!("{} class names for a model with {} classes", l.len(), network.num_classes),
                    ));
                }
                l
            }
            _ => (0..network.num_classes).map(|i| format!("class {i}")).collect(),
        };
        let rec = dir.join("ibex.json");
        let recommended = if rec.is_file() { read_json(&rec)? } else { serde_json::json!({}) };
        Ok(ClassifierBundle {
            architecture,
            network,
            labels,
            preprocessor,
            recommended,
            dir: dir.to_path_buf(),
            device: device.clone(),
        })
    }

    /// The same model with another network (labels, preprocessing and settings shared): the
    /// randomised copies of the MPRT sanity check.
    pub fn with_network(&self, network: Network) -> ClassifierBundle {
        ClassifierBundle {
            architecture: self.architecture,
            network,
            labels: self.labels.clone(),
            preprocessor: self.preprocessor.clone(),
            recommended: self.recommended.clone(),
            dir: self.dir.clone(),
            device: self.device.clone(),
        }
    }

    /// The settings `ibex.json` recommends for `method` (JSON null if none).
    pub fn recommended_for(&self, method: &str) -> serde_json::Value {
        self.recommended.get(method).cloned().unwrap_or(serde_json::Value::Null)
    }

    /// The label of class `i` (`class i` if the directory has no names).
    pub fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| format!("class {i}"))
    }
}
