//! Harnesses shared by the cargo-fuzz targets in `fuzz/` and the corpus regression tests
//! (feature `fuzzing`; not part of the node's API otherwise).
//!
//! Each `check_*` function takes arbitrary bytes, runs one parser or handler on them, and panics
//! only when an invariant breaks (a crash, a 500, a non-JSON error, a round trip that changes the
//! value). The fuzz targets call them under libFuzzer; `tests/fuzz_corpus.rs` replays the seed
//! corpus and every past finding through them on stable Rust in CI.

use std::sync::Arc;

use agentmesh_api::TrustState;
use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft, TEXT_PLAIN};
use agentmesh_core::{AgentCard, Envelope, EnvelopeKind, Identity, PeerId, canonical};
use agentmesh_store::Store;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use crate::db::Db;
use crate::{Config, Keys, Node, peer_api};

/// The node's fixed identity in the harness (secret seeds, not for real use).
pub fn node_identity() -> Identity {
    Identity::from_secret_bytes(&[1; 32], &[2; 32]).unwrap_or_else(|_| Identity::generate())
}

/// A trusted contact's fixed identity in the harness.
pub fn contact_identity() -> Identity {
    Identity::from_secret_bytes(&[3; 32], &[4; 32]).unwrap_or_else(|_| Identity::generate())
}

/// Parses bytes as an envelope; when they parse, runs the shape check, the signature check under
/// the contact's key and decryption with the node's key. Must never panic.
pub fn check_envelope(data: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else { return };
    let _ = envelope.check_shape();
    let _ = envelope.verify(&contact_identity().public().ed25519);
    let _ = envelope.open(&node_identity());
    if let Some(card) = &envelope.card {
        let _ = card.verify();
    }
    // What we serialize we must read back as the same envelope.
    let text = serde_json::to_string(&envelope).expect("an envelope serializes");
    let back: Envelope = serde_json::from_str(&text).expect("a serialized envelope parses");
    assert_eq!(back, envelope, "serialization round trip changed the envelope");
    assert_eq!(back.signing_bytes(), envelope.signing_bytes());
}

/// Canonical JSON must be valid JSON that parses to the same value, and canonicalizing that
/// again gives the same bytes.
pub fn check_canonical(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let text = canonical::to_string(&value);
    assert!(text.is_ascii(), "canonical JSON is ASCII");
    let back: Value = serde_json::from_str(&text).expect("canonical JSON parses");
    assert!(same_json(&back, &value), "canonical JSON changed the value: {text}");
    assert_eq!(canonical::to_string(&back), text, "canonicalization is not idempotent");
}

/// Equality that treats numbers by value (`1.0` and `1e0` are the same number).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Parses bytes as an agent card and verifies it; a card that verifies must still verify after
/// a serialization round trip (what peers store and pass on).
pub fn check_card(data: &[u8]) {
    let Ok(card) = serde_json::from_slice::<AgentCard>(data) else { return };
    let Ok(keys) = card.verify() else { return };
    let text = serde_json::to_string(&card).expect("a card serializes");
    let back: AgentCard = serde_json::from_str(&text).expect("a serialized card parses");
    assert_eq!(back.verify().ok(), Some(keys), "a verified card stopped verifying after a round trip");
}

/// A node's peer API in-process: the real router and handlers over an in-memory store, with a
/// trusted contact ([`contact_identity`]) and a freshness window wide enough that stored seeds
/// stay fresh.
pub struct PeerApiHarness {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

/// Routes the fuzzer picks from with the first input byte.
pub const ROUTES: [&str; 13] = [
    "/v1/card",
    "/v1/gossip/announce",
    "/v1/gossip/peers",
    "/v1/key-rotation",
    "/v1/contact-request",
    "/v1/contact-response",
    "/v1/message",
    "/v1/receipt",
    "/v1/batch",
    "/agent-mesh/contact-request",
    "/agent-mesh/message",
    "/agent-mesh/discovery",
    "/v1/contact-update",
];

impl PeerApiHarness {
    /// Starts the harness (a current-thread runtime and the database thread).
    pub fn new() -> Self {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
        let router = runtime.block_on(async {
            let store = Store::open_in_memory().expect("in-memory store");
            let contact = contact_identity();
            let card = AgentCard::new(&contact, "contact", vec!["http://127.0.0.1:9".into()], vec![], vec![], 1);
            let keys = contact.public();
            let peer = crate::native::native_peer(&card, keys, "http://127.0.0.1:9", 1);
            store.upsert_peer(&peer).expect("contact stored");
            store.set_trust(&PeerId::from(contact.agent_id()), TrustState::Trusted, None).expect("trusted");
            let identity = node_identity();
            let card = AgentCard::new(&identity, "node", vec!["http://127.0.0.1:8".into()], vec![], vec![], 1);
            let config = Config {
                freshness_window_secs: 100 * 365 * 86_400,
                messages_per_minute: 0,
                other_requests_per_minute: 0,
                contact_requests_per_hour: 0,
                ..Config::default()
            };
            let db = Db::spawn(store).expect("database thread");
            let http = crate::net::client(&crate::net::ClientOptions::default()).expect("http client");
            let carriers = crate::launch::standard_carriers(&http);
            let node = Node::assemble(crate::Parts {
                keys: Keys { identity, card, previous: None },
                config,
                endpoints: vec!["http://127.0.0.1:8".into()],
                db,
                adapters: crate::launch::standard_adapters(),
                carriers,
                warnings: Vec::new(),
            });
            peer_api::router(Arc::new(node))
        });
        PeerApiHarness { runtime, router }
    }

