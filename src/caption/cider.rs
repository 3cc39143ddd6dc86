//! CIDEr-D as the COCO caption evaluation computes it (pycocoevalcap's
//! `Cider`, whose scorer is the "-D" variant). Every caption becomes, for
//! each n = 1…4, a vector of its n-grams weighted by TF-IDF: the n-gram's
//! count times ln(N) − ln(max(1, df)), where N is the number of images
//! evaluated and df the number of them with the n-gram in one of their
//! references (so the document frequencies come from the reference set of
//! the evaluated corpus itself, and an n-gram in no reference weighs
//! ln N). For each reference, and each n, the hypothesis scores
//! Σ min(h, r)·r / (‖h‖·‖r‖) over its n-grams (the hypothesis' weights
//! clipped by the reference's) times the Gaussian length penalty
//! exp(−δ²/2σ²), σ = 6; the image's score is the mean over n, averaged over
//! its references, times 10; the corpus score is the mean over images.
//!
//! δ is the difference of the two captions' lengths in words. (The scorer
//! counts bigrams as "length", which differs only for an empty caption,
//! whose similarity is 0 whatever the penalty.) Words are split at
//! whitespace, as the scorer splits its
//! pre-tokenised strings; our captions are already lowercased and free of
//! punctuation (what the COCO evaluation's PTB tokenizer would do).

use super::rouge::mean;
use std::collections::HashMap;

const MAX_N: usize = 4;
const SIGMA: f64 = 6.0;

type Gram<'a> = &'a [&'a str];

/// A caption's TF-IDF vector for each n, their norms, and its length in words.
struct Weighted<'a> {
    grams: [HashMap<Gram<'a>, f64>; MAX_N],
    norms: [f64; MAX_N],
    words: usize,
}

/// Document frequencies over the reference sets, and ln of their count.
struct Idf<'a> {
    document_frequency: HashMap<Gram<'a>, usize>,
    log_images: f64,
}

impl<'a> Idf<'a> {
    fn new(references: &'a [Vec<Vec<&'a str>>]) -> Self {
        let mut document_frequency = HashMap::new();
        for refs in references {
            let mut seen: Vec<Gram<'a>> =
                refs.iter().flat_map(|r| (1..=MAX_N).flat_map(move |n| r.windows(n))).collect();
            seen.sort_unstable();
            seen.dedup();
            for gram in seen {
                *document_frequency.entry(gram).or_default() += 1;
            }
        }
        Self { document_frequency, log_images: (references.len() as f64).ln() }
    }

    fn weigh(&self, words: &'a [&'a str]) -> Weighted<'a> {
        let mut grams: [HashMap<Gram<'a>, f64>; MAX_N] = Default::default();
        for (n, counts) in grams.iter_mut().enumerate() {
            for gram in words.windows(n + 1) {
                *counts.entry(gram).or_default() += 1.0;
            }
        }
        let mut norms = [0.0; MAX_N];
        for (counts, norm) in grams.iter_mut().zip(&mut norms) {
            for (gram, weight) in counts.iter_mut() {
                let df = self.document_frequency.get(gram).copied().unwrap_or(0).max(1) as f64;
                *weight *= self.log_images - df.ln();
                *norm += *weight * *weight;
            }
            *norm = norm.sqrt();
        }
        Weighted { grams, norms, words: words.len() }
    }
}

/// The clipped cosine similarity for each n, with the length penalty.
fn similarity(hypothesis: &Weighted, reference: &Weighted) -> [f64; MAX_N] {
    let delta = hypothesis.words as f64 - reference.words as f64;
    let penalty = (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
    std::array::from_fn(|n| {
        let reference_grams = &reference.grams[n];
        let mut dot: f64 =
            hypothesis.grams[n].iter().map(|(gram, &h)| reference_grams.get(gram).map_or(0.0, |&r| h.min(r) * r)).sum();
        if hypothesis.norms[n] != 0.0 && reference.norms[n] != 0.0 {
            dot /= hypothesis.norms[n] * reference.norms[n];
        }
        dot * penalty
    })
}

/// CIDEr-D of each hypothesis against its own references, with the
/// document frequencies of all the references given.
pub fn cider_d_per_image(hypotheses: &[Vec<&str>], references: &[Vec<Vec<&str>>]) -> Vec<f64> {
    assert_eq!(hypotheses.len(), references.len(), "one reference set per hypothesis");
    let idf = Idf::new(references);
    hypotheses
        .iter()
        .zip(references)
        .map(|(hypothesis, refs)| {
            let hypothesis = idf.weigh(hypothesis);
            let summed: f64 = refs.iter().map(|r| similarity(&hypothesis, &idf.weigh(r)).iter().sum::<f64>()).sum();
            summed / MAX_N as f64 / refs.len().max(1) as f64 * 10.0
        })
        .collect()
}

/// The corpus CIDEr-D: the mean over images (0 for no image).
pub fn corpus_cider_d(hypotheses: &[Vec<&str>], references: &[Vec<Vec<&str>>]) -> f64 {
    mean(&cider_d_per_image(hypotheses, references))
}

#[cfg(test)]
mod tests {
    use super::cider_d_per_image;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn a_hypothesis_equal_to_its_only_reference_scores_ten() {
        // Two images with nothing in common: every n-gram weighs ln 2.
        let hyps = vec![words("a cat sat on it"), words("two dogs ran off")];
        let refs = vec![vec![words("a cat sat on it")], vec![words("two dogs ran off")]];
        for score in cider_d_per_image(&hyps, &refs) {
            assert!((score - 10.0).abs() < 1e-12, "{score}");
        }
        // Three words have no 4-gram: the mean over n = 1…4 is 3/4 of 10.
        let scores = cider_d_per_image(
            &[words("two dogs ran"), words("a cat")],
            &[vec![words("two dogs ran")], vec![words("a cat")]],
        );
        assert!((scores[0] - 7.5).abs() < 1e-12, "{scores:?}");
    }

    #[test]
    fn n_grams_in_every_image_weigh_nothing() {
        // "a" is in both images' references: ln 2 − ln 2 = 0.
        let hyps = vec![words("a"), words("a")];
        let refs = vec![vec![words("a cat")], vec![words("a dog")]];
        assert_eq!(cider_d_per_image(&hyps, &refs), [0.0, 0.0]);
    }
}
