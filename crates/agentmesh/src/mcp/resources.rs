//! The MCP resources `agentmesh://inbox` and `agentmesh://peers`, and the task that tells a
//! session when they change (`notifications/resources/updated`), driven by the node's event
//! stream: one task per session (legacy `resources/subscribe`) or per `subscriptions/listen`
//! request (2026-07-28), ending with it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmesh_api::Direction;
use agentmesh_api::control::MessagesQuery;
use agentmesh_client::StreamItem;
use rmcp::model::{Resource, ResourceUpdatedNotificationParam};
use rmcp::service::{Peer, SubscriptionSink};
use rmcp::{ErrorData as McpError, RoleServer};
use tokio_util::sync::CancellationToken;

use super::link::NodeLink;

/// Unread incoming messages.
pub(super) const INBOX: &str = "agentmesh://inbox";
/// Known peers.
pub(super) const PEERS: &str = "agentmesh://peers";

/// Both resources, for `resources/list`.
pub(super) fn list() -> Vec<Resource> {
    let json = |r: Resource| r.with_mime_type("application/json");
    vec![
        json(Resource::new(INBOX, "inbox").with_description(
            "Unread incoming messages as JSON ({\"messages\":[…]}), oldest first; updated when a message arrives or a delivery status changes.",
        )),
        json(Resource::new(PEERS, "peers").with_description(
            "Known peers with trust state as JSON ({\"peers\":[…]}); updated on trust changes, contact requests and key rotations.",
        )),
    ]
}

/// Reads one resource as JSON text.
pub(super) async fn read(link: &NodeLink, uri: &str) -> Result<String, McpError> {
    let fail = |e: super::link::ToolError| {
        McpError::internal_error(
            format!("{}: {}", e.code, e.message),
            Some(serde_json::json!({"error": {"code": e.code, "message": e.message}})),
        )
    };
    let client = link.client().map_err(fail)?;
    let text = match uri {
        INBOX => {
            let q = MessagesQuery { direction: Some(Direction::Incoming), unread: true, ..MessagesQuery::default() };
            let list = client.messages(&q).await.map_err(|e| fail(link.error(e)))?;
            serde_json::to_string(&list)
        }
        PEERS => {
            let list = client.peers(false).await.map_err(|e| fail(link.error(e)))?;
            serde_json::to_string(&super::peer_text::peers(list))
        }
        other => {
            return Err(McpError::resource_not_found(
                format!("no resource {other}; there are {INBOX} and {PEERS}"),
                None,
            ));
        }
    };
    text.map_err(|e| McpError::internal_error(format!("encoding {uri}: {e}"), None))
}

/// The resources an event kind changes.
fn changed_by(kind: &str) -> &'static [&'static str] {
    match kind {
        "message" => &[INBOX],
        "trust" | "contact_request" | "contact_response" | "key_rotated" => &[PEERS],
        _ => &[],
    }
}

/// Where updates go.
pub(super) enum Sink {
    /// A legacy session: the URIs it subscribed to with `resources/subscribe`.
    Session {
        /// The session's client.
        peer: Peer<RoleServer>,
        /// Its subscriptions (changed by `resources/subscribe` and `…/unsubscribe`).
        uris: Arc<Mutex<HashSet<String>>>,
    },
    /// One `subscriptions/listen` request (its accepted filter is enforced by the sink).
    Listen(SubscriptionSink),
}

impl Sink {
    fn wants(&self, uri: &str) -> bool {
        match self {
            Sink::Session { uris, .. } => uris.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(uri),
            Sink::Listen(sink) => {
                sink.accepted().resource_subscriptions.as_ref().is_some_and(|u| u.iter().any(|x| x == uri))
            }
        }
    }

    /// Sends one update; false when the session or subscription is gone.
    async fn send(&self, uri: &str) -> bool {
        match self {
            Sink::Session { peer, .. } => {
                peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await.is_ok()
            }
            Sink::Listen(sink) => sink.notify_resource_updated(uri).await.is_ok(),
        }
    }
}

/// Follows the node's events and sends an update for each subscribed resource an event
/// changes, until `stop` is cancelled or the session is gone. Starts with events from now on
/// and resumes after the last one seen when the node restarts.
pub(super) async fn pump(link: Arc<NodeLink>, sink: Sink, stop: CancellationToken) {
    let mut after = link.last_cursor().await.ok();
    let mut pause = Duration::from_millis(200);
    loop {
        let connected = match link.client() {
            Ok(client) => tokio::select! {
                () = stop.cancelled() => return,
                s = client.events(after) => s.ok(),
            },
            Err(_) => None,
        };
        if let Some(mut stream) = connected {
            pause = Duration::from_millis(200);
            loop {
                let item = tokio::select! {
                    () = stop.cancelled() => return,
                    item = stream.next() => item,
                };
                let event = match item {
                    Some(Ok(StreamItem::Event(event))) => event,
                    Some(Ok(StreamItem::Unknown { seq, .. })) => {
                        after = Some(seq);
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => break,
                };
                after = Some(event.seq);
                for uri in changed_by(event.event.kind()) {
                    if sink.wants(uri) && !sink.send(uri).await {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
