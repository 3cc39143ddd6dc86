//! The on-disk cache of frozen-backbone features (`--feature-cache DIR`):
//! the features of an image under one backbone are computed once, by
//! whichever run needs them first, and loaded by every later run — the
//! points of a sweep, a k-fold split, train and val regrouped.
//!
//! What it owns:
//! - the key: a [`FeatureSpace`] holds everything the features depend on
//!   but the image (backbone, the weights file's path, size and time or how
//!   random weights were drawn, the val transform's sizing, normalization,
//!   autocast, the device kind, the feature width), and names one store
//!   file, `DIR/<backbone>-<hash>.features`; within it each image is keyed
//!   by its path, size and modification time ([`FileStamp`]), so an edited
//!   image misses and is computed again, alone;
//! - the store file: a header (the space, the images), `[rows, dim]` f32
//!   values and a CRC-32C of all of it, written whole through a temporary
//!   file and a rename (readers never see half a file), read whole and
//!   checked (a bad or short file is a one-line warning and a recompute,
//!   never a panic or a wrong feature). It holds one row per image path
//!   ever stored, 4 × dim bytes each;
//! - one writer at a time: a run that misses images waits for
//!   `DIR/<backbone>-<hash>.lock` ([`crate::persist::lock`]: pid recorded,
//!   a dead holder's lock taken over, at most [`WAIT_LIMIT`]), reads the
//!   store again (another run may have added them meanwhile), and holds the
//!   lock until its rows are written. Readers take no lock.
//!
//! What it must not do: compute features (its caller computes the rows it
//! is asked for) or decide which runs use it.

use crate::data::transforms::{Normalization, Sizing};
use crate::persist::lock::{self, Claim};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tch::{Kind, Tensor};

/// How long a run waits for another run's writing of the same store.
pub const WAIT_LIMIT: Duration = Duration::from_secs(3600);

/// The first bytes of a store file (the format's version is in them).
const MAGIC: &[u8] = b"tchlab feature cache v1\n";

/// A file as the cache tells its versions apart: path, size and
/// modification time (nanoseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: String,
    pub len: u64,
    pub modified_ns: i64,
}

impl FileStamp {
    pub fn of(path: &Path) -> Result<Self> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read its size and time", path.display()))?;
        let modified =
            meta.modified().with_context(|| format!("{}: cannot read its modification time", path.display()))?;
        let modified_ns = match modified.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
        };
        Ok(Self { path: path.to_string_lossy().into_owned(), len: meta.len(), modified_ns })
    }
}

/// The backbone's weights, as far as its features depend on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneWeights {
    File(FileStamp),
    /// Random weights drawn from `seed` for a classifier of `classes`.
    RandomInit {
        seed: u64,
        classes: usize,
    },
}

/// Everything a backbone's features of an image depend on but the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpace {
    /// The architecture (`efficientnet-lite0`).
    pub backbone: String,
    pub weights: BackboneWeights,
    /// The val transform's sizes and interpolation.
    pub sizing: Sizing,
    pub normalization: Normalization,
    /// The forward pass's autocast (`fp32`, `fp16`, `bf16`).
    pub autocast: String,
    /// The kind of device (`cpu`, `cuda`): their kernels round differently.
    pub device: String,
    /// Features per image.
    pub dim: i64,
}

impl FeatureSpace {
    /// The store's file name without extension: the backbone and a hash of
    /// the whole space.
    fn file_stem(&self) -> String {
        let text = serde_json::to_string(self).expect("a feature space serializes");
        format!("{}-{:016x}", self.backbone, fnv1a(text.as_bytes()))
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across builds (std's does not promise to).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What a cache served a run: features loaded from it, and computed (then
/// added to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUse {
    pub dir: PathBuf,
    pub loaded: usize,
    pub computed: usize,
}

impl CacheUse {
    /// The two passes' uses of one cache, together.
    pub fn together_with(self, other: &CacheUse) -> CacheUse {
        CacheUse { loaded: self.loaded + other.loaded, computed: self.computed + other.computed, ..self }
    }
}

/// A feature cache folder, for one feature space.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
    space: FeatureSpace,
    wait_limit: Duration,
}

impl FeatureCache {
    /// The cache in `dir` (made if missing) for features of `space`.
    pub fn open(dir: &Path, space: FeatureSpace) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--feature-cache {}: cannot create the folder", dir.display()))?;
        Ok(Self { dir: dir.to_owned(), space, wait_limit: WAIT_LIMIT })
    }

