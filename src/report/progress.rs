//! indicatif progress bars with one look across the tool. They draw on
//! stderr and hide themselves when it is not a terminal (logs stay clean).
//! Library code gets its bars from a [`super::Reporter`], whose
//! [`super::Terminal`] makes them here.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}
