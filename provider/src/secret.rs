//! A secret configuration value (token, API key, access key): holds the
//! text and never prints it. A leaf: every part that carries credentials
//! (the provider's configuration, the clients, the backends, the launcher)
//! depends on it, and it depends on nothing of the crate.

use std::fmt;

/// A secret value; prints as `(sensitive)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for an HTTP header. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}