    /// This cache, waiting at most `limit` for another run's writing.
    pub fn waiting_at_most(self, limit: Duration) -> Self {
        Self { wait_limit: limit, ..self }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn space(&self) -> &FeatureSpace {
        &self.space
    }

    /// The store file of this cache's feature space.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join(format!("{}.features", self.space.file_stem()))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.space.file_stem()))
    }

    /// What the cache holds of the images at `paths`. When some are
    /// missing, the look-up holds the writer lock (waited for, then the
    /// store read again) until [`LookUp::complete`] adds them. A store that
    /// cannot be used is said once, in one warning line, and taken as empty.
    pub fn look_up(&self, paths: &[PathBuf], reporter: &dyn Reporter) -> Result<LookUp> {
        let stamps = paths.iter().map(|p| FileStamp::of(p)).collect::<Result<Vec<_>>>()?;
        let (store, unusable) = self.read();
        if let Some(warning) = &unusable {
            reporter.warning(warning);
        }
        let look_up = LookUp::of(self, stamps, store, None);
        if look_up.missing.is_empty() {
            return Ok(look_up);
        }
        let lock_path = self.lock_path();
        let claim = lock::wait_for(&lock_path, self.wait_limit, |holder| {
            reporter.line(&format!(
                "feature cache: waiting for {} (held by {holder}; at most {} s)",
                lock_path.display(),
                self.wait_limit.as_secs()
            ))
        })
        .context("--feature-cache: another run is writing the cache")?;
        let (store, still_unusable) = self.read();
        if let (Some(warning), None) = (still_unusable, &unusable) {
            reporter.warning(&warning);
        }
        Ok(LookUp::of(self, look_up.stamps, store, Some(claim)))
    }

    /// The store as it is now: empty when there is none, or (with the
    /// warning to give) when it cannot be used.
    fn read(&self) -> (Store, Option<String>) {
        let path = self.store_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Store::default(), None),
            Err(e) => {
                let warning =
                    format!("warning: feature cache {}: cannot read ({e}); computing the features", path.display());
                return (Store::default(), Some(warning));
            }
        };
        match Store::parse(&bytes, &self.space) {
            Ok(store) => (store, None),
            Err(reason) => {
                let warning = format!(
                    "warning: feature cache {}: {reason}; computing the features again and rewriting it",
                    path.display()
                );
                (Store::default(), Some(warning))
            }
        }
    }
}

/// The rows of a store file: one per image path.
#[derive(Debug, Default)]
struct Store {
    images: Vec<FileStamp>,
    /// `images.len() × dim` values, row after row.
    values: Vec<f32>,
}

/// The JSON header of a store file.
#[derive(Serialize, Deserialize)]
struct Header {
    space: FeatureSpace,
    images: Vec<FileStamp>,
}

