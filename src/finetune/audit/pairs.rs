//! Which files show the same picture: exact duplicates (the same SHA-256 of
//! their bytes) as groups, and near-duplicate pairs found by either of two
//! tests: perceptual hashes at most `phash_distance` bits apart, or
//! features whose cosine similarity is at least `feature_similarity`. Each
//! near pair carries both measures. Files of one exact group are not also
//! listed as near pairs. Each test collects at most [`MAX_PAIRS`] pairs, so
//! a threshold that matches everything cannot exhaust memory.

use super::inspect::Inspected;
use crate::data::phash;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use tch::{Kind, Tensor};

/// The most pairs one test collects.
pub const MAX_PAIRS: usize = 100_000;

/// Rows of the feature similarity matrix computed at a time.
const ROW_BLOCK: i64 = 256;

/// When two files count as near duplicates.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Thresholds {
    /// Perceptual hashes at most this many bits apart (of 64).
    pub phash_distance: u32,
    /// Feature cosine similarity at least this.
    pub feature_similarity: f64,
}

/// Two files (indices, `first < second`) that nearly match.
#[derive(Debug, Clone, PartialEq)]
pub struct NearPair {
    pub first: usize,
    pub second: usize,
    pub phash_distance: u32,
    /// None when no features were computed.
    pub cosine: Option<f64>,
    pub by_phash: bool,
    pub by_features: bool,
}

/// What [`find`] found.
#[derive(Debug, Clone, Default)]
pub struct Similar {
    /// Groups of two or more files with the same bytes, each ascending, by first file.
    pub exact: Vec<Vec<usize>>,
    /// The most similar first.
    pub near: Vec<NearPair>,
    /// A test stopped at [`MAX_PAIRS`].
    pub truncated: bool,
}

/// The duplicates among `files`; `features` (unit rows, one per file whose
/// perceptual hash is known, in order) for the second near test.
pub fn find(files: &[Inspected], features: Option<&Tensor>, thresholds: Thresholds) -> Similar {
    let exact = exact_groups(files);
    let mut group_of = vec![usize::MAX; files.len()];
    for (g, group) in exact.iter().enumerate() {
        group.iter().for_each(|&i| group_of[i] = g);
    }
    let readable: Vec<usize> = (0..files.len()).filter(|&i| files[i].phash.is_ok()).collect();
    let hashes: Vec<u64> = readable.iter().map(|&i| *files[i].phash.as_ref().expect("readable")).collect();
    let (by_phash, phash_full) = phash_pairs(&hashes, thresholds.phash_distance);
    let (by_features, features_full) = match features {
        Some(features) => cosine_pairs(features, thresholds.feature_similarity),
        None => (Vec::new(), false),
    };
    let mut found: BTreeMap<(usize, usize), (bool, bool)> = BTreeMap::new();
    by_phash.into_iter().for_each(|pair| found.entry(pair).or_default().0 = true);
    by_features.into_iter().for_each(|pair| found.entry(pair).or_default().1 = true);
    let rows: Option<Vec<f32>> = features.map(|f| Vec::try_from(f.flatten(0, -1)).expect("float features"));
    let width = features.map_or(0, |f| f.size()[1] as usize);
    let cosine = |p: usize, q: usize| {
        rows.as_ref().map(|rows| {
            let (a, b) = (&rows[p * width..(p + 1) * width], &rows[q * width..(q + 1) * width]);
            a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>()
        })
    };
    let mut near: Vec<NearPair> = found
        .into_iter()
        .map(|((p, q), (by_phash, by_features))| NearPair {
            first: readable[p],
            second: readable[q],
            phash_distance: phash::distance(hashes[p], hashes[q]),
            cosine: cosine(p, q),
            by_phash,
            by_features,
        })
        .filter(|pair| group_of[pair.first] == usize::MAX || group_of[pair.first] != group_of[pair.second])
        .collect();
    near.sort_by(|a, b| {
        let (ca, cb) = (a.cosine.unwrap_or(0.0), b.cosine.unwrap_or(0.0));
        cb.total_cmp(&ca)
            .then(a.phash_distance.cmp(&b.phash_distance))
            .then((a.first, a.second).cmp(&(b.first, b.second)))
    });
    Similar { exact, near, truncated: phash_full || features_full }
}

