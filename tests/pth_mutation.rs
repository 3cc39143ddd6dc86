//! The `.pth` reader against real and hostile checkpoints.
//!
//! - `real_checkpoints_match_torch`: the Lite0 legacy file and torchvision
//!   checkpoints (zip and legacy, written at test time) read bit-identically to
//!   `torch.load`.
//! - `malicious_checkpoints_are_refused`: checkpoints and pickles that call
//!   `os.system`, `builtins.eval` or `subprocess.Popen` (REDUCE, BUILD, inside
//!   a zip's data.pkl or a legacy stream) are refused, naming the global.
//! - `mutations`: thousands of corrupted variants of the real checkpoints
//!   (bit flips, truncations, spliced, duplicated and deleted regions, inflated
//!   size/length/count fields), concentrated on the pickles, storage headers
//!   and zip directory as well as spread over the whole file. Each variant is
//!   read in a child process (this binary re-executed with
//!   `PTH_MUTATION_CHILD=START:END`, running `mutation_child`) under
//!   `catch_unwind`; the parent checks every child's exit status and peak
//!   memory (`wait4` rusage), and every result: no panic, every error one line
//!   naming the source, Rust allocations per read at most twice the file plus
//!   8 MiB. Deterministic (fixed seed); `PTH_MUTATIONS=N` sets the count
//!   (default 10,000, `scripts/pth-mutate.sh` runs 100,000), `PTH_MUTATION_JOBS`
//!   the number of children at once.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tchlab::persist::pth::{read_state_dict, read_state_dict_bytes};

