//! Training a PIP-Net (ConvNeXt backbone) in Rust, as the official `main.py` does it.
//!
//! **Phases.** (1) *Prototype pretraining*, `epochs_pretrain` epochs of
//! `λ_A L_A + 5 L_T` with `λ_A` rising as `epoch / epochs_pretrain` (the scoring sheet is not
//! trained). (2) *Training*, `epochs` epochs: the first `finetune_epochs` (3) train only the
//! scoring sheet on `2 L_C`; then everything on `5 L_A + 2 L_T + 2 L_C`, with the early
//! backbone (`features.0`–`features.5`) frozen until epoch `freeze_epochs` has passed. See
//! [`super::pipnet_loss`] for the terms.
//!
//! **Optimisers** (AdamW, as the official `get_optimizer_nn`): backbone `features.0`–`5` at
//! `lr_net`, `features.6`–`7` at `lr_block`; the sheet at `lr`. Both are re-created for phase 2.
//! Schedules: the backbone's cosine annealing per step (phase 1 to `lr_block / 100` over all of
//! phase 1; phase 2 to `lr_net / 100` over `epochs` epochs of steps, stepped only when the
//! backbone trains), the sheet's cosine warm restarts (period 5 epochs, or 10 above 30 epochs,
//! floor 0.001) stepped with the fractional epoch after each batch.
//!
//! **Sparsity.** After every phase-2 step `W ← max(W − 10⁻³, 0)`, and once more before the last
//! epoch and every 30th. (The official `eval_pipnet` also subtracts 10⁻³ before every *evaluation* batch, so
//! its reported figures belong to a sheet that is not the saved one — upstream issue #3; here
//! evaluation never changes the model.) `relu'(0) = 0`, so a weight clamped to 0 gets no
//! gradient and stays 0 unless Adam's momentum carries it.
//!
//! **Data.** Every image gives two views per step: a shared geometric part (resize to
//! `image_size + resize_margin`, TrivialAugment shape ops, horizontal flip, random resized crop
//! to `image_size + crop_margin` with scale 0.95–1) and per view a colour part (TrivialAugment
//! colour ops, random crop to `image_size`, grey if `grayscale`), then normalisation. Views are
//! drawn from a generator keyed by (seed, phase, epoch, image), so a resumed run sees exactly
//! the views of an uninterrupted one. Batches drop the last incomplete one (as the official
//! loaders do).
//!
//! **Differences from the official run, on purpose.** Stochastic depth is off (the official
//! ConvNeXt trains with drop-path; the fixture's model used 0.1): it is a regulariser that the
//! parity data also turns off. No post-training pruning of prototypes never seen above 0.1.
//!
//! **Checkpoints.** After every epoch the output directory holds a loadable model
//! (`model.safetensors` with the official tensor names, `config.json`) and `train_state.safetensors`
//! (the same weights plus the optimiser moments and the position), each written to a temporary
//! file and renamed, so an interrupt never leaves a broken checkpoint; `metrics.jsonl` gets one
//! line per epoch.

use super::pipnet_eval::{evaluate, EvalReport};
use super::pipnet_loss::{pipnet_loss, LossTerms, LossWeights};
use super::schedule::{cosine, warm_restarts};
use crate::bottleneck::adam::Adam;
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::imaging::augment::{crop, flip_horizontal, random_resized_crop_params};
use crate::imaging::folder::ImageFolder;
use crate::imaging::image::RgbImage;
use crate::imaging::preprocess::ClipPreprocessor;
use crate::imaging::resize::{resize_with, Filter, PassOrder};
use crate::imaging::trivial_augment::{trivial_augment, OpSet};
use crate::models::cnn::convnext;
use crate::models::pipnet::PipNet;
use crate::models::weights::Weights;
use candle_core::{DType, Device, Tensor, D};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The backbone to build: a torchvision ConvNeXt with PIP-Net's stride rule.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// Channels of the four stages (ConvNeXt-tiny: 96, 192, 384, 768).
    pub widths: Vec<usize>,
    /// Blocks per stage (ConvNeXt-tiny: 3, 3, 9, 3).
    pub depths: Vec<usize>,
    /// Downsampling convolutions with more input channels than this run at stride 1 (24 gives
    /// ConvNeXt-tiny a 26×26 grid at 224 px).
    pub stride_threshold: usize,
    /// Start from these backbone weights (torchvision names `features.*`, e.g. an
    /// ImageNet-trained ConvNeXt as safetensors) instead of a random initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

