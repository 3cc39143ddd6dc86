//! ROUGE-L as the COCO caption evaluation computes it (pycocoevalcap's
//! `Rouge`): for each image, the length of the longest common subsequence
//! (LCS) of words between the hypothesis and each reference; the best
//! precision (LCS / hypothesis length) and the best recall (LCS / reference
//! length) over the references, each maximised on its own; their F-measure
//! with β = 1.2, (1 + β²)·P·R / (R + β²·P), or 0 when either is 0. The
//! corpus score is the mean over images.
//!
//! Words are split at whitespace, as the scorer splits its pre-tokenised
//! strings; our captions are already lowercased and free of punctuation
//! (what the COCO evaluation's PTB tokenizer would otherwise do). An empty
//! hypothesis scores 0, as it does there.

const BETA: f64 = 1.2;

/// Length of the longest common subsequence of two word sequences.
fn lcs_length(a: &[&str], b: &[&str]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for word in a {
        for (j, other) in b.iter().enumerate() {
            current[j + 1] = if word == other { previous[j] + 1 } else { previous[j + 1].max(current[j]) };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// ROUGE-L of one hypothesis against its references.
pub fn rouge_l(hypothesis: &[&str], references: &[Vec<&str>]) -> f64 {
    let (mut precision, mut recall) = (0.0f64, 0.0f64);
    for reference in references {
        let common = lcs_length(reference, hypothesis) as f64;
        if !hypothesis.is_empty() {
            precision = precision.max(common / hypothesis.len() as f64);
        }
        if !reference.is_empty() {
            recall = recall.max(common / reference.len() as f64);
        }
    }
    if precision == 0.0 || recall == 0.0 {
        return 0.0;
    }
    let beta2 = BETA * BETA;
    (1.0 + beta2) * precision * recall / (recall + beta2 * precision)
}

/// ROUGE-L of each hypothesis against its own references.
pub fn rouge_l_per_image(hypotheses: &[Vec<&str>], references: &[Vec<Vec<&str>>]) -> Vec<f64> {
    assert_eq!(hypotheses.len(), references.len(), "one reference set per hypothesis");
    hypotheses.iter().zip(references).map(|(hypothesis, refs)| rouge_l(hypothesis, refs)).collect()
}

/// The corpus ROUGE-L: the mean over images (0 for no image).
pub fn corpus_rouge_l(hypotheses: &[Vec<&str>], references: &[Vec<Vec<&str>>]) -> f64 {
    mean(&rouge_l_per_image(hypotheses, references))
}

pub(super) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::{lcs_length, rouge_l};

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn longest_common_subsequence_skips_words() {
        assert_eq!(lcs_length(&words("a b c d e"), &words("a c e x")), 3);
        assert_eq!(lcs_length(&words("a b"), &[]), 0);
    }

    #[test]
    fn f_measure_of_the_best_precision_and_the_best_recall() {
        assert!((rouge_l(&words("a cat"), &[words("a cat")]) - 1.0).abs() < 1e-12);
        // P = 2/2 from either reference, R = 2/3 from the shorter one.
        let score = rouge_l(&words("a cat"), &[words("a cat sat"), words("a big cat sat on it")]);
        let (p, r, b2) = (1.0, 2.0 / 3.0, 1.44);
        assert!((score - (1.0 + b2) * p * r / (r + b2 * p)).abs() < 1e-12, "{score}");
        assert_eq!(rouge_l(&[], &[words("a cat")]), 0.0);
    }
}
