//! The CSV tables of a run: every eigenvalue with its share of the
//! variance, and each recognition test face with its nearest faces.

use crate::data::faces::People;
use crate::pca::recognition::Recognition;
use crate::pca::Pca;
use crate::persist::write_atomically;
use crate::report::csv_field;
use anyhow::Result;
use std::path::Path;

/// Every eigenvalue, its share of the total variance and the cumulative share.
pub(super) fn write_eigenvalues(pca: &Pca, path: &Path) -> Result<()> {
    let mut csv = String::from("component,eigenvalue,fraction,cumulative_fraction\n");
    for (i, (value, cumulative)) in pca.eigenvalues_vec().iter().zip(pca.cumulative_fractions()).enumerate() {
        csv += &format!("{},{value:.17e},{:.17e},{cumulative:.17e}\n", i + 1, value / pca.total_variance);
    }
    write_atomically(path, csv.as_bytes())
}

/// Each test face, the training face nearest to it on raw pixels and on the
/// best k coordinates, and the person of each.
pub(super) fn write_matches(recognition: &Recognition, people: &People, path: &Path) -> Result<()> {
    let k = recognition.best.k;
    let mut csv =
        String::from("test_face,person,raw_pixels_nearest,raw_pixels_person,eigenspace_nearest,eigenspace_person,k\n");
    let face = |row: i64| csv_field(&people.files[row as usize].to_string_lossy());
    let person = |row: i64| csv_field(&people.names[people.labels[row as usize]]);
    for m in &recognition.matches {
        csv += &format!(
            "{},{},{},{},{},{},{k}\n",
            face(m.test),
            person(m.test),
            face(m.raw_pixels),
            person(m.raw_pixels),
            face(m.eigenspace),
            person(m.eigenspace)
        );
    }
    write_atomically(path, csv.as_bytes())
}
