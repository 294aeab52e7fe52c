//! The ownership registry of the cloud backends, as external-dns keeps
//! its own: a TXT record at `_neutral-<type>.<domain>` reading
//! `heritage=neutral,owner=<owner id>,…` and the policy arguments. Pure.

use std::collections::BTreeMap;

use neutral_core::dnsplan::{self, RecordSet};
use neutral_core::model::{AllDownPolicy, DnsBackendKind, RecordType};

use super::model::{COMMENT_PREFIX, Policy, set};

/// First label prefix of a registry record's name.
pub const REGISTRY_PREFIX: &str = "_neutral-";
/// The registry record's `heritage`, as external-dns writes its own.
const HERITAGE: &str = "heritage=neutral";
/// The longest character-string of a TXT record.
const TXT_STRING_MAX: usize = 255;

/// The name of the registry record of `domain`'s `rtype` records:
/// `_neutral-a.app.example.com`.
pub fn registry_name(domain: &str, rtype: RecordType) -> String {
    format!(
        "{REGISTRY_PREFIX}{}.{}",
        rtype.as_str().to_ascii_lowercase(),
        dnsplan::normalize_name(domain)
    )
}

/// Whether `set` is an ownership registry record.
pub fn is_registry(set: &RecordSet) -> bool {
    set.rtype.eq_ignore_ascii_case("TXT") && set.name.starts_with(REGISTRY_PREFIX)
}

/// The registry record's text: who owns the records and the policy
/// arguments an import needs, as `key=value` pairs without quotes:
/// `heritage=neutral,owner=prod,resource=neutral_gtm_record,type=A,
/// all_down=fail_open,min_ready_nodes=1,regions=jp:100;sg:50`.
pub fn registry_text(owner: &str, rtype: RecordType, policy: &Policy) -> String {
    let regions: Vec<String> = policy
        .regions
        .iter()
        .map(|(region, weight)| format!("{region}:{weight}"))
        .collect();
    format!(
        "{HERITAGE},owner={owner},resource={COMMENT_PREFIX},type={},all_down={},\
         min_ready_nodes={},regions={}",
        rtype.as_str(),
        policy.all_down.as_str(),
        policy.min_ready_nodes,
        regions.join(";")
    )
}

/// What a registry record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    pub owner: String,
    /// `None` when the text names no readable policy (another tool's).
    pub policy: Option<Policy>,
}

/// Reads a registry record's text (quoted character-strings or plain);
/// `None` when it is not neutral's registry for `rtype`.
pub fn parse_registry(value: &str, rtype: RecordType) -> Option<Registry> {
    let text = unquote_txt(value);
    let mut fields = BTreeMap::new();
    for pair in text.split(',') {
        let (key, value) = pair.split_once('=')?;
        fields.insert(key.trim(), value.trim());
    }
    if fields.get("heritage") != Some(&"neutral") {
        return None;
    }
    if fields
        .get("type")
        .is_some_and(|t| !t.eq_ignore_ascii_case(rtype.as_str()))
    {
        return None;
    }
    let owner = (*fields.get("owner")?).to_owned();
    let policy = (|| {
        let all_down = match *fields.get("all_down")? {
            "fail_open" => AllDownPolicy::FailOpen,
            "last_known_good" => AllDownPolicy::LastKnownGood,
            _ => return None,
        };
        let min_ready_nodes = fields.get("min_ready_nodes")?.parse().ok()?;
        let mut regions = BTreeMap::new();
        for entry in fields.get("regions")?.split(';').filter(|e| !e.is_empty()) {
            let (region, weight) = entry.split_once(':')?;
            regions.insert(region.to_owned(), weight.parse().ok()?);
        }
        Some(Policy {
            all_down,
            min_ready_nodes,
            regions,
        })
    })();
    Some(Registry { owner, policy })
}

/// A TXT value's text: quoted character-strings (`"a" "b"`) joined, or the
/// value as it is when unquoted.
pub fn unquote_txt(value: &str) -> String {
    let trimmed = value.trim();
    if !trimmed.starts_with('"') {
        return trimmed.to_owned();
    }
    let mut text = String::new();
    let mut inside = false;
    let mut escaped = false;
    for c in trimmed.chars() {
        match (inside, escaped, c) {
            (true, true, _) => {
                text.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (_, false, '"') => inside = !inside,
            (true, false, _) => text.push(c),
            (false, _, _) => {}
        }
    }
    text
}

/// `text` as quoted TXT character-strings of at most 255 characters each
/// (Route53's presentation).
pub fn quote_txt(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let strings: Vec<String> = chars
        .chunks(TXT_STRING_MAX)
        .map(|chunk| {
            let piece: String = chunk.iter().collect();
            format!("\"{}\"", piece.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect();
    if strings.is_empty() {
        "\"\"".to_owned()
    } else {
        strings.join(" ")
    }
}

/// The TTL of registry records: long enough not to matter, and within
/// every backend's floor (AliDNS' free edition takes 600 and up).
pub fn registry_ttl(kind: DnsBackendKind) -> u32 {
    kind.ttl_floor().max(300)
}

/// The registry record of `domain`'s `rtype` records for `owner` with
/// `policy`, in `kind`'s presentation (Route53 quotes TXT values).
pub fn registry_set(
    kind: DnsBackendKind,
    domain: &str,
    rtype: RecordType,
    owner: &str,
    policy: &Policy,
) -> RecordSet {
    let text = registry_text(owner, rtype, policy);
    let value = if kind == DnsBackendKind::Route53 {
        quote_txt(&text)
    } else {
        text
    };
    set(
        &registry_name(domain, rtype),
        "TXT",
        None,
        registry_ttl(kind),
        vec![value],
    )
}
