//! The whole flow through the CLI, with real nodes on loopback.

use std::os::unix::fs::PermissionsExt;

use agentmesh_api::{MessageStatus, TrustState};
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_to_overwrite_and_keys_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("a");
    let first = ok(&home, &["init", "--name", "alice", "--capability", "chat"]);
    let id = first["agent_id"].as_str().expect("id");
    assert_eq!(id.len(), 16);
    assert_eq!(first["fingerprint"].as_str().expect("fp")[..23], format!("sha256:{id}"));
    let err = fails(&home, &["init", "--name", "alice"]);
    assert_eq!(err["error"]["code"], "identity_exists");
    assert!(err["error"]["message"].as_str().expect("msg").contains("--force"));
    for key in ["keys/ed25519.key", "keys/x25519.key"] {
        let mode = std::fs::metadata(home.join(key)).expect("key file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let second = ok(&home, &["init", "--name", "alice", "--force"]);
    assert_ne!(second["agent_id"], first["agent_id"]);
    // `card` works offline and is self-signed.
    let card: agentmesh_core::AgentCard = serde_json::from_value(ok(&home, &["card"])).expect("card");
    assert_eq!(card.verify().expect("valid card").agent_id().to_string(), second["agent_id"].as_str().expect("id"));
    // No key material in any output.
    let secret = std::fs::read_to_string(home.join("keys/ed25519.key")).expect("key");
    assert!(!serde_json::to_string(&card).expect("json").contains(secret.trim()));
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_needing_a_node_say_how_to_start_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("a");
    ok(&home, &["init", "--name", "alice"]);
    let err = fails(&home, &["peers"]);
    assert_eq!(err["error"]["code"], "node_not_running");
    assert!(err["error"]["message"].as_str().expect("msg").contains("agentmesh up --home"));
    let status = ok(&home, &["status"]);
    assert_eq!(status["running"], false);
    assert_eq!(status["outbox_depth"], 0);
    // Human mode: one line on stderr.
    let out = std::process::Command::new(exe()).arg("--home").arg(&home).arg("peers").output().expect("run");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_flow_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    let (ah, bh) = (alice.home.clone(), bob.home.clone());

    let sent = ok(&ah, &["request-contact", &bob.peer_url, "--purpose", "plan a trip"]);
    assert_eq!(sent["outcome"], "delivered");
    assert_eq!(sent["peer"]["agent_id"], bob.agent_id.as_str());
    assert_eq!(sent["peer"]["trust"], "requested_out");
    let request_id = sent["request"]["request_id"].as_str().expect("request id").to_owned();
    let outgoing_requests = ok(&ah, &["list-requests", "--outgoing"]);
    assert_eq!(outgoing_requests["requests"][0]["request_id"], request_id.as_str());

    // Before approval, neither side may message the other; each is told why.
    let err = fails(&ah, &["send-message", "--to", &bob.agent_id, "--text", "too early"]);
    assert_eq!(err["error"]["code"], "not_trusted");
    assert!(err["error"]["message"].as_str().expect("msg").contains("has not answered"), "{err}");

    let incoming = wait_for(WAIT, || async {
        let v = ok(&bh, &["list-requests", "--incoming"]);
        v["requests"].as_array().and_then(|a| a.first().cloned())
    })
    .await
    .expect("incoming request");
    assert_eq!(incoming["request_id"], request_id.as_str());
    assert_eq!(incoming["purpose"], "plan a trip");
    assert_eq!(incoming["status"], "pending");
    let err = fails(&bh, &["send-message", "--to", &alice.agent_id, "--text", "too early"]);
    assert_eq!(err["error"]["code"], "not_trusted");

    let approved = ok(&bh, &["approve-request", &request_id]);
    assert_eq!(approved["request"]["status"], "approved");
    let again = fails(&bh, &["approve-request", &request_id]);
    assert_eq!(again["error"]["code"], "already_decided");

    // The acceptance reaches alice: trust is mutual.
    wait_trust(&alice, &bob.agent_id, TrustState::Trusted).await;
    let bob_peers = ok(&bh, &["peers"]);
    assert_eq!(bob_peers["peers"][0]["trust"], "trusted");
    assert_eq!(ok(&ah, &["list-requests", "--outgoing"])["requests"][0]["status"], "approved");

    // Messages both ways; one from stdin; peers addressed by name.
    let m1 = ok(&ah, &["send-message", "--to", "bob", "--text", "hello bob", "--thread", "trip"]);
    assert_eq!(m1["encrypted"], true);
    assert_eq!(m1["to"], bob.agent_id.as_str());
    let m1_id = m1["message_id"].as_str().expect("id").to_owned();
    let out = cli_with_stdin(
        &bh,
        &["send-message", "--to", &alice.agent_id, "--reply-to", &m1_id],
        Some("hi alice, from stdin\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m2: Value = serde_json::from_slice(&out.stdout).expect("json");
    let m2_id = m2["message_id"].as_str().expect("id").to_owned();
    wait_status(&alice, &m1_id, MessageStatus::Delivered).await;
    wait_status(&bob, &m2_id, MessageStatus::Delivered).await;

    let unread = ok(&bh, &["list-messages", "--incoming", "--unread"]);
    let list = unread["messages"].as_array().expect("messages");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["text"], "hello bob");
    assert_eq!(list[0]["thread"], "trip");
    assert_eq!(list[0]["encrypted"], true);
    let alice_inbox = ok(&ah, &["list-messages", "--incoming"]);
    assert_eq!(alice_inbox["messages"][0]["text"], "hi alice, from stdin");
    assert_eq!(alice_inbox["messages"][0]["reply_to"], m1_id.as_str());

    // Reading sends a read receipt.
    let read = ok(&bh, &["read", &m1_id]);
    assert_eq!(read["message"]["status"], "read");
    wait_status(&alice, &m1_id, MessageStatus::Read).await;
    assert_eq!(ok(&bh, &["list-messages", "--unread"])["messages"].as_array().map(Vec::len), Some(0));
    assert_eq!(fails(&bh, &["read", "no-such-message"])["error"]["code"], "not_found");

    let status = ok(&ah, &["status"]);
    assert_eq!(status["running"], true);
    assert_eq!(status["trusted_peers"], 1);
    assert_eq!(status["outbox_depth"], 0);
    assert_eq!(status["unread_messages"], 1);
    assert_eq!(status["agent_id"], alice.agent_id.as_str());

    // Block: bob is told at once, so his node refuses to send rather than failing later.
    let blocked = ok(&ah, &["block", &bob.agent_id]);
    assert_eq!(blocked["told"], true);
    let seen = wait_trust(&bob, &alice.agent_id, TrustState::Rejected).await;
    assert_eq!(seen.trust_reason.map(|r| r.code), Some("blocked".into()));
    let err = fails(&bh, &["send-message", "--to", &alice.agent_id, "--text", "blocked?"]);
    assert_eq!(err["error"]["code"], "not_trusted");
    assert!(err["error"]["message"].as_str().expect("msg").contains("blocked"), "{err}");

    // Unblock does not restore trust; remove forgets the peer (listed only with --all).
    let unblocked = ok(&ah, &["unblock", &bob.agent_id]);
    assert_eq!(unblocked["peer"]["trust"], "discovered");
    assert!(unblocked["hint"].as_str().expect("hint").contains("request-contact"));
    ok(&ah, &["remove", &bob.agent_id]);
    assert_eq!(ok(&ah, &["peers"])["peers"].as_array().map(Vec::len), Some(0));
    assert_eq!(ok(&ah, &["peers", "--all"])["peers"][0]["trust"], "removed");
    assert_eq!(fails(&ah, &["block", "no-such-peer"])["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejection_creates_no_trust_and_tells_the_requester() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    let sent = ok(&alice.home, &["request-contact", &bob.peer_url]);
    let id = sent["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&bob, &id).await;
    let rejected = ok(&bob.home, &["reject-request", &id, "--reason", "not now"]);
    assert_eq!(rejected["request"]["status"], "rejected");
    let seen = wait_for(WAIT, || async {
        let r = ok(&alice.home, &["list-requests", "--outgoing"]);
        r["requests"].as_array()?.iter().find(|x| x["status"] == "rejected").cloned()
    })
    .await
    .expect("alice learns of the rejection");
    assert_eq!(seen["reason"], "not now");
    for (home, other) in [(&alice.home, &bob.agent_id), (&bob.home, &alice.agent_id)] {
        let peers = ok(home, &["peers"]);
        assert_eq!(peers["peers"][0]["trust"], "rejected");
        assert_eq!(fails(home, &["send-message", "--to", other, "--text", "x"])["error"]["code"], "not_trusted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_streams_new_messages_as_json_lines() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    trust(&alice, &bob).await;
    let mut follow = std::process::Command::new(exe())
        .arg("--home")
        .arg(&bob.home)
        .args(["--json", "list-messages", "--incoming", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("follow");
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        lines.next().and_then(Result::ok)
    });
    // No need to wait for the follower to subscribe: what arrived before it did is listed first.
    send(&alice, &bob.agent_id, "streamed").await;
    let line =
        tokio::task::spawn_blocking(move || reader.join().expect("reader")).await.expect("join").expect("a line");
    let _ = follow.kill();
    let _ = follow.wait();
    let event: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(event["event"], "message");
    assert_eq!(event["message"]["text"], "streamed");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_endpoint_override_beats_the_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("a");
    ok(&home, &["init", "--name", "alice", "--endpoint", "http://127.0.0.1:1"]);
    let env = [("AGENTMESH_ENDPOINT", "http://127.0.0.1:2")];
    let node = LocalNode::start(&exe(), &home, "127.0.0.1:0", &env).await.expect("start");
    let card = node.client.card().await.expect("card");
    let http = card.endpoints.iter().find(|e| e.starts_with("http"));
    assert_eq!(http.map(String::as_str), Some("http://127.0.0.1:2"), "{:?}", card.endpoints);
    // The V1 discovery document advertises the same endpoint.
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let disc: Value = http
        .get(format!("{}/agent-mesh/discovery", node.peer_url))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(disc["agent"]["endpoint"], "http://127.0.0.1:2");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_peer_text_cannot_drive_the_owners_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    trust(&alice, &bob).await;
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2Jline one\rOVERWRITE\nline two";
    let id = send(&alice, &bob.agent_id, hostile).await;
    wait_status(&alice, &id, MessageStatus::Delivered).await;
    for args in [vec!["read", id.as_str()], vec!["list-messages"]] {
        let out = std::process::Command::new(exe()).arg("--home").arg(&bob.home).args(&args).output().expect("run");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).expect("utf-8");
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'), "{args:?}: {text:?}");
        assert!(text.contains("line one"), "{text}");
    }
    // JSON output carries the exact text, escaped by JSON itself.
    let listed = ok(&bob.home, &["list-messages", "--incoming"]);
    assert_eq!(listed["messages"][0]["text"], hostile);
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_blocking_closes_pending_requests_and_unblocking_lets_it_ask_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    let sent = ok(&alice.home, &["request-contact", &bob.peer_url]);
    let id = sent["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&bob, &id).await;
    ok(&bob.home, &["block", &alice.agent_id]);
    // The request is closed, not left pending, and cannot be approved.
    let listed = ok(&bob.home, &["list-requests", "--incoming", "--open"]);
    assert_eq!(listed["requests"].as_array().map(Vec::len), Some(0));
    assert_eq!(fails(&bob.home, &["approve-request", &id])["error"]["code"], "already_decided");
    assert_eq!(ok(&bob.home, &["peers"])["peers"][0]["trust"], "blocked");
    // alice's side shows the refusal with its reason; asking a blocker is refused at once.
    wait_for(WAIT, || async { request(&alice, &id).await.filter(|r| r.status.as_str() == "refused") })
        .await
        .expect("refused");
    // Unblocking tells alice she may ask again; the new request can be approved.
    ok(&bob.home, &["unblock", &alice.agent_id]);
    wait_trust(&alice, &bob.agent_id, TrustState::Discovered).await;
    let again = ok(&alice.home, &["request-contact", &bob.agent_id]);
    let id2 = again["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&bob, &id2).await;
    assert_eq!(ok(&bob.home, &["approve-request", &id2])["request"]["status"], "approved");
    wait_trust(&alice, &bob.agent_id, TrustState::Trusted).await;
}
