//! Face recognition in eigenspace (Turk & Pentland, 1991): a seeded
//! per-person train/test split, a PCA of the training faces only, and the
//! nearest training face by Euclidean distance among the first k
//! coordinates, for several k, next to the nearest neighbour on raw pixels.
//! It measures accuracy and returns each test face's matches; plotting and
//! writing them are the caller's.

use super::{fit, Divisor, Method};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use tch::Tensor;

/// Row indices of the training and the test faces.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTest {
    pub train: Vec<i64>,
    pub test: Vec<i64>,
}

/// Holds out `test_fraction` of each person's faces (rounded, at least one,
/// never all) for testing, chosen by `seed`. People with a single face stay
/// in training only (they can still be mistaken for).
pub fn split_per_person(labels: &[usize], test_fraction: f64, seed: u64) -> Result<TrainTest> {
    let people = labels.iter().max().map_or(0, |m| m + 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for person in 0..people {
        let mut rows: Vec<i64> = (0..labels.len()).filter(|&i| labels[i] == person).map(|i| i as i64).collect();
        rows.shuffle(&mut rng);
        let held_out = if rows.len() < 2 {
            0
        } else {
            ((rows.len() as f64 * test_fraction).round() as usize).clamp(1, rows.len() - 1)
        };
        test.extend(rows.drain(..held_out));
        train.extend(rows);
    }
    if test.is_empty() {
        bail!("no person has 2 or more faces: nothing to test recognition on");
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(TrainTest { train, test })
}

/// Accuracy of the nearest neighbour among the first `k` coordinates.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AtK {
    pub k: i64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recognition {
    pub people: usize,
    pub train_faces: usize,
    pub test_faces: usize,
    pub test_fraction: f64,
    pub seed: u64,
    pub by_k: Vec<AtK>,
    /// The nearest neighbour on the raw pixels.
    pub raw_pixels_accuracy: f64,
    /// The smallest k with the highest eigenspace accuracy.
    pub best: AtK,
    /// Each test face and the training faces nearest to it (rows of the
    /// input), in `split.test` order.
    #[serde(skip)]
    pub matches: Vec<Match>,
}

/// One test face and its nearest training faces, as rows of the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The test face.
    pub test: i64,
    /// Nearest on the raw pixels.
    pub raw_pixels: i64,
    /// Nearest on the first `best.k` eigenspace coordinates.
    pub eigenspace: i64,
}

/// The k tried: 1, 2, 3, 5, 7, 10, 20, 30, 50, 100, 200, 300, 500, 1000, …
/// up to `rank`, and `rank` itself.
pub fn k_ladder(rank: i64) -> Vec<i64> {
    let mut ks = vec![1, 2, 3, 5, 7];
    let mut scale = 10;
    while scale < rank {
        ks.extend([1, 2, 3, 5].map(|step| step * scale));
        scale *= 10;
    }
    ks.retain(|&k| k < rank);
    ks.push(rank);
    ks
}

/// Fits a PCA to the training faces of `split` and measures nearest-neighbour
/// accuracy on the test faces for each k of [`k_ladder`], and on raw pixels.
pub fn recognise(
    pixels: &Tensor,
    labels: &[usize],
    split: &TrainTest,
    test_fraction: f64,
    seed: u64,
    divisor: Divisor,
) -> Result<Recognition> {
    let device = pixels.device();
    let rows = |indices: &[i64]| pixels.index_select(0, &Tensor::from_slice(indices).to_device(device));
    let (train, test) = (rows(&split.train), rows(&split.test));
    let label_of = |indices: &[i64]| indices.iter().map(|&i| labels[i as usize]).collect::<Vec<usize>>();
    let (train_labels, test_labels) = (label_of(&split.train), label_of(&split.test));
    let pca = fit(&train, divisor, Method::Auto)?;
    let (train_coords, test_coords) = (pca.project(&train, pca.rank()), pca.project(&test, pca.rank()));
    let label_accuracy = |nearest: &[i64]| {
        let correct = nearest.iter().zip(&test_labels).filter(|(&n, &label)| train_labels[n as usize] == label).count();
        correct as f64 / test_labels.len().max(1) as f64
    };
    let nearest_by_k: Vec<(i64, Vec<i64>)> = k_ladder(pca.rank())
        .into_iter()
        .map(|k| (k, nearest_neighbours(&train_coords.narrow(1, 0, k), &test_coords.narrow(1, 0, k))))
        .collect();
    let by_k: Vec<AtK> =
        nearest_by_k.iter().map(|(k, nearest)| AtK { k: *k, accuracy: label_accuracy(nearest) }).collect();
    let best_index = (0..by_k.len()).fold(0, |best, i| if by_k[i].accuracy > by_k[best].accuracy { i } else { best });
    let best = by_k[best_index];
    let raw_nearest = nearest_neighbours(&train, &test);
    let matches = split
        .test
        .iter()
        .zip(raw_nearest.iter().zip(&nearest_by_k[best_index].1))
        .map(|(&test, (&raw, &eigenspace))| Match {
            test,
            raw_pixels: split.train[raw as usize],
            eigenspace: split.train[eigenspace as usize],
        })
        .collect();
    Ok(Recognition {
        people: labels.iter().max().map_or(0, |m| m + 1),
        train_faces: split.train.len(),
        test_faces: split.test.len(),
        test_fraction,
        seed,
        raw_pixels_accuracy: label_accuracy(&raw_nearest),
        by_k,
        best,
        matches,
    })
}

/// For each `test` row, the index of its nearest `train` row (Euclidean).
pub fn nearest_neighbours(train: &Tensor, test: &Tensor) -> Vec<i64> {
    // Squared distances up to a per-test-row constant: |t|² − 2 t·r + |r|² → −2 t·r + |r|².
    let scores = train.square().sum_dim_intlist(1, false, train.kind()).unsqueeze(0) - test.mm(&train.tr()) * 2.0;
    Vec::<i64>::try_from(scores.argmin(1, false).to_device(tch::Device::Cpu)).expect("argmin gives int64 indices")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_ladder_climbs_in_round_steps_up_to_the_rank() {
        assert_eq!(k_ladder(1), [1]);
        assert_eq!(k_ladder(4), [1, 2, 3, 4]);
        assert_eq!(k_ladder(10), [1, 2, 3, 5, 7, 10]);
        assert_eq!(k_ladder(279), [1, 2, 3, 5, 7, 10, 20, 30, 50, 100, 200, 279]);
    }

    #[test]
    fn each_person_keeps_faces_on_both_sides() {
        let labels: Vec<usize> = (0..40).flat_map(|p| std::iter::repeat_n(p, 10)).chain([40]).collect();
        let split = split_per_person(&labels, 0.3, 1).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (281, 120));
        for person in 0..40 {
            let tested = split.test.iter().filter(|&&i| labels[i as usize] == person).count();
            assert_eq!(tested, 3, "person {person}");
        }
        assert!(split.train.contains(&400), "a person with one face trains only");
        assert_eq!(split, split_per_person(&labels, 0.3, 1).unwrap(), "the seed decides");
        assert_ne!(split, split_per_person(&labels, 0.3, 2).unwrap());
        assert!(split_per_person(&[0, 1, 2], 0.5, 0).is_err());
    }

    #[test]
    fn each_test_row_finds_its_nearest_training_row() {
        let train = Tensor::from_slice(&[0.0, 0.0, 10.0, 0.0, 0.0, 10.0]).view([3, 2]);
        let test = Tensor::from_slice(&[1.0, 1.0, 9.0, 1.0, 1.0, 8.0, 6.0, 0.0]).view([4, 2]);
        assert_eq!(nearest_neighbours(&train, &test), [0, 1, 2, 1]);
        let empty = Tensor::zeros([0, 2], (Kind::Double, Device::Cpu));
        assert!(nearest_neighbours(&train, &empty).is_empty());
    }
}
