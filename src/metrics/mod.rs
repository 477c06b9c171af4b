//! Faithfulness and localisation metrics for attribution heatmaps.
//!
//! Pure Rust, no tensors: the model enters only through a caller-supplied scoring closure.
//! The protocol is the one used to produce the IBA / Grad-CAM reference figures in
//! `../shared/fixtures/cnn/iba-reference` (`README.md` there, `reference.json` → `settings`),
//! with boxes as described in `../shared/fixtures/images/README.md`.
//!
//! # Deletion (MoRF) and LeRF curves — [`perturbation`]
//!
//! The method goes back to the pixel-flipping / region-perturbation evaluation of Samek et al.
//! ("Evaluating the visualization of what a deep neural network has learned", 2017), in the
//! form used by the IBA paper (Schulz et al., "Restricting the Flow: Information Bottlenecks
//! for Attribution", ICLR 2020):
//!
//! * the input is split into `tile × tile` tiles (8×8 at 224×224: 28×28 = 784 tiles), and a
//!   tile's relevance is the mean of the heatmap over it ([`tile_scores`]);
//! * tiles are ordered most relevant first (MoRF, `argsort(-score)`, stable) or least relevant
//!   first (LeRF, `argsort(score)`, stable) ([`tile_order`]);
//! * at step `k = 0..=steps` (50), the first `floor(k · tiles / steps)` tiles of the order
//!   ([`tiles_removed`]) are replaced by the per-channel mean of the normalised input, and the
//!   target's softmax probability is recorded ([`perturbation_curve`]);
//! * the area under the curve is a trapezoid over `x = k / steps` ([`auc`]). A good map has a
//!   low MoRF AUC and a high LeRF AUC.
//!
//! LeRF read backwards is an insertion curve, but not one built with the floor rule: at step
//! `k` it keeps `tiles - floor(k · tiles / steps)` tiles, i.e. it inserts `ceil` rather than
//! `floor` of `k · tiles / steps` tiles. The reference reports LeRF, and so does this module.
//! A random baseline uses a seeded random tile order ([`random_order`],
//! [`perturbation_curve_with_order`]); it is not the reference's numpy order.
//!
//! # Pointing game and energy — [`localisation`]
//!
//! The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", 2016):
//! a hit if the map's maximum — the first one in row-major order, like numpy's `argmax` of the
//! flattened map — lies in one of the target's boxes ([`pointing_hit`]); the tolerant variant
//! (`hit_tol15` in the reference, 15 px) counts a maximum within that Euclidean distance of a
//! box. Boxes are `[x0, y0, x1, y1]` in input pixels, half-open (`x0 <= x < x1`,
//! `y0 <= y < y1`). The energy measure ([`energy_in_boxes`]) is the fraction of the map's
//! positive mass inside the union of the boxes.
//!
//! # ROAD — [`road`]; drop / increase in confidence — [`confidence`]
//!
//! ROAD (Rong et al. 2022) removes pixels in the map's order but fills them by noisy linear
//! imputation, so the shape of the removed set does not leak into the model. Average drop and
//! increase in confidence (Chattopadhay et al. 2018; reported by M2IB) weight the whole input by
//! the map. MPRT (the model-randomisation sanity check) needs the model itself and lives in
//! `explain::evaluation`.

pub mod confidence;
pub mod correlation;
pub mod localisation;
pub mod perturbation;
pub mod road;

pub use confidence::{confidence, masked_input, Confidence};
pub use localisation::{energy_in_boxes, pointing_hit};
pub use perturbation::{
    auc, perturbation_curve, perturbation_curve_with_order, random_order, tile_order, tile_scores, tiles_removed,
    Curve, CurveSettings, Order, ScoreFn,
};
pub use road::{road, Road, RoadSettings};