impl Default for BackboneSpec {
    fn default() -> Self {
        BackboneSpec { widths: vec![96, 192, 384, 768], depths: vec![3, 3, 9, 3], stride_threshold: 24, init: None }
    }
}

/// Training settings (`train.json`). Names and defaults follow the official `util/args.py`
/// where it has the setting.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub backbone: BackboneSpec,
    /// Side of the square model input.
    pub image_size: u32,
    /// Convert views to grey (three equal channels), for grey data such as Fashion-MNIST.
    pub grayscale: bool,
    /// Phase-2 epochs (60).
    pub epochs: usize,
    /// Prototype pretraining epochs (10).
    pub epochs_pretrain: usize,
    /// Images per phase-2 batch (64); each gives two views.
    pub batch_size: usize,
    /// Images per pretraining batch (128).
    pub batch_size_pretrain: usize,
    /// The backbone trains fully only after this many phase-2 epochs (10).
    pub freeze_epochs: usize,
    /// Phase-2 epochs that train only the sheet (3; the official code fixes it).
    pub finetune_epochs: usize,
    /// Sheet learning rate (0.05).
    pub lr: f64,
    /// Learning rate of `features.6`–`features.7` (0.0005).
    pub lr_block: f64,
    /// Learning rate of the rest of the backbone (0.0005).
    pub lr_net: f64,
    /// AdamW weight decay (0).
    pub weight_decay: f64,
    /// Pretraining also trains `features.0`–`features.5` (the official code leaves them
    /// frozen, suited to ImageNet-initialised backbones; from scratch they must train).
    pub pretrain_backbone: bool,
    /// Pixels added to `image_size` by the first resize of the augmentation (32).
    pub resize_margin: u32,
    /// Pixels added to `image_size` by the random resized crop (8).
    pub crop_margin: u32,
    pub seed: u64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            backbone: BackboneSpec::default(),
            image_size: 224,
            grayscale: false,
            epochs: 60,
            epochs_pretrain: 10,
            batch_size: 64,
            batch_size_pretrain: 128,
            freeze_epochs: 10,
            finetune_epochs: 3,
            lr: 0.05,
            lr_block: 0.0005,
            lr_net: 0.0005,
            weight_decay: 0.0,
            pretrain_backbone: false,
            resize_margin: 32,
            crop_margin: 8,
            seed: 1,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl TrainConfig {
    /// Reads a `train.json` (missing keys take the defaults; unknown keys are errors).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: TrainConfig =
            serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not a training config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let b = &self.backbone;
        if b.widths.len() != 4 || b.depths.len() != 4 || b.widths.iter().chain(&b.depths).any(|&v| v == 0) {
            return Err(Error::invalid("backbone needs four positive widths and four positive depths"));
        }
        if !(16..=1024).contains(&self.image_size) {
            return Err(Error::invalid(format!("image_size {} is outside 16…1024", self.image_size)));
        }
        if self.batch_size < 2 || self.batch_size_pretrain < 2 {
            return Err(Error::invalid("batch sizes must be at least 2 (the tanh loss sums over the batch)"));
        }
        if self.epochs == 0 && self.epochs_pretrain == 0 {
            return Err(Error::invalid("nothing to train: epochs and epochs_pretrain are both 0"));
        }
        for (k, v) in [("lr", self.lr), ("lr_block", self.lr_block), ("lr_net", self.lr_net)] {
            if !(v.is_finite() && v > 0.0 && v < 10.0) {
                return Err(Error::invalid(format!("{k} = {v} must be in (0, 10)")));
            }
        }
        if !(self.weight_decay.is_finite() && (0.0..1.0).contains(&self.weight_decay)) {
            return Err(Error::invalid("weight_decay must be in [0, 1)"));
        }
        if self.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::invalid("mean must be finite and std positive"));
        }
        Ok(())
    }

    fn preprocessor(&self) -> ClipPreprocessor {
        let mut pre = ClipPreprocessor::for_image_size(self.image_size);
        pre.resample = Filter::Bilinear;
        pre.mean = self.mean;
        pre.std = self.std;
        pre
    }

    /// The model `config.json` a trained model is saved with ([`crate::models::pipnet::PipNetBundle`] reads it).
    fn model_config(&self, classes: &[String]) -> serde_json::Value {
        serde_json::json!({
            "architecture": "pipnet",
            "model": "PIP-Net trained with ibex",
            "backbone": {
                "type": "convnext",
                "stride_threshold": self.backbone.stride_threshold,
                "widths": self.backbone.widths,
                "depths": self.backbone.depths,
            },
            "image_size": self.image_size,
            "patchsize": 32.min(self.image_size),
            "mean": self.mean,
            "std": self.std,
            "class_names": classes,
            "train": self,
        })
    }
}

