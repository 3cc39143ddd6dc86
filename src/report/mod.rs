//! What a person sees: progress bars on the terminal and PNG figures.

pub mod plots;
pub mod progress;
