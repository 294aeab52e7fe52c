//! The vocabulary of records: a domain's answers, the policy an import
//! reads back, the owner mark, and the record set helpers every backend
//! shape is built with. A leaf of `records`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use neutral_core::dnsplan::{self, RecordSet};
use neutral_core::model::AllDownPolicy;
use serde::{Deserialize, Serialize};

/// The comment account that marks an rrset as neutral's; the same as
/// `neutral_dns::zone::NEUTRAL_ACCOUNT`, which the embedded server reads.
pub const OWNER: &str = "neutral";

/// Prefix of the ownership comment's content (and of the registry's
/// policy text).
pub const COMMENT_PREFIX: &str = "neutral_gtm_record";

/// The record type of PowerDNS' Lua records (weighted answers).
pub const LUA: &str = "LUA";

/// One answer of a domain: a node, its address and its weight (0..=1000).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRow {
    pub node: String,
    pub region: String,
    pub address: IpAddr,
    pub weight: u32,
}

/// The arguments an import cannot read from the records themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub all_down: AllDownPolicy,
    pub min_ready_nodes: u32,
    pub regions: BTreeMap<String, u32>,
}

/// `name` with exactly one trailing dot.
pub fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A record set of `name` (normalized) with sorted values, no weight and
/// no owner yet.
pub fn set(
    name: &str,
    rtype: &str,
    set_id: Option<&str>,
    ttl: u32,
    values: Vec<String>,
) -> RecordSet {
    let mut values = values;
    values.sort();
    RecordSet {
        name: dnsplan::normalize_name(name),
        rtype: rtype.to_owned(),
        set_id: set_id.map(str::to_owned),
        ttl,
        values,
        weight: None,
        owner: None,
    }
}
