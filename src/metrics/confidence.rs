//! Average drop and increase in confidence (Chattopadhay et al., "Grad-CAM++", WACV 2018), the
//! measures M2IB reports: the input is multiplied by the explanation map (min-max normalised to
//! [0, 1], at the input's resolution, in the model's normalised units, so a zero-weighted pixel
//! becomes the normalisation mean) and the model's score on it, `O`, is compared with the score
//! on the whole input, `Y`:
//!
//! - drop = `max(0, Y − O) / Y` (× 100 %, averaged over images; lower is better);
//! - increase = 1 if `O > Y` (the fraction of images; higher is better).
//!
//! The map is applied to the **whole** image. (The M2IB evaluation script indexes the
//! batch's first row of the map when masking, so only the first row of pixels of its image is
//! weighted; that is a bug, not the definition, and is not reproduced.)

use crate::error::{Error, Result};
use crate::imaging::heatmap::Heatmap;
use serde::Serialize;

/// One image's scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Confidence {
    /// Score on the whole input.
    pub full: f32,
    /// Score on the input weighted by the map.
    pub masked: f32,
    /// `max(0, full − masked) / full` (0 when `full` ≤ 0).
    pub drop: f32,
    pub increase: bool,
}

/// `input` (CHW) weighted by `map` min-max normalised to [0, 1] (a constant map weights 1).
pub fn masked_input(input: &[f32], channels: usize, map: &Heatmap) -> Result<Vec<f32>> {
    let n = map.data.len();
    if input.len() != channels * n {
        return Err(Error::invalid(format!(
            "the map ({}x{}) does not match the input ({} values)",
            map.width,
            map.height,
            input.len()
        )));
    }
    let (lo, hi) = map.min_max();
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(Error::invalid("the map has NaN or infinite values"));
    }
    let weight = |v: f32| if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
    Ok(input.iter().enumerate().map(|(i, &x)| x * weight(map.data[i % n])).collect())
}

/// Drop and increase from the two scores.
pub fn confidence(full: f32, masked: f32) -> Result<Confidence> {
    if !(full.is_finite() && masked.is_finite()) {
        return Err(Error::Numerical("a confidence score is NaN or infinite".into()));
    }
    let drop = if full > 0.0 { ((full - masked).max(0.0) / full).min(f32::MAX) } else { 0.0 };
    Ok(Confidence { full, masked, drop, increase: masked > full })
}

/// Average drop (%) and increase in confidence (%) over images.
pub fn summarise(items: &[Confidence]) -> (f32, f32) {
    if items.is_empty() {
        return (0.0, 0.0);
    }
    let n = items.len() as f32;
    let drop = 100.0 * items.iter().map(|c| c.drop).sum::<f32>() / n;
    let inc = 100.0 * items.iter().filter(|c| c.increase).count() as f32 / n;
    (drop, inc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_image_is_weighted_and_the_scores_follow_the_definition() {
        let map = Heatmap::new(2, 2, vec![0.0, 1.0, 2.0, 4.0]).unwrap();
        let input = vec![1.0f32; 8];
        let m = masked_input(&input, 2, &map).unwrap();
        // every row of every channel is weighted, not only the first
        assert_eq!(m, vec![0.0, 0.25, 0.5, 1.0, 0.0, 0.25, 0.5, 1.0]);
        let c = confidence(0.8, 0.2).unwrap();
        assert!((c.drop - 0.75).abs() < 1e-6 && !c.increase);
        let c2 = confidence(0.5, 0.6).unwrap();
        assert!(c2.drop == 0.0 && c2.increase);
        let (d, i) = summarise(&[c, c2]);
        assert!((d - 37.5).abs() < 1e-4 && (i - 50.0).abs() < 1e-4);
        assert!(masked_input(&input[..6], 2, &map).is_err());
        assert!(confidence(f32::NAN, 0.1).is_err());
    }
}
