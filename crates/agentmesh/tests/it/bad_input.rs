//! Hostile and malformed input against a real node: each case gets its status and JSON error
//! code, and leaves every table's row count unchanged.

use std::time::Duration;

use crate::support::*;
use agentmesh_api::control::RequestsQuery;
use agentmesh_api::{Direction, TrustState};
use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft, TEXT_PLAIN};
use agentmesh_core::time::now_ms;
use agentmesh_core::{
    AgentCard, AgentId, DeliveryReceipt, Envelope, EnvelopeKind, Identity, PROTOCOL_NATIVE, RotationStatement,
};
use serde_json::{Value, json};

/// A fake peer driven by the test: its own keys, no node.
struct Fake {
    id: Identity,
    card: AgentCard,
}

/// The iroh key fake peers speak from when the suite runs over iroh (their cards list it).
const FAKE_IROH_SECRET: [u8; 32] = [7; 32];

impl Fake {
    fn new(name: &str) -> Self {
        let id = Identity::generate();
        // Port 9 (discard) on loopback: nothing listens, deliveries to us fail fast.
        let mut endpoints = vec!["http://127.0.0.1:9".to_owned()];
        if local::carrier() == "iroh" {
            endpoints.push(agentmesh_testkit::iroh_peer::endpoint_of(FAKE_IROH_SECRET));
        }
        let card = AgentCard::new(&id, name, endpoints, vec![], vec![PROTOCOL_NATIVE.into()], now_ms());
        Fake { id, card }
    }

    /// The same agent after rotating from `from` (whose chain it extends) to fresh keys.
    fn rotated(from: &Fake) -> Self {
        let next = Identity::generate();
        let agent = from.id.agent_id();
        let mut chain = from.id.rotations().to_vec();
        chain.push(RotationStatement::sign(agent, chain.len() as u32 + 1, &from.id, &next, now_ms()));
        let id = next.with_history(agent, chain).expect("valid chain");
        let card = AgentCard::new(
            &id,
            &from.card.name,
            from.card.endpoints.clone(),
            vec![],
            from.card.protocols.clone(),
            from.card.created_at,
        );
        Fake { id, card }
    }

    fn envelope(
        &self,
        kind: EnvelopeKind,
        to: AgentId,
        to_key: &[u8; 32],
        body: &[u8],
        content_type: &str,
    ) -> Envelope {
        let mut draft = Draft::new(kind, self.id.agent_id(), to, now_ms(), 3_600_000, content_type, body.to_vec());
        if kind.carries_card() {
            draft.card = Some(self.card.clone());
        }
        draft.seal(to_key).expect("seal").sign(&self.id, now_ms())
    }
}

struct Target {
    node: LocalNode,
    card: AgentCard,
    x25519: [u8; 32],
    http: reqwest::Client,
}

impl Target {
    /// POSTs to the node's peer API: over iroh when the suite runs over iroh (from the key the
    /// fake peers' cards list), unless the body is a stream (those go over HTTP).
    async fn post(&self, route: &str, body: impl Into<reqwest::Body>, content_type: &str) -> (u16, Value, String) {
        let body: reqwest::Body = body.into();
        if local::carrier() == "iroh"
            && let Some(bytes) = body.as_bytes()
        {
            let peer = agentmesh_testkit::iroh_peer::IrohPeer::bind_as(FAKE_IROH_SECRET).await.expect("bind");
            // The card of now: a restarted node listens on another port.
            let card = self.node.client.card().await.expect("card");
            let target = card.endpoints.iter().find(|e| e.starts_with("iroh:")).expect("an iroh endpoint");
            let (status, text) = peer
                .request(target, "POST", route, Some((bytes.to_vec(), content_type)))
                .await
                .unwrap_or_else(|e| panic!("POST {route} over iroh: {e}"));
            return (status, serde_json::from_str(&text).unwrap_or(Value::Null), text);
        }
        self.post_http(route, body, content_type).await
    }

    /// POSTs to the node's peer API over HTTP.
    async fn post_http(&self, route: &str, body: impl Into<reqwest::Body>, content_type: &str) -> (u16, Value, String) {
        let r = self
            .http
            .post(format!("{}{route}", self.node.peer_url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {route} ({content_type}): {e:?}"));
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    async fn send(&self, env: &Envelope) -> (u16, Value, String) {
        let route = match env.kind {
            EnvelopeKind::ContactRequest => "/v1/contact-request",
            EnvelopeKind::ContactResponse => "/v1/contact-response",
            EnvelopeKind::Receipt => "/v1/receipt",
            EnvelopeKind::Message => "/v1/message",
            EnvelopeKind::KeyRotation => "/v1/key-rotation",
            EnvelopeKind::ContactUpdate => "/v1/contact-update",
        };
        self.post(route, serde_json::to_string(env).expect("json"), "application/json").await
    }

    /// A contact request from `fake` with request id `req_` + the byte `n` repeated.
    fn contact_request(&self, fake: &Fake, n: u8) -> Envelope {
        let body =
            ContactRequestBody { request_id: format!("req_{}", format!("{n:02x}").repeat(16)), purpose: String::new() };
        let body = serde_json::to_vec(&body).expect("json");
        fake.envelope(EnvelopeKind::ContactRequest, self.card.agent_id, &self.x25519, &body, APPLICATION_JSON)
    }

    fn message(&self, from: &Fake, text: &str) -> Envelope {
        from.envelope(EnvelopeKind::Message, self.card.agent_id, &self.x25519, text.as_bytes(), TEXT_PLAIN)
    }

    /// Sends a bad request and checks status, error code and that nothing was stored.
    async fn refused(
        &self,
        what: &str,
        expect_status: u16,
        expect_code: &str,
        result: (u16, Value, String),
        before: &[(&str, i64)],
    ) {
        let (status, body, text) = result;
        assert_eq!(status, expect_status, "{what}: {text}");
        assert_eq!(body["error"]["code"], expect_code, "{what}: {text}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message for people");
        assert_eq!(counts(&self.node.home), before, "{what}: nothing may be stored");
    }
}

/// The incoming requests of `node`, newest first.
async fn incoming_requests(node: &LocalNode) -> Vec<agentmesh_api::ContactRequest> {
    let q = RequestsQuery { direction: Some(Direction::Incoming), ..RequestsQuery::default() };
    node.client.requests(&q).await.expect("requests").requests
}

/// A node whose home has `config` as its config.toml.
async fn configured(dir: &std::path::Path, config: &str) -> Target {
    let home = dir.join("target");
    local::init(&exe(), &home, "target", &[]).expect("init");
    std::fs::write(home.join("config.toml"), config).expect("config");
    let node = LocalNode::start(&exe(), &home, "127.0.0.1:0", &[]).await.expect("start");
    let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
        timeout_ms: Some(10_000),
        ..Default::default()
    })
    .expect("client");
    let card: AgentCard =
        http.get(format!("{}/v1/card", node.peer_url)).send().await.expect("card").json().await.expect("json");
    let x25519 = card.verify().expect("card").x25519;
    Target { node, card, x25519, http }
}

async fn setup(dir: &std::path::Path) -> (Target, Fake) {
    setup_with(dir, "").await
}

/// A node with `config`, and a fake peer it trusts.
async fn setup_with(dir: &std::path::Path, config: &str) -> (Target, Fake) {
    let target = configured(dir, config).await;

    // The fake peer asks for contact; the owner approves: the fake is now trusted.
    let fake = Fake::new("mallory");
    let body = serde_json::to_vec(&ContactRequestBody {
        request_id: format!("req_{}", "ab".repeat(16)),
        purpose: "hi".into(),
    })
    .expect("json");
    let request =
        fake.envelope(EnvelopeKind::ContactRequest, target.card.agent_id, &target.x25519, &body, APPLICATION_JSON);
    let (status, _, text) = target.send(&request).await;
    assert_eq!(status, 200, "{text}");
    let id = incoming_requests(&target.node).await[0].request_id.clone();
    target.node.client.approve(&id).await.expect("approve");
    (target, fake)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, fake) = setup(dir.path()).await;
    let node_key = t.card.verify().expect("keys").ed25519;

