//! Captions on a split and how good they are: greedy or beam-search samples
//! for every captioned image, scored against all of the image's captions as
//! the COCO caption evaluation scores them (corpus BLEU-1…4, ROUGE-L,
//! CIDEr-D) and, on the digit scenes, by what they say is where; and two
//! baselines scored the same way — the most frequent training caption for
//! every image, and the caption of the nearest training image in feature
//! space (Euclidean over pooled features, a grid averaged over its
//! locations; its first caption).

use super::bleu::{corpus_bleu, MAX_N};
use super::cider::corpus_cider_d;
use super::dataset::{CaptionData, CaptionSplit};
use super::decoder::{decode, Captioner};
use super::rouge::corpus_rouge_l;
use super::scenes::{tally_scenes, SceneTally};
use super::vocab::Vocabulary;
use serde::Serialize;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Greedy sampling stops after this many words.
pub const MAX_SAMPLE_WORDS: usize = 30;

/// One captioning method's scores on the val images.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRow {
    pub method: String,
    pub bleu: [f64; MAX_N],
    pub rouge_l: f64,
    pub cider_d: f64,
    /// Over every val scene, when every true caption is a digit-scene caption.
    pub scenes: Option<SceneTally>,
}

/// What the model said for each captioned image of a split, in
/// [`CaptionSplit::captioned_images`] order.
pub struct SplitCaptions {
    pub images: Vec<i64>,
    pub sampled: Vec<String>,
    /// Every caption of each image, decoded.
    pub truths: Vec<Vec<String>>,
}

/// Captions of `images` of `split` by beam search with `beam` hypotheses
/// (1: greedy), in chunks.
pub fn sample_images(
    net: &dyn Captioner,
    split: &CaptionSplit,
    images: &[i64],
    vocab: &Vocabulary,
    beam: usize,
    device: Device,
) -> Vec<String> {
    let mut captions = Vec::with_capacity(images.len());
    for chunk in images.chunks(500) {
        let features =
            split.features.index_select(0, &Tensor::from_slice(chunk)).to_device(device).to_kind(Kind::Float);
        let tokens = decode(net, &features, beam, MAX_SAMPLE_WORDS).to_device(Device::Cpu);
        for row in 0..chunk.len() as i64 {
            let row: Vec<i64> = Vec::try_from(tokens.get(row)).expect("int64 tokens");
            captions.push(vocab.decode(&row));
        }
    }
    captions
}

/// Samples and the decoded true captions of every captioned image of `split`.
pub fn caption_split(
    net: &dyn Captioner,
    split: &CaptionSplit,
    vocab: &Vocabulary,
    beam: usize,
    device: Device,
) -> SplitCaptions {
    let images = split.captioned_images();
    let sampled = sample_images(net, split, &images, vocab, beam, device);
    let rows = split.rows_by_image();
    let truths = images.iter().map(|i| split.decode(&rows[i], vocab)).collect();
    SplitCaptions { images, sampled, truths }
}

/// The scores of `hypotheses`, each against its image's `truths`.
pub fn score_row(method: &str, hypotheses: &[String], truths: &[Vec<String>]) -> ScoreRow {
    let hyps: Vec<Vec<&str>> = hypotheses.iter().map(|h| h.split_whitespace().collect()).collect();
    let refs: Vec<Vec<Vec<&str>>> =
        truths.iter().map(|t| t.iter().map(|r| r.split_whitespace().collect()).collect()).collect();
    ScoreRow {
        method: method.to_string(),
        bleu: corpus_bleu(&hyps, &refs),
        rouge_l: corpus_rouge_l(&hyps, &refs),
        cider_d: corpus_cider_d(&hyps, &refs),
        scenes: tally_scenes(hypotheses, truths),
    }
}

/// The scores of the model's val captions and of the two baselines.
pub fn score_table(model_name: &str, val: &SplitCaptions, data: &CaptionData) -> Vec<ScoreRow> {
    let frequent = most_frequent_caption(&data.train, &data.vocab);
    let nearest = nearest_neighbour_captions(&data.train, &data.val, &val.images, &data.vocab);
    vec![
        score_row(model_name, &val.sampled, &val.truths),
        score_row("baseline: most frequent training caption", &vec![frequent; val.images.len()], &val.truths),
        score_row("baseline: caption of the nearest training image", &nearest, &val.truths),
    ]
}

/// The decoded training caption that occurs most often (ties: the first seen).
pub fn most_frequent_caption(train: &CaptionSplit, vocab: &Vocabulary) -> String {
    let all = train.decode(&(0..train.num_captions() as i64).collect::<Vec<_>>(), vocab);
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (position, caption) in all.iter().enumerate() {
        counts.entry(caption).or_insert((0, position)).0 += 1;
    }
    let best = counts.into_iter().max_by_key(|&(_, (count, position))| (count, std::cmp::Reverse(position)));
    best.map(|(caption, _)| caption.to_string()).unwrap_or_default()
}

/// For each of `images` of `val`: the first caption of the training image
/// whose features are nearest.
pub fn nearest_neighbour_captions(
    train: &CaptionSplit,
    val: &CaptionSplit,
    images: &[i64],
    vocab: &Vocabulary,
) -> Vec<String> {
    let rows = train.rows_by_image();
    let candidates = train.captioned_images();
    let candidate_features = train.pooled_features(&candidates);
    let mut captions = Vec::with_capacity(images.len());
    for chunk in images.chunks(256) {
        let queries = val.pooled_features(chunk);
        let nearest = Tensor::cdist(&queries, &candidate_features, 2.0, None).argmin(1, false);
        for k in 0..chunk.len() as i64 {
            let image = candidates[nearest.int64_value(&[k]) as usize];
            captions.extend(train.decode(&rows[&image][..1], vocab));
        }
    }
    captions
}
