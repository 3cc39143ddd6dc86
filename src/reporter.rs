//! Where the library's words go: a [`Reporter`] is handed to every library
//! entry point that has something to say (a run's lines, warnings, progress
//! bars), as burn-train's event processor is, so that the binaries decide
//! what a person sees and a library user can silence it or keep it.
//!
//! It owns the three channels and their terminal look: [`Terminal`] (what
//! the binaries use: lines on stdout, warnings on stderr, indicatif bars
//! with one look across the tools, drawn on stderr and hidden when it is
//! not a terminal), [`Silent`] (nothing), [`Capture`] (lines kept in
//! memory, for tests). It must not decide anything: it never filters,
//! reorders, formats or numbers what it is given, and nothing in the
//! library asks it a question. It sits on the floor of the crate (it
//! imports nothing of it), so that every module may report.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The output side of a library call.
pub trait Reporter: Send + Sync {
    /// One line of the run's output (stdout on a terminal, what users' scripts parse).
    fn line(&self, text: &str);
    /// One line beside the output (stderr on a terminal): warnings, skipped
    /// inputs, where cached data came from.
    fn warning(&self, text: &str);
    /// A progress bar over `total` steps, named `label` (hidden where nothing is drawn).
    fn bar(&self, total: u64, label: &str) -> ProgressBar;
}

/// What the binaries report through: stdout, stderr and the tool's bars.
/// A stream whose reader has gone (`… | head`) is written no more, and the
/// run goes on: a closed pipe stops the printing, not the work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terminal;

impl Terminal {
    /// `text` as it is (no line break added) on stdout.
    pub fn text(&self, text: &str) {
        write_while_open(&STDOUT_CLOSED, &mut std::io::stdout().lock(), text);
    }
}

/// A bar in the tools' one look.
fn terminal_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` unless an earlier write found the stream closed; a failed
/// write marks it closed.
fn write_while_open(closed: &AtomicBool, stream: &mut impl Write, text: &str) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if stream.write_all(text.as_bytes()).and_then(|()| stream.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

impl Reporter for Terminal {
    fn line(&self, text: &str) {
        self.text(&format!("{text}\n"));
    }

    fn warning(&self, text: &str) {
        write_while_open(&STDERR_CLOSED, &mut std::io::stderr().lock(), &format!("{text}\n"));
    }

    fn bar(&self, total: u64, label: &str) -> ProgressBar {
        terminal_bar(total, label)
    }
}

/// Says nothing: for a library user who wants the results only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn line(&self, _: &str) {}

    fn warning(&self, _: &str) {}

    fn bar(&self, total: u64, _: &str) -> ProgressBar {
        hidden_bar(total)
    }
}

/// Keeps every line and warning in memory, in order, and draws no bar.
#[derive(Debug, Default)]
pub struct Capture {
    lines: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
}

impl Capture {
    /// The lines reported so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("a capture is never poisoned").clone()
    }

    /// The warnings reported so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().expect("a capture is never poisoned").clone()
    }
}

impl Reporter for Capture {
    fn line(&self, text: &str) {
        self.lines.lock().expect("a capture is never poisoned").push(text.to_owned());
    }

    fn warning(&self, text: &str) {
        self.warnings.lock().expect("a capture is never poisoned").push(text.to_owned());
    }

    fn bar(&self, total: u64, _: &str) -> ProgressBar {
        hidden_bar(total)
    }
}

/// A bar that counts but draws nothing.
fn hidden_bar(total: u64) -> ProgressBar {
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
}

/// A line on stdout for the binaries, through [`Terminal`]: a closed stdout
/// ends the printing, not the run.
#[macro_export]
macro_rules! say {
    () => {
        $crate::reporter::Reporter::line(&$crate::reporter::Terminal, "")
    };
    ($($arg:tt)*) => {
        $crate::reporter::Reporter::line(&$crate::reporter::Terminal, &format!($($arg)*))
    };
}

/// A line on stderr for the binaries, through [`Terminal`]'s warning line.
#[macro_export]
macro_rules! say_err {
    ($($arg:tt)*) => {
        $crate::reporter::Reporter::warning(&$crate::reporter::Terminal, &format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_keeps_lines_and_warnings_apart_and_in_order() {
        let capture = Capture::default();
        capture.line("one");
        capture.warning("careful");
        capture.line("");
        assert_eq!(capture.lines(), ["one", ""]);
        assert_eq!(capture.warnings(), ["careful"]);
    }

    #[test]
    fn silent_and_capture_bars_are_hidden_but_count() {
        for reporter in [&Silent as &dyn Reporter, &Capture::default()] {
            let bar = reporter.bar(3, "steps");
            bar.inc(2);
            assert!(bar.is_hidden());
            assert_eq!((bar.position(), bar.length()), (2, Some(3)));
        }
    }
}
