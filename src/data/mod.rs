//! Everything between files on disk and tensors: image folders, decoding,
//! torchvision-equivalent transforms, batching, and MNIST's IDX files.

pub mod decode;
pub mod image_folder;
pub mod loader;
pub mod mnist;
pub mod transforms;
