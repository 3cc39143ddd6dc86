//! Everything the crate reads from or writes to disk as model data: PyTorch
//! `.pth` state_dicts ([`pth`], read only, never executing or trusting the
//! pickle), `.safetensors` files ([`safetensors`]), weights copied into a
//! model by name ([`weights`]), the one typed format of a `.safetensors`
//! file's metadata ([`card`]), the card a saved model carries
//! ([`model_card`]), ONNX graphs ([`onnx`], written only), atomic
//! writes ([`atomic`]) and lock files ([`lock`]: one process at a time).
//! It knows tensors and names, not training.

pub mod atomic;
pub mod card;
pub mod lock;
pub mod model_card;
pub mod onnx;
pub mod pth;
pub mod safetensors;
pub mod weights;

pub use atomic::write_atomically;
