//! Bounds glibc's malloc arenas for the long-running daemon.
//!
//! glibc gives each thread that allocates under contention its own arena (up
//! to 8 per core), and freed memory stays in the arena it came from. The
//! daemon allocates from tokio's workers and from its blocking pool (every
//! store call), so with 30,000 nodes its resident memory grew to about 2.5
//! times its heap (340 MiB for a 139 MiB heap); with two arenas it stayed at
//! 175 MiB (`scripts/bench heartbeat_ingest`). The arena limit is read from
//! the environment when the process starts (`MALLOC_ARENA_MAX`), so when it
//! is unset this re-executes the same binary, with the same arguments and
//! process id, with it set. An operator's own `MALLOC_ARENA_MAX` is kept.
//!
//! It must not do anything else: a failed re-execution only costs memory,
//! and the caller goes on.

use std::os::unix::process::CommandExt;

/// The variable glibc reads its arena limit from.
const VARIABLE: &str = "MALLOC_ARENA_MAX";
/// Arenas for the daemon: one per core of a small machine.
const ARENAS: &str = "2";

/// Re-executes this process with [`VARIABLE`] set unless it already is;
/// returns (only) when it was set or the re-execution failed.
pub fn bound() {
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else {
        return;
    };
    // `/proc/self/exe` is this binary even if its path was replaced since.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VARIABLE, ARENAS)
        .exec();
    eprintln!("note: cannot re-execute with {VARIABLE}={ARENAS} ({error}); going on without");
}
