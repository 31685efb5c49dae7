//! Claims of the README and SECURITY.md that no other test proved: each test names the claim.
//!
//! Real `agentmesh` processes on 127.0.0.1; where a claim is about what crosses the wire, a
//! loopback stand-in plays the other side (a man-in-the-middle proxy, a gateway, a raw poster).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentmesh_api::control::{AnswerArgs, CallArgs, DelegateArgs, DiscoverQuery, EventListQuery, UpdateTaskArgs};
use agentmesh_api::{CallState, Direction, Event, LoggedEvent, MessageStatus, StreamNotice, TaskState, TransferState};
use agentmesh_client::{ClientError, StreamItem};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, DeliveryReceipt, Identity, PeerRecord, b64};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

use crate::support::*;

/// Locks a test mutex, whatever a panicking holder left.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every event of `node`'s log, oldest first.
async fn all_events(node: &LocalNode) -> Vec<LoggedEvent> {
    let mut out: Vec<LoggedEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let q = EventListQuery { after: Some(after), limit: Some(1000) };
        let page = node.client.event_list(&q).await.expect("event log").events;
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The final failure of outgoing envelope `id` at `node`, as its `status` event tells it:
/// (error, peer's code).
async fn failed_delivery(node: &LocalNode, id: &str) -> (String, Option<String>) {
    let found = wait_for(WAIT, || async {
        all_events(node).await.into_iter().find_map(|e| match e.event {
            Event::Status { id: sent, status: MessageStatus::Failed, error, code, .. } if sent == id => {
                Some((error.unwrap_or_default(), code))
            }
            _ => None,
        })
    })
    .await;
    found.unwrap_or_else(|| panic!("{id} never failed at {}", node.agent_id))
}

// ---------------------------------------------------------------------------------------------
// 1. Receipts
// ---------------------------------------------------------------------------------------------

/// How the man-in-the-middle rewrites the receiver's delivery receipts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receipts {
    /// Passed on untouched.
    Honest,
    /// The receiver's receipt with one bit of its signature flipped.
    BadSignature,
    /// The receiver's fields, signed by another key.
    SignedByStranger,
    /// Changed after it was signed (`at`): the signature covers another digest.
    Altered,
    /// Signed by the receiver's own key, for another message id.
    OtherMessage,
    /// Signed by the receiver's own key, addressed to another sender.
    OtherRecipient,
    /// A genuine receipt, from and signed by another agent.
    OtherSigner,
    /// Signed by the receiver's own key, with a status other than `delivered`.
    NotDelivered,
}

/// A proxy in front of the receiver's peer API that rewrites every receipt in its answers.
struct ReceiptProxy {
    upstream: String,
    mode: Mutex<Receipts>,
    /// The receiver's keys (read from its home): a compromised path cannot have them, but
    /// receipts signed with them prove the sender checks more than the signature.
    receiver: Identity,
    stranger: Identity,
    /// Receipts rewritten, by the message id they answered.
    tampered: Mutex<HashMap<String, u32>>,
}

impl ReceiptProxy {
    fn tampered(&self, id: &str) -> u32 {
        lock(&self.tampered).get(id).copied().unwrap_or(0)
    }

    fn rewrite(&self, receipt: &mut Value) {
        let mode = *lock(&self.mode);
        if mode == Receipts::Honest {
            return;
        }
        let Ok(mut r) = serde_json::from_value::<DeliveryReceipt>(receipt.clone()) else { return };
        *lock(&self.tampered).entry(r.message_id.clone()).or_default() += 1;
        let sign = |mut r: DeliveryReceipt, by: &Identity| {
            r.sig = b64::encode(by.sign(&r.signing_bytes()));
            r
        };
        let r = match mode {
            Receipts::Honest => r,
            Receipts::BadSignature => {
                let mut sig = b64::decode(&r.sig).expect("a base64 signature");
                sig[17] ^= 0x01;
                r.sig = b64::encode(sig);
                r
            }
            Receipts::SignedByStranger => sign(r, &self.stranger),
            Receipts::Altered => {
                r.at += 1;
                r
            }
            Receipts::OtherMessage => {
                r.message_id = format!("{}0", r.message_id);
                sign(r, &self.receiver)
            }
            Receipts::OtherRecipient => {
                r.to = self.stranger.agent_id();
                sign(r, &self.receiver)
            }
            Receipts::OtherSigner => {
                r.from = self.stranger.agent_id();
                sign(r, &self.stranger)
            }
            Receipts::NotDelivered => {
                r.status = "read".into();
                sign(r, &self.receiver)
            }
        };
        *receipt = serde_json::to_value(r).expect("receipt json");
    }
}

