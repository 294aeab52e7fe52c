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
//! The same re-execution fixes glibc's mmap threshold
//! (`MALLOC_MMAP_THRESHOLD_`, 128 KiB, unless the operator set it). Left
//! alone, glibc raises the threshold each time a large block is freed (up to
//! 32 MiB), so the daemon's large transient buffers — a recompute's node
//! lists, a stored document's JSON — come from the heap afterwards and stay
//! there, fragmented: with 100,000 nodes its resident memory was 480-500
//! MiB (peaks 515-550) for a heap that peaked at 330 MiB. With the threshold
//! fixed they are mapped and unmapped whole: 352-357 MiB (peaks 384-426).
//!
//! It must not do anything else: a failed re-execution only costs memory,
//! and the caller goes on.

use std::os::unix::process::CommandExt;

/// The variable glibc reads its arena limit from.
const VARIABLE: &str = "MALLOC_ARENA_MAX";
/// Arenas for the daemon: one per core of a small machine.
const ARENAS: &str = "2";
/// The variable glibc reads its mmap threshold from (a fixed threshold
/// also turns its dynamic raising off).
const MMAP_VARIABLE: &str = "MALLOC_MMAP_THRESHOLD_";
/// glibc's own starting threshold, kept fixed.
const MMAP_THRESHOLD: &str = "131072";

/// Re-executes this process with [`VARIABLE`] (and [`MMAP_VARIABLE`], unless
/// the operator set it) set unless it already is; returns (only) when it
/// was set or the re-execution failed.
pub fn bound() {
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else {
        return;
    };
    // `/proc/self/exe` is this binary even if its path was replaced since.
    let mut command = std::process::Command::new("/proc/self/exe");
    command.arg0(arg0).args(args).env(VARIABLE, ARENAS);
    if std::env::var_os(MMAP_VARIABLE).is_none() {
        command.env(MMAP_VARIABLE, MMAP_THRESHOLD);
    }
    let error = command.exec();
    eprintln!("note: cannot re-execute with {VARIABLE}={ARENAS} ({error}); going on without");
}
