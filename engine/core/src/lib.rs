//! The pure core of neutral.
//!
//! Everything the engine computes lives here: the model, platform-config
//! parsing and validation, effective weights, autoscale decisions and DNS
//! record plans. The crate does no IO, reads no clock (time is a parameter),
//! spawns nothing and never panics on input. Its dependency list is kept free
//! of IO crates, and `tests/no_io_dependencies.rs` checks that it stays so.

#![warn(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod address;
pub mod autoscale;
pub mod backend_calls;
pub mod backoff;
pub mod config;
pub mod diag;
pub mod dnsplan;
pub mod error_text;
pub mod failover;
pub mod health;
pub mod image_ref;
pub mod liveness;
pub mod log_gate;
pub mod model;
pub mod pdns_api;
pub mod policy;
pub mod pool;
pub mod quorum;
pub mod redact;
pub mod weights;
pub mod whatif;
