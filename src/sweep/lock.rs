//! The claim on a run folder, so that two processes (two sweeps, a sweep and
//! a Slurm task, two Slurm tasks) never run the same point at once: a
//! `sweep.lock` file made whole or not at all (written beside it, then
//! hard-linked into place, which fails when the name exists, on local disks
//! and NFS alike), holding the claimant's pid, host and start time. A lock
//! whose process is gone from this host is stale and taken over; a lock from
//! another host is left to its owner. This module claims and releases; it
//! runs nothing.

pub use crate::run_dir::LOCK_FILE;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who holds a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch when the claim was made.
    pub since: u64,
}

impl Holder {
    fn me() -> Self {
        Self { pid: std::process::id(), host: host_name(), since: now() }
    }

    fn to_text(&self) -> String {
        format!("pid={}\nhost={}\nsince={}\n", self.pid, self.host, self.since)
    }

    fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='));
        Some(Self {
            pid: field("pid")?.parse().ok()?,
            host: field("host")?.to_owned(),
            since: field("since")?.parse().ok()?,
        })
    }

    pub fn is_this_process(&self) -> bool {
        self.pid == std::process::id() && self.host == host_name()
    }

    /// Whether the holding process is known to be gone: it ran on this host
    /// and no process has its pid.
    pub fn is_stale(&self) -> bool {
        self.host == host_name() && !process_exists(self.pid)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ago = now().saturating_sub(self.since);
        write!(f, "pid {} on {} (claimed {ago} s ago)", self.pid, self.host)
    }
}

/// A claimed run folder; dropping it releases the claim.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The outcome of a claim: the folder is ours, or someone else's.
#[derive(Debug)]
pub enum Claimed {
    Mine(Claim),
    Theirs(Holder),
}

/// Claims `dir` (which must exist) for this process, taking over a stale lock.
pub fn claim(dir: &Path) -> Result<Claimed> {
    let lock = dir.join(LOCK_FILE);
    let me = Holder::me();
    let staging = dir.join(format!(".{LOCK_FILE}.{}", me.pid));
    std::fs::write(&staging, me.to_text()).with_context(|| format!("{}: cannot write", staging.display()))?;
    let outcome = claim_with(&lock, &staging);
    let _ = std::fs::remove_file(&staging);
    outcome
}

fn claim_with(lock: &Path, staging: &Path) -> Result<Claimed> {
    // Two tries: the second after taking over a stale lock.
    for _ in 0..2 {
        match std::fs::hard_link(staging, lock) {
            Ok(()) => return Ok(Claimed::Mine(Claim { path: lock.to_owned() })),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("{}: cannot create the lock", lock.display())),
        }
        match holder(lock)? {
            None => continue, // released in the meantime
            Some(holder) if holder.is_stale() => take_over(lock, &holder)?,
            Some(holder) => return Ok(Claimed::Theirs(holder)),
        }
    }
    Ok(match holder(lock)? {
        Some(holder) => Claimed::Theirs(holder),
        None => anyhow::bail!("{}: the lock changed hands twice while claiming it; try again", lock.display()),
    })
}

/// Who holds the lock file `lock`, if it exists. A lock that cannot be read
/// as one is reported as held by an unknown process, never taken over.
pub fn holder(lock: &Path) -> Result<Option<Holder>> {
    match std::fs::read_to_string(lock) {
        Ok(text) => {
            Ok(Some(Holder::parse(&text).unwrap_or(Holder { pid: 0, host: "an unknown host".into(), since: 0 })))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read the lock", lock.display())),
    }
}

/// Removes the stale lock of `stale`. It is first moved aside and checked,
/// so that a lock another process has just made in its place is put back.
fn take_over(lock: &Path, stale: &Holder) -> Result<()> {
    let aside = lock.with_extension(format!("stale.{}", std::process::id()));
    match std::fs::rename(lock, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot remove the stale lock", lock.display())),
    }
    let moved = holder(&aside)?;
    if moved.as_ref() != Some(stale) {
        let _ = std::fs::hard_link(&aside, lock);
    }
    let _ = std::fs::remove_file(&aside);
    Ok(())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// This machine's host name.
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return "localhost".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// Whether a process with this pid exists on this host (one we may not
/// signal exists too).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_second_claim_is_refused_and_names_the_holder_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let Claimed::Mine(first) = claim(dir.path()).unwrap() else { panic!("the first claim failed") };
        let Claimed::Theirs(holder) = claim(dir.path()).unwrap() else { panic!("claimed twice") };
        assert_eq!((holder.pid, holder.host.clone()), (std::process::id(), host_name()));
        assert!(holder.to_string().starts_with(&format!("pid {} on {}", std::process::id(), host_name())));
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released on drop");
        assert!(matches!(claim(dir.path()).unwrap(), Claimed::Mine(_)));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "left files behind: {names:?}");
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let stale = Holder { pid: dead_pid(), host: host_name(), since: 1 };
        std::fs::write(dir.path().join(LOCK_FILE), stale.to_text()).unwrap();
        assert!(stale.is_stale());
        let Claimed::Mine(_claim) = claim(dir.path()).unwrap() else { panic!("stale lock not taken over") };
        let now_held = holder(&dir.path().join(LOCK_FILE)).unwrap().unwrap();
        assert_eq!(now_held.pid, std::process::id());
    }

    #[test]
    fn locks_of_other_hosts_and_unreadable_locks_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Holder { pid: dead_pid(), host: "node-17".into(), since: 1 };
        std::fs::write(dir.path().join(LOCK_FILE), remote.to_text()).unwrap();
        assert!(matches!(claim(dir.path()).unwrap(), Claimed::Theirs(h) if h == remote));
        std::fs::write(dir.path().join(LOCK_FILE), "garbage").unwrap();
        assert!(matches!(claim(dir.path()).unwrap(), Claimed::Theirs(h) if h.pid == 0));
    }
}
