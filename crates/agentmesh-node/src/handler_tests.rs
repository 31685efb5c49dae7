//! Handler tests: every route of both APIs called in-process with `oneshot` on a node over an
//! in-memory store (no sockets, no outbox worker), checking status and typed replies.

use std::net::SocketAddr;
use std::sync::Arc;

use agentmesh_api::control::{
    AgentList, ClearedReply, ContactReply, DiscoveredReply, EventList, HealthReply, MessageList, MessageReply,
    PeerList, PeerReply, RequestList, RequestReply, RotateReply, SendReply,
};
use agentmesh_api::{ErrorBody, Event, Status, TrustState};
use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft, TEXT_PLAIN};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, EnvelopeKind, Identity, PeerId, Protocol};
use agentmesh_store::{IncomingMessage, NewRequest, Store};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::db::Db;
use crate::home::{Home, Profile};
use crate::{Config, Keys, Node, control, peer_api};

const TOKEN: &str = "test-token";
/// The control listener's address the fixture's router answers as.
const CONTROL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) node: Arc<Node>,
    control: Router,
    peers: Router,
    /// A trusted contact (keys we hold, so we can sign as it).
    pub(crate) contact: Identity,
    /// A peer that asked us for contact (`req_…aa`).
    asker: Identity,
}

fn peer_row(identity: &Identity, name: &str, trust: TrustState) -> agentmesh_store::Peer {
    let card = AgentCard::new(identity, name, vec!["http://127.0.0.1:9".into()], vec!["chat".into()], vec![], 1);
    let keys = card.verify().expect("card");
    agentmesh_store::Peer { trust, ..crate::native::native_peer(&card, &keys, "http://127.0.0.1:9", 1) }
}

/// A node over an in-memory store with a contact and a pending request, and both routers.
pub(crate) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::new(dir.path().join("home"));
    let profile = Profile { name: "node".into(), endpoint: None, capabilities: vec![], created_at: 0 };
    home.init(&profile, false).expect("init");
    let state = home.load_keys().expect("keys");
    let card = crate::service::keys::card_for(
        &state.identity,
        &home.load_profile().expect("profile"),
        &["http://127.0.0.1:8".into()],
        &crate::launch::standard_adapters(),
    );
    let store = Store::open_in_memory().expect("store");
    let contact = Identity::generate();
    let asker = Identity::generate();
    store.upsert_peer(&peer_row(&contact, "carol", TrustState::Trusted)).expect("contact");
    store.upsert_peer(&peer_row(&asker, "asker", TrustState::RequestedIn)).expect("asker");
    store
        .insert_request(&NewRequest {
            request_id: format!("req_{}", "aa".repeat(16)),
            direction: agentmesh_api::Direction::Incoming,
            peer_id: PeerId::from(asker.agent_id()),
            purpose: "hello".into(),
            protocol: Protocol::Native,
            created_at: 1,
            source_ip: None,
            source_net: None,
        })
        .expect("request");
    store
        .insert_incoming(&IncomingMessage {
            peer_id: PeerId::from(contact.agent_id()),
            id: "m-in".into(),
            protocol: Protocol::Native,
            encrypted: true,
            content_type: TEXT_PLAIN.into(),
            text: "hi".into(),
            reply_to: None,
            thread: None,
            created_at: 1,
            received_at: 2,
        })
        .expect("message");
    let config = Config { outbound_timeout_ms: 500, ..Config::default() };
    let http =
        crate::net::client(&crate::net::ClientOptions { timeout_ms: Some(500), ..Default::default() }).expect("http");
    let keys = Keys { identity: state.identity, card, previous: None };
    let (adapters, carriers) = (crate::launch::standard_adapters(), crate::launch::standard_carriers(&http));
    let db = Db::spawn(store).expect("db");
    let node = Arc::new(Node::assemble(crate::Parts {
        keys,
        config,
        endpoints: vec!["http://127.0.0.1:8".into()],
        db,
        adapters,
        carriers,
        warnings: Vec::new(),
    }));
    let control = control::router(
        Arc::clone(&node),
        home,
        TOKEN.into(),
        CONTROL,
        "http://127.0.0.1:8".into(),
        Default::default(),
    );
    let peers = peer_api::router(Arc::clone(&node));
    Fixture { _dir: dir, node, control, peers, contact, asker }
}