    // A good message is stored, then acknowledged with a receipt signed by the node.
    let before = counts(&t.node.home);
    let good = t.message(&fake, "legit");
    let (status, body, text) = t.send(&good).await;
    assert_eq!(status, 200, "{text}");
    let receipt: DeliveryReceipt = serde_json::from_value(body["receipt"].clone()).expect("receipt");
    receipt.verify(&node_key).expect("receipt signed by the node");
    assert_eq!((receipt.message_id.as_str(), receipt.to), (good.id.as_str(), fake.id.agent_id()));
    let after_good = counts(&t.node.home);
    assert_ne!(before, after_good);
    let inbox = |c: &[(&str, i64)]| c.iter().find(|(t, _)| *t == "inbox").map(|(_, n)| *n);
    assert_eq!(inbox(&after_good), inbox(&before).map(|n| n + 1));
    let base = after_good;

    // Replays: the same envelope, and the same id re-signed later, get the original receipt.
    let (status, _, replay_text) = t.send(&good).await;
    assert_eq!(status, 200);
    assert_eq!(replay_text, text, "a replay gets the original receipt byte for byte");
    let resigned = good.sign(&fake.id, now_ms() + 1);
    let (status, _, resigned_text) = t.send(&resigned).await;
    assert_eq!((status, resigned_text.as_str()), (200, text.as_str()));
    assert_eq!(counts(&t.node.home), base, "replays store nothing");

    // Regression: a forged copy of an accepted id (zeroed signature, swapped body, a later
    // sent_at without a new signature) is refused for its signature; it never learns whether
    // the id was accepted.
    let mut zeroed = good.clone();
    zeroed.sig = agentmesh_core::b64::encode([0u8; 64]);
    t.refused("replayed id, zeroed signature", 401, "bad_signature", t.send(&zeroed).await, &base).await;
    let mut swapped = good.clone();
    swapped.body = t.message(&fake, "swapped").body;
    t.refused("replayed id, swapped body", 401, "bad_signature", t.send(&swapped).await, &base).await;
    let mut later = good.clone();
    later.sent_at += 1;
    t.refused("replayed id, sent_at + 1", 401, "bad_signature", t.send(&later).await, &base).await;

    // Tampered signature and tampered ciphertext: 401.
    let mut tampered = t.message(&fake, "x");
    let mut sig = tampered.sig.into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    tampered.sig = String::from_utf8(sig).expect("ascii");
    t.refused("tampered signature", 401, "bad_signature", t.send(&tampered).await, &base).await;
    let mut altered = t.message(&fake, "x");
    altered.body = agentmesh_core::b64::encode(b"something else entirely");
    t.refused("altered body", 401, "bad_signature", t.send(&altered).await, &base).await;

    // Unknown sender: 403.
    let stranger = Fake::new("stranger");
    t.refused("unknown sender", 403, "unknown_sender", t.send(&t.message(&stranger, "hi")).await, &base).await;

    // Freshness: stale and future `sent_at`: 400.
    let stale = t.message(&fake, "old").sign(&fake.id, now_ms() - 600_000);
    t.refused("stale timestamp", 400, "stale_timestamp", t.send(&stale).await, &base).await;
    let future = t.message(&fake, "new").sign(&fake.id, now_ms() + 600_000);
    t.refused("future timestamp", 400, "stale_timestamp", t.send(&future).await, &base).await;

    // Expired (fresh signature, expiry passed): 400.
    let mut draft = Draft::new(
        EnvelopeKind::Message,
        fake.id.agent_id(),
        t.card.agent_id,
        now_ms() - 10_000,
        5_000,
        TEXT_PLAIN,
        b"late".to_vec(),
    );
    draft.expires_at = now_ms() - 1;
    let expired = draft.seal(&t.x25519).expect("seal").sign(&fake.id, now_ms());
    t.refused("expired", 400, "expired", t.send(&expired).await, &base).await;

    // Regression: times past the year 9999 (they used to be stored as negative numbers): 400.
    let mut draft = Draft::new(
        EnvelopeKind::Message,
        fake.id.agent_id(),
        t.card.agent_id,
        now_ms(),
        1,
        TEXT_PLAIN,
        b"far".to_vec(),
    );
    draft.created_at = u64::MAX - 10;
    draft.expires_at = u64::MAX - 5;
    let far = draft.seal(&t.x25519).expect("seal").sign(&fake.id, now_ms());
    t.refused("created_at near the u64 maximum", 400, "malformed", t.send(&far).await, &base).await;
    let body = serde_json::to_vec(&json!({"message_id": good.id, "status": "read", "at": u64::MAX})).expect("json");
    let far_read = fake.envelope(EnvelopeKind::Receipt, t.card.agent_id, &t.x25519, &body, APPLICATION_JSON);
    t.refused("read receipt at the u64 maximum", 400, "malformed_body", t.send(&far_read).await, &base).await;

    // Wrong recipient: 400.
    let elsewhere = Identity::generate();
    let misaddressed = fake.envelope(EnvelopeKind::Message, elsewhere.agent_id(), &t.x25519, b"x", TEXT_PLAIN);
    t.refused("wrong recipient", 400, "wrong_recipient", t.send(&misaddressed).await, &base).await;

    // Sealed to another key: signature fine, decryption fails: 400.
    let wrong_key = fake.envelope(EnvelopeKind::Message, t.card.agent_id, &elsewhere.public().x25519, b"x", TEXT_PLAIN);
    t.refused("undecryptable", 400, "undecryptable", t.send(&wrong_key).await, &base).await;