impl Store {
    /// A store file's contents, checked: the magic, the header, its space,
    /// the exact length and the checksum. The error says what is wrong.
    fn parse(bytes: &[u8], space: &FeatureSpace) -> std::result::Result<Self, String> {
        let short = || format!("truncated ({} bytes)", bytes.len());
        let body = bytes.strip_prefix(MAGIC).ok_or("not a feature cache file of this version")?;
        let (body, checksum) = body.split_at_checked(body.len().wrapping_sub(4)).ok_or_else(short)?;
        let stored = u32::from_le_bytes(checksum.try_into().map_err(|_| short())?);
        if crc32c::crc32c(&bytes[..bytes.len() - 4]) != stored {
            return Err("checksum mismatch (damaged or cut short)".into());
        }
        let (length, body) = body.split_at_checked(8).ok_or_else(short)?;
        let header_len = u64::from_le_bytes(length.try_into().map_err(|_| short())?);
        let (header, values) =
            body.split_at_checked(usize::try_from(header_len).unwrap_or(usize::MAX)).ok_or_else(short)?;
        let header: Header = serde_json::from_slice(header).map_err(|e| format!("unreadable header ({e})"))?;
        if header.space != *space {
            return Err("holds features of other settings under this name".into());
        }
        let dim = usize::try_from(space.dim).map_err(|_| "a negative feature width")?;
        let expected = header.images.len().checked_mul(dim).and_then(|n| n.checked_mul(4));
        if expected != Some(values.len()) {
            return Err(format!("{} values for {} images of {dim} features", values.len() / 4, header.images.len()));
        }
        let values = values.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(Self { images: header.images, values })
    }

    /// The file's bytes: magic, header length, header, values, checksum.
    fn to_bytes(&self, space: &FeatureSpace) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(&Header { space: space.clone(), images: self.images.clone() })?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + header.len() + 4 * self.values.len() + 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        self.values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        Ok(bytes)
    }

    fn row(&self, index: usize, dim: usize) -> &[f32] {
        &self.values[index * dim..(index + 1) * dim]
    }
}

/// What a cache holds of some images, and (when some are missing) the
/// writer lock that lets this run add them.
pub struct LookUp {
    cache: FeatureCache,
    stamps: Vec<FileStamp>,
    /// Each image's row in `store`, where it holds this version of it.
    found: Vec<Option<usize>>,
    missing: Vec<usize>,
    store: Store,
    _lock: Option<Claim>,
}

impl LookUp {
    fn of(cache: &FeatureCache, stamps: Vec<FileStamp>, store: Store, lock: Option<Claim>) -> Self {
        let rows: HashMap<&FileStamp, usize> = store.images.iter().enumerate().map(|(i, s)| (s, i)).collect();
        let found: Vec<Option<usize>> = stamps.iter().map(|s| rows.get(s).copied()).collect();
        let missing = found.iter().enumerate().filter(|(_, row)| row.is_none()).map(|(i, _)| i).collect();
        Self { cache: cache.clone(), stamps, found, missing, store, _lock: lock }
    }

    /// The positions (in the paths looked up) of the images to compute.
    pub fn missing(&self) -> &[usize] {
        &self.missing
    }

    /// Every image's features, `[N, dim]` f32 on the CPU, with `computed`
    /// (`[missing, dim]`, the rows of [`LookUp::missing`] in order) added
    /// to the store; then the lock is released.
    pub fn complete(self, computed: &Tensor) -> Result<(Tensor, CacheUse)> {
        let dim = self.cache.space.dim;
        let size = computed.size();
        if size != [self.missing.len() as i64, dim] {
            bail!("feature cache: {size:?} features computed for {} images of {dim}", self.missing.len());
        }
        let dim = dim as usize;
        let computed = Vec::<f32>::try_from(computed.to_kind(Kind::Float).contiguous().reshape([-1]))?;
        let mut computed_rows = computed.chunks_exact(dim.max(1));
        let mut values = Vec::with_capacity(self.stamps.len() * dim);
        for row in &self.found {
            match row {
                Some(row) => values.extend_from_slice(self.store.row(*row, dim)),
                None => values.extend_from_slice(computed_rows.next().unwrap_or_default()),
            }
        }
        if !self.missing.is_empty() {
            self.write_with(&computed, dim)?;
        }
        let features = Tensor::from_slice(&values).view([self.stamps.len() as i64, dim as i64]);
        let loaded = self.stamps.len() - self.missing.len();
        Ok((features, CacheUse { dir: self.cache.dir.clone(), loaded, computed: self.missing.len() }))
    }

