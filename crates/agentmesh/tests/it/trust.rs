//! Where contact stands, on both sides: every change is told to the other side and the two views
//! converge (regression tests for what a new user hit).

use agentmesh_api::{MessageStatus, RequestStatus, Side, TrustState};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn regression_block_then_unblock_leaves_no_one_sided_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    wait_trust(&b, &a.agent_id, TrustState::Trusted).await;

    ok(&b.home, &["block", &a.agent_id]);
    let seen = wait_trust(&a, &b.agent_id, TrustState::Rejected).await;
    let reason = seen.trust_reason.expect("a reason");
    assert_eq!((reason.by, reason.code.as_str()), (Side::Peer, "blocked"));
    ok(&b.home, &["unblock", &a.agent_id]);
    // alice no longer believes bob trusts her: she may ask again, and is not told "already trusted".
    wait_trust(&a, &b.agent_id, TrustState::Discovered).await;
    assert_eq!(fails_with(&a.home, &["send-message", "--to", "bob", "--text", "still there?"]), "not_trusted");
    let asked = ok(&a.home, &["request-contact", "bob", "--purpose", "again"]);
    assert_eq!(asked["outcome"], "delivered");
    let id = asked["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&b, &id).await;
    ok(&b.home, &["approve-request", &id]);
    wait_trust(&a, &b.agent_id, TrustState::Trusted).await;
    let m = send(&a, &b.agent_id, "back in touch").await;
    wait_status(&a, &m, MessageStatus::Delivered).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_blocked_requester_sees_the_refusal_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, z) = (node(dir.path(), "bob").await, node(dir.path(), "zed").await);
    // bob knows zed (a scan found it) and blocks it before zed ever writes.
    ok(&b.home, &["scan", &z.peer_url]);
    ok(&b.home, &["block", "zed"]);

    let out = cli(&z.home, &["request-contact", &b.peer_url, "--purpose", "let me in"]);
    assert!(!out.status.success(), "a refused request exits non-zero");
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(err["error"]["code"], "contact_refused");
    assert!(err["error"]["message"].as_str().expect("msg").contains("blocked_sender"), "{err}");
    let listed = ok(&z.home, &["list-requests", "--outgoing"]);
    assert_eq!(listed["requests"][0]["status"], "refused");
    assert_eq!(listed["requests"][0]["reason_code"], "blocked_sender");
    let zed_sees = peer(&z, &b.agent_id).await.expect("peer");
    assert_eq!(zed_sees.trust, TrustState::Rejected);
    // Nothing stays pending, and nothing counts as a failed message.
    let status = ok(&z.home, &["status"]);
    assert_eq!((status["outgoing_requests"].as_i64(), status["failed_deliveries"].as_i64()), (Some(0), Some(0)));
    // The refusal told zed of the block, so the unblock is told too: zed may ask again.
    ok(&b.home, &["unblock", "zed"]);
    wait_trust(&z, &b.agent_id, TrustState::Discovered).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_forgery_in_a_silently_blocked_peers_name_changes_nothing() {
    use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft};
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, z) = (node(dir.path(), "bob").await, node(dir.path(), "zed").await);
    ok(&b.home, &["scan", &z.peer_url]);
    ok(&b.home, &["block", "zed"]);
    let store = || agentmesh_store::Store::open(&b.home.join("agentmesh.db")).expect("db");
    let reason = || peer_reason(&store(), &z.agent_id);
    assert_eq!(reason().as_deref(), Some("blocked_silently"));
    // Someone else signs a contact request and puts zed's id and public card on it.
    let mallory = agentmesh_core::Identity::generate();
    let bob_card = b.client.card().await.expect("card");
    let x25519 = bob_card.verify().expect("keys").x25519;
    let body = serde_json::to_vec(&ContactRequestBody {
        request_id: format!("req_{}", "cd".repeat(16)),
        purpose: String::new(),
    })
    .expect("json");
    let now = agentmesh_core::time::now_ms();
    let mut draft = Draft::new(
        agentmesh_core::EnvelopeKind::ContactRequest,
        mallory.agent_id(),
        bob_card.agent_id,
        now,
        60_000,
        APPLICATION_JSON,
        body,
    );
    // zed's own public card, as anyone can fetch it.
    draft.card = Some(z.client.card().await.expect("zed's card"));
    let mut forged = serde_json::to_value(draft.seal(&x25519).expect("seal").sign(&mallory, now)).expect("json");
    forged["from"] = serde_json::Value::from(z.agent_id.as_str());
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let answer = http.post(format!("{}/v1/contact-request", b.peer_url)).json(&forged).send().await.expect("post");
    let status = answer.status().as_u16();
    assert_eq!(status, 403, "refused as blocked: {}", answer.text().await.unwrap_or_default());
    assert_eq!(reason().as_deref(), Some("blocked_silently"), "a forgery told nothing and changed nothing");
    // Unblocked, zed (which never dealt with bob) is told nothing.
    let before = store().table_counts().expect("counts");
    ok(&b.home, &["unblock", "zed"]);
    let outbox = |counts: &[(&str, i64)]| counts.iter().find(|(t, _)| *t == "outbox").map(|(_, n)| *n);
    assert_eq!(outbox(&store().table_counts().expect("counts")), outbox(&before), "nothing queued to zed");
}