/// Serves `proxy` on `listener`: forwards everything to the receiver, rewrites the receipts of
/// single-envelope and batch answers.
fn serve_receipt_proxy(listener: tokio::net::TcpListener, proxy: Arc<ReceiptProxy>) {
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, proxy) = (http.clone(), Arc::clone(&proxy));
        async move {
            let url = format!("{}{}", proxy.upstream, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let mut req = http.request(method, &url).body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    req = req.header(name, value);
                }
            }
            let resp = req.send().await.expect("upstream");
            let status = resp.status();
            let content_type = resp.headers().get("content-type").cloned();
            let mut bytes = resp.bytes().await.expect("upstream body").to_vec();
            if status.is_success()
                && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
            {
                if let Some(receipt) = answer.get_mut("receipt") {
                    proxy.rewrite(receipt);
                }
                if let Some(results) = answer.get_mut("results").and_then(Value::as_array_mut) {
                    for result in results {
                        if let Some(receipt) = result.get_mut("receipt").filter(|r| r.is_object()) {
                            proxy.rewrite(receipt);
                        }
                    }
                }
                bytes = serde_json::to_vec(&answer).expect("json");
            }
            let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
            *out.status_mut() = status;
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sender_marks_a_message_delivered_only_on_a_receipt_that_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_url = format!("http://{}", listener.local_addr().expect("addr"));
    // Bob advertises the proxy: everything alice sends him, and every receipt, passes it.
    let bob_home = dir.path().join("bob");
    local::init(&exe(), &bob_home, "bob", &["chat"]).expect("init");
    // Over HTTP even when the suites run over iroh: the proxy is what this test is about.
    std::fs::write(bob_home.join("config.toml"), "messages_per_minute = 0\n[iroh]\nfirst = false\n").expect("config");
    let b = LocalNode::start(&exe(), &bob_home, "127.0.0.1:0", &[("AGENTMESH_ENDPOINT", &proxy_url)])
        .await
        .expect("start bob");
    let proxy = Arc::new(ReceiptProxy {
        upstream: b.peer_url.clone(),
        mode: Mutex::new(Receipts::Honest),
        receiver: agentmesh_node::Home::new(&bob_home).load_identity().expect("bob's keys"),
        stranger: Identity::generate(),
        tampered: Mutex::default(),
    });
    serve_receipt_proxy(listener, Arc::clone(&proxy));
    let fast = "retry_base_ms = 50\nretry_max_ms = 200\nmax_attempts = 100000\n";
    let a = node_with(dir.path(), "alice", fast, &[]).await;
    trust(&a, &b).await;
    let bob_at_alice = peer(&a, &b.agent_id).await.expect("bob is alice's peer");
    assert_eq!(bob_at_alice.endpoint.trim_end_matches('/'), proxy_url, "alice reaches bob through the proxy");

    let cases = [
        (Receipts::BadSignature, "does not verify"),
        (Receipts::SignedByStranger, "does not verify"),
        (Receipts::Altered, "does not verify"),
        (Receipts::OtherMessage, "for something else"),
        (Receipts::OtherRecipient, "for something else"),
        (Receipts::OtherSigner, "for something else"),
        (Receipts::NotDelivered, "for something else"),
    ];
    let mut sent: Vec<String> = Vec::new();
    for (mode, why) in cases {
        *lock(&proxy.mode) = mode;
        let id = send(&a, &b.agent_id, &format!("{mode:?}")).await;
        // Bob stores it and answers; alice, refusing the receipt, asks again (and again).
        let retried = wait_for(WAIT, || async { (proxy.tampered(&id) >= 3).then_some(()) }).await;
        assert!(retried.is_some(), "{mode:?}: alice did not retry ({} rewritten receipts)", proxy.tampered(&id));
        let m = outgoing(&a, &id).await.expect("listed");
        assert_eq!(m.status, MessageStatus::Sent, "{mode:?}: {m:?}");
        assert!(m.last_error.as_deref().is_some_and(|e| e.contains(why)), "{mode:?}: {m:?}");
        assert!(m.attempts.unwrap_or(0) >= 2, "{mode:?}: {m:?}");
        assert!(m.delivered_at.is_none(), "{mode:?}: {m:?}");
        assert!(inbox(&b).await.iter().any(|r| r.id == id), "{mode:?}: bob stored it");
        sent.push(id);
        for earlier in &sent {
            let m = outgoing(&a, earlier).await.expect("listed");
            assert_eq!(m.status, MessageStatus::Sent, "{mode:?}: an earlier message moved: {m:?}");
        }
    }
    let delivered = |events: &[LoggedEvent], id: &str| {
        events
            .iter()
            .filter(|e| matches!(&e.event, Event::Status { id: x, status: MessageStatus::Delivered, .. } if x == id))
            .count()
    };
    let log = all_events(&a).await;
    assert!(sent.iter().all(|id| delivered(&log, id) == 0), "no delivery was logged on a bad receipt");

    // Honest receipts again: each message is delivered, once.
    *lock(&proxy.mode) = Receipts::Honest;
    let mut attempts = HashMap::new();
    for id in &sent {
        let m = wait_status(&a, id, MessageStatus::Delivered).await;
        assert!(m.delivered_at.is_some());
        attempts.insert(id.clone(), m.attempts);
    }
    // One more message through the same path: once it is delivered, the others have not been
    // tried again.
    let last = send(&a, &b.agent_id, "honest").await;
    wait_status(&a, &last, MessageStatus::Delivered).await;
    let log = all_events(&a).await;
    let stored = inbox(&b).await;
    for id in &sent {
        assert_eq!(delivered(&log, id), 1, "{id}: one delivery event");
        assert_eq!(stored.iter().filter(|m| m.id == *id).count(), 1, "{id}: stored once by bob");
        let m = outgoing(&a, id).await.expect("listed");
        assert_eq!((m.status, m.attempts), (MessageStatus::Delivered, attempts[id]), "{id}: not sent again");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Gossip records
// ---------------------------------------------------------------------------------------------

fn card_for(identity: &Identity, name: &str, endpoint: &str) -> AgentCard {
    AgentCard::new(identity, name, vec![endpoint.to_owned()], vec!["gossip".into()], vec![], now_ms())
}

fn record_for(identity: &Identity, name: &str, endpoint: &str) -> PeerRecord {
    PeerRecord::sign(identity, card_for(identity, name, endpoint), now_ms(), 600_000)
}

/// Agent ids `node` knows of, from every source.
async fn known_ids(node: &LocalNode) -> Vec<String> {
    let q = DiscoverQuery { limit: Some(10_000), ..DiscoverQuery::default() };
    node.client.discover(&q).await.expect("discover").agents.into_iter().map(|a| a.agent_id.to_string()).collect()
}

/// Posts `record` to `base`'s gossip route: (status, answer).
async fn announce(base: &str, record: &Value) -> (u16, Value) {
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let r = http
        .post(format!("{base}/v1/gossip/announce"))
        .header("content-type", "application/json")
        .body(record.to_string())
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn gossip_records_are_verified_before_they_are_stored_or_passed_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = node_with(dir.path(), "bob", "other_requests_per_minute = 0\n", &[]).await;
    let config = format!("bootstrap = [\"{}\"]\ngossip_interval_secs = 1\n", b.peer_url);
    let c = node_with(dir.path(), "carol", &config, &[]).await;
    // Carol gossips with bob: each round she announces herself and stores what he passes on.
    wait_for(WAIT, || async { known_ids(&b).await.contains(&c.agent_id).then_some(()) })
        .await
        .expect("bob learns carol");
    let before = counts(&b.home);

    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let bobs_own: Value = http
        .get(format!("{}/v1/gossip/peers", b.peer_url))
        .send()
        .await
        .expect("get")
        .json::<Value>()
        .await
        .expect("json")["peers"][0]
        .clone();
    assert_eq!(bobs_own["card"]["agent_id"], b.agent_id.as_str());

    let (forged_id, expired_id, tampered_id, ftp_id, imposter) =
        (Identity::generate(), Identity::generate(), Identity::generate(), Identity::generate(), Identity::generate());
    let endpoint = "http://127.0.0.1:9";
    // Signed by another key than the card's.
    let mut forged = record_for(&forged_id, "forged", endpoint);
    forged.sig = b64::encode(imposter.sign(&forged.signing_bytes()));
    // Validity over an hour ago.
    let expired =
        PeerRecord::sign(&expired_id, card_for(&expired_id, "expired", endpoint), now_ms() - 3_600_000, 60_000);
    // A relay extending a genuine record's validity.
    let mut tampered = record_for(&tampered_id, "tampered", endpoint);
    tampered.expires_at += 3_600_000;
    // A card claiming carol's id under another key, self-signed and wrapped by that key.
    let mut card = card_for(&imposter, "carol", endpoint);
    card.agent_id = c.agent_id.parse().expect("carol's id");
    card.sig = b64::encode(imposter.sign(&card.signing_bytes()));
    let claims_carol = PeerRecord::sign(&imposter, card, now_ms(), 600_000);
    // No http(s) endpoint to reach it by.
    let no_http = record_for(&ftp_id, "ftp", "ftp://127.0.0.1:21");
    let bad_ids: Vec<String> =
        [&forged_id, &expired_id, &tampered_id, &ftp_id, &imposter].iter().map(|i| i.agent_id().to_string()).collect();

    let json = |r: &PeerRecord| serde_json::to_value(r).expect("record json");
    for (what, record, code) in [
        ("forged", json(&forged), "invalid_record"),
        ("expired", json(&expired), "invalid_record"),
        ("tampered", json(&tampered), "invalid_record"),
        ("claims carol's id", json(&claims_carol), "invalid_record"),
        ("no http endpoint", json(&no_http), "invalid_record"),
        ("bob's own", bobs_own.clone(), "self_record"),
    ] {
        let (status, answer) = announce(&b.peer_url, &record).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{what}: {answer}");
    }
    assert_eq!(counts(&b.home), before, "refused records store nothing");

    // A valid record posted after them: once carol has it from bob, she has had every answer
    // bob could pass the bad ones on in.
    let good_id = Identity::generate();
    let (status, answer) = announce(&b.peer_url, &json(&record_for(&good_id, "good", endpoint))).await;
    assert_eq!(status, 200, "{answer}");
    let good = good_id.agent_id().to_string();
    wait_for(WAIT, || async { known_ids(&c).await.contains(&good).then_some(()) })
        .await
        .expect("carol learns the valid record from bob");

    for (node, name) in [(&b, "bob"), (&c, "carol")] {
        let known = known_ids(node).await;
        for id in &bad_ids {
            assert!(!known.contains(id), "{name} holds the refused record of {id}");
        }
    }
    let listed = ok(&b.home, &["discover"]);
    let listed: Vec<&str> =
        listed["agents"].as_array().expect("agents").iter().filter_map(|a| a["agent_id"].as_str()).collect();
    assert!(!listed.contains(&b.agent_id.as_str()), "bob never lists himself: {listed:?}");
    assert!(listed.contains(&good.as_str()) && listed.contains(&c.agent_id.as_str()), "{listed:?}");
    let carol_at_bob = b.client.discover(&DiscoverQuery { limit: Some(100), ..DiscoverQuery::default() }).await;
    let carol_at_bob = carol_at_bob.expect("discover").agents.into_iter().find(|a| a.agent_id.as_str() == c.agent_id);
    let carol_fp = agentmesh_node::Home::new(&c.home).load_identity().expect("carol's keys").fingerprint();
    assert_eq!(
        carol_at_bob.map(|a| a.fingerprint),
        Some(carol_fp.to_string()),
        "carol's entry keeps her own key, not the imposter's"
    );
    let passed: Value =
        http.get(format!("{}/v1/gossip/peers", b.peer_url)).send().await.expect("get").json().await.expect("json");
    let passed: Vec<&str> =
        passed["peers"].as_array().expect("peers").iter().filter_map(|p| p["card"]["agent_id"].as_str()).collect();
    assert!(bad_ids.iter().all(|id| !passed.contains(&id.as_str())), "bob passes on only what verified: {passed:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Open calls and tasks
// ---------------------------------------------------------------------------------------------

async fn ring(from: &LocalNode, to: &LocalNode) -> (String, String) {
    let args = CallArgs { to: to.agent_id.clone(), topic: "caps".into(), ring_secs: None };
    let call = from.client.call(&args).await.expect("call").call;
    let t = from.client.transcript(&call.call_id).await.expect("transcript");
    let invite = t.lines.first().expect("the invite line").line_id.clone();
    (call.call_id, invite)
}

async fn rings_at(node: &LocalNode, id: &str) {
    let rang = wait_for(WAIT, || async {
        (node.client.transcript(id).await.ok()?.call.state == CallState::Ringing).then_some(())
    })
    .await;
    assert!(rang.is_some(), "call {id} never rang at {}", node.agent_id);
}

async fn delegate(from: &LocalNode, to: &LocalNode) -> (String, String) {
    let args = DelegateArgs { to: to.agent_id.clone(), text: "count to three".into(), data: None, task_id: None };
    let task = from.client.delegate(&args).await.expect("delegate").task;
    let detail = from.client.task(&task.task_id).await.expect("task");
    let create = detail.history.first().expect("the create entry").entry_id.clone();
    (task.task_id, create)
}

async fn arrives_at(node: &LocalNode, id: &str) {
    let arrived = wait_for(WAIT, || async { node.client.task(id).await.ok().map(|_| ()) }).await;
    assert!(arrived.is_some(), "task {id} never arrived at {}", node.agent_id);
}

/// The refusal `sender` got for envelope `id`: 409 with `code`.
async fn refused_with(sender: &LocalNode, id: &str, code: &str) {
    let (error, got) = failed_delivery(sender, id).await;
    assert_eq!(got.as_deref(), Some(code), "{error}");
    assert!(error.contains(&format!("409 {code}")), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_calls_and_tasks_are_capped_per_peer_and_in_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let caps = "max_open_calls_per_peer = 2\nmax_open_calls = 3\nmax_open_tasks_per_peer = 2\nmax_open_tasks = 3\n";
    let b = node_with(dir.path(), "bob", caps, &[]).await;
    let (a, c) = (node(dir.path(), "alice").await, node(dir.path(), "carol").await);
    trust(&a, &b).await;
    trust(&c, &b).await;

    // Calls: alice's share is two.
    let (first, _) = ring(&a, &b).await;
    let (second, _) = ring(&a, &b).await;
    rings_at(&b, &first).await;
    rings_at(&b, &second).await;
    let before = counts(&b.home);
    let (third, invite) = ring(&a, &b).await;
    refused_with(&a, &invite, "too_many_calls").await;
    assert_eq!(counts(&b.home), before, "a refused invitation stores nothing");
    assert!(b.client.transcript(&third).await.is_err(), "bob has no such call");
    // Carol gets the last place of the three; then that is full for her too.
    let (carols, _) = ring(&c, &b).await;
    rings_at(&b, &carols).await;
    let before = counts(&b.home);
    let (_, invite) = ring(&c, &b).await;
    refused_with(&c, &invite, "too_many_calls").await;
    assert_eq!(counts(&b.home), before, "a refused invitation stores nothing");
    // Ending one frees a place: bob declines one of alice's, and her next call rings.
    b.client.answer(&first, &AnswerArgs { accept: false, reason: None }).await.expect("decline");
    let (again, _) = ring(&a, &b).await;
    rings_at(&b, &again).await;

    // Tasks, the same way.
    let (t1, _) = delegate(&a, &b).await;
    let (t2, _) = delegate(&a, &b).await;
    arrives_at(&b, &t1).await;
    arrives_at(&b, &t2).await;
    let before = counts(&b.home);
    let (t3, create) = delegate(&a, &b).await;
    refused_with(&a, &create, "too_many_tasks").await;
    assert_eq!(counts(&b.home), before, "a refused delegation stores nothing");
    assert!(b.client.task(&t3).await.is_err(), "bob has no such task");
    let (carols, _) = delegate(&c, &b).await;
    arrives_at(&b, &carols).await;
    let before = counts(&b.home);
    let (_, create) = delegate(&c, &b).await;
    refused_with(&c, &create, "too_many_tasks").await;
    assert_eq!(counts(&b.home), before, "a refused delegation stores nothing");
    let done = UpdateTaskArgs { state: TaskState::Completed, text: None, artifacts: vec![] };
    b.client.update_task(&t1, &done).await.expect("complete");
    let (again, _) = delegate(&a, &b).await;
    arrives_at(&b, &again).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Event streams
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn max_event_streams_refuses_one_more_stream_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = node_with(dir.path(), "bob", "max_event_streams = 2\n", &[]).await;
    let first = b.client.events(None).await.expect("first stream");
    let _second = b.client.events(None).await.expect("second stream");
    let refused = |r: Result<agentmesh_client::EventStream, ClientError>| match r {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("a third stream was opened"),
    };
    assert_eq!(refused(b.client.events(None).await), (429, "rate_limited".to_owned()));
    assert_eq!(refused(b.client.events(Some(0)).await), (429, "rate_limited".to_owned()));
    drop(first);
    let third = wait_for(WAIT, || async { b.client.events(None).await.ok() }).await;
    assert!(third.is_some(), "closing a stream never freed its place");
    assert_eq!(refused(b.client.events(None).await), (429, "rate_limited".to_owned()), "one place was freed, not more");
    b.client.status().await.expect("the control API still answers");
}

// ---------------------------------------------------------------------------------------------
// 5. Files changed after the offer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_on_the_senders_disk_after_the_offer_is_not_served() {
    use agentmesh_api::control::SendFileArgs;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let offer = |path: &Path| SendFileArgs {
        to: b.agent_id.clone(),
        path: path.to_string_lossy().into_owned(),
        name: None,
        call_id: None,
    };
    let grown = dir.path().join("grown.txt");
    std::fs::write(&grown, "version one\n").expect("write");
    let touched = dir.path().join("touched.txt");
    std::fs::write(&touched, "same bytes\n").expect("write");
    let mut ids = Vec::new();
    for path in [&grown, &touched] {
        let t = a.client.send_file(&offer(path)).await.expect("offer").transfer;
        let offered = wait_for(WAIT, || async {
            (b.client.file(&t.transfer_id).await.ok()?.transfer.state == TransferState::Offered).then_some(())
        })
        .await;
        assert!(offered.is_some(), "{} never offered", path.display());
        ids.push(t.transfer_id);
    }
    // After the offer: one file grows, the other keeps its size and bytes but not its mtime.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&grown)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"version two\n"))
        .expect("append");
    let mtime = std::fs::metadata(&touched).and_then(|m| m.modified()).expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(&touched)
        .and_then(|f| f.set_modified(mtime - Duration::from_secs(60)))
        .expect("set mtime");
    for id in &ids {
        b.client.accept_file(id).await.expect("accept");
    }
    for id in &ids {
        let at_bob = wait_for(WAIT, || async {
            let t = b.client.file(id).await.ok()?.transfer;
            (!t.state.is_open()).then_some(t)
        })
        .await
        .expect("the download ends");
        assert_eq!(at_bob.state, TransferState::Failed, "{at_bob:?}");
        let why = at_bob.error.clone().unwrap_or_default();
        assert!(why.contains("409") && why.contains("file_changed"), "the receiver says why: {why}");
        assert!(at_bob.path.is_none() && at_bob.bytes_done == 0, "{at_bob:?}");
        let at_alice = wait_for(WAIT, || async {
            let t = a.client.file(id).await.ok()?.transfer;
            (!t.state.is_open()).then_some(t)
        })
        .await
        .expect("the offer ends at alice");
        assert_eq!(at_alice.state, TransferState::Failed, "{at_alice:?}");
        assert!(at_alice.error.as_deref().is_some_and(|e| e.contains("changed")), "{at_alice:?}");
    }
    assert!(!b.home.join("files").join(a.agent_id.as_str()).exists(), "nothing saved");
}

// ---------------------------------------------------------------------------------------------
// 6. The hooks push
// ---------------------------------------------------------------------------------------------

/// One request the fake gateway got: which case its message is, when, and its Authorization.
#[derive(Clone, Debug)]
struct Hit {
    case: String,
    at: Instant,
    auth: String,
}

const CASES: [&str; 6] = ["case-redirect", "case-400", "case-413", "case-429", "case-503", "case-after"];

/// A gateway whose answer depends on the case named in the message and on how often it came.
fn scripted_gateway(listener: tokio::net::TcpListener, hits: Arc<Mutex<Vec<Hit>>>, trap_port: u16) {
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let hits = Arc::clone(&hits);
        async move {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let text = body["message"].as_str().or(body["text"].as_str()).unwrap_or_default().to_owned();
            let case = CASES.iter().find(|c| text.contains(*c)).map_or("other", |c| c).to_owned();
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let seen = {
                let mut hits = lock(&hits);
                hits.push(Hit { case: case.clone(), at: Instant::now(), auth });
                hits.iter().filter(|h| h.case == case).count()
            };
            let ok = (StatusCode::OK, HeaderMap::new(), json!({"ok": true}).to_string());
            let mut headers = HeaderMap::new();
            match (case.as_str(), seen) {
                ("case-redirect", 1) => {
                    let to = format!("http://127.0.0.1:{trap_port}/hooks/agent");
                    headers.insert("location", to.parse().expect("header"));
                    (StatusCode::FOUND, headers, String::new())
                }
                ("case-400", _) => (StatusCode::BAD_REQUEST, headers, json!({"ok": false}).to_string()),
                ("case-413", _) => (StatusCode::PAYLOAD_TOO_LARGE, headers, json!({"ok": false}).to_string()),
                ("case-429", 1) => {
                    headers.insert("retry-after", "2".parse().expect("header"));
                    (StatusCode::TOO_MANY_REQUESTS, headers, String::new())
                }
                ("case-503", 1) => {
                    headers.insert("retry-after", "3".parse().expect("header"));
                    (StatusCode::SERVICE_UNAVAILABLE, headers, String::new())
                }
                _ => ok,
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hooks_push_follows_no_redirect_skips_refused_events_and_honours_retry_after() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // Where the redirect points: it records every connection and what was sent on it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("trap");
    let trap_port = trap.local_addr().expect("addr").port();
    let trapped = Arc::new(Mutex::new((0usize, Vec::<u8>::new())));
    let into_trap = Arc::clone(&trapped);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = trap.accept().await {
            lock(&into_trap).0 += 1;
            let into_trap = Arc::clone(&into_trap);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    lock(&into_trap).1.extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gateway");
    let port = gateway.local_addr().expect("addr").port();
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    scripted_gateway(gateway, Arc::clone(&hits), trap_port);

    let token = "hooks-token-3c9e71";
    let token_file = dir.path().join("hooks.token");
    std::fs::write(&token_file, token).expect("token file");
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let config = format!(
        "[hooks]\nurl = \"http://127.0.0.1:{port}/hooks\"\ntoken_file = \"{}\"\nevents = [\"message\"]\n",
        token_file.display()
    );
    let a = node(dir.path(), "alice").await;
    let b = node_with(dir.path(), "bob", &config, &[]).await;
    trust(&a, &b).await;
    let count = |case: &str| lock(&hits).iter().filter(|h| h.case == case).count();
    for case in &CASES[..5] {
        send(&a, &b.agent_id, case).await;
    }
    let settled = wait_for(Duration::from_secs(40), || async {
        let taken = ["case-redirect", "case-429", "case-503"].iter().all(|c| count(c) >= 2);
        (taken && count("case-400") >= 1 && count("case-413") >= 1).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the gateway saw: {:?}", lock(&hits));
    // A later event goes through: the refused ones did not stop the push.
    send(&a, &b.agent_id, "case-after").await;
    let after = wait_for(WAIT, || async { (count("case-after") >= 1).then_some(()) }).await;
    assert!(after.is_some(), "the event after the refused ones was never pushed: {:?}", lock(&hits));

    let hits = lock(&hits).clone();
    assert_eq!((count("case-400"), count("case-413")), (1, 1), "400 and 413 are not retried: {hits:?}");
    for case in ["case-redirect", "case-429", "case-503", "case-after"] {
        assert_eq!(count(case), if case == "case-after" { 1 } else { 2 }, "{case}: {hits:?}");
    }
    assert!(hits.iter().all(|h| h.auth == format!("Bearer {token}")), "{hits:?}");
    let (connections, bytes) = lock(&trapped).clone();
    assert_eq!(connections, 0, "the redirect was followed");
    assert!(!String::from_utf8_lossy(&bytes).contains(token));
    for (case, secs) in [("case-429", 2), ("case-503", 3)] {
        let times: Vec<Instant> = hits.iter().filter(|h| h.case == case).map(|h| h.at).collect();
        let waited = times[1] - times[0];
        assert!(waited >= Duration::from_secs(secs), "{case}: retried after {waited:?}, Retry-After was {secs} s");
    }
    let log = std::fs::read_to_string(&b.log).expect("log");
    assert!(!log.contains(token), "the token never reaches the log");
}

// ---------------------------------------------------------------------------------------------
// 7. The registry's per-key limit
// ---------------------------------------------------------------------------------------------

struct RegistryProcess {
    child: std::process::Child,
    url: String,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry(home: &Path, extra: &[&str]) -> RegistryProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(exe())
        .arg("--home")
        .arg(home)
        .args(["--json", "registry", "serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(home.join("registry.db"))
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start registry");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready JSON");
    RegistryProcess { child, url: ready["url"].as_str().expect("url").to_owned() }
}

/// Signed registry writes of one agent, with timestamps that always increase.
struct Signer {
    identity: Identity,
    last: u64,
}

impl Signer {
    fn new() -> Self {
        Signer { identity: Identity::generate(), last: 0 }
    }

    fn id(&self) -> String {
        self.identity.agent_id().to_string()
    }

    /// Sends a signed write; returns (status, Retry-After, body).
    async fn send(&mut self, base: &str, method: Method, path: &str, body: Vec<u8>) -> (u16, Option<u64>, Value) {
        self.last = now_ms().max(self.last + 1);
        let headers = agentmesh_registry::model::sign_request(&self.identity, method.as_str(), path, self.last, &body);
        let http = agentmesh_node::net::client(&Default::default()).expect("client");
        let mut req = http.request(method, format!("{base}{path}")).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.body(body).send().await.expect("registry request");
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        (status, retry_after, r.json().await.unwrap_or(Value::Null))
    }

    async fn register(&mut self, base: &str, description: &str) -> (u16, Option<u64>, Value) {
        let registration = agentmesh_registry::Registration {
            hostname: format!("host-{}", &self.id()[..8]),
            display_name: "limited".into(),
            description: description.into(),
            capabilities: vec!["limits".into()],
            p2p_endpoint: "http://127.0.0.1:9".into(),
            visibility: Default::default(),
            card: None,
        };
        let body = serde_json::to_vec(&registration).expect("json");
        self.send(base, Method::POST, "/api/v1/agents/", body).await
    }

    async fn heartbeat(&mut self, base: &str) -> (u16, Option<u64>, Value) {
        let path = format!("/api/v1/agents/{}/heartbeat", self.id());
        self.send(base, Method::POST, &path, Vec::new()).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_limits_signed_writes_per_agent_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 60 signed writes a minute per key: a burst of 60, then one a second.
    let reg = registry(dir.path(), &["--per-key-per-minute", "60", "--per-ip-per-minute", "0"]);
    let mut alice = Signer::new();
    let started = Instant::now();
    let (status, _, created) = alice.register(&reg.url, "first").await;
    assert_eq!(status, 201, "{created}");
    let mut accepted = 1u64;
    let refusal = loop {
        let (status, retry_after, body) = alice.heartbeat(&reg.url).await;
        match status {
            200 => accepted += 1,
            429 => break (retry_after, body),
            other => panic!("heartbeat answered {other}: {body}"),
        }
        assert!(accepted <= 200, "no limit after {accepted} writes");
    };
    let elapsed = started.elapsed().as_secs();
    assert!((60..=61 + elapsed).contains(&accepted), "{accepted} writes accepted in {elapsed} s");
    let (retry_after, body) = refusal;
    assert_eq!(body["detail"], "rate limited", "{body}");
    assert_eq!(retry_after, Some(1), "the real wait, in whole seconds");
    assert_eq!(body["retry_after"], json!(1), "{body}");

    // Over its limit, the key cannot register (update) either, and nothing changes.
    let (status, _, body) = alice.register(&reg.url, "second").await;
    assert_eq!((status, body["detail"].as_str()), (429, Some("rate limited")), "{body}");
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let record: Value = http
        .get(format!("{}/api/v1/agents/{}", reg.url, alice.id()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(record["description"], "first", "{record}");
    // Another key from the same address is not held back by alice's.
    let (status, _, body) = Signer::new().register(&reg.url, "bob").await;
    assert_eq!(status, 201, "{body}");
    // After the announced wait, alice writes again.
    tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
    let (status, _, body) = alice.register(&reg.url, "second").await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// 8. The gap frame
// ---------------------------------------------------------------------------------------------

/// The next frame of `stream`, within [`WAIT`].
async fn next_item(stream: &mut agentmesh_client::EventStream) -> StreamItem {
    tokio::time::timeout(WAIT, stream.next()).await.expect("a frame in time").expect("open").expect("a frame")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_resumed_from_a_pruned_cursor_gets_a_gap_then_the_events_that_remain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let mut b = node_with(dir.path(), "bob", "max_events = 3\n", &[]).await;
    trust(&a, &b).await;
    let cursor = b.client.event_list(&EventListQuery::default()).await.expect("log").last;
    let mut sent = Vec::new();
    for n in 0..6 {
        sent.push(send(&a, &b.agent_id, &format!("pruned {n}")).await);
    }
    for id in &sent {
        wait_status(&a, id, MessageStatus::Delivered).await;
    }
    // The node prunes at start (then every minute): a restart trims the log to `max_events`.
    assert!(b.stop().await);
    b.restart().await.expect("restart");
    let kept = wait_for(WAIT, || async {
        let log = all_events(&b).await;
        log.first().is_some_and(|e| e.seq > cursor + 1).then_some(log)
    })
    .await
    .expect("the log was pruned to max_events");

    let mut stream = b.client.events(Some(cursor)).await.expect("events");
    let StreamItem::Notice(StreamNotice::Gap { after, next }) = next_item(&mut stream).await else {
        panic!("the first frame is not a gap notice")
    };
    assert_eq!(after, cursor);
    assert!(next > cursor + 1, "{next}");
    let mut got = Vec::new();
    while got.len() < kept.len() {
        match next_item(&mut stream).await {
            StreamItem::Event(e) => got.push(*e),
            other => panic!("only events after the gap: {other:?}"),
        }
    }
    assert_eq!(got.first().map(|e| e.seq), Some(next), "the stream goes on at `next`");
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), kept.iter().map(|e| e.seq).collect::<Vec<_>>());
    let newest = sent.last().expect("sent");
    let has_newest = got.iter().any(|e| {
        matches!(&e.event, Event::Message { message } if message.direction == Direction::Incoming && message.id == *newest)
    });
    assert!(has_newest, "the newest message is among what remains: {got:?}");
    // And it stays live.
    let live = send(&a, &b.agent_id, "after the gap").await;
    loop {
        if let StreamItem::Event(e) = next_item(&mut stream).await
            && matches!(&e.event, Event::Message { message } if message.id == live)
        {
            break;
        }
    }
}
