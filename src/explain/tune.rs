//! Choosing M2IB's layers and β for a model without labels (`ibex tune`).
//!
//! The M2IB paper warns that the method "is sensitive to the choice of hyperparameters". This
//! module explains every image–caption pair of a tuning set under each candidate setting and
//! scores the maps by **label-free** faithfulness of the image–text similarity (the cosine of
//! the two embeddings, the quantity M2IB explains), as `crate::metrics` defines it:
//!
//! - the **declared score**: insertion − deletion of the image map, `LeRF AUC − MoRF AUC` of the
//!   cosine when the input's tiles (one per patch) are replaced by the image mean in the map's
//!   order (LeRF read as insertion, see `metrics::perturbation`); higher is better;
//! - the paper's average drop and increase in confidence, for the image (pixels weighted by the
//!   map) and for the text (the text tower's input embeddings weighted by the token map);
//!   reported next to the score.
//!
//! The image map depends only on the vision layer and β, the text map only on the text layer
//! and β, so the two sides are computed separately and every (vision layer, text layer, β)
//! candidate is scored from them: the best candidate has the highest declared score, and among
//! text layers (which cannot change it) the lowest text drop in confidence. Each image's frozen
//! vision prefix is run once per vision layer and reused across β values (and each caption's
//! text prefix once per text layer); [`TuneReport::prefix_passes`] counts them.

use super::m2ib::{default_layer, unit, CosineToTarget, M2ibConfig};
use crate::bottleneck::{self, Mask, SeededNoise};
use crate::control::{RunControl, StepCounter};
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::metrics::confidence::summarise;
use crate::metrics::{confidence, masked_input, perturbation_curve, CurveSettings, Order};
use crate::models::clip::{ClipBundle, ClipModel};
use candle_core::{Tensor, D};
use serde::Serialize;

/// The name of the declared score, as reports and `ibex.json` record it.
pub const SCORE_NAME: &str = "image insertion - deletion AUC of the image-text cosine (LeRF - MoRF, patch tiles)";

/// What to try.
#[derive(Clone, Debug)]
pub struct TuneSettings {
    pub vision_layers: Vec<usize>,
    pub text_layers: Vec<usize>,
    pub betas: Vec<f64>,
    /// Everything else (steps, lr, samples, seed) comes from here; its layers and β are
    /// replaced by each candidate's.
    pub base: M2ibConfig,
    /// Steps of the insertion / deletion curves (tiles are the model's patches).
    pub curve_steps: u32,
}

impl TuneSettings {
    /// Default candidates for a model: every layer but the last for towers of at most 6
    /// layers, else four layers spread over the upper two thirds, always including the depth
    /// rule's layer; β ∈ {0.1, 1, 10}. (At the last layer only the pooled token reaches the
    /// embedding, so a map there carries no information about the other tokens.)
    pub fn for_model(model: &ClipModel, base: M2ibConfig) -> Self {
        TuneSettings {
            vision_layers: default_candidates(model.vision.depth()),
            text_layers: default_candidates(model.text.depth()),
            betas: vec![0.1, 1.0, 10.0],
            base,
            curve_steps: 16,
        }
    }
}

/// Candidate layers for a tower of `depth` layers.
pub fn default_candidates(depth: usize) -> Vec<usize> {
    let mut v: Vec<usize> = if depth <= 6 {
        (0..depth.saturating_sub(1).max(1)).collect()
    } else {
        [1.0 / 3.0, 0.5, 2.0 / 3.0, 5.0 / 6.0]
            .iter()
            .map(|f| ((depth as f64 * f).round() as usize).min(depth - 1))
            .collect()
    };
    v.push(default_layer(depth));
    v.sort_unstable();
    v.dedup();
    v
}

/// One image–caption pair of the tuning set.
pub struct TunePair {
    /// A name for reports (the image file).
    pub name: String,
    pub image: RgbImage,
    pub caption: String,
}

/// One candidate's scores (means over the pairs; percentages for drop and increase).
#[derive(Clone, Debug, Serialize)]
pub struct TuneCandidate {
    pub vision_layer: usize,
    pub text_layer: usize,
    pub beta: f64,
    /// The declared score ([`SCORE_NAME`]).
    pub score: f32,
    pub image_deletion_auc: f32,
    pub image_insertion_auc: f32,
    pub image_drop: f32,
    pub image_increase: f32,
    pub text_drop: f32,
    pub text_increase: f32,
}