    /// Sends one request: `data[0]` picks the route, `data[1]` the content type, the rest is
    /// the body. Returns the status and body.
    pub fn request(&self, data: &[u8]) -> (StatusCode, Vec<u8>) {
        let route = ROUTES[data.first().copied().unwrap_or(0) as usize % ROUTES.len()];
        let content_type = match data.get(1).copied().unwrap_or(0) % 4 {
            0 | 1 => "application/json",
            2 => "application/json; charset=utf-8",
            _ => "text/plain",
        };
        let body = data.get(2..).unwrap_or_default().to_vec();
        let get = route.ends_with("card") || route.ends_with("discovery") || route.ends_with("peers");
        let method = if get { "GET" } else { "POST" };
        let mut request = Request::builder()
            .method(method)
            .uri(route)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("a request builds");
        request.extensions_mut().insert(crate::remote::Remote::Ip(std::net::Ipv4Addr::LOCALHOST.into()));
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.expect("the router is infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await.expect("a response body");
            (status, bytes.to_vec())
        })
    }

    /// Sends the request and checks the invariants: never a 500, and every refusal is a JSON
    /// body `{"error":{"code","message"}}`.
    pub fn check(&self, data: &[u8]) {
        let (status, body) = self.request(data);
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "internal error: {}", String::from_utf8_lossy(&body));
        let json: Value = serde_json::from_slice(&body).expect("every answer is JSON");
        if !status.is_success() {
            let error = json.get("error").expect("a refusal has an error member");
            let code = error.get("code").or_else(|| json.get("code"));
            assert!(code.is_some() || error.is_string(), "a refusal names its error: {json}");
        }
    }
}

impl Default for PeerApiHarness {
    fn default() -> Self {
        Self::new()
    }
}

/// Valid inputs for the peer API harness: a message, a read receipt and a batch from the trusted
/// contact, and a contact request from a stranger, each prefixed with its route and content-type
/// bytes. Written into the seed corpus by `fuzz/seed.sh`-style tooling and used by tests.
pub fn peer_api_seeds() -> Vec<Vec<u8>> {
    let node = node_identity();
    let contact = contact_identity();
    let stranger = Identity::from_secret_bytes(&[5; 32], &[6; 32]).unwrap_or_else(|_| Identity::generate());
    let at = 2_000_000_000_000u64; // 2033: seeds stay unexpired; the harness window is wide
    let ttl = 29 * 86_400_000;
    let seal = |from: &Identity, kind, content_type: &str, body: &[u8], card: Option<AgentCard>| {
        let mut draft = Draft::new(kind, from.agent_id(), node.agent_id(), at, ttl, content_type, body.to_vec());
        draft.card = card;
        draft.seal(&node.public().x25519).expect("seal").sign(from, at)
    };
    let route = |name: &str| ROUTES.iter().position(|r| *r == name).unwrap_or(0) as u8;
    let with = |r: &str, value: &Envelope| {
        let mut bytes = vec![route(r), 0];
        bytes.extend(serde_json::to_vec(value).unwrap_or_default());
        bytes
    };
    let message = seal(&contact, EnvelopeKind::Message, TEXT_PLAIN, b"hello", None);
    let receipt = seal(
        &contact,
        EnvelopeKind::Receipt,
        APPLICATION_JSON,
        br#"{"message_id":"0192f0e0-0000-7000-8000-000000000000","status":"read","at":2000000000000}"#,
        None,
    );
    let card = AgentCard::new(&stranger, "stranger", vec!["http://127.0.0.1:7".into()], vec![], vec![], 1);
    let body = serde_json::to_vec(&ContactRequestBody {
        request_id: "req_0123456789abcdef0123456789abcdef".into(),
        purpose: "fuzz".into(),
    })
    .unwrap_or_default();
    let request = seal(&stranger, EnvelopeKind::ContactRequest, APPLICATION_JSON, &body, Some(card));
    let mut batch = vec![route("/v1/batch"), 0];
    batch.extend(
        serde_json::to_vec(&serde_json::json!({"envelopes": [message.clone(), receipt.clone()]})).unwrap_or_default(),
    );
    vec![
        with("/v1/message", &message),
        with("/v1/receipt", &receipt),
        with("/v1/contact-request", &request),
        batch,
        vec![route("/v1/card"), 0],
    ]
}
