//! The claim on a run folder, so that two processes (two sweeps, a sweep and
//! a Slurm task, two Slurm tasks) never run the same point at once: the
//! folder's `sweep.lock`, a [`crate::persist::lock`] file (stale locks of
//! dead processes on this host taken over, other hosts' left to them). This
//! module claims and releases; it runs nothing.

pub use crate::persist::lock::{holder, host_name, Claim, Claimed, Holder};
pub use crate::run_dir::LOCK_FILE;
use anyhow::Result;
use std::path::Path;

/// Claims `dir` (which must exist) for this process, taking over a stale lock.
pub fn claim(dir: &Path) -> Result<Claimed> {
    crate::persist::lock::claim(&dir.join(LOCK_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_of_a_run_folder_is_refused_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let Claimed::Mine(first) = claim(dir.path()).unwrap() else { panic!("the first claim failed") };
        let Claimed::Theirs(holder) = claim(dir.path()).unwrap() else { panic!("claimed twice") };
        assert_eq!((holder.pid, holder.host.clone()), (std::process::id(), host_name()));
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released on drop");
        assert!(matches!(claim(dir.path()).unwrap(), Claimed::Mine(_)));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "left files behind: {names:?}");
    }
}