/// A random initial PIP-Net state dict (`_net.features.*`, `_classification.weight`, both
/// multipliers) as torchvision and the official code initialise it: convolution and linear
/// weights N(0, 0.02²) truncated at ±2, zero biases, unit LayerNorms, layer scale 10⁻⁶; the
/// sheet N(1, 0.1²), multiplier 2.
pub fn init_weights(spec: &BackboneSpec, classes: usize, seed: u64) -> Result<HashMap<String, Tensor>> {
    use rand_distr::{Distribution, Normal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    let dev = Device::Cpu;
    let mut normal = |shape: &[usize], mean: f64, std: f64| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let dist = Normal::new(mean, std).map_err(|e| Error::invalid(e.to_string()))?;
        let v: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng).clamp(mean - 2.0, mean + 2.0) as f32).collect();
        Ok(Tensor::from_vec(v, shape, &dev)?)
    };
    let mut put = |name: String, t: Tensor| {
        out.insert(format!("_net.{name}"), t);
    };
    let fill = |shape: &[usize], v: f32| Tensor::full(v, shape, &Device::Cpu);
    let (w0, s) = (spec.widths[0], 0.02);
    put("features.0.0.weight".into(), normal(&[w0, 3, 4, 4], 0.0, s)?);
    put("features.0.0.bias".into(), fill(&[w0], 0.0)?);
    put("features.0.1.weight".into(), fill(&[w0], 1.0)?);
    put("features.0.1.bias".into(), fill(&[w0], 0.0)?);
    for (stage, (&c, &depth)) in spec.widths.iter().zip(&spec.depths).enumerate() {
        let f = 2 * stage + 1;
        for i in 0..depth {
            let p = format!("features.{f}.{i}");
            put(format!("{p}.block.0.weight"), normal(&[c, 1, 7, 7], 0.0, s)?);
            put(format!("{p}.block.0.bias"), fill(&[c], 0.0)?);
            put(format!("{p}.block.2.weight"), fill(&[c], 1.0)?);
            put(format!("{p}.block.2.bias"), fill(&[c], 0.0)?);
            put(format!("{p}.block.3.weight"), normal(&[4 * c, c], 0.0, s)?);
            put(format!("{p}.block.3.bias"), fill(&[4 * c], 0.0)?);
            put(format!("{p}.block.5.weight"), normal(&[c, 4 * c], 0.0, s)?);
            put(format!("{p}.block.5.bias"), fill(&[c], 0.0)?);
            put(format!("{p}.layer_scale"), fill(&[c, 1, 1], 1e-6)?);
        }
        if let Some(&next) = spec.widths.get(stage + 1) {
            let p = format!("features.{}", f + 1);
            put(format!("{p}.0.weight"), fill(&[c], 1.0)?);
            put(format!("{p}.0.bias"), fill(&[c], 0.0)?);
            put(format!("{p}.1.weight"), normal(&[next, c, 2, 2], 0.0, s)?);
            put(format!("{p}.1.bias"), fill(&[next], 0.0)?);
        }
    }
    let d = *spec.widths.last().expect("validated: four widths");
    out.insert("_classification.weight".into(), normal(&[classes, d], 1.0, 0.1)?);
    out.insert("_classification.normalization_multiplier".into(), fill(&[1], 2.0)?);
    out.insert("_multiplier".into(), fill(&[1], 2.0)?);
    Ok(out)
}

/// What one forward and backward pass gives.
pub struct Gradients {
    pub loss: LossTerms,
    /// Mean number of prototypes with `p ≥ 0.1` per view.
    pub present: f64,
    /// `∂loss/∂W` of the sheet, if it trains.
    pub sheet: Option<Tensor>,
    /// `∂loss/∂params` of the backbone stages from `first_trained` on, one list per stage.
    pub backbone: Vec<Vec<Tensor>>,
}

