//! Training PIP-Net in Rust: the objective, optimiser schedules, data and the loop.

pub mod pipnet;
pub mod pipnet_eval;
pub mod pipnet_loss;
pub mod schedule;
