//! A request to stop (Ctrl-C), passed to long work as a value: the binary
//! makes one [`Interrupt`], connects it to the terminal's Ctrl-C
//! (`crate::cli::stop_on_ctrl_c`), and hands clones to the work, which stops
//! at its next safe point with an [`Interrupted`] error. The library holds no
//! global flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Default, Debug)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop; returns whether it had been asked already.
    pub fn request(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
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
