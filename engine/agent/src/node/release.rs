//! The blue/green bookkeeping of a node, pure: which colour serves which
//! image, which colour a release starts on, what a health check has shown so
//! far, and the bounded history of releases kept in the node's state file.
//!
//! It must not do IO or read the clock: times come in as Unix milliseconds.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Releases kept in the history.
pub const HISTORY_LIMIT: usize = 20;
/// The longest image reference accepted.
const MAX_IMAGE_REF: usize = 255;

/// One of the node's two service slots.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    pub fn other(self) -> Colour {
        match self {
            Colour::Blue => Colour::Green,
            Colour::Green => Colour::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Green => "green",
        }
    }

    /// The container id of the colour's workload.
    pub fn container(self) -> &'static str {
        match self {
            Colour::Blue => "svc-blue",
            Colour::Green => "svc-green",
        }
    }
}

impl std::fmt::Display for Colour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The loopback ports of the two colours.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColourPorts {
    pub blue: u16,
    pub green: u16,
}

impl Default for ColourPorts {
    fn default() -> Self {
        ColourPorts {
            blue: 18080,
            green: 28080,
        }
    }
}

impl ColourPorts {
    pub fn of(self, colour: Colour) -> u16 {
        match colour {
            Colour::Blue => self.blue,
            Colour::Green => self.green,
        }
    }
}

/// The colour serving traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    pub colour: Colour,
    pub image: String,
    pub since_unix_ms: u64,
}

/// How a release ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Released,
    Failed,
}

/// One release in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The control plane's id of the release, when it asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub image: String,
    pub colour: Colour,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// Why it failed, or notes on a success (e.g. old workers cut off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the node's state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    #[serde(default)]
    pub active: Option<Active>,
    /// Oldest first.
    #[serde(default)]
    pub history: VecDeque<ReleaseRecord>,
}

impl NodeState {
    /// The colour a release starts the new version on: the idle one, blue on
    /// a fresh node.
    pub fn target_colour(&self) -> Colour {
        self.active
            .as_ref()
            .map_or(Colour::Blue, |active| active.colour.other())
    }

    /// Appends to the history, dropping the oldest beyond [`HISTORY_LIMIT`].
    pub fn record(&mut self, record: ReleaseRecord) {
        self.history.push_back(record);
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
    }
}

/// Checks an image reference's shape (containerd checks the rest): 1 to 255
/// printable characters without spaces, not starting with `-`.
pub fn check_image_ref(image: &str) -> Result<(), String> {
    if image.is_empty() || image.len() > MAX_IMAGE_REF {
        return Err(format!(
            "an image reference is 1 to {MAX_IMAGE_REF} characters"
        ));
    }
    if image.starts_with('-') {
        return Err(format!("`{image}` is not an image reference"));
    }
    if let Some(bad) = image
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(format!(
            "image reference `{}` holds {bad:?}",
            image.escape_debug()
        ));
    }
    Ok(())
}

/// Checks a health-check path: absolute, printable ASCII, no spaces.
pub fn check_health_path(path: &str) -> Result<(), String> {
    let printable = path.chars().all(|c| c.is_ascii_graphic());
    if path.starts_with('/') && printable && path.len() <= 1024 {
        Ok(())
    } else {
        Err(format!(
            "health path `{}` must start with `/` and hold printable ASCII without spaces",
            path.escape_debug()
        ))
    }
}

/// A health check in progress: healthy after `rise` consecutive successes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    rise: u32,
    consecutive: u32,
    attempts: u32,
    last_failure: Option<String>,
}

impl HealthCheck {
    pub fn new(rise: u32) -> Self {
        HealthCheck {
            rise: rise.max(1),
            consecutive: 0,
            attempts: 0,
            last_failure: None,
        }
    }

    /// Records one attempt (`Err` holds why it failed); returns whether the
    /// workload is now healthy.
    pub fn observe(&mut self, result: Result<(), String>) -> bool {
        self.attempts = self.attempts.saturating_add(1);
        match result {
            Ok(()) => self.consecutive = self.consecutive.saturating_add(1),
            Err(why) => {
                self.consecutive = 0;
                self.last_failure = Some(why);
            }
        }
        self.consecutive >= self.rise
    }