/// The loss of `net` on the two-view batch `x [2B, 3, S, S]` with `labels` (`B`), and the
/// gradients of the sheet (if `train_sheet`) and of the backbone stages from index
/// `first_trained` on (none if `None`; the stages before run without recording anything).
pub fn gradients(
    net: &PipNet,
    x: &Tensor,
    labels: &[u32],
    weights: &LossWeights,
    train_sheet: bool,
    first_trained: Option<usize>,
) -> Result<Gradients> {
    let names = net.backbone.stage_names();
    let (f, tape) = match first_trained {
        Some(i) if i < names.len() => {
            let tap = if i == 0 { "input" } else { names[i - 1] };
            let h = net.backbone.forward_until(tap, x)?;
            let (f, t) = net.backbone.suffix_forward_train(tap, &h)?;
            (f, Some(t))
        }
        _ => (net.backbone.forward(x)?, None),
    };
    let (n, d, h, w) = f.dims4()?;
    let z = candle_nn::ops::softmax(&f, 1)?;
    let zf = z.reshape((n, d, h * w))?;
    let arg = zf.argmax_keepdim(D::Minus1)?;
    let p = zf.gather(&arg, D::Minus1)?.squeeze(D::Minus1)?;
    let sheet = net.weight.relu()?;
    let o = p.matmul(&sheet.t()?)?;
    let present = p.ge(0.1f32)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? / n as f64;
    let (loss, g) = pipnet_loss(&z, &p, &o, labels, net.multiplier as f64, weights)?;
    let dsheet = if train_sheet {
        // relu'(0) = 0: weights at or below 0 get no gradient
        Some((g.dout.t()?.matmul(&p)? * net.weight.gt(0f32)?.to_dtype(p.dtype())?)?)
    } else {
        None
    };
    let backbone = match tape {
        Some(t) => {
            let dp = (&g.dp + g.dout.matmul(&sheet)?)?;
            let dz = g.dz.reshape((n, d, h * w))?.scatter_add(&arg, &dp.unsqueeze(D::Minus1)?, D::Minus1)?;
            let dz = dz.reshape((n, d, h, w))?;
            // softmax backward over the prototypes: z ⊙ (dz − Σ_d z·dz)
            let df = (&z * dz.broadcast_sub(&(&z * &dz)?.sum_keepdim(1)?)?)?;
            net.backbone.suffix_backward_params(&t, &df)?.1
        }
        None => Vec::new(),
    };
    Ok(Gradients { loss, present, sheet: dsheet, backbone })
}

/// Training phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pretrain,
    Train,
}

/// Where a run stands: `epochs_done` complete epochs of `phase`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub phase: Phase,
    pub epochs_done: usize,
    /// Backbone scheduler steps taken in this phase.
    pub net_steps: usize,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochMetrics {
    pub phase: Phase,
    pub epoch: usize,
    /// Mean of the batch losses.
    pub loss: f64,
    pub align: f64,
    pub tanh: f64,
    pub class: f64,
    /// Mean training accuracy (un-clamped scores, both views); 0 in pretraining.
    pub train_accuracy: f64,
    /// Mean number of prototypes with `p ≥ 0.1` per view.
    pub present: f64,
    pub lr_net: f64,
    pub lr_sheet: f64,
    pub seconds: f64,
    /// On the test folder, if one was given (phase 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<EvalReport>,
}

/// A PIP-Net training run.
pub struct Trainer {
    pub config: TrainConfig,
    pub classes: Vec<String>,
    pub net: PipNet,
    /// Per backbone stage, the state-dict names of its parameters (without `_net.`).
    names: Vec<Vec<String>>,
    /// The state-dict shape of every parameter (layers may hold them reshaped).
    shapes: HashMap<String, Vec<usize>>,
    opt_net: Vec<Vec<Adam>>,
    opt_sheet: Adam,
    pub position: Position,
    data_fingerprint: String,
}

fn fingerprint(data: &ImageFolder) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h = (h ^ x as u64).wrapping_mul(0x100_0000_01b3);
        }
    };
    for (img, &l) in data.images.iter().zip(&data.labels) {
        eat(&img.width.to_le_bytes());
        eat(&img.height.to_le_bytes());
        eat(&l.to_le_bytes());
        for v in img.data.iter().step_by(7) {
            eat(&v.to_le_bytes());
        }
    }
    format!("{}:{h:016x}", data.len())
}

