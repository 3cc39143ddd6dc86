//! Corpus BLEU-1…4 as the standard COCO caption evaluation computes it
//! (pycocoevalcap's `BleuScorer`): clipped n-gram counts summed over the
//! whole corpus, the geometric mean of the precisions up to n, and one
//! brevity penalty from the total hypothesis length against the total of
//! each hypothesis' closest reference length (ties: the shorter). No
//! smoothing: only that scorer's guards (1e-15 added to matches, 1e-9 to
//! counts), so a corpus with no matching 4-gram scores about 0.

use std::collections::HashMap;

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;
pub const MAX_N: usize = 4;

fn ngram_counts<'a>(words: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for gram in words.windows(n) {
        *counts.entry(gram).or_default() += 1;
    }
    counts
}

/// BLEU-1…4 of `hypotheses`, each against its own references (tokenized words).
pub fn corpus_bleu(hypotheses: &[Vec<&str>], references: &[Vec<Vec<&str>>]) -> [f64; MAX_N] {
    assert_eq!(hypotheses.len(), references.len(), "one reference set per hypothesis");
    let mut guess = [0usize; MAX_N];
    let mut correct = [0usize; MAX_N];
    let (mut test_len, mut ref_len) = (0usize, 0usize);
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        test_len += hypothesis.len();
        ref_len += refs.iter().map(Vec::len).min_by_key(|&l| (l.abs_diff(hypothesis.len()), l)).unwrap_or(0);
        for n in 1..=MAX_N {
            guess[n - 1] += (hypothesis.len() + 1).saturating_sub(n);
            let mut max_ref: HashMap<&[&str], usize> = HashMap::new();
            for reference in refs {
                for (gram, count) in ngram_counts(reference, n) {
                    let best = max_ref.entry(gram).or_default();
                    *best = (*best).max(count);
                }
            }
            correct[n - 1] += ngram_counts(hypothesis, n)
                .into_iter()
                .map(|(gram, count)| count.min(max_ref.get(gram).copied().unwrap_or(0)))
                .sum::<usize>();
        }
    }
    let mut scores = [0.0; MAX_N];
    let mut product = 1.0;
    for n in 0..MAX_N {
        product *= (correct[n] as f64 + TINY) / (guess[n] as f64 + SMALL);
        scores[n] = product.powf(1.0 / (n + 1) as f64);
    }
    let ratio = (test_len as f64 + TINY) / (ref_len as f64 + SMALL);
    if ratio < 1.0 {
        for score in &mut scores {
            *score *= (1.0 - 1.0 / ratio).exp();
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::corpus_bleu;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn identical_captions_score_one() {
        let hyp = vec![words("a cat on a mat")];
        let refs = vec![vec![words("a cat on a mat"), words("the cat sat")]];
        for score in corpus_bleu(&hyp, &refs) {
            assert!((score - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn clipped_precision_and_brevity_penalty_as_the_coco_scorer() {
        // "the the the the" against "the cat": unigram matches clipped to 1 of 4.
        let scores = corpus_bleu(&[words("the the the the")], &[vec![words("the cat")]]);
        assert!((scores[0] - 0.25).abs() < 1e-9, "{scores:?}");
        // A short hypothesis: all unigrams right, brevity penalty exp(1 − 6/3).
        let scores = corpus_bleu(&[words("a cat sat")], &[vec![words("a cat sat on the mat")]]);
        assert!((scores[0] - (1.0f64 - 2.0).exp()).abs() < 1e-9, "{scores:?}");
        // No matching 4-gram: BLEU-4 is about 0, unsmoothed.
        let scores = corpus_bleu(&[words("a cat sat on")], &[vec![words("a cat ran on")]]);
        assert!(scores[3] < 1e-3 && (scores[0] - 0.75).abs() < 1e-9, "{scores:?}");
    }
}