/// Counts the bytes this process has allocated through Rust's allocator, and
/// the peak since the last [`reset_peak`].
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counters are plain atomics and
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours (non-zero-size layout), passed through.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (all our allocations go there).
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` come from `System` via this allocator; contract passed through.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            note_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The fixtures, written once per test binary by real torch/torchvision code.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("PTH_FIXTURES") {
            return PathBuf::from(dir);
        }
        let dir = common::repo().join("target/test-fixtures/pth");
        let script = common::repo().join("tests/fixtures/make_pth_fixtures.py");
        // Rewritten when the script or the weights change (torch takes seconds to start).
        let stamp = format!(
            "{} {}",
            std::fs::read(&script).map(|s| crc32(&s)).unwrap_or(0),
            std::fs::metadata(common::lite0_weights()).map(|m| m.len()).unwrap_or(0)
        );
        let stamp_file = dir.join("stamp");
        if std::fs::read_to_string(&stamp_file).ok().as_deref() != Some(stamp.as_str()) {
            common::run_ok(Command::new(common::python()).arg(script).arg(&dir).arg(common::lite0_weights()));
            std::fs::write(&stamp_file, stamp).unwrap();
        }
        dir
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn fixture_path(name: &str) -> PathBuf {
    if name == "lite0_legacy.pth" {
        common::lite0_weights()
    } else {
        fixtures().join(name)
    }
}

fn kind_name(kind: tch::Kind) -> &'static str {
    match kind {
        tch::Kind::Float => "float32",
        tch::Kind::Int64 => "int64",
        tch::Kind::Double => "float64",
        tch::Kind::Half => "float16",
        _ => "other",
    }
}

#[test]
fn real_checkpoints_match_torch() {
    // Per file: (name, dtype, shape, crc32 of the raw bytes).
    type Expected = HashMap<String, Vec<(String, String, Vec<i64>, u32)>>;
    let expected: Expected = serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected.len(), 4);
    for (file, rows) in &expected {
        let tensors = read_state_dict(&fixture_path(file)).unwrap();
        assert_eq!(tensors.len(), rows.len(), "{file}");
        for ((name, tensor), (want_name, dtype, shape, crc)) in tensors.iter().zip(rows) {
            assert_eq!(name, want_name, "{file}");
            assert_eq!(kind_name(tensor.kind()), dtype, "{file} {name}");
            assert_eq!(&tensor.size(), shape, "{file} {name}");
            let raw = Vec::<u8>::try_from(tensor.reshape(-1).contiguous().view_dtype(tch::Kind::Uint8)).unwrap();
            assert_eq!(crc32(&raw), *crc, "{file} {name}: bytes differ from torch.load");
        }
        println!("{file}: {} tensors bit-identical to torch.load", tensors.len());
    }
}

#[test]
fn malicious_checkpoints_are_refused() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.starts_with("evil_") || !(name.ends_with(".pth") || name.ends_with(".pkl")) {
            continue;
        }
        let globals: &[&str] = if name.contains("os_system") {
            &["posix.system"]
        } else if name.contains("builtins_eval") {
            &["builtins.eval", "__builtin__.eval"]
        } else {
            // Protocol 2 pickles name it by its Python 2 module (fix_imports).
            &["subprocess.Popen", "commands.Popen"]
        };
        let err = format!("{:#}", read_state_dict(&path).expect_err(&name));
        assert!(!err.contains('\n') && err.contains(&name), "{err}");
        assert!(
            globals.iter().any(|g| err.contains(&format!("refusing pickle global {g}"))),
            "{name}: {err} does not refuse {globals:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 3 * (3 + 4), "evil fixtures");
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

const SEED: u64 = 0x7063_6874_6d75_7431;
/// Fixture files and how often each is mutated (weights).
const MUTATED: [(&str, u32); 4] =
    [("lite0_legacy.pth", 4), ("shufflenet_zip.pth", 4), ("shufflenet_legacy.pth", 2), ("resnet18_zip.pth", 1)];
/// What any child may reach (resident set), and what one read may allocate
/// through Rust's allocator beyond twice the file.
const MAX_CHILD_RSS: u64 = 1 << 30;
const READ_SLACK: usize = 8 << 20;

struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
    /// Byte ranges that matter: pickles, storage headers, zip headers and directory.
    hot: Vec<(usize, usize)>,
    hot_bytes: usize,
    /// (offset, width) of size, length, count and offset fields.
    fields: Vec<(usize, usize)>,
    /// Zips: data.pkl's byte range and where its CRC-32 is recorded (directory, local header).
    pickle_crc: Option<(usize, usize, usize, usize)>,
}

fn load_fixtures() -> Vec<Fixture> {
    #[derive(serde::Deserialize)]
    struct Layout {
        hot: Vec<(usize, usize)>,
        fields: Vec<(usize, usize)>,
        pickle_crc: Option<(usize, usize, usize, usize)>,
    }
    let layouts: HashMap<String, Layout> =
        serde_json::from_slice(&std::fs::read(fixtures().join("layout.json")).unwrap()).unwrap();
    MUTATED
        .iter()
        .map(|(name, _)| {
            let layout = &layouts[*name];
            let bytes = std::fs::read(fixture_path(name)).unwrap();
            let hot: Vec<(usize, usize)> =
                layout.hot.iter().copied().filter(|(a, b)| a < b && *b <= bytes.len()).collect();
            Fixture {
                name,
                hot_bytes: hot.iter().map(|(a, b)| b - a).sum(),
                hot,
                fields: layout.fields.iter().copied().filter(|(at, w)| at + w <= bytes.len()).collect(),
                pickle_crc: layout.pickle_crc,
                bytes,
            }
        })
        .collect()
}

enum Edit {
    /// Overwrite bytes in place.
    Set(Vec<(usize, u8)>),
    Truncate(usize),
    /// Replace `remove` bytes at `at` by `insert`.
    Splice {
        at: usize,
        remove: usize,
        insert: Vec<u8>,
    },
}

impl Fixture {
    /// A position: uniform over the file, or over the hot bytes, or in a
    /// uniformly chosen hot range (which favours the many small headers).
    fn position(&self, rng: &mut ChaCha8Rng, hot: bool) -> usize {
        if !hot || self.hot.is_empty() {
            return rng.gen_range(0..self.bytes.len());
        }
        if rng.gen_bool(0.5) {
            let (a, b) = self.hot[rng.gen_range(0..self.hot.len())];
            return rng.gen_range(a..b);
        }
        let mut k = rng.gen_range(0..self.hot_bytes);
        for &(a, b) in &self.hot {
            if k < b - a {
                return a + k;
            }
            k -= b - a;
        }
        0
    }

    fn region_len(rng: &mut ChaCha8Rng) -> usize {
        match rng.gen_range(0..4) {
            0 => rng.gen_range(1..8),
            1 => rng.gen_range(1..64),
            2 => rng.gen_range(1..4096),
            _ => rng.gen_range(1..(1 << 20)),
        }
    }

    /// Variant `index`: its kind and edit, a function of the seed and index only.
    fn mutation(&self, rng: &mut ChaCha8Rng) -> (&'static str, Edit) {
        let len = self.bytes.len();
        let hot = rng.gen_bool(0.75);
        match rng.gen_range(0..10) {
            0 | 1 => {
                let flips = (0..rng.gen_range(1..=4))
                    .map(|_| {
                        let at = self.position(rng, hot);
                        (at, self.bytes[at] ^ (1 << rng.gen_range(0..8)))
                    })
                    .collect();
                (if hot { "bit flip (hot)" } else { "bit flip" }, Edit::Set(flips))
            }
            2 => {
                let at = self.position(rng, true);
                let n = rng.gen_range(1..=8).min(len - at);
                (("random bytes (hot)"), Edit::Set((at..at + n).map(|i| (i, rng.gen())).collect()))
            }
            3 | 4 => {
                let Some(&(at, width)) =
                    (!self.fields.is_empty()).then(|| &self.fields[rng.gen_range(0..self.fields.len())])
                else {
                    return ("truncate", Edit::Truncate(rng.gen_range(0..len)));
                };
                let mut raw = [0u8; 8];
                raw[..width].copy_from_slice(&self.bytes[at..at + width]);
                let old = u64::from_le_bytes(raw);
                let max = if width == 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
                let new = match rng.gen_range(0..9) {
                    0 => max,
                    1 => max >> 1,
                    2 => (max >> 1) + 1,
                    3 => 0,
                    4 => old.wrapping_add(1),
                    5 => old.wrapping_sub(1),
                    6 => old.wrapping_mul(2).wrapping_add(1),
                    7 => old << 8 | 0xff,
                    _ => rng.gen(),
                } & max;
                let bytes = new.to_le_bytes();
                ("inflated field", Edit::Set((0..width).map(|i| (at + i, bytes[i])).collect()))
            }
            5 => ("truncate", Edit::Truncate(self.position(rng, hot))),
            6 => {
                // Duplicate a region: insert a copy of bytes[from..from+n] at `at`.
                let from = self.position(rng, hot);
                let n = Self::region_len(rng).min(len - from);
                let at = self.position(rng, true);
                ("duplicated region", Edit::Splice { at, remove: 0, insert: self.bytes[from..from + n].to_vec() })
            }
            7 => {
                let at = self.position(rng, hot);
                let n = Self::region_len(rng).min(len - at);
                ("deleted region", Edit::Splice { at, remove: n, insert: Vec::new() })
            }
            8 => {
                // Splice: overwrite a region with bytes from elsewhere in the file.
                let from = self.position(rng, hot);
                let at = self.position(rng, true);
                let n = Self::region_len(rng).min(len - from).min(len - at);
                let copy = (0..n).map(|i| (at + i, self.bytes[from + i])).collect();
                ("spliced region", Edit::Set(copy))
            }
            _ => {
                let at = self.position(rng, hot);
                let n = Self::region_len(rng).min(len - at).min(4096);
                let fill = if rng.gen_bool(0.5) { 0 } else { 0xff };
                ("filled region", Edit::Set((at..at + n).map(|i| (i, fill)).collect()))
            }
        }
    }
}

fn variant_fixture(index: u64) -> (usize, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let total: u32 = MUTATED.iter().map(|(_, w)| w).sum();
    let mut pick = rng.gen_range(0..total);
    let fixture = MUTATED
        .iter()
        .position(|(_, w)| {
            pick < *w || {
                pick -= w;
                false
            }
        })
        .unwrap_or(0);
    (fixture, rng)
}

/// Runs in the child: reads variants START..END, one result line each.
/// Ignored in a plain run (libtest lists it as such); `mutations` runs it
/// with `--include-ignored` and the range to read.
#[test]
#[ignore = "a child of `mutations`, which runs it with the variants to read"]
fn mutation_child() {
    let range = std::env::var("PTH_MUTATION_CHILD").expect("run by `mutations` with PTH_MUTATION_CHILD=START:END");
    let (start, end) = range.split_once(':').unwrap();
    let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
    std::panic::set_hook(Box::new(|_| {})); // panics are reported as results
    tch::set_num_threads(1); // the children run side by side; libtorch's thread pool only contends
    let mut fixtures = load_fixtures();
    let out = std::io::stdout();
    for index in start..end {
        let clock = Instant::now();
        let (which, mut rng) = variant_fixture(index);
        let fixture = &mut fixtures[which];
        let (kind, edit) = fixture.mutation(&mut rng);
        let source = format!("mutant-{index}-{}", fixture.name);
        let mut undo = Vec::new();
        let bytes: Cow<[u8]> = match &edit {
            Edit::Set(changes) => {
                for &(at, b) in changes {
                    undo.push((at, fixture.bytes[at]));
                    fixture.bytes[at] = b;
                }
                // Most edits inside a zip's data.pkl get its CRC-32 rewritten, so the
                // pickle parser, not the CRC check, meets them.
                if let Some((start, end, dir_crc, local_crc)) = fixture.pickle_crc {
                    if changes.iter().all(|&(at, _)| (start..end).contains(&at)) && rng.gen_bool(0.8) {
                        let crc = crc32(&fixture.bytes[start..end]).to_le_bytes();
                        for at in [dir_crc, local_crc] {
                            for (i, b) in crc.iter().enumerate() {
                                undo.push((at + i, fixture.bytes[at + i]));
                                fixture.bytes[at + i] = *b;
                            }
                        }
                    }
                }
                Cow::Borrowed(&fixture.bytes)
            }
            Edit::Truncate(at) => Cow::Borrowed(&fixture.bytes[..*at]),
            Edit::Splice { at, remove, insert } => {
                let mut v = Vec::with_capacity(fixture.bytes.len() + insert.len());
                v.extend_from_slice(&fixture.bytes[..*at]);
                v.extend_from_slice(insert);
                v.extend_from_slice(&fixture.bytes[at + remove..]);
                Cow::Owned(v)
            }
        };
        let base = reset_peak();
        let result = std::panic::catch_unwind(|| read_state_dict_bytes(&bytes, &source).map(|t| t.len()));
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        let (status, message) = match result {
            Ok(Ok(n)) => ("OK", format!("{n} tensors")),
            Ok(Err(e)) => ("ERR", format!("{e:#}")),
            Err(payload) => {
                let text = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                ("PANIC", text)
            }
        };
        let micros = clock.elapsed().as_micros() as u64;
        let line = serde_json::json!([index, fixture.name, kind, status, peak, bytes.len(), message, micros]);
        drop(bytes);
        for (at, b) in undo.into_iter().rev() {
            fixture.bytes[at] = b;
        }
        use std::io::Write;
        let mut out = out.lock();
        writeln!(out, "@@{line}").unwrap();
        out.flush().unwrap();
    }
}

/// One variant's result, as the child reported it.
struct Outcome {
    index: u64,
    fixture: String,
    kind: String,
    status: String,
    peak: usize,
    len: usize,
    message: String,
    /// Time to make the variant and read it.
    micros: u64,
}

struct ChildRun {
    outcomes: Vec<Outcome>,
    /// `None` when the child exited 0.
    failure: Option<String>,
    max_rss: u64,
}

/// Runs variants start..end in a child; reads its results; reaps it with
/// `wait4` for its exit status and peak resident set.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, not Child::wait
fn run_child(start: u64, end: u64) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["mutation_child", "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env("PTH_MUTATION_CHILD", format!("{start}:{end}"))
        .env("PTH_FIXTURES", fixtures())
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut outcomes = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest may print "test mutation_child ... " on the same line first.
        let Some(json) = line.split_once("@@").map(|(_, json)| json) else { continue };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        outcomes.push(Outcome {
            index: v[0].as_u64().unwrap(),
            fixture: v[1].as_str().unwrap().to_owned(),
            kind: v[2].as_str().unwrap().to_owned(),
            status: v[3].as_str().unwrap().to_owned(),
            peak: v[4].as_u64().unwrap() as usize,
            len: v[5].as_u64().unwrap() as usize,
            message: v[6].as_str().unwrap().to_owned(),
            micros: v[7].as_u64().unwrap(),
        });
    }
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, so all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child (std's `Child` never waited on
    // it), and both out-pointers point to live locals of the right types.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let failure = if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        None
    } else if libc::WIFSIGNALED(status) {
        Some(format!("killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Some(format!("exit status {}", libc::WEXITSTATUS(status)))
    };
    ChildRun { outcomes, failure, max_rss: usage.ru_maxrss as u64 * 1024 }
}

/// An error message with the source and the numbers taken out, to group them.
fn error_shape(message: &str, index: u64, fixture: &str) -> String {
    let message = message.replace(&format!("mutant-{index}-{fixture}"), "SOURCE");
    let mut out = String::new();
    let mut digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out.chars().take(140).collect()
}

#[test]
fn mutations() {
    let count: u64 = std::env::var("PTH_MUTATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let jobs: usize = std::env::var("PTH_MUTATION_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4)));
    let chunk = 500.max(count / (jobs as u64 * 4)).min(5000);
    fixtures(); // written before the children start
    let started = Instant::now();
    let queue = Mutex::new((0..count).step_by(chunk as usize).map(|s| (s, (s + chunk).min(count))).collect::<Vec<_>>());
    let results = Mutex::new((Vec::new(), Vec::new(), 0u64)); // outcomes, crashes, max rss
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let Some((start, end)) = queue.lock().unwrap().pop() else { break };
                let run = run_child(start, end);
                let next = run.outcomes.last().map_or(start, |o| o.index + 1);
                let mut results = results.lock().unwrap();
                results.2 = results.2.max(run.max_rss);
                if let Some(failure) = run.failure {
                    // The variant after the last reported one took the child down: record it, go on past it.
                    results.1.push(format!("variant {next}: child {failure}"));
                    if next + 1 < end {
                        queue.lock().unwrap().push((next + 1, end));
                    }
                }
                results.0.extend(run.outcomes);
            });
        }
    });
    let (outcomes, mut failures, max_rss) = results.into_inner().unwrap();
    let wall = started.elapsed();

    let mut per_fixture: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut per_kind: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut micros: BTreeMap<&str, u64> = BTreeMap::new();
    let mut shapes: HashMap<String, u64> = HashMap::new();
    let mut max_ratio = 0f64;
    let mut max_peak = 0;
    for o in &outcomes {
        *per_fixture.entry(&o.fixture).or_default().entry(&o.status).or_default() += 1;
        *per_kind.entry(&o.kind).or_default().entry(&o.status).or_default() += 1;
        *micros.entry(&o.fixture).or_default() += o.micros;
        let source = format!("mutant-{}-{}", o.index, o.fixture);
        max_peak = max_peak.max(o.peak);
        max_ratio = max_ratio.max(o.peak as f64 / o.len.max(1) as f64);
        match o.status.as_str() {
            "OK" => {}
            "ERR" => {
                if o.message.contains('\n') || !o.message.contains(&source) {
                    failures.push(format!(
                        "variant {} ({}): error not one line naming {source}: {:?}",
                        o.index, o.kind, o.message
                    ));
                }
                *shapes.entry(error_shape(&o.message, o.index, &o.fixture)).or_default() += 1;
            }
            _ => failures.push(format!("variant {} ({}, {}): PANIC {:?}", o.index, o.fixture, o.kind, o.message)),
        }
        if o.peak > 2 * o.len + READ_SLACK {
            failures.push(format!(
                "variant {} ({}): read allocated {} bytes for a {}-byte file",
                o.index, o.kind, o.peak, o.len
            ));
        }
    }
    println!("{} variants in {:.1} s ({jobs} children at a time, seed {SEED:#x})", outcomes.len(), wall.as_secs_f64());
    for (fixture, counts) in &per_fixture {
        let n: u64 = counts.values().sum();
        println!("  {fixture:24} {counts:?}, {:.1} ms a variant", micros[fixture] as f64 / n as f64 / 1000.0);
    }
    for (kind, counts) in &per_kind {
        println!("  {kind:24} {counts:?}");
    }
    println!(
        "peak child resident set {:.0} MiB; peak Rust allocation in one read {:.1} MiB ({:.2} x its file at most)",
        max_rss as f64 / (1 << 20) as f64,
        max_peak as f64 / (1 << 20) as f64,
        max_ratio
    );
    let mut shapes: Vec<(String, u64)> = shapes.into_iter().collect();
    shapes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("{} distinct errors; the most common:", shapes.len());
    for (shape, n) in shapes.iter().take(12) {
        println!("  {n:6}  {shape}");
    }
    println!("failures: {}", failures.len());
    for f in failures.iter().take(20) {
        println!("  {f}");
    }
    assert!(max_rss < MAX_CHILD_RSS, "a child reached {max_rss} bytes resident");
    assert!(failures.is_empty(), "{} failures, first: {}", failures.len(), failures[0]);
    assert_eq!(outcomes.len() as u64, count, "every variant reported");
}
