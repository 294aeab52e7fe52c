//! `GET /events`: the daemon's change events — a domain's answers changed, a
//! node's status changed, a commit's declarations were applied, the
//! autoscaler acted — as a server-sent event stream, so the status page and
//! `neutral status --watch` redraw when something happens instead of polling
//! hard. Each event's `event:` field is its `kind`; its data is the JSON of
//! [`ChangeEvent`].
//!
//! Bounded on every side: at most [`EventStreams::MAX`] streams at once (the
//! next is answered 503 with a reason), a subscriber that falls more than the
//! broadcast channel's capacity behind gets one `lagged` event with the number
//! missed (and should re-read the state), a comment every
//! [`KEEP_ALIVE`] keeps proxies from closing a quiet stream, and a client that
//! stops reading is closed by the listener's idle timeout. The streams end
//! when the daemon stops. This module only relays events; it must not
//! compute anything from the world.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};

use crate::app::App;
use crate::error::ApiError;
use crate::event_streams::EventStreams;
use crate::world::ChangeEvent;

/// A comment line this often keeps a quiet stream alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `event:` names: the `kind` of each [`ChangeEvent`].
fn kind(event: &ChangeEvent) -> &'static str {
    match event {
        ChangeEvent::Domain { .. } => "domain",
        ChangeEvent::Declarations { .. } => "declarations",
        ChangeEvent::NodeStatus { .. } => "node_status",
        ChangeEvent::Autoscale { .. } => "autoscale",
    }
}

fn encode(event: &ChangeEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    Event::default().event(kind(event)).data(data)
}

/// One subscriber's state between events.
struct Subscriber {
    events: broadcast::Receiver<ChangeEvent>,
    stop: watch::Receiver<bool>,
    /// Held for as long as the stream lives.
    _permit: OwnedSemaphorePermit,
}

impl Subscriber {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Subscriber)> {
        if *self.stop.borrow() {
            return None;
        }
        let received = tokio::select! {
            received = self.events.recv() => received,
            _ = self.stop.changed() => return None,
        };
        let event = match received {
            Ok(event) => encode(&event),
            Err(RecvError::Lagged(missed)) => Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), self))
    }
}

pub async fn stream(
    State(app): State<Arc<App>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (permit, stop) = app.event_streams.try_open().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} event streams are open, the most this daemon serves; poll the read API instead",
                EventStreams::MAX
            ),
        )
        .with_retry_after(5)
    })?;
    let subscriber = Subscriber {
        events: app.events.subscribe(),
        stop,
        _permit: permit,
    };
    // The first event says the stream is open, so a client knows it will
    // hear about every change from here on and can read the state once.
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().event("open").data("{}"))
    });
    let events = futures_util::stream::unfold(subscriber, Subscriber::next);
    Ok(Sse::new(futures_util::StreamExt::chain(hello, events))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