/// The code of the trust reason `store` keeps for peer `id`.
fn peer_reason(store: &agentmesh_store::Store, id: &str) -> Option<String> {
    let id = agentmesh_api::PeerId::parse(id).expect("id");
    store.peer(&id).expect("read").and_then(|p| p.trust_reason).map(|r| r.code)
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_removing_a_requester_closes_its_request_and_tells_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, z) = (node(dir.path(), "bob").await, node(dir.path(), "zed").await);
    let id = ask(&z, &b.peer_url).await.request.expect("request").request_id;
    incoming(&b, &id).await;
    let removed = ok(&b.home, &["remove", &z.agent_id]);
    assert_eq!(removed["told"], true);
    let closed = request(&b, &id).await.expect("listed");
    assert_eq!((closed.status, closed.reason_code.as_deref()), (RequestStatus::Rejected, Some("removed")));
    assert_eq!(ok(&b.home, &["status"])["pending_requests"], 0);
    assert_eq!(fails_with(&b.home, &["approve-request", &id]), "already_decided");
    assert_eq!(fails_with(&b.home, &["reject-request", &id]), "already_decided");
    // zed's side converges: its request is refused and bob shows as having removed it.
    let z_view = wait_trust(&z, &b.agent_id, TrustState::Rejected).await;
    assert_eq!(z_view.trust_reason.map(|r| r.code), Some("removed".into()));
    let mine = request(&z, &id).await.expect("zed's request");
    assert_eq!(mine.status, RequestStatus::Refused);
    // zed may ask afresh; bob pins it anew.
    let again = ask(&z, &b.agent_id).await.request.expect("request").request_id;
    assert_eq!(incoming(&b, &again).await.status, RequestStatus::Pending);
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_duplicate_requests_collapse_into_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    let first = ok(&a.home, &["request-contact", &b.peer_url]);
    let second = ok(&a.home, &["request-contact", &b.peer_url]);
    assert_eq!(first["request"]["request_id"], second["request"]["request_id"], "asking twice reuses the request");
    let id = first["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&b, &id).await;
    let open = ok(&b.home, &["list-requests", "--incoming", "--open"]);
    assert_eq!(open["requests"].as_array().map(Vec::len), Some(1));
    ok(&b.home, &["approve-request", &id]);
    let open = ok(&b.home, &["list-requests", "--open"]);
    assert_eq!(open["requests"].as_array().map(Vec::len), Some(0), "nothing else is left pending");
    wait_trust(&a, &b.agent_id, TrustState::Trusted).await;
    let again = ok(&a.home, &["request-contact", &b.peer_url]);
    assert_eq!(again["outcome"], "trusted");
}

