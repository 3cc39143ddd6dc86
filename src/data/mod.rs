//! Everything between files on disk and tensors: image folders and labels
//! files (CSV/TSV, single- or multi-label), decoding,
//! torchvision-equivalent transforms, batching, MNIST's IDX files, NumPy
//! `.npy` arrays and face sets.

pub mod augment;
pub mod decode;
pub mod faces;
pub mod image_folder;
pub mod labels_file;
pub mod loader;
pub mod mnist;
pub mod npy;
pub mod transforms;
