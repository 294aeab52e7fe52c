//! From a domain's answers to the record sets a DNS backend holds, and from
//! a backend's zone and a [`dnsplan`] to the `PATCH` that applies it.
//!
//! This module owns the per-backend record shapes and the ownership marker,
//! and is pure: no IO, no clock. Weights are scaled by the core
//! ([`scale::render_weights`]); the diff is the core's ([`dnsplan::plan`]).
//!
//! - **embedded**: one `A`/`AAAA` rrset, one record per address carrying the
//!   node weight in neutral's `weight` extension.
//! - **PowerDNS**: a plain `A`/`AAAA` rrset of the answers when their scaled
//!   weights are equal, else one `LUA` record
//!   `A "pickwrandom({{2,'192.0.2.1'},{1,'192.0.2.2'}})"`. PowerDNS keeps every
//!   `LUA` record of a name in one rrset, so the `A` and `AAAA` records of one
//!   domain share it: here each is its own record set (set id = the inner
//!   type), and a `PATCH` rewrites the shared rrset keeping the other's
//!   records and comments.
//!
//! - **Route53**: one weighted record set per node (`SetIdentifier` = node
//!   id, `Weight` = the node weight scaled to 0..=255 by the core).
//! - **Cloudflare**: one plain record per address whose weight is positive
//!   (Cloudflare's DNS has no weights); record sets are keyed by address.
//! - **AliDNS**: one record per address with its weight scaled to 1..=100;
//!   weight 0 is a disabled record.
//!
//! Ownership: on embedded and PowerDNS an rrset is neutral's when a
//! comment's account is [`OWNER`]; the comment's content names the record
//! type and the policy arguments (`neutral_gtm_record A {"all_down":…}`), so
//! an import can rebuild the resource from the backend alone. The cloud
//! backends keep an ownership *registry* record as external-dns does: a TXT
//! record at `_neutral-<type>.<domain>` ([`registry_name`]) reading
//! `heritage=neutral,owner=<owner id>,…` followed by the same policy
//! arguments ([`registry_text`]). Records owned by anyone else are never
//! changed: the core's plan reports them as conflicts.
//!
//! One concern per file: [`model`] (answers, policy, owner), [`render`]
//! (answers → record sets, presentation), [`registry`] (the cloud backends'
//! TXT ownership registry) and [`powerdns`] (rrsets, ownership comments,
//! `PATCH`). This file only re-exports them.

pub mod model;
pub mod powerdns;
pub mod registry;
pub mod render;
#[cfg(test)]
mod tests;

pub use model::{AnswerRow, LUA, OWNER, Policy, fqdn};
pub use powerdns::{current_sets, patch, policy_comment, policy_of};
pub use registry::{
    REGISTRY_PREFIX, Registry, is_registry, parse_registry, quote_txt, registry_name, registry_set,
    registry_text, registry_ttl, unquote_txt,
};
pub use render::{desired_sets, presentation};
