//! Stratified K-fold cross-validation over an image folder's samples: each
//! class's images, in path order, shuffled by a seed of their own and dealt
//! round the folds, the deal going on where the last class stopped. So each
//! class's count in a fold differs from its count in another by at most
//! one (the folds' sizes too), the folds are disjoint and cover every
//! image, and the same images and seed give the same folds whatever else a
//! run changes. The deal is ours, not scikit-learn's `StratifiedKFold`
//! (another random generator): the same properties, other folds.

use super::image_folder::{ImageFolder, Sample};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Fold `fold` of `folds` (dealt by `seed`) validates, the others train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KFold {
    pub folds: usize,
    pub fold: usize,
    pub seed: u64,
}

impl KFold {
    /// The fold of each of `folder`'s samples, in their order. A class with
    /// fewer images than folds is refused (some fold would train without it).
    pub fn assign(&self, folder: &ImageFolder) -> Result<Vec<usize>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0xf01d_5eed);
        let mut fold_of = vec![0; folder.samples.len()];
        let mut next_fold = 0;
        for (class_index, class) in folder.classes.iter().enumerate() {
            let mut members: Vec<usize> =
                (0..folder.samples.len()).filter(|&i| folder.samples[i].class_index == class_index).collect();
            // A multi-label sample is dealt by its first class: a label that
            // is never first has no members of its own.
            if !members.is_empty() && members.len() < self.folds {
                bail!(
                    "{}: class {class} has {} image(s); --folds {} needs at least one per fold",
                    folder.root.display(),
                    members.len(),
                    self.folds
                );
            }
            members.sort_by(|&a, &b| folder.samples[a].path.cmp(&folder.samples[b].path));
            members.shuffle(&mut rng);
            for member in members {
                fold_of[member] = next_fold;
                next_fold = (next_fold + 1) % self.folds;
            }
        }
        Ok(fold_of)
    }

    /// `folder` cut into (train: the other folds, val: this fold), each in
    /// path order; train keeps the folder's ignored files.
    pub fn split(&self, folder: ImageFolder) -> Result<(ImageFolder, ImageFolder)> {
        let fold_of = self.assign(&folder)?;
        let (mut train, mut val): (Vec<Sample>, Vec<Sample>) = (Vec::new(), Vec::new());
        for (sample, fold) in folder.samples.into_iter().zip(fold_of) {
            if fold == self.fold {
                val.push(sample);
            } else {
                train.push(sample);
            }
        }
        let by_path = |a: &Sample, b: &Sample| a.path.cmp(&b.path);
        train.sort_by(by_path);
        val.sort_by(by_path);
        let val = ImageFolder {
            root: folder.root.clone(),
            classes: folder.classes.clone(),
            samples: val,
            ignored: Vec::new(),
        };
        Ok((ImageFolder { samples: train, ..folder }, val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A folder of `counts[c]` images of each class c, named so that path
    /// order interleaves the classes.
    fn folder(counts: &[usize]) -> ImageFolder {
        let mut samples = Vec::new();
        for (class_index, &count) in counts.iter().enumerate() {
            for i in 0..count {
                samples.push(Sample {
                    path: PathBuf::from(format!("img{i:03}-{class_index}.jpg")),
                    class_index,
                    label_set: None,
                });
            }
        }
        let classes = (0..counts.len()).map(|c| format!("class{c}")).collect();
        ImageFolder { root: PathBuf::from("data"), classes, samples, ignored: Vec::new() }
    }

    #[test]
    fn every_class_is_dealt_evenly_and_the_folds_differ_in_size_by_at_most_one() {
        let data = folder(&[13, 7, 5]);
        let fold_of = KFold { folds: 4, fold: 0, seed: 3 }.assign(&data).unwrap();
        let mut sizes = [0usize; 4];
        for class_index in 0..3 {
            let mut counts = [0usize; 4];
            for (sample, &fold) in data.samples.iter().zip(&fold_of) {
                if sample.class_index == class_index {
                    counts[fold] += 1;
                    sizes[fold] += 1;
                }
            }
            assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
        }
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
    }

    #[test]
    fn the_order_samples_come_in_does_not_change_the_folds() {
        let data = folder(&[10, 9]);
        let mut reversed = data.clone();
        reversed.samples.reverse();
        let kfold = KFold { folds: 3, fold: 1, seed: 0 };
        let (_, val) = kfold.split(data).unwrap();
        let (_, val_reversed) = kfold.split(reversed).unwrap();
        let paths = |f: &ImageFolder| f.samples.iter().map(|s| s.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&val), paths(&val_reversed));
    }

    #[test]
    fn a_label_that_is_no_images_first_does_not_stop_multi_label_folds() {
        let mut data = folder(&[6, 0]);
        for sample in &mut data.samples {
            sample.label_set = Some(vec![0, 1]);
        }
        let fold_of = KFold { folds: 3, fold: 0, seed: 0 }.assign(&data).unwrap();
        assert_eq!((0..3).map(|f| fold_of.iter().filter(|&&k| k == f).count()).collect::<Vec<_>>(), [2, 2, 2]);
    }

    #[test]
    fn a_class_smaller_than_the_folds_is_refused_naming_it() {
        let error = KFold { folds: 5, fold: 0, seed: 0 }.assign(&folder(&[10, 4])).unwrap_err().to_string();
        assert_eq!(error, "data: class class1 has 4 image(s); --folds 5 needs at least one per fold");
    }
}
