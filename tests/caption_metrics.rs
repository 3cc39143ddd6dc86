//! BLEU-1…4, ROUGE-L and CIDEr-D of caption corpora against pycocoevalcap's
//! own scorers (`tests/fixtures/caption_metrics.py`, run at test time on
//! the same pre-tokenised strings): a corpus of edge cases, a generated
//! corpus of a few hundred images, and a corpus of one image.

use serde_json::{json, Value};
use tchlab::caption::bleu::corpus_bleu;
use tchlab::caption::cider::{cider_d_per_image, corpus_cider_d};
use tchlab::caption::rouge::{corpus_rouge_l, rouge_l_per_image};

mod common;
use common::{python, repo, run_ok};

/// The scores should agree to rounding (about 1e-15); the issue asks 1e-6.
const TOLERANCE: f64 = 1e-9;

struct Corpus {
    name: &'static str,
    hypotheses: Vec<String>,
    references: Vec<Vec<String>>,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// Empty hypothesis, a hypothesis longer than every reference, repeated
/// words, several references of different lengths, a word in no
/// reference, a one-word hypothesis, n-grams shared by many images.
fn edge_cases() -> Corpus {
    let cases: [(&str, &[&str]); 9] = [
        ("", &["a seven to the left of a two", "a two to the right of a seven"]),
        (
            "a one above a four above a nine above a one above a four",
            &["a one above a four above a nine", "a nine below a four below a one"],
        ),
        ("the the the the cat", &["the cat", "the cat sat on the mat", "a cat"]),
        ("a cat sat on a mat", &["a cat", "a cat sat", "the big cat sat on the mat today", "cat"]),
        ("a zebra to the left of a two", &["a seven to the left of a two", "a two to the right of a seven"]),
        ("seven", &["a seven above a three", "a three below a seven"]),
        ("a seven above a three", &["a seven above a three", "a three below a seven"]),
        (
            "a three then an eight then a five from left to right",
            &[
                "a three then an eight then a five from left to right",
                "a five then an eight then a three from right to left",
            ],
        ),
        ("a two to the right of a seven", &["a two to the right of a seven"]),
    ];
    Corpus {
        name: "edge cases",
        hypotheses: cases.iter().map(|(h, _)| h.to_string()).collect(),
        references: cases.iter().map(|(_, refs)| strings(refs)).collect(),
    }
}

/// A fixed linear congruential sequence (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }

    /// `min_words` to 13 words from a small vocabulary, so that n-grams recur across images.
    fn caption(&mut self, min_words: usize) -> String {
        const WORDS: [&str; 14] =
            ["a", "an", "seven", "two", "eight", "to", "the", "left", "right", "of", "above", "below", "then", "from"];
        let length = min_words + self.below(14 - min_words);
        (0..length).map(|_| WORDS[self.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
    }
}

/// Hypotheses of 0 to 13 words, each with 1 to 5 references of 1 to 13.
fn generated(images: usize) -> Corpus {
    let mut lcg = Lcg(0x9e37_79b9_7f4a_7c15);
    let hypotheses: Vec<String> = (0..images).map(|_| lcg.caption(0)).collect();
    let references = (0..images)
        .map(|_| {
            let count = 1 + lcg.below(5);
            (0..count).map(|_| lcg.caption(1)).collect()
        })
        .collect();
    Corpus { name: "generated", hypotheses, references }
}

fn one_image() -> Corpus {
    Corpus {
        name: "one image",
        hypotheses: strings(&["a seven to the left of a two"]),
        references: vec![strings(&["a seven to the left of a two", "a two to the right of a seven"])],
    }
}

/// pycocoevalcap's scores of each corpus, in order.
fn coco_scores(corpora: &[Corpus]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpora.json");
    let json: Vec<Value> = corpora
        .iter()
        .map(|c| json!({"name": c.name, "hypotheses": c.hypotheses, "references": c.references}))
        .collect();
    std::fs::write(&input, serde_json::to_vec(&json).unwrap()).unwrap();
    let script = repo().join("tests/fixtures/caption_metrics.py");
    let output = run_ok(std::process::Command::new(python()).arg(script).arg(&input));
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap_or_else(|| panic!("{what}: no number in {theirs}"));
    assert!((ours - theirs).abs() <= TOLERANCE, "{what}: ours {ours}, pycocoevalcap {theirs}");
}

#[test]
fn bleu_rouge_l_and_cider_d_equal_pycocoevalcaps() {
    let corpora = [edge_cases(), generated(300), one_image()];
    let reference = coco_scores(&corpora);
    for (corpus, theirs) in corpora.iter().zip(&reference) {
        let name = corpus.name;
        let hyps: Vec<Vec<&str>> = corpus.hypotheses.iter().map(|h| h.split_whitespace().collect()).collect();
        let refs: Vec<Vec<Vec<&str>>> =
            corpus.references.iter().map(|t| t.iter().map(|r| r.split_whitespace().collect()).collect()).collect();
        for (n, ours) in corpus_bleu(&hyps, &refs).iter().enumerate() {
            close(*ours, &theirs["bleu"][n], &format!("{name}: BLEU-{}", n + 1));
        }
        close(corpus_rouge_l(&hyps, &refs), &theirs["rouge_l"], &format!("{name}: ROUGE-L"));
        close(corpus_cider_d(&hyps, &refs), &theirs["cider_d"], &format!("{name}: CIDEr-D"));
        let per_image = [("ROUGE-L", rouge_l_per_image(&hyps, &refs)), ("CIDEr-D", cider_d_per_image(&hyps, &refs))];
        for (metric, ours) in per_image {
            let key = if metric == "ROUGE-L" { "rouge_l_per_image" } else { "cider_d_per_image" };
            assert_eq!(theirs[key].as_array().unwrap().len(), ours.len(), "{name}: {metric} images");
            for (image, score) in ours.iter().enumerate() {
                close(*score, &theirs[key][image], &format!("{name}: {metric} of image {image}"));
            }
        }
    }
    // The edge cases are not all zero or all one: the comparison sees the formulas.
    let edge = &reference[0]["cider_d_per_image"];
    assert!(edge[0] == 0.0 && edge[6].as_f64().unwrap() > 1.0, "{edge}");
}
