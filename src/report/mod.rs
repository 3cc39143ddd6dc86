//! What a person sees: progress bars on the terminal, PNG figures and
//! TensorBoard event files.

pub mod plots;
pub mod progress;
pub mod tensorboard;