/// The outcome of a tuning run.
#[derive(Clone, Debug, Serialize)]
pub struct TuneReport {
    pub candidates: Vec<TuneCandidate>,
    /// Index of the best candidate in `candidates`.
    pub best: usize,
    pub pairs: usize,
    /// How many frozen prefixes were run (one per pair and candidate layer, not per β).
    pub prefix_passes: usize,
    pub score_name: &'static str,
    /// The image capacity maps (patch grid, nats) per (vision layer, β) and pair, for
    /// analyses such as localisation against labels the tuning never sees.
    #[serde(skip)]
    pub image_maps: Vec<((usize, f64), Vec<Heatmap>)>,
}

impl TuneReport {
    /// The best candidate.
    pub fn best(&self) -> &TuneCandidate {
        &self.candidates[self.best]
    }

    /// The best setting as M2IB options (`vision_layer`, `text_layer`, `beta`).
    pub fn best_options(&self) -> serde_json::Value {
        let b = self.best();
        serde_json::json!({"vision_layer": b.vision_layer, "text_layer": b.text_layer, "beta": b.beta})
    }

    /// The complete M2IB setting the best candidate was scored with: `base` with its layers and
    /// β (so M2IB later runs exactly what was measured).
    pub fn best_config(&self, base: &M2ibConfig) -> M2ibConfig {
        let b = self.best();
        let mut c = base.clone();
        c.vision_layer = Some(b.vision_layer);
        c.text_layer = Some(b.text_layer);
        c.bottleneck.beta = b.beta;
        c
    }
}

/// Per-side means for one (layer, β).
#[derive(Clone, Copy, Default)]
struct SideScore {
    deletion: f32,
    insertion: f32,
    drop: f32,
    increase: f32,
}

fn check(settings: &TuneSettings, model: &ClipModel, pairs: &[TunePair]) -> Result<()> {
    if pairs.is_empty() {
        return Err(Error::invalid("tuning needs at least one image-caption pair"));
    }
    if settings.vision_layers.is_empty() || settings.text_layers.is_empty() || settings.betas.is_empty() {
        return Err(Error::invalid("tuning needs at least one vision layer, one text layer and one beta"));
    }
    for (name, layers, depth) in
        [("vision", &settings.vision_layers, model.vision.depth()), ("text", &settings.text_layers, model.text.depth())]
    {
        if let Some(l) = layers.iter().find(|&&l| l >= depth) {
            return Err(Error::invalid(format!(
                "{name} layer {l} does not exist: the tower has layers 0..={}",
                depth - 1
            )));
        }
    }
    if let Some(b) = settings.betas.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
        return Err(Error::invalid(format!("beta must be a positive number, got {b}")));
    }
    if settings.curve_steps == 0 {
        return Err(Error::invalid("curve_steps must be at least 1"));
    }
    Ok(())
}