    /// Writes the store with the computed rows in place of any older rows
    /// of the same paths.
    fn write_with(&self, computed: &[f32], dim: usize) -> Result<()> {
        let new: Vec<&FileStamp> = self.missing.iter().map(|&i| &self.stamps[i]).collect();
        let replaced: std::collections::HashSet<&str> = new.iter().map(|s| s.path.as_str()).collect();
        let mut store = Store::default();
        for (i, stamp) in self.store.images.iter().enumerate() {
            if !replaced.contains(stamp.path.as_str()) {
                store.images.push(stamp.clone());
                store.values.extend_from_slice(self.store.row(i, dim));
            }
        }
        store.images.extend(new.into_iter().cloned());
        store.values.extend_from_slice(computed);
        let path = self.cache.store_path();
        crate::persist::write_atomically(&path, &store.to_bytes(&self.cache.space)?)
            .with_context(|| format!("--feature-cache: cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Capture;

    fn space(dim: i64) -> FeatureSpace {
        FeatureSpace {
            backbone: "resnet18".into(),
            weights: BackboneWeights::RandomInit { seed: 0, classes: 2 },
            sizing: Sizing::TUTORIAL,
            normalization: Normalization::Imagenet,
            autocast: "fp32".into(),
            device: "cpu".into(),
            dim,
        }
    }

    /// `n` small files in `dir`, named `0.jpg`…
    fn images(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.jpg"));
                std::fs::write(&path, vec![i as u8; 10 + i]).unwrap();
                path
            })
            .collect()
    }

    /// Row i's features: i, i + 0.5, i + 0.25.
    fn features_of(rows: &[usize]) -> Tensor {
        let values: Vec<f32> = rows.iter().flat_map(|&i| [i as f32, i as f32 + 0.5, i as f32 + 0.25]).collect();
        Tensor::from_slice(&values).view([rows.len() as i64, 3])
    }

    /// Looks `paths` up, computes what is missing; returns the features,
    /// what was computed, and the warnings.
    fn serve(cache: &FeatureCache, paths: &[PathBuf]) -> (Tensor, Vec<usize>, Vec<String>) {
        let capture = Capture::default();
        let look_up = cache.look_up(paths, &capture).unwrap();
        let missing = look_up.missing().to_vec();
        let (features, used) = look_up.complete(&features_of(&missing)).unwrap();
        assert_eq!((used.loaded, used.computed), (paths.len() - missing.len(), missing.len()));
        (features, missing, capture.warnings())
    }

    #[test]
    fn any_subset_is_served_and_only_missing_or_edited_images_are_computed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = images(dir.path(), 5);
        let cache = FeatureCache::open(&dir.path().join("cache"), space(3)).unwrap();
        let (features, computed, _) = serve(&cache, &paths[..3]);
        assert_eq!(computed, [0, 1, 2]);
        assert!(features.equal(&features_of(&[0, 1, 2])));
        // A regrouped subset: two stored, two new.
        let subset = [paths[4].clone(), paths[1].clone(), paths[3].clone(), paths[0].clone()];
        let (features, computed, warnings) = serve(&cache, &subset);
        assert_eq!((computed, warnings.len()), (vec![0, 2], 0));
        let expected = Tensor::cat(&[features_of(&[0]), features_of(&[1]), features_of(&[2]), features_of(&[0])], 0);
        assert!(features.equal(&expected), "stored rows come back in the asked order");
        // An image rewritten with other bytes misses alone.
        std::fs::write(&paths[2], b"another image, another length").unwrap();
        let (_, computed, _) = serve(&cache, &paths);
        assert_eq!(computed, [2]);
        let (_, computed, _) = serve(&cache, &paths);
        assert!(computed.is_empty());
        let store = Store::parse(&std::fs::read(cache.store_path()).unwrap(), &space(3)).unwrap();
        assert_eq!(store.images.len(), 5, "the edited image's old row was replaced, not kept beside");
    }

