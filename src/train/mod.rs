//! Training: the transfer-learning epoch loop (`finetune`), getting batches
//! to the device (`feed`), frozen-backbone passes (`frozen`, in CPU `lanes`),
//! the optimizer and schedule (`sgd`, mixed precision in `amp`), per-epoch
//! metrics, the resumable run state, and the MNIST `solver`. Models and data come in
//! from [`crate::models`] and [`crate::data`]; figures go out through
//! [`crate::report`].

pub mod amp;
pub mod feed;
pub mod finetune;
pub mod frozen;
pub mod lanes;
pub mod metrics;
pub mod sgd;
pub mod solver;
pub mod state;
