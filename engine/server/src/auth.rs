//! Tokens and roles: loading the join, admin and viewer secrets, reading
//! bearer tokens from requests, comparing them, and the short-lived grants
//! the scheduler mints ([`Grants`]). Only SHA-256 hashes are kept in memory
//! and on disk; comparisons are constant-time (`TokenHash::matches`).
//!
//! Roles (docs/api.md has the table of who may call what):
//! - **admin** (`NEUTRAL_ADMIN_TOKEN`): everything.
//! - **viewer** (`NEUTRAL_VIEWER_TOKEN`, optional): every read, no write.
//! - **terraform**: a token the scheduler mints per run ([`Grants::mint_run`],
//!   random, kept hashed, revoked when the run ends and never older than
//!   [`MAX_RUN_TOKEN_LIFETIME`]): reads, the embedded DNS zones, drain and
//!   delete of nodes in the run's regions, and region-scoped join tokens
//!   for its node pool's new agents ([`Grants::mint_join`]).
//! - **join** (`NEUTRAL_JOIN_TOKEN`, or a minted one scoped to a region and
//!   expiring with its run): `POST /nodes/register` only.
//! - **node**: the token a node got at registration: its own heartbeats.
//!
//! This module owns the tokens and who they are; the API's handlers decide
//! which role an endpoint needs (`api::common`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::http::HeaderMap;
use neutral_store::TokenHash;

/// Reads a secret from `file` (trimmed) or else from the environment
/// variable `env`.
pub fn load_secret(file: Option<&Path>, env: &str) -> Result<TokenHash> {
    read_secret(file, env).map(|secret| TokenHash::of(&secret))
}

/// The secret itself, for the one place that must present it (the
/// scheduler hands the admin token to Terraform's provider).
pub fn read_secret(file: Option<&Path>, env: &str) -> Result<String> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?
            .trim()
            .to_owned(),
        None => std::env::var(env).unwrap_or_default().trim().to_owned(),
    };
    if secret.is_empty() {
        bail!("no token: set {env} or pass its --*-token-file");
    }
    if secret.len() < 16 {
        bail!("the token from {env} is too short: use at least 16 characters");
    }
    Ok(secret)
}

/// The viewer token, when one is configured: `file`, else env
/// `NEUTRAL_VIEWER_TOKEN` when set (a viewer token is optional).
pub fn load_viewer(file: Option<&Path>) -> Result<Option<TokenHash>> {
    let set = std::env::var(VIEWER_ENV).is_ok_and(|v| !v.trim().is_empty());
    if file.is_none() && !set {
        return Ok(None);
    }
    load_secret(file, VIEWER_ENV).map(Some)
}

pub const VIEWER_ENV: &str = "NEUTRAL_VIEWER_TOKEN";

/// No run token lives longer than this, even when its run hangs.
pub const MAX_RUN_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A minted join token's lifetime (capped by its run's token).
pub const JOIN_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// What a run token may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunScope {
    /// The grant's id (for revocation and the audit log).
    pub grant: u64,
    /// Regions whose nodes it may drain and delete and join tokens it may
    /// mint (the node-pool root's region; none for the GTM root).
    pub regions: BTreeSet<String>,
    /// The leader term the run was started under (replicas; `None`: a sole
    /// control plane): its writes are refused once the leader lease has
    /// moved on or lapsed (`api::require_token`), so a deposed leader's
    /// run writes nothing.
    pub term: Option<i64>,
}

#[derive(Debug)]
enum GrantKind {
    Run {
        regions: BTreeSet<String>,
        term: Option<i64>,
    },
    Join {
        region: String,
        parent: Option<u64>,
    },
}

#[derive(Debug)]
struct Grant {
    id: u64,
    hash: TokenHash,
    kind: GrantKind,
    expires: Instant,
}

/// Tokens minted at run time: run tokens and region-scoped join tokens.
/// In memory only: a daemon restart ends every run, and nodes keep the
/// node tokens they registered with.
#[derive(Debug, Default)]
pub struct Grants {
    grants: Mutex<(u64, Vec<Grant>)>,
}

