//! neutral's embedded authoritative DNS server and its PowerDNS-style zone
//! model.

#![warn(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod content;
pub mod health;
pub mod snapshot;
pub mod zone;