/// Files with equal bytes, grouped.
fn exact_groups(files: &[Inspected]) -> Vec<Vec<usize>> {
    let mut by_hash: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        if let Some(sha) = file.sha256 {
            by_hash.entry(sha).or_default().push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = by_hash.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

/// Pairs (p < q) of hashes at most `max_distance` apart, and whether the
/// search stopped at [`MAX_PAIRS`].
fn phash_pairs(hashes: &[u64], max_distance: u32) -> (Vec<(usize, usize)>, bool) {
    let mut pairs = Vec::new();
    let rows: Vec<usize> = (0..hashes.len()).collect();
    for block in rows.chunks(ROW_BLOCK as usize) {
        let found: Vec<(usize, usize)> = block
            .par_iter()
            .flat_map_iter(|&p| {
                (p + 1..hashes.len())
                    .filter(move |&q| phash::distance(hashes[p], hashes[q]) <= max_distance)
                    .map(move |q| (p, q))
            })
            .collect();
        pairs.extend(found);
        if pairs.len() >= MAX_PAIRS {
            pairs.truncate(MAX_PAIRS);
            return (pairs, true);
        }
    }
    (pairs, false)
}

/// Pairs (p < q) of unit rows whose dot product is at least `threshold`,
/// and whether the search stopped at [`MAX_PAIRS`].
fn cosine_pairs(features: &Tensor, threshold: f64) -> (Vec<(usize, usize)>, bool) {
    let n = features.size()[0];
    let mut pairs = Vec::new();
    for start in (0..n).step_by(ROW_BLOCK as usize) {
        let block = features.narrow(0, start, ROW_BLOCK.min(n - start));
        let hits = block.matmul(&features.tr()).ge(threshold).nonzero().to_kind(Kind::Int64);
        let flat = Vec::<i64>::try_from(hits.flatten(0, -1)).expect("int64 indices");
        let found = flat.chunks(2).map(|rc| ((start + rc[0]) as usize, rc[1] as usize)).filter(|(p, q)| p < q);
        pairs.extend(found);
        if pairs.len() >= MAX_PAIRS {
            pairs.truncate(MAX_PAIRS);
            return (pairs, true);
        }
    }
    (pairs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha: u8, phash: Result<u64, String>) -> Inspected {
        Inspected { sha256: Some([sha; 32]), phash }
    }

    const LOOSE: Thresholds = Thresholds { phash_distance: 3, feature_similarity: 0.9 };

    #[test]
    fn equal_bytes_group_and_are_not_near_pairs_too() {
        let files = [file(1, Ok(0)), file(2, Ok(u64::MAX)), file(1, Ok(0)), file(3, Ok(0b111))];
        let found = find(&files, None, LOOSE);
        assert_eq!(found.exact, [vec![0, 2]]);
        let pairs: Vec<(usize, usize, u32)> =
            found.near.iter().map(|p| (p.first, p.second, p.phash_distance)).collect();
        assert_eq!(pairs, [(0, 3, 3), (2, 3, 3)]);
        assert!(found.near.iter().all(|p| p.by_phash && !p.by_features && p.cosine.is_none()));
    }

    #[test]
    fn features_index_the_readable_files_and_both_measures_are_given() {
        let files = [file(1, Ok(0)), file(2, Err("truncated".into())), file(3, Ok(u64::MAX)), file(4, Ok(0xff))];
        // Unit rows for files 0, 2 and 3: 0 and 3 point the same way.
        let features = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8]).view([3, 2]);
        let found = find(&files, Some(&features), Thresholds { phash_distance: 0, feature_similarity: 0.5 });
        assert_eq!(found.near.len(), 2, "{:?}", found.near);
        let best = &found.near[0];
        assert_eq!((best.first, best.second, best.phash_distance), (2, 3, 56));
        assert!((best.cosine.unwrap() - 0.8).abs() < 1e-6 && best.by_features && !best.by_phash);
        let next = &found.near[1];
        assert_eq!((next.first, next.second, next.phash_distance), (0, 3, 8));
        assert!((next.cosine.unwrap() - 0.6).abs() < 1e-6);
    }

    #[test]
    fn a_threshold_that_matches_everything_stops_at_the_cap() {
        let (pairs, full) = phash_pairs(&[0u64; 400], 64);
        assert_eq!((pairs.len(), full), (400 * 399 / 2, false));
        let many = vec![0u64; 600];
        let (pairs, full) = phash_pairs(&many, 64);
        assert_eq!((pairs.len(), full), (MAX_PAIRS, true));
    }
}