#[tokio::test(flavor = "multi_thread")]
async fn asking_back_approves_and_withdrawing_is_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    // alice asks, then withdraws: bob's request closes and alice is merely discovered again.
    let id = ask(&a, &b.peer_url).await.request.expect("request").request_id;
    incoming(&b, &id).await;
    let withdrawn = ok(&a.home, &["withdraw-request", &id]);
    assert_eq!(withdrawn["request"]["status"], "withdrawn");
    wait_for(WAIT, || async { request(&b, &id).await.filter(|r| r.status == RequestStatus::Withdrawn) })
        .await
        .expect("bob sees the withdrawal");
    wait_trust(&b, &a.agent_id, TrustState::Discovered).await;
    assert_eq!(fails_with(&b.home, &["withdraw-request", &id]), "incoming_request");

    // bob asks alice; alice asking back approves his request: both are contacts.
    let bobs = ask(&b, &a.peer_url).await.request.expect("request").request_id;
    incoming(&a, &bobs).await;
    let back = ok(&a.home, &["request-contact", "bob"]);
    assert_eq!(back["outcome"], "trusted");
    assert_eq!(back["request"]["request_id"], bobs.as_str());
    wait_trust(&b, &a.agent_id, TrustState::Trusted).await;
    wait_trust(&a, &b.agent_id, TrustState::Trusted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_lost_its_state_is_asked_again_automatically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    // bob loses his database (restored from nothing): he no longer knows alice.
    assert!(b.stop().await);
    for file in ["agentmesh.db", "agentmesh.db-wal", "agentmesh.db-shm"] {
        let _ = std::fs::remove_file(b.home.join(file));
    }
    b.restart().await.expect("restart");
    // alice's message is refused (unknown_sender): her node asks again instead of failing quietly.
    let m = send(&a, &b.agent_id, "do you still know me?").await;
    let failed = wait_status(&a, &m, MessageStatus::Failed).await;
    assert!(failed.last_error.unwrap_or_default().contains("unknown_sender"));
    let view = wait_trust(&a, &b.agent_id, TrustState::RequestedOut).await;
    assert_eq!(view.trust, TrustState::RequestedOut);
    let asked = wait_for(WAIT, || async {
        let q = agentmesh_api::control::RequestsQuery { status: Some(RequestStatus::Pending), ..Default::default() };
        b.client.requests(&q).await.ok()?.requests.into_iter().next()
    })
    .await
    .expect("bob gets a new request");
    assert_eq!(asked.peer_id.as_str(), a.agent_id);
    b.client.approve(&asked.request_id).await.expect("approve");
    wait_trust(&a, &b.agent_id, TrustState::Trusted).await;
    // The failed message can now be sent again.
    ok(&a.home, &["retry", &m]);
    wait_status(&a, &m, MessageStatus::Delivered).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_failed_messages_can_be_retried_or_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node_with(dir.path(), "alice", "max_attempts = 1\n", &[]).await;
    let mut b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    b.kill();
    let m = send(&a, &b.agent_id, "one attempt only").await;
    wait_status(&a, &m, MessageStatus::Failed).await;
    let listed = ok(&a.home, &["list-messages", "--failed"]);
    assert_eq!(listed["messages"][0]["id"], m.as_str());
    assert_eq!(ok(&a.home, &["status"])["failed_deliveries"], 1);
    b.restart().await.expect("restart");
    ok(&a.home, &["retry", &m]);
    wait_status(&a, &m, MessageStatus::Delivered).await;
    assert_eq!(fails_with(&a.home, &["retry", &m]), "not_failed");
    // Another failure, cleared.
    b.kill();
    let m2 = send(&a, &b.agent_id, "lost cause").await;
    wait_status(&a, &m2, MessageStatus::Failed).await;
    assert_eq!(ok(&a.home, &["clear-failed"])["cleared"], 1);
    assert_eq!(ok(&a.home, &["status"])["failed_deliveries"], 0);
}

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed from its
/// printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What one side of the model-based test does.
#[derive(Clone, Copy, Debug)]
enum Act {
    Ask,
    Approve,
    Reject,
    Withdraw,
    Block,
    Unblock,
    Remove,
    /// The node is down for a while: what the other sends meanwhile waits in its outbox.
    Outage,
    /// SIGKILL and start again at once.
    Crash,
}

/// The open request of `node` in `direction` with `other`, if any.
async fn open_request(node: &LocalNode, other: &str, direction: agentmesh_api::Direction) -> Option<String> {
    let q = agentmesh_api::control::RequestsQuery { direction: Some(direction), status: Some(RequestStatus::Pending) };
    let list = node.client.requests(&q).await.ok()?.requests;
    list.into_iter().find(|r| r.peer_id.as_str() == other).map(|r| r.request_id)
}

