//! Files that are either wholly written or not there: every result file of
//! the crate goes through [`write_atomically`].

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_through(path, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display()))
    })
}

/// [`write_atomically`] for writers that stream to a file they create:
/// `write` creates and fills the temporary file it is given.
pub fn write_atomically_through(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
    let written = write(&tmp)
        .and_then(|()| {
            let file = std::fs::File::open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            file.sync_all().with_context(|| format!("writing {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
