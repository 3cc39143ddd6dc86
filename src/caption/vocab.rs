//! Words ↔ token indices: the course's `coco2014_vocab.json`, or a
//! vocabulary built from training captions (lowercased, punctuation
//! stripped, words seen at least `--min-count` times, the rest `<UNK>`).
//! Encodes captions as fixed-length token rows and decodes sampled ones.

use super::model::SpecialTokens;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

pub const NULL: &str = "<NULL>";
pub const START: &str = "<START>";
pub const END: &str = "<END>";
pub const UNK: &str = "<UNK>";

#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    words: Vec<String>,
    index: HashMap<String, i64>,
    pub tokens: SpecialTokens,
    unknown: i64,
}

/// A caption's words: lowercased, every character that is not a letter or a
/// digit taken as a space.
pub fn tokenize(caption: &str) -> Vec<String> {
    caption
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[derive(Deserialize)]
struct CourseVocabulary {
    idx_to_word: Vec<String>,
}

impl Vocabulary {
    /// A vocabulary from its words in index order; the four special words
    /// must be among them.
    pub fn from_words(words: Vec<String>, source: &str) -> Result<Self> {
        let mut index = HashMap::with_capacity(words.len());
        for (i, word) in words.iter().enumerate() {
            if index.insert(word.clone(), i as i64).is_some() {
                bail!("{source}: the word {word:?} appears twice");
            }
        }
        let find = |special: &str| {
            index.get(special).copied().with_context(|| format!("{source}: the vocabulary has no {special} word"))
        };
        let tokens = SpecialTokens { null: find(NULL)?, start: find(START)?, end: find(END)? };
        let unknown = find(UNK)?;
        Ok(Self { words, index, tokens, unknown })
    }

    /// The course's `coco2014_vocab.json` (`idx_to_word`, `word_to_idx`).
    pub fn read_course_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed: CourseVocabulary = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a vocabulary (idx_to_word)", path.display()))?;
        Self::from_words(parsed.idx_to_word, &path.display().to_string())
    }

    /// The special words, then every word of `captions` seen at least
    /// `min_count` times, most frequent first (ties alphabetical).
    pub fn build<'a>(captions: impl IntoIterator<Item = &'a [String]>, min_count: usize) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for caption in captions {
            for word in caption {
                *counts.entry(word.as_str()).or_default() += 1;
            }
        }
        let mut frequent: Vec<(&str, usize)> = counts.into_iter().filter(|&(_, c)| c >= min_count).collect();
        frequent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let words = [NULL, START, END, UNK].into_iter().chain(frequent.into_iter().map(|(w, _)| w));
        Self::from_words(words.map(str::to_string).collect(), "built vocabulary").expect("specials are present once")
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// `<START>`, the words (unknown ones as `<UNK>`, at most `max_words`),
    /// `<END>`, then `<NULL>` up to `max_words + 2` tokens.
    pub fn encode(&self, words: &[String], max_words: usize) -> Vec<i64> {
        let mut row = Vec::with_capacity(max_words + 2);
        row.push(self.tokens.start);
        row.extend(words.iter().take(max_words).map(|w| self.index.get(w).copied().unwrap_or(self.unknown)));
        row.push(self.tokens.end);
        row.resize(max_words + 2, self.tokens.null);
        row
    }

    /// The words of a token row up to its `<END>`, without `<NULL>` and `<START>`.
    pub fn decode_words(&self, tokens: &[i64]) -> Vec<&str> {
        tokens
            .iter()
            .take_while(|&&t| t != self.tokens.end)
            .filter(|&&t| t != self.tokens.null && t != self.tokens.start)
            .map(|&t| self.words.get(t as usize).map_or(UNK, String::as_str))
            .collect()
    }

    pub fn decode(&self, tokens: &[i64]) -> String {
        self.decode_words(tokens).join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_lowercases_and_drops_punctuation() {
        assert_eq!(
            tokenize("A man, riding a Horse!  (on the beach)."),
            ["a", "man", "riding", "a", "horse", "on", "the", "beach"]
        );
    }

    #[test]
    fn build_keeps_frequent_words_and_encodes_the_rest_as_unknown() {
        let captions: Vec<Vec<String>> = ["a cat", "a dog", "a cat on a mat"].iter().map(|c| tokenize(c)).collect();
        let vocab = Vocabulary::build(captions.iter().map(Vec::as_slice), 2);
        assert_eq!(vocab.words(), [NULL, START, END, UNK, "a", "cat"]);
        let row = vocab.encode(&tokenize("a dog cat"), 4);
        assert_eq!(row, [1, 4, 3, 5, 2, 0]);
        assert_eq!(vocab.decode(&row), "a <UNK> cat");
        // Too long: cut to max_words, still ended.
        assert_eq!(vocab.encode(&tokenize("a a a a a a"), 2), [1, 4, 4, 2]);
    }

    #[test]
    fn a_vocabulary_without_its_special_words_is_refused() {
        let err = Vocabulary::from_words(vec!["<NULL>".into(), "cat".into()], "v.json").unwrap_err();
        assert_eq!(err.to_string(), "v.json: the vocabulary has no <START> word");
    }
}