    #[test]
    fn a_damaged_store_is_a_warning_and_a_recompute_never_a_wrong_feature() {
        let dir = tempfile::tempdir().unwrap();
        let paths = images(dir.path(), 4);
        let cache = FeatureCache::open(&dir.path().join("cache"), space(3)).unwrap();
        let _ = serve(&cache, &paths);
        let good = std::fs::read(cache.store_path()).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut value_flipped = good.clone();
        let at = good.len() - 10;
        value_flipped[at] ^= 0x40;
        let damaged: [(&[u8], &str); 5] = [
            (&good[..good.len() - 7], "checksum mismatch"),
            (&good[..3], "not a feature cache file"),
            (&flipped, "checksum mismatch"),
            (&value_flipped, "checksum mismatch"),
            (b"", "not a feature cache file"),
        ];
        for (bytes, reason) in damaged {
            std::fs::write(cache.store_path(), bytes).unwrap();
            let (features, computed, warnings) = serve(&cache, &paths);
            assert_eq!(computed, [0, 1, 2, 3], "{reason}");
            assert!(features.equal(&features_of(&[0, 1, 2, 3])));
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains(reason) && !warnings[0].contains('\n'), "{warnings:?}");
            assert!(warnings[0].starts_with(&format!("warning: feature cache {}", cache.store_path().display())));
        }
        let (_, computed, warnings) = serve(&cache, &paths);
        assert!(computed.is_empty() && warnings.is_empty(), "rewritten whole");
    }

    #[test]
    fn a_store_of_other_settings_or_another_width_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let paths = images(dir.path(), 2);
        let cache = FeatureCache::open(&dir.path().join("cache"), space(3)).unwrap();
        let _ = serve(&cache, &paths);
        let bf16 = FeatureSpace { autocast: "bf16".into(), ..space(3) };
        let other = FeatureCache::open(cache.dir(), bf16.clone()).unwrap();
        assert_ne!(other.store_path(), cache.store_path(), "another space, another file");
        // The same file read as another space (a renamed file) is refused.
        let bytes = std::fs::read(cache.store_path()).unwrap();
        let error = Store::parse(&bytes, &bf16).unwrap_err();
        assert!(error.contains("other settings"), "{error}");
        let error = Store::parse(&bytes, &space(4)).unwrap_err();
        assert!(error.contains("other settings"), "{error}");
    }

    #[test]
    fn a_look_up_that_misses_holds_the_lock_until_it_completes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = images(dir.path(), 2);
        let cache = FeatureCache::open(&dir.path().join("cache"), space(3))
            .unwrap()
            .waiting_at_most(Duration::from_millis(200));
        let capture = Capture::default();
        let first = cache.look_up(&paths, &capture).unwrap();
        assert!(cache.lock_path().exists());
        let error = cache.look_up(&paths, &capture).err().unwrap();
        let error = format!("{error:#}");
        assert!(error.contains(&format!("{}: still held by pid", cache.lock_path().display())), "{error}");
        assert!(capture.lines().iter().any(|l| l.starts_with("feature cache: waiting for")), "{:?}", capture.lines());
        let _ = first.complete(&features_of(&[0, 1])).unwrap();
        assert!(!cache.lock_path().exists(), "released when written");
        let hit = cache.look_up(&paths, &capture).unwrap();
        assert!(hit.missing().is_empty() && !cache.lock_path().exists(), "a full hit takes no lock");
    }

    #[test]
    fn the_store_name_follows_every_part_of_the_space() {
        let base = space(3);
        let variants = [
            FeatureSpace { backbone: "resnet50".into(), ..base.clone() },
            FeatureSpace { weights: BackboneWeights::RandomInit { seed: 1, classes: 2 }, ..base.clone() },
            FeatureSpace { sizing: Sizing::tutorial(160), ..base.clone() },
            FeatureSpace { normalization: Normalization::TfLite, ..base.clone() },
            FeatureSpace { device: "cuda".into(), ..base.clone() },
        ];
        for variant in variants {
            assert_ne!(variant.file_stem(), base.file_stem(), "{variant:?}");
        }
        assert_eq!(base.file_stem(), space(3).file_stem());
    }
}
