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