impl Grants {
    fn with<T>(&self, f: impl FnOnce(&mut u64, &mut Vec<Grant>) -> T) -> T {
        let mut guard = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, grants) = &mut *guard;
        let now = Instant::now();
        grants.retain(|g| g.expires > now);
        f(next, grants)
    }

    /// A run token for `regions`, started under leader `term`, valid for
    /// `ttl` (at most [`MAX_RUN_TOKEN_LIFETIME`]) or until
    /// [`Grants::revoke`].
    pub fn mint_run(
        &self,
        regions: BTreeSet<String>,
        term: Option<i64>,
        ttl: Duration,
    ) -> (u64, String) {
        let token = new_token();
        let hash = TokenHash::of(&token);
        let id = self.with(|next, grants| {
            *next += 1;
            grants.push(Grant {
                id: *next,
                hash,
                kind: GrantKind::Run { regions, term },
                expires: Instant::now() + ttl.min(MAX_RUN_TOKEN_LIFETIME),
            });
            *next
        });
        (id, token)
    }

    /// A join token for `region`, minted by run `parent` (revoked with it)
    /// or by an admin (`None`); valid for `ttl`, at most
    /// [`JOIN_TOKEN_LIFETIME`] and never past its run's token.
    pub fn mint_join(&self, parent: Option<u64>, region: &str, ttl: Duration) -> Option<String> {
        let token = new_token();
        let hash = TokenHash::of(&token);
        self.with(|next, grants| {
            let mut expires = Instant::now() + ttl.min(JOIN_TOKEN_LIFETIME);
            if let Some(parent) = parent {
                let run = grants.iter().find(|g| g.id == parent)?;
                expires = expires.min(run.expires);
            }
            *next += 1;
            grants.push(Grant {
                id: *next,
                hash,
                kind: GrantKind::Join {
                    region: region.to_owned(),
                    parent,
                },
                expires,
            });
            Some(token)
        })
    }

    /// Ends grant `id` and the join tokens it minted.
    pub fn revoke(&self, id: u64) {
        self.with(|_, grants| {
            grants.retain(|g| {
                g.id != id && !matches!(g.kind, GrantKind::Join { parent: Some(p), .. } if p == id)
            });
        });
    }

    /// The scope of a live run token.
    pub fn run_scope(&self, token: &str) -> Option<RunScope> {
        let hash = TokenHash::of(token);
        self.with(|_, grants| {
            grants.iter().find_map(|g| match &g.kind {
                GrantKind::Run { regions, term } if g.hash == hash => Some(RunScope {
                    grant: g.id,
                    regions: regions.clone(),
                    term: *term,
                }),
                _ => None,
            })
        })
    }

    /// The region of a live minted join token.
    pub fn join_region(&self, token: &str) -> Option<String> {
        let hash = TokenHash::of(token);
        self.with(|_, grants| {
            grants.iter().find_map(|g| match &g.kind {
                GrantKind::Join { region, .. } if g.hash == hash => Some(region.clone()),
                _ => None,
            })
        })
    }

    /// Live grants (for tests and metrics).
    pub fn live(&self) -> usize {
        self.with(|_, grants| grants.len())
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A fresh random token: 32 bytes, base64url without padding.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64url(&bytes)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..symbols {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn run_tokens_die_with_their_run_and_take_their_join_tokens_along() {
        let grants = Grants::default();
        let (run, token) = grants.mint_run(
            BTreeSet::from(["jp".to_owned()]),
            Some(3),
            Duration::from_secs(60),
        );
        let scope = grants.run_scope(&token).unwrap();
        assert_eq!(scope.regions, BTreeSet::from(["jp".to_owned()]));
        assert_eq!(scope.term, Some(3), "the leader term it was minted under");
        let join = grants
            .mint_join(Some(run), "jp", Duration::from_secs(60))
            .unwrap();
        assert_eq!(grants.join_region(&join).as_deref(), Some("jp"));
        assert_eq!(
            grants.join_region(&token),
            None,
            "a run token is no join token"
        );
        assert_eq!(
            grants.run_scope(&join),
            None,
            "a join token is no run token"
        );
        grants.revoke(run);
        assert_eq!(grants.run_scope(&token), None);
        assert_eq!(grants.join_region(&join), None);
        assert_eq!(
            grants.mint_join(Some(run), "jp", Duration::from_secs(60)),
            None
        );
        assert_eq!(grants.live(), 0);
    }

    #[test]
    fn grants_expire_and_lifetimes_are_capped() {
        let grants = Grants::default();
        let (_, short) = grants.mint_run(BTreeSet::new(), None, Duration::from_millis(30));
        let (run, long) = grants.mint_run(BTreeSet::new(), None, Duration::from_secs(10 * 3600));
        assert!(grants.run_scope(&short).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(grants.run_scope(&short), None, "expired");
        assert!(grants.run_scope(&long).is_some());
        let admin_join = grants
            .mint_join(None, "sg", Duration::from_secs(10 * 3600))
            .unwrap();
        assert_eq!(grants.join_region(&admin_join).as_deref(), Some("sg"));
        grants.revoke(run);
        assert_eq!(
            grants.join_region(&admin_join).as_deref(),
            Some("sg"),
            "not the run's"
        );
    }

    #[test]
    fn tokens_are_43_url_safe_characters() {
        let token = new_token();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(token, new_token());
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
    }
}
