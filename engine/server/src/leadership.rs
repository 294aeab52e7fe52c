//! This replica's place among the control planes that share a store: its id,
//! whether it campaigns at all, and its role now — the sole control plane
//! (SQLite: one daemon per store, it always leads), or on PostgreSQL the
//! leader under a fencing term, or a follower naming the leader it last saw.
//! A leaf: `App` holds it, `/status` and the handlers read it, the elector
//! (`elector.rs`) writes it. It decides nothing.

use std::sync::Mutex;

use serde::Serialize;

/// What this replica is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// No election (one daemon per store): runs the singleton work.
    Sole,
    /// Holds the leader lease under `term`.
    Leader { term: i64 },
    /// Another replica leads (`leader`, when known), or none does yet.
    Follower { leader: Option<String>, term: i64 },
}

/// This replica's identity and role.
#[derive(Debug)]
pub struct Leadership {
    /// How this replica names itself in the lease (`--replica-id`).
    pub replica: String,
    /// Whether it campaigns (a PostgreSQL store).
    pub elected: bool,
    role: Mutex<Role>,
}

impl Leadership {
    pub fn new(replica: String, elected: bool) -> Self {
        let role = if elected {
            Role::Follower {
                leader: None,
                term: 0,
            }
        } else {
            Role::Sole
        };
        Leadership {
            replica,
            elected,
            role: Mutex::new(role),
        }
    }

    pub fn role(&self) -> Role {
        self.role
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, role: Role) {
        *self
            .role
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = role;
    }

    /// Whether this replica runs the singleton work now.
    pub fn leads(&self) -> bool {
        matches!(self.role(), Role::Sole | Role::Leader { .. })
    }
}
