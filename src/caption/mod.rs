//! Image captioning, the assignment's fourth part: a recurrent network
//! ([`model`]) built from the hand-derived layers in [`crate::layers`]
//! (embedding, RNN/LSTM, temporal affine, masked temporal softmax loss).

pub mod model;