const STATE_FILE: &str = "train_state.safetensors";

impl Trainer {
    /// A fresh run on `data` (its class directories become the classes).
    pub fn new(config: TrainConfig, data: &ImageFolder) -> Result<Self> {
        config.validate()?;
        let mut tensors = init_weights(&config.backbone, data.classes.len(), config.seed)?;
        if let Some(path) = &config.backbone.init {
            let w = Weights::load(path, &Device::Cpu)?;
            let scoped = if w.contains("features.0.0.weight") { w } else { w.scoped("_net.") };
            for (name, t) in tensors.iter_mut().filter(|(n, _)| n.starts_with("_net.")) {
                let short = &name["_net.".len()..];
                *t = scoped.get(short, t.dims())?;
            }
        }
        Self::from_tensors(config, data.classes.clone(), tensors, fingerprint(data))
    }

    fn from_tensors(
        config: TrainConfig,
        classes: Vec<String>,
        tensors: HashMap<String, Tensor>,
        data_fingerprint: String,
    ) -> Result<Self> {
        let shapes = tensors.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
        let w = Weights::from_tensors(tensors);
        let net = PipNet::convnext(&w, config.backbone.stride_threshold)?;
        let (_, _, names) = convnext::features_named(&w.scoped("_net."), Some(config.backbone.stride_threshold))?;
        let opt_net = Self::optimisers(&net, &config)?;
        let opt_sheet = Adam::new(&net.weight, config.lr)?.with_weight_decay(config.weight_decay);
        let position = Position {
            phase: if config.epochs_pretrain > 0 { Phase::Pretrain } else { Phase::Train },
            epochs_done: 0,
            net_steps: 0,
        };
        Ok(Trainer { config, classes, net, names, shapes, opt_net, opt_sheet, position, data_fingerprint })
    }

    fn optimisers(net: &PipNet, config: &TrainConfig) -> Result<Vec<Vec<Adam>>> {
        net.backbone
            .stage_params()?
            .iter()
            .map(|ps| ps.iter().map(|p| Ok(Adam::new(p, 1.0)?.with_weight_decay(config.weight_decay))).collect())
            .collect()
    }

    /// Index of the first stage of the `lr_block` group (`features.6`).
    fn block_stage(&self) -> usize {
        self.net.backbone.stage_names().iter().position(|n| *n == "features.6").unwrap_or(0)
    }

