//! Faithfulness of a classifier explanation, as the metrics define it: the deletion (MoRF) and
//! LeRF curves of its main map for the explained class, and the same for a seeded random tile
//! order (the baseline any map should beat).

use super::classifier::target_probability;
use super::Explanation;
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::metrics::{auc, perturbation_curve, perturbation_curve_with_order, random_order, CurveSettings, Order};
use crate::models::cnn::ClassifierBundle;
use serde::Serialize;

/// AUCs of one map (probability of the explained class; MoRF low is good, LeRF high is good).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faithfulness {
    pub morf: f32,
    pub lerf: f32,
    /// LeRF − MoRF: higher is better.
    pub gap: f32,
    /// The AUC of a random tile order (deletion), for comparison.
    pub random: f32,
    pub morf_curve: Vec<f32>,
    pub lerf_curve: Vec<f32>,
}

/// The deletion / LeRF curves of `map` over the preprocessed `input` (CHW, normalised, the
/// model's input size) for class `target`, and a random order's curve (from `seed`).
pub fn faithfulness(
    bundle: &ClassifierBundle,
    input: &[f32],
    map: &Heatmap,
    target: usize,
    settings: &CurveSettings,
    seed: u64,
) -> Result<Faithfulness> {
    let (w, h) = (map.width, map.height);
    let mut score = target_probability(bundle, target, w, h);
    let morf = perturbation_curve(input, 3, w, h, map, Order::MoRF, settings, &mut score)?;
    let lerf = perturbation_curve(input, 3, w, h, map, Order::LeRF, settings, &mut score)?;
    let tiles = ((w / settings.tile.max(1)) * (h / settings.tile.max(1))) as usize;
    let random = perturbation_curve_with_order(input, 3, w, h, &random_order(tiles, seed), settings, &mut score)?;
    Ok(Faithfulness {
        morf: morf.auc,
        lerf: lerf.auc,
        gap: lerf.auc - morf.auc,
        random: auc(&random),
        morf_curve: morf.scores,
        lerf_curve: lerf.scores,
    })
}

/// [`faithfulness`] of an explanation's main map (`maps[0]`) for its explained class, on the
/// input it was computed from.
pub fn of_explanation(
    bundle: &ClassifierBundle,
    ex: &Explanation,
    input: &[f32],
    settings: &CurveSettings,
    seed: u64,
) -> Result<Faithfulness> {
    let p = ex.prediction.as_ref().ok_or_else(|| Error::invalid("faithfulness needs a classifier explanation"))?;
    let map = &ex.maps.first().ok_or_else(|| Error::invalid("the explanation has no map"))?.map;
    faithfulness(bundle, input, map, p.target.index, settings, seed)
}
