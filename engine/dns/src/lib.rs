//! neutral's embedded authoritative DNS server and its PowerDNS-style zone
//! model.
//!
//! - [`zone`]: zones, rrsets and the all-or-nothing [`zone::apply_patch`] in
//!   PowerDNS' JSON shape (pure);
//! - [`content`]: record types, names and content syntax (pure);
//! - [`health`]: data-plane health, all-down policies and the weighted pick
//!   (pure);
//! - [`snapshot`]: compiled zones and the resolution of one query (pure);
//! - [`rrl`]: response-rate limiting per client prefix (pure);
//! - [`server`]: the UDP loop and the TCP loop of [`tcp`] (connection caps and timeouts), the [`DnsHandle`] the daemon
//!   updates zones and health through, and [`metrics`].

#![warn(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod content;
pub mod health;
pub mod metrics;
pub mod rrl;
pub mod server;
pub mod snapshot;
pub mod tcp;
pub mod zone;

pub use health::{HealthMove, HealthView, ServeMode};
pub use metrics::DnsMetrics;
pub use server::{
    DegradedRrSet, DnsError, DnsHandle, DnsServer, LoadReport, RateLimit, RememberedSet, TcpLimits,
};
pub use zone::{
    ChangeType, Comment, PatchError, Problem, Record, RrSet, RrSetChange, Zone, ZoneError,
    ZonePatch, ZoneRules, ZoneSet, apply_patch, parse_strict, read_strict,
};