    /// What to tell the operator when time ran out.
    pub fn failure_summary(&self) -> String {
        match &self.last_failure {
            Some(why) => format!("{} attempts, last: {why}", self.attempts),
            None if self.attempts == 0 => "no attempt finished".to_owned(),
            None => format!(
                "{} attempts, only {} consecutive successes of {} needed",
                self.attempts, self.consecutive, self.rise
            ),
        }
    }
}

/// The verdict on one health-check answer.
pub fn judge_health_status(status: u16) -> Result<(), String> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> ReleaseRecord {
        ReleaseRecord {
            id: None,
            image: format!("web:v{n}"),
            colour: Colour::Blue,
            started_unix_ms: n,
            duration_ms: 1,
            outcome: Outcome::Released,
            reason: None,
        }
    }

    #[test]
    fn releases_alternate_colours_starting_with_blue() {
        let mut state = NodeState::default();
        assert_eq!(state.target_colour(), Colour::Blue);
        state.active = Some(Active {
            colour: Colour::Blue,
            image: "web:v1".into(),
            since_unix_ms: 1,
        });
        assert_eq!(state.target_colour(), Colour::Green);
        state.active = Some(Active {
            colour: Colour::Green,
            image: "web:v2".into(),
            since_unix_ms: 2,
        });
        assert_eq!(state.target_colour(), Colour::Blue);
        assert_eq!(ColourPorts::default().of(Colour::Green), 28080);
        assert_eq!(Colour::Green.container(), "svc-green");
    }

    #[test]
    fn history_keeps_the_newest_releases() {
        let mut state = NodeState::default();
        for n in 0..30 {
            state.record(record(n));
        }
        assert_eq!(state.history.len(), HISTORY_LIMIT);
        assert_eq!(state.history.front().map(|r| r.started_unix_ms), Some(10));
        assert_eq!(state.history.back().map(|r| r.started_unix_ms), Some(29));
    }

    #[test]
    fn the_state_file_shape_is_stable() {
        let mut state = NodeState {
            active: Some(Active {
                colour: Colour::Green,
                image: "neutral.test/web:v2".into(),
                since_unix_ms: 1_700_000_000_000,
            }),
            history: VecDeque::new(),
        };
        state.record(ReleaseRecord {
            reason: Some("health check failed".into()),
            outcome: Outcome::Failed,
            id: Some("rel-1".into()),
            ..record(7)
        });
        expect_test::expect![[r#"{"active":{"colour":"green","image":"neutral.test/web:v2","since_unix_ms":1700000000000},"history":[{"id":"rel-1","image":"web:v7","colour":"blue","started_unix_ms":7,"duration_ms":1,"outcome":"failed","reason":"health check failed"}]}"#]]
        .assert_eq(&serde_json::to_string(&state).unwrap());
        let back: NodeState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
        let empty: NodeState = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, NodeState::default());
    }

    #[test]
    fn image_references_are_checked_for_shape_only() {
        for good in [
            "neutral.test/web:v1",
            "docker.io/library/nginx@sha256:abc",
            "web",
        ] {
            assert_eq!(check_image_ref(good), Ok(()), "{good}");
        }
        for bad in ["", "-rm", "web v1", "web\n", "wéb", &"x".repeat(256)] {
            assert!(check_image_ref(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_health_path("/healthz"), Ok(()));
        assert!(check_health_path("healthz").is_err());
        assert!(check_health_path("/a b").is_err());
    }

    #[test]
    fn health_needs_rise_consecutive_successes() {
        let mut check = HealthCheck::new(2);
        assert!(!check.observe(Ok(())));
        assert!(!check.observe(Err("HTTP 503".into())));
        assert!(!check.observe(Ok(())));
        assert!(check.observe(Ok(())));
        let mut failing = HealthCheck::new(2);
        assert_eq!(failing.failure_summary(), "no attempt finished");
        for _ in 0..3 {
            failing.observe(judge_health_status(404));
        }
        assert_eq!(failing.failure_summary(), "3 attempts, last: HTTP 404");
        assert_eq!(judge_health_status(204), Ok(()));
        assert!(judge_health_status(301).is_err());
    }
}
