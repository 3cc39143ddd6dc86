//! What every binary does around its real work: one-line errors (a backtrace
//! only when `RUST_BACKTRACE` is set), panics reported the same way, exit
//! codes (1 for errors, 130 after Ctrl-C) and Ctrl-C connected to an
//! [`Interrupt`] (or counted, for a process that passes it on to children).

use crate::interrupt::{Interrupt, Interrupted};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Exit status after an interruption by Ctrl-C (128 + SIGINT), as shells use.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Runs `main_body`, printing any error as one line and exiting non-zero.
pub fn run_main(main_body: impl FnOnce() -> anyhow::Result<()>) {
    let verbose = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    if !verbose {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("internal error");
            let first_line = message.lines().next().unwrap_or(message);
            eprintln!("error: {first_line} (set RUST_BACKTRACE=1 for details)");
        }));
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(main_body));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            if verbose {
                eprintln!("error: {err:?}");
            } else {
                eprintln!("error: {err:#}");
            }
            let interrupted = err.downcast_ref::<Interrupted>().is_some();
            std::process::exit(if interrupted { EXIT_INTERRUPTED } else { 1 });
        }
        Err(_) => std::process::exit(101),
    }
}

/// Connects Ctrl-C to `interrupt`: the first press requests a stop (the work
/// stops at its next safe point), a second press exits at once.
pub fn stop_on_ctrl_c(interrupt: &Interrupt) {
    let interrupt = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if interrupt.request() {
            eprintln!("\nsecond Ctrl-C: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!("\nCtrl-C: stopping at the next safe point (press again to exit now)");
    });
}

/// Connects Ctrl-C to a count of presses, for a process that passes each one
/// on to child processes of its own (`finetune sweep`): it never exits by
/// itself, so that no child is left behind.
pub fn count_ctrl_c() -> Arc<AtomicUsize> {
    let presses = Arc::new(AtomicUsize::new(0));
    let counter = presses.clone();
    let _ = ctrlc::set_handler(move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\nCtrl-C: the runs stop at their next safe point (press again to stop them at once)");
        } else {
            eprintln!("\nCtrl-C again: the runs stop at once");
        }
    });
    presses
}