/// Explains every pair under every candidate and scores the maps (see the module docs).
pub fn tune(
    bundle: &ClipBundle,
    pairs: &[TunePair],
    settings: &TuneSettings,
    control: &mut RunControl<'_>,
) -> Result<TuneReport> {
    let model = &bundle.model;
    check(settings, model, pairs)?;
    settings.base.bottleneck.validate()?;
    let nb = settings.betas.len();
    let steps = settings.base.bottleneck.steps as u32;
    let total =
        pairs.len() as u32 * nb as u32 * (settings.vision_layers.len() + settings.text_layers.len()) as u32 * steps;
    let mut counter = StepCounter { control, done: 0, total };
    let mut vision = vec![vec![SideScore::default(); nb]; settings.vision_layers.len()];
    let mut text = vec![vec![SideScore::default(); nb]; settings.text_layers.len()];
    let mut maps: Vec<Vec<Vec<Heatmap>>> =
        vec![vec![Vec::with_capacity(pairs.len()); nb]; settings.vision_layers.len()];
    let mut confid_v = vec![vec![Vec::with_capacity(pairs.len()); nb]; settings.vision_layers.len()];
    let mut confid_t = vec![vec![Vec::with_capacity(pairs.len()); nb]; settings.text_layers.len()];
    let mut prefix_passes = 0;
    let patch = model.config.vision.patch_size as u32;
    let curve = CurveSettings { tile: patch, steps: settings.curve_steps, batch: settings.curve_steps as usize + 1 };
    for (pi, pair) in pairs.iter().enumerate() {
        let tokens =
            bundle.tokenizer.encode(&pair.caption).map_err(|e| Error::invalid(format!("{}: {e}", pair.name)))?;
        let ids = &tokens.ids;
        let pre = bundle.preprocessor.preprocess(&pair.image)?;
        let (w, h) = (pre.width, pre.height);
        let pixels = Tensor::from_vec(pre.pixel_values.clone(), (1, 3, h as usize, w as usize), &model.device)?;
        if !crate::numerics::all_finite(&pixels)? {
            return Err(Error::Numerical(format!("{}: the input image contains NaN or infinity", pair.name)));
        }
        let text_unit = unit(&model.text_features(ids)?)?;
        let image_unit = unit(&model.image_features(&pixels)?)?;
        let full = (&image_unit * &text_unit)?.sum_all()?.to_scalar::<f32>()?;
        let mut cosine = |imgs: &[f32], n: usize| -> Result<Vec<f32>> {
            let x = Tensor::from_slice(imgs, (n, 3, h as usize, w as usize), &model.device)?;
            let e = unit(&model.image_features(&x)?)?;
            Ok(e.broadcast_mul(&text_unit)?.sum(D::Minus1)?.to_vec1::<f32>()?)
        };
        // image side: one frozen prefix per vision layer, every beta on it
        let vemb = model.embed_image(&pixels)?;
        for (li, &lv) in settings.vision_layers.iter().enumerate() {
            let hv = model.vision.forward_until(&vemb, lv)?.squeeze(0)?;
            prefix_passes += 1;
            let obj = CosineToTarget {
                tower: &model.vision,
                layer: lv,
                pool: model.vision_pool_index(),
                target: text_unit.clone(),
            };
            for (bi, &beta) in settings.betas.iter().enumerate() {
                let vtok = capacity_per_token(&hv, settings, beta, &obj, 0, &mut counter)?;
                let grid = model.patch_map(&vtok)?;
                let map = grid.upsample_bilinear(w, h).normalized()?;
                let morf = perturbation_curve(&pre.pixel_values, 3, w, h, &map, Order::MoRF, &curve, &mut cosine)?;
                let lerf = perturbation_curve(&pre.pixel_values, 3, w, h, &map, Order::LeRF, &curve, &mut cosine)?;
                let masked = masked_input(&pre.pixel_values, 3, &map)?;
                let c = confidence(full, cosine(&masked, 1)?[0])?;
                let s = &mut vision[li][bi];
                s.deletion += morf.auc;
                s.insertion += lerf.auc;
                confid_v[li][bi].push(c);
                maps[li][bi].push(grid);
            }
        }
        // text side: one frozen prefix per text layer
        let temb = model.embed_text(ids)?;
        let pool = model.text_pool_index(ids);
        for (li, &lt) in settings.text_layers.iter().enumerate() {
            let ht = model.text.forward_until(&temb, lt)?.squeeze(0)?;
            prefix_passes += 1;
            let obj = CosineToTarget { tower: &model.text, layer: lt, pool, target: image_unit.clone() };
            for (bi, &beta) in settings.betas.iter().enumerate() {
                let cap = capacity_per_token(&ht, settings, beta, &obj, 1, &mut counter)?;
                let c = confidence(full, weighted_text_cosine(model, &temb, &cap, pool, &image_unit)?)?;
                confid_t[li][bi].push(c);
            }
        }
        log::debug!("tune: pair {pi} ({}) done", pair.name);
    }
    let n = pairs.len() as f32;
    for (side, confid) in [(&mut vision, &confid_v), (&mut text, &confid_t)] {
        for (row, crow) in side.iter_mut().zip(confid) {
            for (s, c) in row.iter_mut().zip(crow) {
                s.deletion /= n;
                s.insertion /= n;
                (s.drop, s.increase) = summarise(c);
            }
        }
    }
    let mut candidates = Vec::new();
    for (vi, &lv) in settings.vision_layers.iter().enumerate() {
        for (ti, &lt) in settings.text_layers.iter().enumerate() {
            for (bi, &beta) in settings.betas.iter().enumerate() {
                let (v, t) = (vision[vi][bi], text[ti][bi]);
                candidates.push(TuneCandidate {
                    vision_layer: lv,
                    text_layer: lt,
                    beta,
                    score: v.insertion - v.deletion,
                    image_deletion_auc: v.deletion,
                    image_insertion_auc: v.insertion,
                    image_drop: v.drop,
                    image_increase: v.increase,
                    text_drop: t.drop,
                    text_increase: t.increase,
                });
            }
        }
    }
    if let Some(c) = candidates.iter().find(|c| !(c.score.is_finite() && c.text_drop.is_finite())) {
        return Err(Error::Numerical(format!(
            "the scores of vision layer {}, text layer {}, beta {} are not finite",
            c.vision_layer, c.text_layer, c.beta
        )));
    }
    let best = (0..candidates.len())
        .max_by(|&a, &b| {
            let (x, y) = (&candidates[a], &candidates[b]);
            x.score.total_cmp(&y.score).then(y.text_drop.total_cmp(&x.text_drop)).then(b.cmp(&a))
        })
        .expect("at least one candidate");
    let mut image_maps = Vec::new();
    for (vi, &lv) in settings.vision_layers.iter().enumerate() {
        for (bi, &beta) in settings.betas.iter().enumerate() {
            image_maps.push(((lv, beta), std::mem::take(&mut maps[vi][bi])));
        }
    }
    Ok(TuneReport { candidates, best, pairs: pairs.len(), prefix_passes, score_name: SCORE_NAME, image_maps })
}

