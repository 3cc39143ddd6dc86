//! Everything between files on disk and tensors: image folders (and their
//! stratified folds) and labels files (CSV/TSV, single- or multi-label),
//! decoding, torchvision-equivalent transforms, epoch sampling, batching,
//! MNIST's IDX files, NumPy `.npy` arrays and face sets, perceptual hashes of
//! images.

pub mod augment;
pub mod decode;
pub mod faces;
pub mod folds;
pub mod image_folder;
pub mod labels_file;
pub mod loader;
pub mod mnist;
pub mod npy;
pub mod phash;
pub mod sampler;
pub mod transforms;
pub mod tta;
