//! Training: the transfer-learning epoch loop, the optimizer and schedule,
//! per-epoch metrics, and the resumable run state. Models and data come in
//! from [`crate::models`] and [`crate::data`]; figures go out through
//! [`crate::report`].

pub mod amp;
pub mod finetune;
pub mod lanes;
pub mod metrics;
pub mod sgd;
pub mod solver;
pub mod state;
