//! Lock files: a named file made whole or not at all (written beside it,
//! then hard-linked into place, which fails when the name exists, on local
//! disks and NFS alike), holding the claimant's pid, host and start time. A
//! lock whose process is gone from this host is stale and taken over; a lock
//! from another host is left to its owner. [`claim`] tries once (a sweep's
//! run folders); [`wait_for`] waits for a held lock, up to a time limit (a
//! cache's one writer at a time). This module claims and releases; it
//! knows nothing of what a lock guards.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who holds a lock.
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

    /// The lock file's text.
    pub fn to_text(&self) -> String {
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

/// A claimed lock; dropping it releases the claim.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The outcome of a claim: the lock is ours, or someone else's.
#[derive(Debug)]
pub enum Claimed {
    Mine(Claim),
    Theirs(Holder),
}

/// Claims the lock file `lock` (its folder must exist) for this process,
/// taking over a stale lock; tries once.
pub fn claim(lock: &Path) -> Result<Claimed> {
    let me = Holder::me();
    let name = lock.file_name().unwrap_or_default().to_string_lossy();
    let staging = lock.with_file_name(format!(".{name}.{}", me.pid));
    std::fs::write(&staging, me.to_text()).with_context(|| format!("{}: cannot write", staging.display()))?;
    let outcome = claim_with(lock, &staging);
    let _ = std::fs::remove_file(&staging);
    outcome
}

/// Claims `lock`, waiting while another live process holds it: `waiting`
/// is called once, with the holder, when the lock is found held. After
/// `limit` the error names the lock file and its holder, in one line.
pub fn wait_for(lock: &Path, limit: Duration, mut waiting: impl FnMut(&Holder)) -> Result<Claim> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let holder = match claim(lock)? {
            Claimed::Mine(claim) => return Ok(claim),
            Claimed::Theirs(holder) => holder,
        };
        if !told {
            waiting(&holder);
            told = true;
        }
        if started.elapsed() >= limit {
            anyhow::bail!(
                "{}: still held by {holder} after {} s of waiting; if that process is hung, stop it or remove the lock file",
                lock.display(),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100).min(limit.saturating_sub(started.elapsed())));
    }
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
        let lock = dir.path().join("x.lock");
        let Claimed::Mine(first) = claim(&lock).unwrap() else { panic!("the first claim failed") };
        let Claimed::Theirs(holder) = claim(&lock).unwrap() else { panic!("claimed twice") };
        assert_eq!((holder.pid, holder.host.clone()), (std::process::id(), host_name()));
        assert!(holder.to_string().starts_with(&format!("pid {} on {}", std::process::id(), host_name())));
        drop(first);
        assert!(!lock.exists(), "released on drop");
        assert!(matches!(claim(&lock).unwrap(), Claimed::Mine(_)));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "left files behind: {names:?}");
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        let stale = Holder { pid: dead_pid(), host: host_name(), since: 1 };
        std::fs::write(&lock, stale.to_text()).unwrap();
        assert!(stale.is_stale());
        let _claim = wait_for(&lock, Duration::from_secs(5), |_| panic!("a stale lock is not waited for")).unwrap();
        assert_eq!(holder(&lock).unwrap().unwrap().pid, std::process::id());
    }

    #[test]
    fn locks_of_other_hosts_and_unreadable_locks_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        let remote = Holder { pid: dead_pid(), host: "node-17".into(), since: 1 };
        std::fs::write(&lock, remote.to_text()).unwrap();
        assert!(matches!(claim(&lock).unwrap(), Claimed::Theirs(h) if h == remote));
        std::fs::write(&lock, "garbage").unwrap();
        assert!(matches!(claim(&lock).unwrap(), Claimed::Theirs(h) if h.pid == 0));
    }

    #[test]
    fn waiting_for_a_live_holder_says_so_once_then_ends_in_one_line_naming_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        let Claimed::Mine(_held) = claim(&lock).unwrap() else { panic!("the first claim failed") };
        let mut told = Vec::new();
        let started = Instant::now();
        let error = wait_for(&lock, Duration::from_millis(300), |h| told.push(h.pid)).unwrap_err().to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(told, [std::process::id()]);
        let expected = format!("{}: still held by pid {} on {}", lock.display(), std::process::id(), host_name());
        assert!(error.starts_with(&expected) && !error.contains('\n'), "{error}");
    }

    #[test]
    fn a_lock_released_while_waiting_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        let Claimed::Mine(held) = claim(&lock).unwrap() else { panic!("the first claim failed") };
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let _claim = wait_for(&lock, Duration::from_secs(10), |_| {}).unwrap();
        release.join().unwrap();
        assert_eq!(holder(&lock).unwrap().unwrap().pid, std::process::id());
    }
}