    // Oversize: 413, with and without Content-Length.
    let big = t.message(&fake, &"z".repeat(300 * 1024));
    t.refused("oversize", 413, "too_large", t.send(&big).await, &base).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(vec![b' '; 8 * 1024])).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    t.refused("oversize, chunked", 413, "too_large", t.post("/v1/message", streamed, "application/json").await, &base)
        .await;

    // Malformed, truncated, not an envelope, wrong content type, wrong route.
    t.refused("malformed JSON", 400, "malformed", t.post("/v1/message", "{not json", "application/json").await, &base)
        .await;
    let full = serde_json::to_string(&t.message(&fake, "cut")).expect("json");
    t.refused(
        "truncated",
        400,
        "malformed",
        t.post("/v1/message", full[..full.len() / 2].to_owned(), "application/json").await,
        &base,
    )
    .await;
    let mut extra = serde_json::to_value(t.message(&fake, "x")).expect("value");
    extra["admin"] = json!(true);
    t.refused(
        "unknown member",
        400,
        "malformed",
        t.post("/v1/message", extra.to_string(), "application/json").await,
        &base,
    )
    .await;
    t.refused(
        "wrong content type",
        415,
        "unsupported_media_type",
        t.post("/v1/message", full.clone(), "text/plain").await,
        &base,
    )
    .await;
    t.refused("no content type", 415, "unsupported_media_type", t.post("/v1/message", full.clone(), "").await, &base)
        .await;
    t.refused(
        "wrong route",
        400,
        "wrong_route",
        t.post("/v1/contact-request", full.clone(), "application/json").await,
        &base,
    )
    .await;

    // A contact request whose card is forged (renamed after signing): 400.
    let mut forger = Fake::new("forger");
    forger.card.name = "totally-legit".into();
    let body = serde_json::to_vec(&ContactRequestBody {
        request_id: format!("req_{}", "cd".repeat(16)),
        purpose: String::new(),
    })
    .expect("json");
    let forged = forger.envelope(EnvelopeKind::ContactRequest, t.card.agent_id, &t.x25519, &body, APPLICATION_JSON);
    t.refused("forged card", 400, "invalid_card", t.send(&forged).await, &base).await;

    // A contact response nobody asked for: 403 (unknown sender) / 400 (unknown request).
    let body =
        serde_json::to_vec(&json!({"request_id": format!("req_{}", "ef".repeat(16)), "accepted": true})).expect("json");
    let unsolicited =
        stranger.envelope(EnvelopeKind::ContactResponse, t.card.agent_id, &t.x25519, &body, APPLICATION_JSON);
    t.refused("unsolicited response", 403, "unknown_sender", t.send(&unsolicited).await, &base).await;
    let from_contact =
        fake.envelope(EnvelopeKind::ContactResponse, t.card.agent_id, &t.x25519, &body, APPLICATION_JSON);
    t.refused("response to no request", 400, "unknown_request", t.send(&from_contact).await, &base).await;

    // A contact update: from a stranger 403; malformed body 400.
    let update = serde_json::to_vec(&json!({"change": "blocked"})).expect("json");
    let from_stranger =
        stranger.envelope(EnvelopeKind::ContactUpdate, t.card.agent_id, &t.x25519, &update, APPLICATION_JSON);
    t.refused("update from a stranger", 403, "unknown_sender", t.send(&from_stranger).await, &base).await;
    let bogus = serde_json::to_vec(&json!({"change": "promoted"})).expect("json");
    let bogus = fake.envelope(EnvelopeKind::ContactUpdate, t.card.agent_id, &t.x25519, &bogus, APPLICATION_JSON);
    t.refused("update with an unknown change", 400, "malformed_body", t.send(&bogus).await, &base).await;

    // Unknown routes are JSON 404s.
    let (status, body, _) = t.post("/v1/nope", "{}", "application/json").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // Blocked sender: 403, even for a fresh, valid message.
    t.node.client.block(&fake.id.agent_id().to_string()).await.expect("block");
    // The block is told to the peer (queued to its unreachable endpoint); take the count after.
    let base = counts(&t.node.home);
    t.refused("blocked sender", 403, "blocked_sender", t.send(&t.message(&fake, "let me in")).await, &base).await;
    let body = serde_json::to_vec(&ContactRequestBody {
        request_id: format!("req_{}", "12".repeat(16)),
        purpose: String::new(),
    })
    .expect("json");
    let again = fake.envelope(EnvelopeKind::ContactRequest, t.card.agent_id, &t.x25519, &body, APPLICATION_JSON);
    t.refused("blocked contact request", 403, "blocked_sender", t.send(&again).await, &base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_results_are_per_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, fake) = setup(dir.path()).await;
    let good = t.message(&fake, "one");
    let stale = t.message(&fake, "two").sign(&fake.id, now_ms() - 600_000);
    let body = json!({"envelopes": [good, stale, {"v": 1}]}).to_string();
    let (status, reply, text) = t.post("/v1/batch", body, "application/json").await;
    assert_eq!(status, 200, "{text}");
    let results = reply["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["id"], good.id.as_str());
    assert_eq!((results[1]["ok"].as_bool(), results[1]["status"].as_u64()), (Some(false), Some(400)));
    assert_eq!(results[1]["error"]["code"], "stale_timestamp");
    assert_eq!(results[2]["error"]["code"], "malformed");
    let listed = t.node.client.messages(&Default::default()).await.expect("messages");
    assert_eq!(listed.messages.len(), 1);

    // Too many envelopes in one batch: 413, nothing stored.
    let before = counts(&t.node.home);
    let many: Vec<Envelope> = (0..129).map(|i| t.message(&fake, &format!("m{i}"))).collect();
    let (status, reply, _) = t.post("/v1/batch", json!({"envelopes": many}).to_string(), "application/json").await;
    assert_eq!((status, reply["error"]["code"].as_str()), (413, Some("too_large")));
    assert_eq!(counts(&t.node.home), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn control_api_requires_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path(), "a").await;
    let info: Value =
        serde_json::from_slice(&std::fs::read(node.home.join("node.json")).expect("node.json")).expect("json");
    let url = format!("{}/control/status", info["control_url"].as_str().expect("url"));
    assert!(url.starts_with("http://127.0.0.1:"), "control API is loopback only: {url}");
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut req = http.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("send");
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // The control routes are not on the peer port.
    let r = http.get(format!("{}/control/status", node.peer_url)).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 404);
    // A page that reached the control port through a rebound DNS name (another Host) is turned
    // away, token or not; the listener's own names work.
    let token = std::fs::read_to_string(node.home.join("control.token")).expect("token");
    let port = url.trim_start_matches("http://127.0.0.1:").split('/').next().expect("port").to_owned();
    for (host, want) in [
        (format!("attacker.example:{port}"), 421),
        (format!("127.0.0.1.attacker.example:{port}"), 421),
        ("127.0.0.1:1".to_owned(), 421),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
    ] {
        let r = http.get(&url).header("host", host.as_str()).bearer_auth(token.trim()).send().await.expect("send");
        assert_eq!(r.status().as_u16(), want, "Host {host}");
        if want == 421 {
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["error"]["code"], "wrong_host", "{body}");
        }
    }
    // Token and runtime files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["control.token", "node.json"] {
        let mode = std::fs::metadata(node.home.join(f)).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_contact_requests_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = configured(dir.path(), "max_pending_requests = 2\nreserved_pending_requests = 0\n").await;
    let ask = |fake: &Fake, n: u8| t.contact_request(fake, n);
    for n in 0..2 {
        let (status, _, text) = t.send(&ask(&Fake::new("asker"), n)).await;
        assert_eq!(status, 200, "{text}");
    }
    let base = counts(&t.node.home);
    t.refused(
        "third pending request",
        429,
        "too_many_pending_requests",
        t.send(&ask(&Fake::new("asker"), 2)).await,
        &base,
    )
    .await;
    // Answering one frees a slot.
    let id = incoming_requests(&t.node).await[0].request_id.clone();
    t.node.client.reject(&id, None).await.expect("reject");
    let (status, _, text) = t.send(&ask(&Fake::new("asker"), 3)).await;
    assert_eq!(status, 200, "{text}");
}