/// Waits until neither node has anything left in its outbox (twice in a row, a little apart).
async fn quiet(nodes: &[&LocalNode; 2]) {
    let mut calm = 0;
    for _ in 0..400 {
        let mut depth = 0;
        for n in nodes {
            depth += n.client.status().await.map(|s| s.outbox_depth).unwrap_or(1);
        }
        calm = if depth == 0 { calm + 1 } else { 0 };
        if calm >= 3 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the outboxes never emptied");
}

/// Starts `node` again on its address; a few tries (a busy machine may be slow to let the port go).
async fn restart(node: &mut LocalNode, trail: &[String]) {
    let mut last = None;
    for _ in 0..3 {
        match node.restart().await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("restart after {}: {last:?}", trail.join(" "));
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_views_converge_over_random_owner_actions_outages_and_crashes() {
    // Retries come quickly, so an outage is a delay, not a loss.
    let config = "retry_base_ms = 50\nretry_max_ms = 400\nmax_attempts = 1000\n";
    for seed in (1..=6u64).map(|s| 0x5eed_0000 + s) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes =
            [node_with(dir.path(), "alice", config, &[]).await, node_with(dir.path(), "bob", config, &[]).await];
        let ids = [nodes[0].agent_id.clone(), nodes[1].agent_id.clone()];
        let urls = [nodes[0].peer_url.clone(), nodes[1].peer_url.clone()];
        let mut rng = Rng(seed);
        let mut trail = Vec::new();
        let acts = [
            (Act::Ask, 4),
            (Act::Approve, 3),
            (Act::Reject, 1),
            (Act::Withdraw, 1),
            (Act::Block, 2),
            (Act::Unblock, 2),
            (Act::Remove, 1),
            (Act::Outage, 1),
            (Act::Crash, 1),
        ];
        let total: u64 = acts.iter().map(|(_, w)| w).sum();
        for _ in 0..18 {
            let side = rng.below(2) as usize;
            let mut pick = rng.below(total);
            let act = acts
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map_or(Act::Ask, |(a, _)| *a);
            let other = &ids[1 - side];
            let me = &nodes[side];
            trail.push(format!("{}:{act:?}", ["alice", "bob"][side]));
            match act {
                Act::Ask => {
                    let args = agentmesh_api::control::ContactArgs {
                        to: urls[1 - side].clone(),
                        purpose: "model".into(),
                        wait_ms: Some(0),
                        ..Default::default()
                    };
                    let _ = me.client.request_contact(&args).await;
                }
                Act::Approve | Act::Reject => {
                    if let Some(id) = open_request(me, other, agentmesh_api::Direction::Incoming).await {
                        let _ = if matches!(act, Act::Approve) {
                            me.client.approve(&id).await
                        } else {
                            me.client.reject(&id, None).await
                        };
                    }
                }
                Act::Withdraw => {
                    if let Some(id) = open_request(me, other, agentmesh_api::Direction::Outgoing).await {
                        let _ = me.client.withdraw(&id).await;
                    }
                }
                Act::Block => drop(me.client.block(other).await),
                Act::Unblock => drop(me.client.unblock(other).await),
                Act::Remove => drop(me.client.remove(other).await),
                Act::Outage => {
                    // A slow clean exit under load is not what this test is about.
                    let _ = nodes[side].stop().await;
                    // The other side acts meanwhile; its envelopes wait in its outbox.
                    let (bob_side, q) = (&nodes[1 - side], rng.below(3));
                    if q == 0 {
                        let _ = bob_side.client.block(&ids[side]).await;
                    } else if q == 1 {
                        let _ = bob_side.client.unblock(&ids[side]).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    restart(&mut nodes[side], &trail).await;
                }
                Act::Crash => {
                    nodes[side].kill();
                    restart(&mut nodes[side], &trail).await;
                }
            }
            if rng.below(2) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(rng.below(150))).await;
            }
        }
        quiet(&[&nodes[0], &nodes[1]]).await;
        let views = [peer(&nodes[0], &ids[1]).await, peer(&nodes[1], &ids[0]).await];
        let state = |v: &Option<agentmesh_api::Peer>| v.as_ref().map(|p| p.trust);
        let context = format!("seed {seed:#x}, {}: {:?} / {:?}", trail.join(" "), state(&views[0]), state(&views[1]));
        let trusted = |v: &Option<agentmesh_api::Peer>| state(v) == Some(TrustState::Trusted);
        assert_eq!(trusted(&views[0]), trusted(&views[1]), "one-sided trust; {context}");
        for side in 0..2 {
            let (me, them) = (&views[side], &views[1 - side]);
            if state(me) == Some(TrustState::RequestedOut) {
                let out = open_request(&nodes[side], &ids[1 - side], agentmesh_api::Direction::Outgoing).await;
                let incoming = open_request(&nodes[1 - side], &ids[side], agentmesh_api::Direction::Incoming).await;
                assert!(
                    out.is_some() && out == incoming,
                    "a request open on one side only ({out:?} / {incoming:?}); {context}"
                );
            }
            let believes_blocked = me.as_ref().is_some_and(|p| {
                p.trust == TrustState::Rejected
                    && p.trust_reason.as_ref().is_some_and(|r| r.by == Side::Peer && r.code.starts_with("blocked"))
            });
            if believes_blocked {
                assert_eq!(state(them), Some(TrustState::Blocked), "a lifted block still believed; {context}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_an_unblock_reaches_a_peer_whose_request_the_block_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    ok(&b.home, &["block", &a.agent_id]);
    wait_trust(&a, &b.agent_id, TrustState::Rejected).await;
    // While blocked, alice is told so, not that she may ask again; asking is refused.
    let said = fails(&a.home, &["send-message", "--to", "bob", "--text", "hello?"]);
    let message = said["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("blocked you") && !message.contains("may ask again"), "{said}");
    assert_eq!(fails_with(&a.home, &["request-contact", &b.peer_url, "--purpose", "again"]), "contact_refused");
    let refused = wait_trust(&a, &b.agent_id, TrustState::Rejected).await;
    assert_eq!(refused.trust_reason.map(|r| r.code).as_deref(), Some("blocked_sender"));
    // bob unblocks: both see the other as merely discovered.
    ok(&b.home, &["unblock", &a.agent_id]);
    wait_trust(&a, &b.agent_id, TrustState::Discovered).await;
    wait_trust(&b, &a.agent_id, TrustState::Discovered).await;
}