async fn call(router: &Router, method: Method, uri: &str, body: Option<Value>, auth: bool) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri).header(header::HOST, "127.0.0.1:9");
    if auth {
        request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let body = match body {
        Some(v) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut request = request.body(body).expect("request");
    request.extensions_mut().insert(crate::remote::Remote::Ip(std::net::Ipv4Addr::LOCALHOST.into()));
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
    (status, bytes.to_vec())
}

async fn ok<T: DeserializeOwned>(router: &Router, method: Method, uri: &str, body: Option<Value>) -> T {
    let (status, bytes) = call(router, method.clone(), uri, body, true).await;
    assert!(status.is_success(), "{method} {uri}: {status} {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&bytes)))
}

async fn refused(router: &Router, method: Method, uri: &str, body: Option<Value>, status: u16, code: &str) {
    let (got, bytes) = call(router, method.clone(), uri, body, true).await;
    let error: ErrorBody = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not an error body ({e}): {}", String::from_utf8_lossy(&bytes)));
    assert_eq!((got.as_u16(), error.error.code.as_str()), (status, code), "{method} {uri}: {}", error.error.message);
}

#[tokio::test]
async fn every_control_route_answers_typed_replies() {
    let f = fixture().await;
    let c = &f.control;
    let contact = f.contact.agent_id().to_string();
    let asker = f.asker.agent_id().to_string();
    let request = format!("req_{}", "aa".repeat(16));

    let status: Status = ok(c, Method::GET, "/control/status", None).await;
    assert_eq!((status.trusted_peers, status.pending_requests, status.unread_messages), (1, 1, 1));
    let card: AgentCard = ok(c, Method::GET, "/control/card", None).await;
    assert_eq!(card.agent_id, f.node.id());

    let peers: PeerList = ok(c, Method::GET, "/control/peers", None).await;
    assert_eq!(peers.peers.len(), 2);
    let one: PeerReply = ok(c, Method::GET, "/control/peers/carol", None).await;
    assert_eq!(one.peer.agent_id.as_str(), contact);
    let health: HealthReply = ok(c, Method::GET, "/control/peers/carol/health", None).await;
    assert!(!health.reachable && health.error.is_some(), "nothing listens on port 9");

    let requests: RequestList = ok(c, Method::GET, "/control/requests?direction=incoming&status=pending", None).await;
    assert_eq!(requests.requests[0].request_id, request);
    refused(c, Method::POST, &format!("/control/requests/{request}/withdraw"), None, 409, "incoming_request").await;
    let rejected: RequestReply =
        ok(c, Method::POST, &format!("/control/requests/{request}/reject"), Some(json!({"reason": "no"}))).await;
    assert_eq!(rejected.peer.trust, TrustState::Rejected);
    refused(c, Method::POST, &format!("/control/requests/{request}/approve"), None, 409, "already_decided").await;

    // Asking a known peer by name: no wait, so it is queued (no worker runs here).
    let asked: ContactReply =
        ok(c, Method::POST, "/control/contacts", Some(json!({"to": "asker", "wait_ms": 0}))).await;
    assert_eq!(asked.outcome, agentmesh_api::control::ContactOutcome::Queued);
    let withdrawn: RequestReply = ok(
        c,
        Method::POST,
        &format!("/control/requests/{}/withdraw", asked.request.expect("request").request_id),
        None,
    )
    .await;
    assert_eq!(withdrawn.request.status, agentmesh_api::RequestStatus::Withdrawn);
    refused(c, Method::POST, "/control/contacts", Some(json!({"to": "ftp://x"})), 404, "not_found").await;
    refused(
        c,
        Method::POST,
        "/control/contacts",
        Some(json!({"to": "x", "purpose": "p".repeat(1001)})),
        400,
        "invalid_purpose",
    )
    .await;

    let sent: SendReply = ok(c, Method::POST, "/control/messages", Some(json!({"to": "carol", "text": "hello"}))).await;
    assert_eq!(sent.to.as_str(), contact);
    refused(c, Method::POST, "/control/messages", Some(json!({"to": "asker", "text": "x"})), 403, "not_trusted").await;
    refused(c, Method::POST, "/control/messages", Some(json!({"to": "carol", "text": ""})), 400, "empty_message").await;
    let list: MessageList = ok(c, Method::GET, "/control/messages?direction=outgoing", None).await;
    assert_eq!(list.messages.len(), 1);
    let read: MessageReply = ok(c, Method::POST, "/control/messages/m-in/read", None).await;
    assert_eq!(read.message.status, agentmesh_api::MessageStatus::Read);
    refused(c, Method::POST, &format!("/control/messages/{}/retry", sent.message_id), None, 409, "not_failed").await;
    let cleared: ClearedReply = ok(c, Method::POST, "/control/outbox/clear-failed", None).await;
    assert_eq!(cleared.cleared, 0);

    let found = json!({"found": [{"protocol": "agentmesh/1", "endpoint": "http://127.0.0.1:7",
        "document": AgentCard::new(&Identity::generate(), "dora", vec!["http://127.0.0.1:7".into()], vec![], vec![], 1)}]});
    let recorded: DiscoveredReply = ok(c, Method::POST, "/control/discovered", Some(found)).await;
    assert_eq!(recorded.recorded[0].outcome, agentmesh_api::control::Recorded::New);
    let known: AgentList = ok(c, Method::GET, "/control/discover?query=dora", None).await;
    assert_eq!(known.agents.len(), 1);

    let blocked: PeerReply = ok(c, Method::POST, &format!("/control/peers/{asker}/block"), None).await;
    assert_eq!(blocked.peer.trust, TrustState::Blocked);
    let unblocked: PeerReply = ok(c, Method::POST, &format!("/control/peers/{asker}/unblock"), None).await;
    assert!(unblocked.hint.is_some());
    let removed: PeerReply = ok(c, Method::DELETE, "/control/peers/dora", None).await;
    assert_eq!(removed.peer.trust, TrustState::Removed);
    refused(c, Method::POST, "/control/peers/carol/repin", Some(json!({"fingerprint": "sha256:00"})), 404, "not_found")
        .await;
    refused(c, Method::GET, "/control/peers/zzz", None, 404, "not_found").await;

    let rotated: RotateReply = ok(c, Method::POST, "/control/rotate-key", None).await;
    assert_eq!((rotated.agent_id, rotated.key_rotations, rotated.contacts_told), (f.node.id(), 1, 1));

    // The event log holds what happened, in order; the SSE stream replays it from a cursor.
    let (status, _) = call(c, Method::GET, "/v1/events", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let log: EventList = ok(c, Method::GET, "/control/events?after=0&limit=1000", None).await;
    assert!(log.events.iter().any(|e| matches!(e.event, Event::Trust { trust: TrustState::Blocked, .. })));
    assert!(log.events.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "dense and in order");
    assert_eq!(log.events.last().map(|e| e.seq), Some(log.last));
    refused(c, Method::GET, "/v1/events?after=x", None, 400, "malformed").await;
    let first_frame = |resume: Option<i64>, query: &str| {
        let mut request = Request::builder()
            .uri(format!("/v1/events{query}"))
            .header(header::HOST, "127.0.0.1:9")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(resume) = resume {
            request = request.header("last-event-id", resume.to_string());
        }
        let c = c.clone();
        async move {
            let response = c.oneshot(request.body(Body::empty()).expect("request")).await.expect("events");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
            let mut body = response.into_body().into_data_stream();
            let mut text = String::new();
            while !text.contains("\n\n") {
                let chunk = futures_util::StreamExt::next(&mut body).await.expect("a frame").expect("bytes");
                text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            }
            text
        }
    };
    let frame = first_frame(None, "?after=0").await;
    let first = &log.events[0];
    assert!(frame.starts_with(&format!("id: 1\nevent: {}\ndata: ", first.event.kind())), "{frame}");
    let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
    assert_eq!(&serde_json::from_str::<agentmesh_api::LoggedEvent>(data).expect("logged event"), first);
    // Last-Event-ID (an SSE client resuming) wins over the query.
    let frame = first_frame(Some(log.last - 1), "?after=0").await;
    assert!(frame.starts_with(&format!("id: {}\n", log.last)), "{frame}");

    refused(c, Method::GET, "/control/nope", None, 404, "not_found").await;
    refused(c, Method::GET, "/control/requests?direction=sideways", None, 400, "malformed").await;
    let (status, _) = call(c, Method::GET, "/control/status", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_peer_route_checks_its_input() {
    let f = fixture().await;
    let p = &f.peers;
    let (status, bytes) = call(p, Method::GET, "/v1/card", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let card: AgentCard = serde_json::from_slice(&bytes).expect("card");
    let x25519 = card.verify().expect("keys").x25519;

    let peer_error = |bytes: &[u8]| serde_json::from_slice::<ErrorBody>(bytes).expect("error body").error.code;
    for route in [
        "/v1/contact-request",
        "/v1/contact-response",
        "/v1/contact-update",
        "/v1/key-rotation",
        "/v1/message",
        "/v1/receipt",
        "/v1/batch",
        "/v1/gossip/announce",
    ] {
        let (status, bytes) = call(p, Method::POST, route, Some(json!({"v": 9})), false).await;
        assert_eq!((status, peer_error(&bytes).as_str()), (StatusCode::BAD_REQUEST, "malformed"), "{route}");
    }
    // A message from the trusted contact is stored and acknowledged.
    let seal = |from: &Identity, kind, body: &[u8], content_type: &str, card: Option<AgentCard>| {
        let mut draft = Draft::new(kind, from.agent_id(), f.node.id(), now_ms(), 60_000, content_type, body.to_vec());
        draft.card = card;
        serde_json::to_value(draft.seal(&x25519).expect("seal").sign(from, now_ms())).expect("json")
    };
    let message = seal(&f.contact, EnvelopeKind::Message, b"hi", TEXT_PLAIN, None);
    let (status, bytes) = call(p, Method::POST, "/v1/message", Some(message.clone()), false).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    // Acknowledged: a receipt for this very message, to its sender, signed by our key...
    let answer: Value = serde_json::from_slice(&bytes).expect("json");
    let receipt: agentmesh_core::DeliveryReceipt =
        serde_json::from_value(answer["receipt"].clone()).expect("a delivery receipt");
    assert_eq!((receipt.message_id.as_str(), receipt.to), (message["id"].as_str().expect("id"), f.contact.agent_id()));
    receipt.verify(&f.node.keys().identity.public().ed25519).expect("the receipt verifies under our key");
    // ...and stored before that: the owner reads it.
    let inbox: MessageList = ok(&f.control, Method::GET, "/control/messages?direction=incoming", None).await;
    assert!(
        inbox.messages.iter().any(|m| m.id == message["id"].as_str().expect("id") && m.text.as_deref() == Some("hi")),
        "{inbox:?}"
    );
    let (status, bytes) = call(p, Method::POST, "/v1/batch", Some(json!({"envelopes": [message]})), false).await;
    assert_eq!(status, StatusCode::OK);
    let replayed: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(replayed["results"][0]["ok"], true, "a replay in a batch");
    assert_eq!(replayed["results"][0]["receipt"], answer["receipt"], "the replay gets the same receipt");
    // A stranger may only ask.
    let stranger = Identity::generate();
    let stranger_card = AgentCard::new(&stranger, "s", vec!["http://127.0.0.1:6".into()], vec![], vec![], 1);
    let ask = serde_json::to_vec(&ContactRequestBody {
        request_id: format!("req_{}", "bb".repeat(16)),
        purpose: String::new(),
    })
    .expect("json");
    let request = seal(&stranger, EnvelopeKind::ContactRequest, &ask, APPLICATION_JSON, Some(stranger_card.clone()));
    let (status, _) = call(p, Method::POST, "/v1/contact-request", Some(request), false).await;
    assert_eq!(status, StatusCode::OK);
    let pending: RequestList = ok(&f.control, Method::GET, "/control/requests?direction=incoming", None).await;
    assert!(
        pending.requests.iter().any(|r| r.request_id == format!("req_{}", "bb".repeat(16)) && r.status.is_open()),
        "the stranger's request is stored, pending: {pending:?}"
    );
    let update =
        seal(&Identity::generate(), EnvelopeKind::ContactUpdate, br#"{"change":"blocked"}"#, APPLICATION_JSON, None);
    let (status, bytes) = call(p, Method::POST, "/v1/contact-update", Some(update), false).await;
    assert_eq!((status, peer_error(&bytes).as_str()), (StatusCode::FORBIDDEN, "unknown_sender"));
    let rotation = seal(&Identity::generate(), EnvelopeKind::KeyRotation, b"{}", APPLICATION_JSON, Some(stranger_card));
    let (status, bytes) = call(p, Method::POST, "/v1/key-rotation", Some(rotation), false).await;
    assert_eq!(status.as_u16(), 400, "{}", String::from_utf8_lossy(&bytes));

    let (status, bytes) = call(p, Method::GET, "/v1/gossip/peers", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&bytes).expect("json")["peers"].is_array());
    let (status, bytes) = call(p, Method::GET, "/agent-mesh/discovery", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("json")["protocol"], "openclaw-agent-mesh/v1");
    for route in ["/agent-mesh/contact-request", "/agent-mesh/message"] {
        let (status, bytes) = call(p, Method::POST, route, Some(json!([1])), false).await;
        let v1: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            (status.as_u16(), v1["ok"].as_bool(), v1["error"].as_str()),
            (400, Some(false), Some("invalid_json")),
            "{route}"
        );
    }
    let (status, bytes) = call(p, Method::GET, "/nope", None, false).await;
    assert_eq!((status, peer_error(&bytes).as_str()), (StatusCode::NOT_FOUND, "not_found"));
}