    /// The state dict of the current model (official names and shapes).
    fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (names, params) in self.names.iter().zip(self.net.backbone.stage_params()?) {
            for (n, p) in names.iter().zip(params) {
                let full = format!("_net.{n}");
                let shape = self.shapes.get(&full).cloned().unwrap_or_else(|| p.dims().to_vec());
                out.insert(full, p.reshape(shape)?);
            }
        }
        out.insert("_classification.weight".into(), self.net.weight.clone());
        let m = Tensor::new(&[self.net.multiplier], &Device::Cpu)?;
        out.insert("_classification.normalization_multiplier".into(), m.clone());
        out.insert("_multiplier".into(), m);
        Ok(out)
    }

    /// Writes the model directory and the resumable state (each through a temporary file).
    pub fn save(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let dict = self.state_dict()?;
        let tmp = out.join("model.safetensors.partial");
        Weights::from_tensors(dict.clone()).save(&tmp)?;
        std::fs::rename(&tmp, out.join("model.safetensors")).map_err(|e| Error::io(out, e))?;
        let cfg = out.join("config.json");
        let tmp = out.join("config.json.partial");
        std::fs::write(&tmp, serde_json::to_string_pretty(&self.config.model_config(&self.classes))?)
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &cfg).map_err(|e| Error::io(&cfg, e))?;
        let mut map: HashMap<String, Tensor> = dict.into_iter().map(|(k, t)| (format!("param.{k}"), t)).collect();
        for (names, opts) in self.names.iter().zip(&self.opt_net) {
            for (n, o) in names.iter().zip(opts) {
                o.save_into(&format!("adam.{n}"), &mut map)?;
            }
        }
        self.opt_sheet.save_into("adam._classification.weight", &mut map)?;
        let header = serde_json::json!({
            "kind": "ibex pipnet training state",
            "position": self.position,
            "config": self.config,
            "classes": self.classes,
            "data": self.data_fingerprint,
        });
        crate::explain::fit::save_state(&out.join(STATE_FILE), map, &header)
    }

    /// Continues the run saved in `out` on the same `data` and configuration.
    pub fn resume(out: &Path, config: &TrainConfig, data: &ImageFolder) -> Result<Self> {
        let path = out.join(STATE_FILE);
        let (map, header) = crate::explain::fit::load_state(&path)?;
        let saved: TrainConfig = serde_json::from_value(header["config"].clone())
            .map_err(|e| Error::format(&path, format!("bad training config in the state ({e})")))?;
        if &saved != config {
            return Err(Error::invalid(format!(
                "{} was trained with other settings; resume with the same train.json or start a new --out",
                path.display()
            )));
        }
        let fp = fingerprint(data);
        if header["data"].as_str() != Some(fp.as_str()) {
            return Err(Error::invalid(format!(
                "{} was trained on other images; resume on the same --data (and --per-class)",
                path.display()
            )));
        }
        let tensors: HashMap<String, Tensor> =
            map.iter().filter_map(|(k, t)| k.strip_prefix("param.").map(|n| (n.to_string(), t.clone()))).collect();
        let mut t = Self::from_tensors(config.clone(), data.classes.clone(), tensors, fp)?;
        t.position = serde_json::from_value(header["position"].clone())
            .map_err(|e| Error::format(&path, format!("bad position in the state ({e})")))?;
        let params = t.net.backbone.stage_params()?;
        for ((names, opts), ps) in t.names.iter().zip(t.opt_net.iter_mut()).zip(&params) {
            for ((n, o), p) in names.iter().zip(opts.iter_mut()).zip(ps) {
                o.load_from(&format!("adam.{n}"), &map, p)?;
            }
        }
        t.opt_sheet.load_from("adam._classification.weight", &map, &t.net.weight)?;
        Ok(t)
    }

    /// Two normalised views of `img` for (phase, epoch, index).
    fn views(&self, img: &RgbImage, phase: Phase, epoch: usize, index: usize) -> Result<[Vec<f32>; 2]> {
        let c = &self.config;
        let key = c.seed ^ ((phase as u64 + 1) << 56) ^ ((epoch as u64) << 32) ^ index as u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(key);
        let s = c.image_size;
        let big = s + c.resize_margin;
        let mut x = resize_with(img, big, big, Filter::Bilinear, PassOrder::default());
        x = trivial_augment(&x, OpSet::Shape, &mut rng);
        if rng.random_bool(0.5) {
            x = flip_horizontal(&x);
        }
        let mid = s + c.crop_margin;
        let r = random_resized_crop_params(big, big, (0.95, 1.0), (3.0 / 4.0, 4.0 / 3.0), &mut rng);
        x = resize_with(&crop(&x, r)?, mid, mid, Filter::Bilinear, PassOrder::default());
        let pre = c.preprocessor();
        let mut view = || -> Result<Vec<f32>> {
            let mut v = trivial_augment(&x, OpSet::Colour, &mut rng);
            let (ox, oy) = (rng.random_range(0..=mid - s), rng.random_range(0..=mid - s));
            v = crop(&v, (ox, oy, s, s))?;
            if c.grayscale {
                for px in v.data.chunks_exact_mut(3) {
                    let g = ((px[0] * 299.0 + px[1] * 587.0 + px[2] * 114.0) / 1000.0).round();
                    px.fill(g);
                }
            }
            Ok(pre.preprocess(&v)?.pixel_values)
        };
        Ok([view()?, view()?])
    }

    /// The batch `[view 1 of all; view 2 of all]` of `indices`.
    fn batch(&self, data: &ImageFolder, phase: Phase, epoch: usize, indices: &[usize]) -> Result<(Tensor, Vec<u32>)> {
        let s = self.config.image_size as usize;
        let per = 3 * s * s;
        let mut first = Vec::with_capacity(indices.len() * per);
        let mut second = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            let [a, b] = self.views(&data.images[i], phase, epoch, i)?;
            first.extend(a);
            second.extend(b);
        }
        first.extend(second);
        let x = Tensor::from_vec(first, (2 * indices.len(), 3, s, s), &self.net.weight.device().clone())?;
        Ok((x, indices.iter().map(|&i| data.labels[i]).collect()))
    }

    fn epochs_in(&self, phase: Phase) -> usize {
        match phase {
            Phase::Pretrain => self.config.epochs_pretrain,
            Phase::Train => self.config.epochs,
        }
    }

    fn batch_size(&self, phase: Phase) -> usize {
        match phase {
            Phase::Pretrain => self.config.batch_size_pretrain,
            Phase::Train => self.config.batch_size,
        }
    }

    /// Runs the remaining epochs, saving to `out` after each and appending to
    /// `out/metrics.jsonl`; evaluates on `test` after every phase-2 epoch if given. Progress
    /// counts batches over the whole run.
    pub fn run(
        &mut self,
        data: &ImageFolder,
        test: Option<&ImageFolder>,
        out: &Path,
        control: &mut RunControl<'_>,
        mut on_epoch: impl FnMut(&EpochMetrics),
    ) -> Result<Vec<EpochMetrics>> {
        if let Some(t) = test {
            if t.classes != self.classes {
                return Err(Error::invalid(format!(
                    "the test folder's classes {:?} differ from the training folder's {:?}",
                    t.classes, self.classes
                )));
            }
        }
        let n = data.len();
        let iters = |b: usize| n / b;
        for phase in [Phase::Pretrain, Phase::Train] {
            if self.epochs_in(phase) > 0 && iters(self.batch_size(phase)) == 0 {
                return Err(Error::invalid(format!(
                    "{n} training images are fewer than one batch of {} ({phase:?} phase)",
                    self.batch_size(phase)
                )));
            }
        }
        let total = self.config.epochs_pretrain * iters(self.config.batch_size_pretrain)
            + self.config.epochs * iters(self.config.batch_size);
        let mut done = match self.position.phase {
            Phase::Pretrain => self.position.epochs_done * iters(self.config.batch_size_pretrain),
            Phase::Train => {
                self.config.epochs_pretrain * iters(self.config.batch_size_pretrain)
                    + self.position.epochs_done * iters(self.config.batch_size)
            }
        };
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        let metrics_path = out.join("metrics.jsonl");
        let mut all = Vec::new();
        loop {
            let phase = self.position.phase;
            if self.position.epochs_done >= self.epochs_in(phase) {
                if phase == Phase::Pretrain {
                    // phase 2 starts with fresh optimisers (the official code re-creates them)
                    self.position = Position { phase: Phase::Train, epochs_done: 0, net_steps: 0 };
                    self.opt_net = Self::optimisers(&self.net, &self.config)?;
                    self.opt_sheet =
                        Adam::new(&self.net.weight, self.config.lr)?.with_weight_decay(self.config.weight_decay);
                    continue;
                }
                break;
            }
            let epoch = self.position.epochs_done + 1;
            let start = std::time::Instant::now();
            let m = self.epoch(data, phase, epoch, control, &mut done, total)?;
            let test_report = match (phase, test) {
                (Phase::Train, Some(t)) => Some(evaluate(&self.net, &self.config.preprocessor(), t, 64)?),
                _ => None,
            };
            self.position.epochs_done = epoch;
            self.save(out)?;
            let m = EpochMetrics { seconds: start.elapsed().as_secs_f64(), test: test_report, ..m };
            let line = serde_json::to_string(&m)? + "\n";
            use std::io::Write;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| Error::io(&metrics_path, e))?;
            on_epoch(&m);
            all.push(m);
        }
        Ok(all)
    }

    fn epoch(
        &mut self,
        data: &ImageFolder,
        phase: Phase,
        epoch: usize,
        control: &mut RunControl<'_>,
        done: &mut usize,
        total: u32,
    ) -> Result<EpochMetrics> {
        use rand::seq::SliceRandom;
        let c = self.config.clone();
        let bs = self.batch_size(phase);
        let iters = data.len() / bs;
        let mut order: Vec<usize> = (0..data.len()).collect();
        let key = c.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((phase as u64) << 40) ^ epoch as u64;
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(key));
        let block = self.block_stage();
        // the official rule: sheet-only epochs when the prototypes were pretrained or loaded
        let finetune =
            phase == Phase::Train && epoch <= c.finetune_epochs && (c.epochs_pretrain > 0 || c.backbone.init.is_some());
        let (weights, first_trained, train_sheet) = match phase {
            Phase::Pretrain => (
                LossWeights { align: epoch as f64 / c.epochs_pretrain as f64, tanh: 5.0, class: 0.0 },
                Some(if c.pretrain_backbone { 0 } else { block }),
                false,
            ),
            Phase::Train if finetune => (LossWeights { align: 0.0, tanh: 0.0, class: 2.0 }, None, true),
            Phase::Train => (
                LossWeights { align: 5.0, tanh: 2.0, class: 2.0 },
                Some(if epoch > c.freeze_epochs { 0 } else { block }),
                true,
            ),
        };
        if phase == Phase::Train && (epoch == c.epochs || epoch % 30 == 0) && c.epochs > 1 {
            self.net.weight = (&self.net.weight - 1e-3)?.relu()?;
        }
        let (net_base, net_min, net_span) = match phase {
            Phase::Pretrain => ([c.lr_net, c.lr_block], c.lr_block / 100.0, iters * c.epochs_pretrain),
            Phase::Train => ([c.lr_net, c.lr_block], c.lr_net / 100.0, iters * c.epochs),
        };
        let period = if c.epochs <= 30 { 5.0 } else { 10.0 };
        let mut sums = LossTerms::default();
        let mut present = 0.0;
        let (mut lr_net, mut lr_sheet) = (0.0, 0.0);
        for (i, chunk) in order.chunks_exact(bs).enumerate() {
            control.check()?;
            let (x, labels) = self.batch(data, phase, epoch, chunk)?;
            let g = gradients(&self.net, &x, &labels, &weights, train_sheet, first_trained)?;
            for (s, v) in [
                (&mut sums.total, g.loss.total),
                (&mut sums.align, g.loss.align),
                (&mut sums.tanh, g.loss.tanh),
                (&mut sums.class, g.loss.class),
                (&mut sums.accuracy, g.loss.accuracy),
            ] {
                *s += v / iters as f64;
            }
            if let Some(dw) = &g.sheet {
                // the scheduler was last stepped with the previous batch's fractional epoch
                lr_sheet = if epoch == 1 && i == 0 {
                    c.lr
                } else {
                    let prev = if i == 0 {
                        (epoch - 2) as f64 + (iters - 1) as f64 / iters as f64
                    } else {
                        (epoch - 1) as f64 + (i - 1) as f64 / iters as f64
                    };
                    warm_restarts(c.lr, 0.001, prev, period)
                };
                self.opt_sheet.set_lr(lr_sheet);
                let w = self.opt_sheet.step(&self.net.weight, dw)?;
                self.net.weight = (w - 1e-3)?.relu()?;
            }
            if let Some(first) = first_trained {
                let params = self.net.backbone.stage_params()?;
                let mut updated = Vec::with_capacity(params.len() - first);
                for (k, grads) in g.backbone.iter().enumerate() {
                    let stage = first + k;
                    let base = if stage >= block { net_base[1] } else { net_base[0] };
                    lr_net = cosine(base, net_min, self.position.net_steps, net_span);
                    let mut new = Vec::with_capacity(grads.len());
                    for ((p, gr), opt) in params[stage].iter().zip(grads).zip(self.opt_net[stage].iter_mut()) {
                        opt.set_lr(lr_net);
                        new.push(opt.step(p, gr)?);
                    }
                    updated.push(new);
                }
                self.net.backbone = self.net.backbone.with_stage_params(&updated)?;
                self.position.net_steps += 1;
            }
            present += g.present / iters as f64;
            *done += 1;
            control.report(*done as u32, total)?;
        }
        if !sums.total.is_finite() {
            return Err(Error::Numerical(format!("training diverged in {phase:?} epoch {epoch}")));
        }
        Ok(EpochMetrics {
            phase,
            epoch,
            loss: sums.total,
            align: sums.align,
            tanh: sums.tanh,
            class: sums.class,
            train_accuracy: if phase == Phase::Pretrain { 0.0 } else { sums.accuracy },
            present,
            lr_net,
            lr_sheet,
            seconds: 0.0,
            test: None,
        })
    }
}

/// The output directory's state file, if a run was saved there.
pub fn state_file(out: &Path) -> Option<PathBuf> {
    let p = out.join(STATE_FILE);
    p.is_file().then_some(p)
}
