//! Tokens: loading the join and admin secrets, reading bearer tokens from
//! requests, and comparing them. Only SHA-256 hashes are kept in memory and
//! on disk; comparisons are constant-time (`TokenHash::matches`).

use std::path::Path;

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