/// One M2IB bottleneck at `beta` on the frozen prefix `h` (noise stream `run`: 0 vision, 1
/// text, as M2IB draws it for a single caption): capacity per token, nats.
fn capacity_per_token(
    h: &Tensor,
    settings: &TuneSettings,
    beta: f64,
    objective: &CosineToTarget<'_>,
    run: u64,
    counter: &mut StepCounter<'_, '_>,
) -> Result<Vec<f32>> {
    let mut bs = settings.base.bottleneck.clone();
    bs.beta = beta;
    let mut noise = SeededNoise::new(settings.base.seed, run);
    let out = bottleneck::optimise(h, &bs, &Mask::default(), objective, &mut noise, counter)?;
    Ok(out.capacity.sum(D::Minus1)?.to_vec1::<f32>()?)
}

/// The cosine with the image when the text tower's input embeddings are weighted per token by
/// the min-max normalised capacity (the text analogue of the paper's masked image).
fn weighted_text_cosine(
    model: &ClipModel,
    temb: &Tensor,
    capacity: &[f32],
    pool: usize,
    image: &Tensor,
) -> Result<f32> {
    let (lo, hi) = capacity.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let w: Vec<f32> = capacity.iter().map(|&v| if hi > lo { (v - lo) / (hi - lo) } else { 1.0 }).collect();
    let wt = Tensor::from_vec(w, (1, capacity.len(), 1), temb.device())?.to_dtype(temb.dtype())?;
    let x = temb.broadcast_mul(&wt)?;
    let last = model.text.depth() - 1;
    let e = unit(&model.text.forward_from(last, &model.text.forward_until(&x, last)?, pool)?)?;
    Ok((&e * image)?.sum_all()?.to_scalar::<f32>()?)
}

/// Writes the best setting into `ibex.json` at `path` — the complete M2IB setting it was scored
/// with (`base` plus the chosen layers and β), replacing the file's `m2ib` settings and keeping
/// its other sections — with a record of the score and the data it was chosen on. A symbolic
/// link (a file of the Hugging Face cache) is replaced by a file, never written through.
pub fn write_recommendation(
    path: &std::path::Path,
    report: &TuneReport,
    base: &M2ibConfig,
    data: serde_json::Value,
) -> Result<()> {
    let mut root = if path.is_file() {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str::<serde_json::Value>(&s)
            .map_err(|e| Error::format(path, format!("not valid JSON ({e})")))?
    } else {
        serde_json::json!({})
    };
    let obj = root.as_object_mut().ok_or_else(|| Error::format(path, "expected a JSON object"))?;
    let m2ib = serde_json::to_value(report.best_config(base)).map_err(|e| Error::invalid(e.to_string()))?;
    obj.insert("m2ib".into(), m2ib);
    let best = report.best();
    obj.insert(
        "tuned".into(),
        serde_json::json!({
            "score_name": report.score_name,
            "score": best.score,
            "image_drop": best.image_drop,
            "image_increase": best.image_increase,
            "text_drop": best.text_drop,
            "text_increase": best.text_increase,
            "pairs": report.pairs,
            "data": data,
            "candidates": report.candidates.len(),
        }),
    );
    let text = serde_json::to_string_pretty(&root).map_err(|e| Error::invalid(e.to_string()))?;
    if path.is_symlink() {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}
