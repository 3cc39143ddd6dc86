//! Image captioning, the assignment's fourth part: a network ([`model`],
//! decoded greedily or by beam search through [`decoder`]) built from the hand-derived layers in [`crate::layers`]
//! (embedding, RNN/LSTM, temporal affine, masked temporal softmax loss; and
//! soft attention over a grid of features, [`attend`]),
//! trained on image features from either the course's `coco_captioning/`
//! folder ([`coco_h5`]) or an image folder with a COCO-format captions file
//! ([`coco_json`], features from this crate's own backbones), and scored as
//! the COCO caption evaluation scores captions ([`bleu`], [`rouge`],
//! [`cider`]; on the digit scenes also by what the caption says is where,
//! [`scenes`]).

pub mod attend;
pub mod bleu;
pub mod cider;
pub mod coco_h5;
pub mod coco_json;
pub mod dataset;
pub mod decoder;
pub mod evaluate;
pub mod features;
pub mod model;
pub mod net_parts;
pub mod options;
pub mod rouge;
pub mod run;
pub mod saved;
pub mod scenes;
pub mod task;
pub mod transformer;
pub mod vocab;
