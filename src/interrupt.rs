//! A request to stop (Ctrl-C), passed to long work as a value: the binary
//! makes one [`Interrupt`], connects it to the terminal's Ctrl-C
//! (`crate::cli::stop_on_ctrl_c`), and hands clones to the work, which stops
//! at its next safe point with an [`Interrupted`] error. The library holds no
//! global flag.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Set by this process's Ctrl-C.
const PRESSED: u8 = 1;
/// Set on behalf of another process (a data-parallel rank's Ctrl-C).
const PASSED_ON: u8 = 2;

#[derive(Clone, Default, Debug)]
pub struct Interrupt(Arc<AtomicU8>);

impl Interrupt {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop (Ctrl-C here); returns whether Ctrl-C had
    /// asked already.
    pub fn request(&self) -> bool {
        self.0.fetch_or(PRESSED, Ordering::SeqCst) & PRESSED != 0
    }

    /// Asks the work to stop because another process was asked: not a
    /// press of Ctrl-C here, so this process's first press is still its first.
    pub fn pass_on(&self) {
        self.0.fetch_or(PASSED_ON, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::Interrupt;

    #[test]
    fn a_stop_passed_on_is_not_a_press() {
        let interrupt = Interrupt::new();
        interrupt.pass_on();
        assert!(interrupt.requested());
        assert!(!interrupt.request(), "the first press after a passed-on stop is the first");
        assert!(interrupt.request());
    }
}

/// The error of work stopped by an [`Interrupt`]; binaries exit with 130 on
/// it, as shells expect after Ctrl-C.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}