impl Target {
    /// Sends the contact request `env` from the loopback address `ip` (any of 127.0.0.0/8).
    async fn send_from(&self, ip: [u8; 4], env: &Envelope) -> (u16, Value, String) {
        let body = serde_json::to_string(env).expect("json");
        let (status, text) = post_from(ip, &self.node.listen_addr(), "/v1/contact-request", &body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    /// Pending incoming requests.
    async fn pending(&self) -> Vec<agentmesh_api::ContactRequest> {
        let q =
            RequestsQuery { direction: Some(Direction::Incoming), status: Some(agentmesh_api::RequestStatus::Pending) };
        self.node.client.requests(&q).await.expect("requests").requests
    }
}

/// One HTTP/1.1 JSON POST over a fresh connection from the loopback address `from`; returns the
/// status and body.
pub(crate) async fn post_from(from: [u8; 4], to: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(std::net::SocketAddr::from((from, 0))).expect("bind");
    let mut stream = socket.connect(to.parse().expect("address")).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut reply)).await.expect("answered in time").expect("read");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_pending_requests_are_shared_by_network_and_rejected_in_bulk() {
    use agentmesh_api::control::{DiscoveredArgs, FoundDocument, RejectManyArgs};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "max_pending_requests = 6\nreserved_pending_requests = 2\nmax_pending_per_network = 2\n\
                  contact_requests_per_hour = 0\n";
    let t = configured(dir.path(), config).await;
    let (net1, net1b, net2, net3) = ([127, 0, 1, 1], [127, 0, 1, 2], [127, 0, 2, 1], [127, 0, 3, 1]);

    // One network (/24) fills its share, whatever address in it the senders use.
    for (n, ip) in [(1, net1), (2, net1b)] {
        let (status, _, text) = t.send_from(ip, &t.contact_request(&Fake::new("spam"), n)).await;
        assert_eq!(status, 200, "{text}");
    }
    let base = counts(&t.node.home);
    let third = t.send_from(net1, &t.contact_request(&Fake::new("spam"), 3)).await;
    assert!(third.2.contains("from your network"), "{}", third.2);
    t.refused("third request from one network", 429, "too_many_pending_requests", third, &base).await;

    // Strangers together fill all but the reserved share.
    for n in [4, 5] {
        let (status, _, text) = t.send_from(net2, &t.contact_request(&Fake::new("other"), n)).await;
        assert_eq!(status, 200, "{text}");
    }
    let base = counts(&t.node.home);
    let stranger = t.send_from(net3, &t.contact_request(&Fake::new("stranger"), 6)).await;
    t.refused("a stranger when only the reserve is left", 429, "too_many_pending_requests", stranger, &base).await;

    // An agent our own discovery found may use the reserve.
    let known = Fake::new("found-by-scan");
    let found = FoundDocument {
        protocol: agentmesh_core::Protocol::Native,
        endpoint: "http://127.0.0.1:9".into(),
        document: serde_json::to_value(&known.card).expect("card"),
    };
    t.node.client.record_discovered(&DiscoveredArgs { found: vec![found] }).await.expect("record");
    let (status, _, text) = t.send_from(net3, &t.contact_request(&known, 7)).await;
    assert_eq!(status, 200, "{text}");

    // The owner sees where each came from, and rejects a whole network at once.
    let pending = t.pending().await;
    assert_eq!(pending.len(), 5);
    assert!(pending.iter().all(|r| !r.unbound), "native requests name their recipient");
    let from_net1: Vec<_> =
        pending.iter().filter(|r| r.source_ip.as_deref().is_some_and(|ip| ip.starts_with("127.0.1."))).collect();
    assert_eq!(from_net1.len(), 2, "{pending:?}");
    for (bad, what) in [
        (RejectManyArgs::default(), "no filter"),
        (RejectManyArgs { from: Some("127.0.1".into()), ..Default::default() }, "not a network"),
    ] {
        match t.node.client.reject_many(&bad).await {
            Err(agentmesh_client::ClientError::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (400, "invalid_argument"), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(t.pending().await.len(), 5, "refused bulk rejects change nothing");
    let args = RejectManyArgs { from: Some("127.0.1.0/24".into()), reason: Some("spam".into()), ..Default::default() };
    let reply = t.node.client.reject_many(&args).await.expect("reject a network");
    assert_eq!(reply.rejected.len(), 2);
    assert!(!reply.more);
    let mut rejected: Vec<_> = from_net1.iter().map(|r| r.request_id.clone()).collect();
    let mut got = reply.rejected.clone();
    rejected.sort();
    got.sort();
    assert_eq!(got, rejected);
    // Its share is free again.
    let (status, _, text) = t.send_from(net1, &t.contact_request(&Fake::new("again"), 8)).await;
    assert_eq!(status, 200, "{text}");

    // Through the CLI: by one address, then by age.
    let one = ok(&t.node.home, &["reject-request", "--from", "127.0.2.1"]);
    assert_eq!(one["rejected"].as_array().map(Vec::len), Some(2), "{one}");
    let rest = ok(&t.node.home, &["reject-request", "--older-than", "0s", "--reason", "cleaning up"]);
    assert_eq!(rest["rejected"].as_array().map(Vec::len), Some(2), "{rest}");
    assert!(t.pending().await.is_empty());
    let err = fails(&t.node.home, &["reject-request"]);
    assert_eq!(err["error"]["code"], "invalid_argument", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_stranger_cannot_make_itself_known_by_withdrawing() {
    use agentmesh_core::envelope::{ContactChange, ContactUpdateBody};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "max_pending_requests = 2\nreserved_pending_requests = 1\ncontact_requests_per_hour = 0\n";
    let t = configured(dir.path(), config).await;
    let (asker, other) = (Fake::new("asker"), Fake::new("other"));
    let (status, _, text) = t.send(&t.contact_request(&asker, 1)).await;
    assert_eq!(status, 200, "{text}");
    // It withdraws: its row goes back to `discovered`, as a scanned agent's would be.
    let body =
        ContactUpdateBody { change: ContactChange::Withdrawn, request_id: Some(format!("req_{}", "01".repeat(16))) };
    let body = serde_json::to_vec(&body).expect("json");
    let update = asker.envelope(EnvelopeKind::ContactUpdate, t.card.agent_id, &t.x25519, &body, APPLICATION_JSON);
    let (status, _, text) = t.send(&update).await;
    assert_eq!(status, 200, "{text}");
    assert!(t.pending().await.is_empty());
    // Another stranger takes the strangers' share; asking again does not open the reserve.
    let (status, _, text) = t.send(&t.contact_request(&other, 2)).await;
    assert_eq!(status, 200, "{text}");
    let base = counts(&t.node.home);
    let again = t.send(&t.contact_request(&asker, 3)).await;
    t.refused("a stranger asking again after withdrawing", 429, "too_many_pending_requests", again, &base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_unanswered_requests_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = configured(dir.path(), "contact_request_ttl_secs = 2\n").await;
    let (status, _, text) = t.send(&t.contact_request(&Fake::new("patient"), 1)).await;
    assert_eq!(status, 200, "{text}");
    let expired = wait_for(WAIT, || async {
        incoming_requests(&t.node).await.into_iter().find(|r| r.status == agentmesh_api::RequestStatus::Expired)
    })
    .await
    .expect("the request expires");
    assert_eq!(expired.reason_code.as_deref(), Some("expired"), "{expired:?}");
    assert!(t.pending().await.is_empty());
}

/// Reads from `stream` until EOF or error; returns what arrived and when it ended.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, Option<Duration>) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), None)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let t = configured(dir.path(), "header_read_timeout_secs = 1\nbody_read_timeout_secs = 1\n").await;
    let (node, home) = (&t.node, t.node.home.clone());
    let addr = node.listen_addr();
    let before = counts(&home);

    // Headers dripped one line every 300 ms never complete: the connection is closed.
    let mut drip = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    drip.write_all(b"POST /v1/message HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let dripping = tokio::spawn(async move {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if drip.write_all(format!("X-Drip-{i}: y\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
        drip
    });
    let mut drip = dripping.await.expect("drip task");
    let (_, closed) = read_until_closed(&mut drip, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "a header trickle must be cut off");

    // A body that stalls gets 408 with a JSON error, and nothing is stored.
    let mut stall = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    stall
        .write_all(b"POST /v1/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"v\":1")
        .await
        .expect("write");
    let (reply, closed) = read_until_closed(&mut stall, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"request_timeout\""), "{reply}");
    assert!(closed.is_some());

    // An idle kept-alive connection is closed too, and the node still serves others.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "an idle connection must be closed");
    assert!(node.client.status().await.is_ok(), "the node still serves");
    assert_eq!(counts(&home), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_get_429_with_an_accurate_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = configured(dir.path(), "contact_requests_per_hour = 3\nmessages_per_minute = 60\n").await;
    let ask = |fake: &Fake, n: u8| t.contact_request(fake, n);

    // Contact requests: 3 per hour from one address, then 429 for the real remaining time.
    let fakes: Vec<Fake> = (0..3).map(|_| Fake::new("asker")).collect();
    for (n, fake) in fakes.iter().enumerate() {
        // From one address: over HTTP, like the request that follows (it reads the headers).
        let body = serde_json::to_string(&ask(fake, n as u8)).expect("json");
        assert_eq!(t.post_http("/v1/contact-request", body, "application/json").await.0, 200);
    }
    let before = counts(&t.node.home);
    let response = t
        .http
        .post(format!("{}/v1/contact-request", t.node.peer_url))
        .header("content-type", "application/json")
        .body(serde_json::to_string(&ask(&Fake::new("one too many"), 9)).expect("json"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 429);
    let header: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("whole seconds");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after"], header);
    assert!((1_195..=1_200).contains(&header), "one request per 1200 s: {header}");
    assert_eq!(counts(&t.node.home), before, "nothing stored");

    // Messages: 60 per minute per trusted sender (one per second after the burst).
    let pending = incoming_requests(&t.node).await;
    for r in pending.iter().take(2) {
        t.node.client.approve(&r.request_id).await.expect("approve");
    }
    let flooder = fakes.iter().find(|f| pending[0].peer_id == f.id.agent_id()).expect("flooder");
    let other = fakes.iter().find(|f| pending[1].peer_id == f.id.agent_id()).expect("other");
    let burst: Vec<Envelope> = (0..60).map(|i| t.message(flooder, &format!("m{i}"))).collect();
    let (status, reply, _) = t.post("/v1/batch", json!({"envelopes": burst}).to_string(), "application/json").await;
    assert_eq!(status, 200);
    assert!(reply["results"].as_array().expect("results").iter().all(|r| r["ok"] == true));
    let before = counts(&t.node.home);
    let (status, refused, _) = t.send(&t.message(flooder, "one too many")).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (429, Some("rate_limited")));
    let wait = refused["error"]["retry_after"].as_u64().expect("retry_after");
    assert_eq!(wait, 1, "one message per second");
    assert_eq!(counts(&t.node.home), before);
    // Forgeries in another sender's name cannot drain its budget: refused for their signature,
    // never charged.
    let forged: Vec<Envelope> = (0..100)
        .map(|i| {
            let mut env = t.message(other, &format!("forged {i}"));
            env.sig = agentmesh_core::b64::encode([7u8; 64]);
            env
        })
        .collect();
    let (status, reply, _) = t.post("/v1/batch", json!({"envelopes": forged}).to_string(), "application/json").await;
    assert_eq!(status, 200);
    assert!(reply["results"].as_array().expect("results").iter().all(|r| r["status"] == 401), "{reply}");
    // Another sender is not slowed by the flood.
    assert_eq!(t.send(&t.message(other, "unaffected")).await.0, 200);
    // Waiting exactly the announced time is enough.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, text) = t.send(&t.message(flooder, "after waiting")).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotations_are_followed_and_forks_refused_over_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, genesis) = setup(dir.path()).await;
    let empty = b"{}";

    // A verified rotation moves the pin; nothing for the owner to do.
    let first = Fake::rotated(&genesis);
    let announce = first.envelope(EnvelopeKind::KeyRotation, t.card.agent_id, &t.x25519, empty, APPLICATION_JSON);
    let (status, _, text) = t.send(&announce).await;
    assert_eq!(status, 200, "{text}");
    let peers = t.node.client.peers(false).await.expect("peers");
    assert_eq!(peers.peers[0].fingerprint, first.card.fingerprint.as_str());
    assert_eq!(peers.peers[0].trust, TrustState::Trusted);

    // In flight from before the rotation: signed with the previous key, still accepted (grace).
    let (status, _, text) = t.send(&t.message(&genesis, "sent before rotating")).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = t.send(&t.message(&first, "signed with the new key")).await;
    assert_eq!(status, 200, "{text}");

    let base = counts(&t.node.home);
    // Presenting the old card again (a downgrade) is refused and not an alarm.
    let old_card = t.contact_request(&genesis, 7);
    t.refused("superseded key", 403, "superseded_key", t.send(&old_card).await, &base).await;

    // A fork: a valid chain from the genesis key that skips the pinned key.
    let fork = Fake::rotated(&genesis);
    let forked = fork.envelope(EnvelopeKind::KeyRotation, t.card.agent_id, &t.x25519, empty, APPLICATION_JSON);
    let (status, body, text) = t.send(&forked).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("key_mismatch")), "{text}");
    // Only the mismatch record (and its event) is written; it shows in status until the owner
    // repins.
    let after: Vec<(&str, i64)> = base
        .iter()
        .map(|(table, n)| (*table, if ["key_mismatches", "events"].contains(table) { n + 1 } else { *n }))
        .collect();
    assert_eq!(counts(&t.node.home), after);
    let status = t.node.client.status().await.expect("status");
    assert_eq!(status.key_mismatches[0].presented_fingerprint, fork.card.fingerprint.as_str());
    assert_eq!(status.key_mismatches[0].pinned_fingerprint, first.card.fingerprint.as_str());
    // Again: counted on the same record, still refused.
    let again = fork.envelope(EnvelopeKind::KeyRotation, t.card.agent_id, &t.x25519, empty, APPLICATION_JSON);
    t.refused("key mismatch for a pinned id", 403, "key_mismatch", t.send(&again).await, &after).await;
    let status = t.node.client.status().await.expect("status");
    assert_eq!(status.key_mismatches[0].count, 2);
    // The fork's messages do not verify under the pinned key.
    t.refused("message from the fork", 401, "bad_signature", t.send(&t.message(&fork, "hi")).await, &after).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut t, fake) = setup(dir.path()).await;
    let good = t.message(&fake, "once only");
    let (status, _, first) = t.send(&good).await;
    assert_eq!(status, 200, "{first}");
    let base = counts(&t.node.home);

    assert!(t.node.stop().await);
    t.node.restart().await.expect("restart");
    let (status, _, again) = t.send(&good).await;
    assert_eq!((status, again.as_str()), (200, first.as_str()), "the original receipt, from disk");
    assert_eq!(counts(&t.node.home), base, "nothing stored twice");
}

/// A V1 agent driven by the test (PROTOCOLS.md §1): its identity card and signed bodies.
struct V1Fake {
    id: Identity,
    agent_id: String,
    name: String,
}

impl V1Fake {
    fn new(agent_id: &str, name: &str) -> Self {
        V1Fake { id: Identity::generate(), agent_id: agent_id.to_owned(), name: name.to_owned() }
    }

    fn card(&self) -> Value {
        let pem = self.id.ed25519_pem();
        json!({"agent_id": self.agent_id, "display_name": self.name, "endpoint": "http://127.0.0.1:9",
               "public_key": pem, "fingerprint": agentmesh_core::Fingerprint::of(pem.as_bytes()).to_string()})
    }

    fn sign(&self, mut body: Value) -> Value {
        let object = body.as_object().expect("object").clone();
        let bytes = agentmesh_core::canonical::to_string_without(&object, "signature");
        body["signature"] = json!(agentmesh_core::b64::encode(self.id.sign(bytes.as_bytes())));
        body
    }

    fn request(&self, n: u8, at: u64) -> Value {
        self.sign(json!({"type": "contact_request", "request_id": format!("req_{}", format!("{n:02x}").repeat(16)),
            "from": self.card(), "purpose": "v1", "timestamp": agentmesh_core::time::iso_seconds(at)}))
    }

    fn message(&self, to: &str, text: &str) -> Value {
        self.sign(json!({"type": "direct_message", "message_id": format!("msg_{}", uuid_hex()), "from": self.agent_id,
            "to": to, "timestamp": agentmesh_core::time::iso_seconds(now_ms()), "body": {"text": text}}))
    }
}

/// A fresh V1 message id suffix: 32 hex digits, unique within the test run.
fn uuid_hex() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!("{:016x}{:016x}", now_ms(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Target {
    /// A V1 refusal: status, V1 error code, nothing stored.
    async fn v1_refused(&self, what: &str, route: &str, body: Value, status: u16, code: &str, before: &[(&str, i64)]) {
        // V1 agents speak HTTP only.
        let (got, reply, text) = self.post_http(route, body.to_string(), "application/json").await;
        assert_eq!(
            (got, reply["ok"].as_bool(), reply["error"].as_str()),
            (status, Some(false), Some(code)),
            "{what}: {text}"
        );
        assert_eq!(counts(&self.node.home), before, "{what}: nothing may be stored");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bad_input_suite_through_the_v1_adapter() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Many requests from one address: lift the per-address budget (its own test is below).
    let (t, _) = setup_with(dir.path(), "contact_requests_per_hour = 0\n").await;
    let me = t.card.agent_id.to_string();
    let (request_route, message_route) = ("/agent-mesh/contact-request", "/agent-mesh/message");
    let base = counts(&t.node.home);

    // Ids that are not safe peer ids, or a native id in another case: 400.
    let native = Identity::generate().agent_id().to_string().to_uppercase();
    for bad in [".", "..", "a/b", native.as_str()] {
        let fake = V1Fake::new(bad, "odd");
        t.v1_refused(
            &format!("agent id {bad:?}"),
            request_route,
            fake.request(1, now_ms()),
            400,
            "invalid_agent",
            &base,
        )
        .await;
    }
    let v1 = V1Fake::new("agent-0123456789ab", "valerie");
    // Bad signature, stale timestamp (with our clock in the answer), not JSON, wrong type.
    let mut forged = v1.request(1, now_ms());
    forged["purpose"] = json!("changed after signing");
    t.v1_refused("forged request", request_route, forged, 401, "bad_signature", &base).await;
    let (status, reply, _) =
        t.post_http(request_route, v1.request(1, now_ms() - 900_000).to_string(), "application/json").await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("stale_timestamp")));
    assert!(reply["now"].as_u64().is_some_and(|n| n.abs_diff(now_ms()) < 60_000), "{reply}");
    t.v1_refused("not JSON", request_route, json!("text"), 400, "invalid_json", &base).await;
    t.v1_refused("wrong type", request_route, json!({"type": "ping"}), 400, "invalid_type", &base).await;
    let (status, _, _) = t.post_http(request_route, v1.request(1, now_ms()).to_string(), "text/plain").await;
    assert_eq!(status, 415);
    let (status, _, _) = t.post_http(message_route, "x".repeat(300 * 1024), "application/json").await;
    assert_eq!(status, 413);

    // Messages before any request: unknown sender.
    t.v1_refused("unknown sender", message_route, v1.message(&me, "hi"), 403, "unknown_sender", &base).await;

    // A valid request is held for the owner; a replay gets the same answer byte for byte, and a
    // forged copy of the accepted id is refused for its signature.
    let good = v1.request(2, now_ms());
    let (status, _, first) = t.post_http(request_route, good.to_string(), "application/json").await;
    assert_eq!(status, 200, "{first}");
    let after = counts(&t.node.home);
    let (_, _, again) = t.post_http(request_route, good.to_string(), "application/json").await;
    assert_eq!(again, first);
    let mut zeroed = good.clone();
    zeroed["signature"] = json!(agentmesh_core::b64::encode([0u8; 64]));
    t.v1_refused("replayed id, zeroed signature", request_route, zeroed, 401, "bad_signature", &after).await;

    // Before approval its messages are untrusted; to another agent they are misaddressed.
    t.v1_refused("untrusted sender", message_route, v1.message(&me, "hi"), 403, "untrusted_sender", &after).await;
    let held = incoming_requests(&t.node).await.into_iter().find(|r| r.peer_id == "agent-0123456789ab").expect("held");
    // Regression: a V1 request names no recipient; the owner is told it may not be for us alone.
    assert!(held.unbound, "{held:?}");
    let id = held.request_id;
    t.node.client.approve(&id).await.expect("approve");
    let approved = counts(&t.node.home);
    let elsewhere = Identity::generate().agent_id().to_string();
    t.v1_refused("wrong recipient", message_route, v1.message(&elsewhere, "hi"), 400, "wrong_recipient", &approved)
        .await;
    let mut tampered = v1.message(&me, "hi");
    tampered["body"]["text"] = json!("tampered");
    t.v1_refused("tampered message", message_route, tampered, 401, "bad_signature", &approved).await;
    let (status, _, text) = t.post_http(message_route, v1.message(&me, "hello").to_string(), "application/json").await;
    assert_eq!(status, 200, "{text}");

    // A V1 agent posing under a contact's display name is flagged to the owner.
    let carol = V1Fake::new("agent-aaaaaaaaaaaa", "mallory");
    let (status, _, _) = t.post_http(request_route, carol.request(3, now_ms()).to_string(), "application/json").await;
    assert_eq!(status, 200);
    let flagged =
        incoming_requests(&t.node).await.into_iter().find(|r| r.peer_id == "agent-aaaaaaaaaaaa").expect("held");
    assert!(flagged.name_collides_with.is_some(), "same display name as the contact mallory: {flagged:?}");

    // Blocked: refused first, whatever else is wrong.
    t.node.client.block("agent-0123456789ab").await.expect("block");
    let blocked = counts(&t.node.home);
    t.v1_refused("blocked sender", message_route, v1.message(&me, "hi"), 403, "blocked_sender", &blocked).await;
    t.v1_refused("blocked request", request_route, v1.request(4, now_ms()), 403, "blocked_sender", &blocked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_serving_another_key_for_a_pinned_id_is_refused_and_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, genesis) = setup(dir.path()).await;
    // The peer rotates once; the pin follows.
    let first = Fake::rotated(&genesis);
    let announce = first.envelope(EnvelopeKind::KeyRotation, t.card.agent_id, &t.x25519, b"{}", APPLICATION_JSON);
    assert_eq!(t.send(&announce).await.0, 200);
    // A fork (a valid chain from the genesis key that skips the pinned one), served at a URL the
    // owner asks for contact.
    let fork = Fake::rotated(&genesis);
    let card = serde_json::to_value(&fork.card).expect("card");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route("/v1/card", axum::routing::get(move || async move { axum::Json(card) }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let pinned = t.node.client.peers(false).await.expect("peers").peers[0].fingerprint.clone();
    let args = agentmesh_api::control::ContactArgs { to: url, purpose: "again".into(), ..Default::default() };
    let err = t.node.client.request_contact(&args).await.expect_err("refused");
    assert!(
        matches!(&err, agentmesh_client::ClientError::Api { status: 409, code, .. } if code == "key_mismatch"),
        "{err:?}"
    );
    // Recorded for the owner although the request failed, and told once.
    let status = t.node.client.status().await.expect("status");
    let mismatch = status.key_mismatches.first().expect("a key mismatch on record");
    assert_eq!(mismatch.presented_fingerprint, fork.card.fingerprint.as_str());
    assert_eq!(mismatch.pinned_fingerprint, pinned);
    assert_eq!(mismatch.direction, agentmesh_api::MismatchDirection::Outbound);
    let log = t.node.client.event_list(&Default::default()).await.expect("events");
    assert_eq!(log.events.iter().filter(|e| e.event.kind() == "key_mismatch").count(), 1);
    // The pin did not move.
    assert_eq!(t.node.client.peers(false).await.expect("peers").peers[0].fingerprint, pinned);
}

/// A second fake peer that `t`'s owner approves, asking with request id `req_` + `n` repeated.
async fn another_contact(t: &Target, name: &str, n: u8) -> Fake {
    let fake = Fake::new(name);
    let (status, _, text) = t.send(&t.contact_request(&fake, n)).await;
    assert_eq!(status, 200, "{text}");
    let id = format!("req_{}", format!("{n:02x}").repeat(16));
    t.node.client.approve(&id).await.expect("approve");
    fake
}

/// A step of a conversation (call, task, file transfer) from `from` to `t`: a `message` envelope
/// of `content_type` whose body is `body` (JSON) and whose thread is `thread`.
fn conversation_step(t: &Target, from: &Fake, content_type: &str, body: Value, thread: &str) -> Envelope {
    let bytes = serde_json::to_vec(&body).expect("json");
    let mut draft = Draft::new(
        EnvelopeKind::Message,
        from.id.agent_id(),
        t.card.agent_id,
        now_ms(),
        3_600_000,
        content_type,
        bytes,
    );
    draft.thread = Some(thread.to_owned());
    draft.seal(&t.x25519).expect("seal").sign(&from.id, now_ms())
}

/// A call step from `from` to `t`: `body` as the call JSON, `thread` as the envelope's thread.
fn call_step(t: &Target, from: &Fake, body: Value, thread: &str) -> Envelope {
    conversation_step(t, from, agentmesh_core::call::CALL_CONTENT_TYPE, body, thread)
}

#[tokio::test(flavor = "multi_thread")]
async fn call_steps_out_of_shape_out_of_turn_or_about_another_peers_call_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, fake) = setup(dir.path()).await;
    let id = agentmesh_core::call::new_call_id();
    let ring_until = now_ms() + 60_000;
    let invite = json!({"call_id": id, "op": "invite", "topic": "t", "ring_until": ring_until});

    let before = counts(&t.node.home);
    let cases = [
        ("a line in no call", json!({"call_id": id, "op": "say", "text": "hi"}), id.clone(), 404, "unknown_call"),
        ("an unknown step", json!({"call_id": id, "op": "dance"}), id.clone(), 400, "malformed_body"),
        ("a thread that is not the call", invite.clone(), "other".to_owned(), 400, "malformed_body"),
        (
            "a call id out of shape",
            json!({"call_id": "call_X", "op": "accept"}),
            "call_X".to_owned(),
            400,
            "malformed_body",
        ),
        (
            "a topic over 1000 characters",
            json!({"call_id": id, "op": "invite", "topic": "x".repeat(1001), "ring_until": ring_until}),
            id.clone(),
            400,
            "malformed_body",
        ),
    ];
    for (what, body, thread, status, code) in cases {
        t.refused(what, status, code, t.send(&call_step(&t, &fake, body, &thread)).await, &before).await;
    }

    // A real invitation rings; steps out of turn change nothing.
    let (status, _, text) = t.send(&call_step(&t, &fake, invite.clone(), &id)).await;
    assert_eq!(status, 200, "{text}");
    let call = t.node.client.transcript(&id).await.expect("the call rings").call;
    assert_eq!(call.state, agentmesh_api::CallState::Ringing);
    let before = counts(&t.node.home);
    let say = json!({"call_id": id, "op": "say", "text": "hi"});
    t.refused(
        "a line before the answer",
        409,
        "call_state",
        t.send(&call_step(&t, &fake, say.clone(), &id)).await,
        &before,
    )
    .await;
    let accept = json!({"call_id": id, "op": "accept"});
    t.refused(
        "the caller answering its own call",
        409,
        "call_state",
        t.send(&call_step(&t, &fake, accept, &id)).await,
        &before,
    )
    .await;

    // Another contact can neither speak in the call nor take its id over.
    let other = another_contact(&t, "trudy", 0xcd).await;
    let before = counts(&t.node.home);
    t.refused("another peer's line", 404, "unknown_call", t.send(&call_step(&t, &other, say, &id)).await, &before)
        .await;
    t.refused(
        "another peer's invitation under the id",
        409,
        "duplicate_call",
        t.send(&call_step(&t, &other, invite, &id)).await,
        &before,
    )
    .await;
    assert_eq!(t.node.client.transcript(&id).await.expect("call").call.state, agentmesh_api::CallState::Ringing);
}

/// A task step from `from` to `t`.
fn task_step(t: &Target, from: &Fake, body: Value, thread: &str) -> Envelope {
    conversation_step(t, from, agentmesh_core::task::TASK_CONTENT_TYPE, body, thread)
}

#[tokio::test(flavor = "multi_thread")]
async fn task_steps_out_of_shape_out_of_turn_or_about_another_peers_task_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, fake) = setup(dir.path()).await;
    let id = agentmesh_core::task::new_task_id();
    let create = json!({"task_id": id, "op": "create", "text": "do it"});
    let update = json!({"task_id": id, "op": "update", "seq": 1, "state": "completed"});

    let before = counts(&t.node.home);
    let cases = [
        ("an update of no task", update.clone(), id.clone(), 404, "unknown_task"),
        ("an unknown step", json!({"task_id": id, "op": "dance"}), id.clone(), 400, "malformed_body"),
        (
            "an unknown state",
            json!({"task_id": id, "op": "update", "seq": 1, "state": "done"}),
            id.clone(),
            400,
            "malformed_body",
        ),
        ("a thread that is not the task", create.clone(), "other".to_owned(), 400, "malformed_body"),
        (
            "a task id out of shape",
            json!({"task_id": "task_1", "op": "cancel"}),
            "task_1".to_owned(),
            400,
            "malformed_body",
        ),
        (
            "an artifact without parts",
            json!({"task_id": id, "op": "update", "seq": 1, "state": "working", "artifacts": [{"artifact_id": "a", "parts": []}]}),
            id.clone(),
            400,
            "malformed_body",
        ),
    ];
    for (what, body, thread, status, code) in cases {
        t.refused(what, status, code, t.send(&task_step(&t, &fake, body, &thread)).await, &before).await;
    }

    // A real delegation; the delegator cannot report on its own task.
    let (status, _, text) = t.send(&task_step(&t, &fake, create.clone(), &id)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(t.node.client.task(&id).await.expect("the task").task.state, agentmesh_api::TaskState::Submitted);
    let before = counts(&t.node.home);
    t.refused("the delegator reporting", 409, "task_state", t.send(&task_step(&t, &fake, update, &id)).await, &before)
        .await;

    // Another contact can neither touch the task nor take its id over.
    let other = another_contact(&t, "trudy", 0xcd).await;
    let before = counts(&t.node.home);
    let cancel = json!({"task_id": id, "op": "cancel"});
    t.refused("another peer's cancel", 404, "unknown_task", t.send(&task_step(&t, &other, cancel, &id)).await, &before)
        .await;
    t.refused(
        "another peer's task under the id",
        409,
        "duplicate_task",
        t.send(&task_step(&t, &other, create, &id)).await,
        &before,
    )
    .await;
    assert_eq!(t.node.client.task(&id).await.expect("task").task.state, agentmesh_api::TaskState::Submitted);
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_that_overtake_each_other_keep_every_artifact_and_late_answers_get_one_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, fake) = setup(dir.path()).await;
    let fake_id = fake.id.agent_id().to_string();

    // We delegate to the fake worker (our envelopes to it go nowhere: its endpoint is closed).
    let args = agentmesh_api::control::DelegateArgs { to: fake_id.clone(), text: "work".into(), ..Default::default() };
    let id = t.node.client.delegate(&args).await.expect("delegate").task.task_id;
    let mut events = t.node.client.events(None).await.expect("events");
    let art = |a: &str| json!({"artifact_id": a, "parts": [{"kind": "text", "text": a.repeat(1000)}]});
    // The final update arrives first, the earlier one (with its own artifact) after it.
    let done = json!({"task_id": id, "op": "update", "seq": 2, "state": "completed", "artifacts": [art("p2")]});
    let early = json!({"task_id": id, "op": "update", "seq": 1, "state": "working", "artifacts": [art("p1")]});
    for body in [done, early] {
        let (status, _, text) = t.send(&task_step(&t, &fake, body, &id)).await;
        assert_eq!(status, 200, "{text}");
    }
    let task = t.node.client.task(&id).await.expect("task").task;
    assert_eq!(task.state, agentmesh_api::TaskState::Completed, "an older update never moves a task back");
    let ids: Vec<&str> = task.artifacts.iter().map(|a| a.artifact_id.as_str()).collect();
    assert_eq!(ids, ["p2", "p1"], "the overtaken update's artifact is kept");
    // Task events carry the entry's artifacts, never the task's whole set again.
    let mut seen = 0;
    while seen < 2 {
        let item = tokio::time::timeout(WAIT, events.next()).await.expect("event").expect("open").expect("frame");
        if let agentmesh_client::StreamItem::Event(e) = item
            && let agentmesh_api::Event::Task { task, entry: Some(entry) } = &e.event
            && entry.speaker == agentmesh_api::Side::Peer
        {
            assert!(task.artifacts.is_empty() && entry.artifacts.len() == 1, "{e:?}");
            seen += 1;
        }
    }
    let submitted = json!({"task_id": id, "op": "update", "seq": 3, "state": "submitted"});
    let before = counts(&t.node.home);
    t.refused(
        "an update back to submitted",
        400,
        "malformed_body",
        t.send(&task_step(&t, &fake, submitted, &id)).await,
        &before,
    )
    .await;

    // A call to the fake rings out; its late answers get one `end` back, however many come.
    let call = agentmesh_api::control::CallArgs { to: fake_id, topic: "late".into(), ring_secs: Some(1) };
    let call_id = t.node.client.call(&call).await.expect("call").call.call_id;
    wait_for(WAIT, || async {
        let tr = t.node.client.transcript(&call_id).await.ok()?;
        (tr.call.state == agentmesh_api::CallState::Missed).then_some(())
    })
    .await
    .expect("missed");
    for _ in 0..2 {
        let accept = json!({"call_id": call_id, "op": "accept"});
        let (status, _, text) = t.send(&call_step(&t, &fake, accept, &call_id)).await;
        assert_eq!(status, 200, "{text}");
    }
    let lines = t.node.client.transcript(&call_id).await.expect("transcript").lines;
    let ends =
        lines.iter().filter(|l| l.kind == agentmesh_api::LineKind::End && l.speaker == agentmesh_api::Side::Us).count();
    let accepts = lines.iter().filter(|l| l.kind == agentmesh_api::LineKind::Accept).count();
    assert_eq!((accepts, ends), (2, 1), "{lines:#?}");
}

/// A file step from `from` to `t`: `body` as the file JSON, `thread` as the envelope's thread.
fn file_step(t: &Target, from: &Fake, body: Value, thread: &str) -> Envelope {
    conversation_step(t, from, agentmesh_core::file::FILE_CONTENT_TYPE, body, thread)
}

#[tokio::test(flavor = "multi_thread")]
async fn file_steps_out_of_shape_from_strangers_or_about_unknown_transfers_are_refused() {
    use agentmesh_core::file::{TransferKey, new_transfer_id};
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, fake) = setup(dir.path()).await;
    let id = new_transfer_id();
    let key = TransferKey::generate().to_base64();
    let offer = |name: &str, chunk_size: u32, key: &str| {
        json!({"transfer_id": id, "op": "offer", "name": name, "size": 10, "sha256": "a".repeat(64),
               "chunk_size": chunk_size, "key": key})
    };
    let before = counts(&t.node.home);
    let received = json!({"transfer_id": id, "op": "received", "sha256": "a".repeat(64)});
    let cases = [
        ("a receipt for no transfer", received.clone(), id.clone(), 404, "unknown_transfer"),
        ("an unknown step", json!({"transfer_id": id, "op": "dance"}), id.clone(), 400, "malformed_body"),
        ("a thread that is not the transfer", offer("a", 65536, &key), "other".to_owned(), 400, "malformed_body"),
        ("a chunk size out of range", offer("a", 1, &key), id.clone(), 400, "malformed_body"),
        ("a key that is not 32 bytes", offer("a", 65536, "AAAA"), id.clone(), 400, "malformed_body"),
        ("an empty name", offer("", 65536, &key), id.clone(), 400, "malformed_body"),
        (
            "a transfer id out of shape",
            json!({"transfer_id": "file_X", "op": "cancel"}),
            "file_X".to_owned(),
            400,
            "malformed_body",
        ),
    ];
    for (what, body, thread, status, code) in cases {
        t.refused(what, status, code, t.send(&file_step(&t, &fake, body, &thread)).await, &before).await;
    }
    let stranger = Fake::new("mallory");
    t.refused(
        "a stranger's offer",
        403,
        "unknown_sender",
        t.send(&file_step(&t, &stranger, offer("a", 65536, &key), &id)).await,
        &before,
    )
    .await;

    // A real offer waits for the owner (the name as offered; sanitised only when saved).
    let (status, _, text) = t.send(&file_step(&t, &fake, offer("../../evil", 65536, &key), &id)).await;
    assert_eq!(status, 200, "{text}");
    let offered = t.node.client.file(&id).await.expect("offered").transfer;
    assert_eq!((offered.state, offered.name.as_str()), (agentmesh_api::TransferState::Offered, "../../evil"));
    let before = counts(&t.node.home);
    t.refused(
        "the sender confirming its own file",
        409,
        "transfer_state",
        t.send(&file_step(&t, &fake, received, &id)).await,
        &before,
    )
    .await;
    let other = another_contact(&t, "trudy", 0xce).await;
    let before = counts(&t.node.home);
    let cancel = json!({"transfer_id": id, "op": "cancel"});
    t.refused(
        "another peer cancelling it",
        404,
        "unknown_transfer",
        t.send(&file_step(&t, &other, cancel, &id)).await,
        &before,
    )
    .await;
    assert_eq!(t.node.client.file(&id).await.expect("file").transfer.state, agentmesh_api::TransferState::Offered);
}
