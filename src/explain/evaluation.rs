//! Faithfulness of an explanation, as the metrics define it: the deletion (MoRF) and LeRF
//! curves of its main map for the explained class, and the same for a seeded random tile order
//! (the baseline any map should beat); ROAD; average drop / increase in confidence (classifier
//! probability, or CLIP similarity for M2IB); and the MPRT sanity check (cascading
//! randomisation of the top layers: a map that survives it does not explain the model).

use super::classifier::target_probability;
use super::Explanation;
use crate::control::RunControl;
use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use crate::imaging::image::RgbImage;
use crate::metrics::correlation::spearman;
use crate::metrics::{
    auc, confidence, masked_input, perturbation_curve, perturbation_curve_with_order, random_order, road, Confidence,
    CurveSettings, Order, Road, RoadSettings,
};
use crate::models::clip::ClipBundle;
use crate::models::cnn::ClassifierBundle;
use crate::models::Model;
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

/// ROAD of an explanation's main map for its explained class.
pub fn road_of(bundle: &ClassifierBundle, ex: &Explanation, input: &[f32], settings: &RoadSettings) -> Result<Road> {
    let p = ex.prediction.as_ref().ok_or_else(|| Error::invalid("ROAD needs a classifier explanation"))?;
    let map = &ex.maps.first().ok_or_else(|| Error::invalid("the explanation has no map"))?.map;
    let mut score = target_probability(bundle, p.target.index, map.width, map.height);
    road(input, 3, map, settings, &mut score)
}

/// Drop / increase in the explained class's probability when the input is weighted by the
/// main map.
pub fn confidence_of(bundle: &ClassifierBundle, ex: &Explanation, input: &[f32]) -> Result<Confidence> {
    let p = ex.prediction.as_ref().ok_or_else(|| Error::invalid("confidence needs a classifier explanation"))?;
    let map = &ex.maps.first().ok_or_else(|| Error::invalid("the explanation has no map"))?.map;
    let masked = masked_input(input, 3, map)?;
    let mut score = target_probability(bundle, p.target.index, map.width, map.height);
    confidence(p.target.probability, score(&masked, 1)?[0])
}

/// M2IB's drop / increase in confidence: the image–caption cosine similarity of the whole
/// image against that of the image weighted by the map of caption `text_index` (the map
/// applied to the whole image; see [`crate::metrics::confidence`]).
pub fn clip_confidence(
    bundle: &ClipBundle,
    ex: &Explanation,
    image: &RgbImage,
    text_index: usize,
) -> Result<Confidence> {
    let text = ex.texts.get(text_index).ok_or_else(|| Error::invalid(format!("no caption {text_index}")))?;
    let map = &ex
        .maps
        .iter()
        .find(|m| m.text_index == Some(text_index) && m.map.height > 1)
        .ok_or_else(|| Error::invalid("the explanation has no image map for this caption"))?
        .map;
    let pre = bundle.preprocessor.preprocess(image)?;
    if (pre.width, pre.height) != (map.width, map.height) {
        return Err(Error::invalid("the map is not at the model's input size"));
    }
    let masked = masked_input(&pre.pixel_values, 3, map)?;
    let model = &bundle.model;
    let t = super::m2ib::unit(&model.text_features(&text.token_ids)?)?;
    let x = candle_core::Tensor::from_slice(&masked, (1, 3, pre.height as usize, pre.width as usize), &model.device)?;
    let i = super::m2ib::unit(&model.image_features(&x)?)?;
    // the whole image's cosine is the explanation's own `similarity`
    confidence(text.similarity, (&i * &t)?.sum_all()?.to_scalar::<f32>()?)
}

/// One step of the cascading randomisation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MprtStep {
    /// The lowest stage randomised (every stage above it is random too).
    pub randomised_down_to: String,
    /// Spearman correlation of the map with the original one (a faithful method falls);
    /// `None` when it is undefined (a constant map).
    pub spearman: Option<f32>,
}

/// The MPRT sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018),
/// cascading: the top `stages` stages with learned weights are randomised one after another,
/// from the logits down (stages without weights, such as pooling, are passed over: randomising
/// them changes nothing), the same method explains the same class on each copy, and each map is
/// compared with the original by Spearman rank correlation.
pub fn mprt(
    method: &super::Method,
    bundle: &ClassifierBundle,
    image: &RgbImage,
    original: &Explanation,
    stages: usize,
    seed: u64,
) -> Result<Vec<MprtStep>> {
    let p = original.prediction.as_ref().ok_or_else(|| Error::invalid("MPRT needs a classifier explanation"))?;
    // the amortised methods explain the top-1 of whatever model they run on
    let class_index = match method.kind {
        super::MethodKind::IbaReadout(_) | super::MethodKind::DualIb(_) => None,
        _ => Some(p.target.index),
    };
    let target = super::Target { class_index, texts: vec![] };
    let mut out = Vec::new();
    for (k, (name, learned)) in bundle.network.stages_top_down().into_iter().enumerate() {
        if out.len() == stages {
            break;
        }
        if !learned {
            continue;
        }
        let net = bundle.network.with_top_randomised(k + 1, seed)?;
        let model = Model::Classifier(bundle.with_network(net));
        let ex = method.explain(&model, image, &target, &mut RunControl::default())?;
        let s = spearman(&original.maps[0].map.data, &ex.maps[0].map.data);
        out.push(MprtStep { randomised_down_to: name.to_string(), spearman: s.is_finite().then_some(s as f32) });
    }
    Ok(out)
}
