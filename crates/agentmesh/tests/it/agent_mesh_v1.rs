//! Agent Mesh V1 compatibility in both directions, against an independent V1 peer written in
//! Python from the documented wire format (`tests/it/v1_peer.py`, needs `cryptography`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::*;
use serde_json::{Value, json};

struct V1Peer {
    child: Child,
    url: String,
    agent_id: String,
    http: reqwest::Client,
}

/// A Python 3 that can `import cryptography`: the system one, or else a private venv under
/// cargo's test tmpdir, created once (under a file lock: nextest runs tests as processes).
fn python() -> PathBuf {
    let has_cryptography = |py: &Path| {
        Command::new(py).args(["-c", "import cryptography"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let system = PathBuf::from("python3");
    if std::env::var_os("AGENTMESH_TEST_PRIVATE_VENV").is_none() && has_cryptography(&system) {
        return system;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("v1-peer-venv");
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("venv lock file");
    lock.lock().expect("venv lock");
    let py = venv.join("bin").join("python3");
    if !has_cryptography(&py) {
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
        if !made {
            // No venv module (Debian ships it apart): install for this user instead.
            let installed = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--user", "--disable-pip-version-check", "cryptography>=42"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(installed && has_cryptography(&system), "could not provide `cryptography` for the V1 test peer");
            return system;
        }
        let installed = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "cryptography>=42"])
            .status()
            .expect("pip install cryptography");
        assert!(installed.success(), "could not install `cryptography` for the V1 test peer");
    }
    py
}

impl V1Peer {
    fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/v1_peer.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the V1 test peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("V1 peer failed to start (is `cryptography` installed?): {line:?}"));
        let http = agentmesh_node::net::client(&Default::default()).expect("client");
        V1Peer {
            url: format!("http://127.0.0.1:{}", ready["port"]),
            agent_id: ready["agent_id"].as_str().expect("id").to_owned(),
            child,
            http,
        }
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("v1 peer")
            .json()
            .await
            .expect("json")
    }

    async fn state(&self) -> Value {
        self.http.get(format!("{}/test/state", self.url)).send().await.expect("state").json().await.expect("json")
    }
}

impl Drop for V1Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_peer_discovers_us_requests_contact_and_messages_with_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let us = node(dir.path(), "ours").await;
    let v1 = V1Peer::start();

    // Discovery document in V1 shape.
    let disc: Value = v1
        .http
        .get(format!("{}/agent-mesh/discovery", us.peer_url))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(disc["ok"], true);
    assert_eq!(disc["protocol"], "openclaw-agent-mesh/v1");
    assert_eq!(disc["agent"]["agent_id"], us.agent_id.as_str());
    let pem = disc["agent"]["public_key"].as_str().expect("pem");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("\n"));

    // The V1 peer sends a contact request; we verify it and hold it for our owner.
    let sent = v1.call("/test/request-contact", json!({"url": us.peer_url, "purpose": "v1 says hi"})).await;
    assert_eq!(sent["status"], 200, "{sent}");
    assert_eq!(
        sent["answer"],
        json!({"ok": true, "result": {"verified": true, "request_id": sent["request"]["request_id"]}})
    );
    let request_id = sent["request"]["request_id"].as_str().expect("id").to_owned();
    let listed = ok(&us.home, &["list-requests", "--incoming"]);
    let r = &listed["requests"][0];
    assert_eq!(
        (r["request_id"].as_str(), r["protocol"].as_str(), r["purpose"].as_str()),
        (Some(request_id.as_str()), Some("openclaw-agent-mesh/v1"), Some("v1 says hi"))
    );

    // Replaying the same signed request gets the same answer and stores nothing.
    let before = counts(&us.home);
    let replay = v1
        .call("/test/post", json!({"url": us.peer_url, "path": "/agent-mesh/contact-request", "body": sent["request"]}))
        .await;
    assert_eq!(replay["answer"], sent["answer"]);
    assert_eq!(counts(&us.home), before);

    // Before approval its messages are refused.
    let early = v1.call("/test/send", json!({"url": us.peer_url, "to": us.agent_id, "text": "too early"})).await;
    assert_eq!((early["status"].as_u64(), early["answer"]["ok"].as_bool()), (Some(403), Some(false)));
    assert_eq!(early["answer"]["error"], "untrusted_sender");

    ok(&us.home, &["approve-request", &request_id]);
    let msg = v1.call("/test/send", json!({"url": us.peer_url, "to": us.agent_id, "text": "hello from V1 ✓"})).await;
    assert_eq!(msg["status"], 200, "{msg}");
    let ack = &msg["answer"]["result"]["ack"];
    assert_eq!((ack["type"].as_str(), ack["status"].as_str()), (Some("ack"), Some("received")));
    assert_eq!(ack["message_id"], msg["message"]["message_id"]);
    let inbox = ok(&us.home, &["list-messages", "--incoming"]);
    let m = &inbox["messages"][0];
    assert_eq!(
        (m["text"].as_str(), m["encrypted"].as_bool(), m["protocol"].as_str()),
        (Some("hello from V1 ✓"), Some(false), Some("openclaw-agent-mesh/v1"))
    );

    // A replayed V1 message gets the original ack and stores nothing; a forged one is refused.
    let before = counts(&us.home);
    let replay =
        v1.call("/test/post", json!({"url": us.peer_url, "path": "/agent-mesh/message", "body": msg["message"]})).await;
    assert_eq!(replay["answer"], msg["answer"]);
    let mut forged = msg["message"].clone();
    forged["body"]["text"] = json!("tampered");
    forged["message_id"] = json!(format!("msg_{}", "0".repeat(32)));
    let forged =
        v1.call("/test/post", json!({"url": us.peer_url, "path": "/agent-mesh/message", "body": forged})).await;
    assert_eq!((forged["status"].as_u64(), forged["answer"]["error"].as_str()), (Some(401), Some("bad_signature")));
    assert_eq!(counts(&us.home), before);

    // Our reply: V1 trust is one-sided, so we ask for contact and the V1 owner approves us.
    let ours = ok(&us.home, &["request-contact", &v1.url, "--purpose", "let me answer"]);
    assert_eq!(ours["peer"]["protocol"], "openclaw-agent-mesh/v1");
    let pending = wait_for(WAIT, || async { v1.state().await["pending"].as_array()?.first().cloned() })
        .await
        .expect("our request reaches the V1 peer");
    assert_eq!(pending["from"]["agent_id"], us.agent_id.as_str());
    v1.call("/test/approve", json!({"request_id": pending["request_id"]})).await;
    let reply = ok(&us.home, &["send-message", "--to", &v1.agent_id, "--text", "hello V1 — from agentmesh 😀"]);
    assert_eq!(reply["encrypted"], false);
    let delivered =
        wait_status(&us, reply["message_id"].as_str().expect("id"), agentmesh_api::MessageStatus::Delivered).await;
    assert_eq!(delivered.protocol, agentmesh_api::Protocol::AgentMeshV1);
    let state = v1.state().await;
    let got = &state["inbox"][0];
    assert_eq!((got["text"].as_str(), got["body"]["text"].as_str()), (None, Some("hello V1 — from agentmesh 😀")));
    assert_eq!(got["from"], us.agent_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn we_contact_a_v1_peer_first_and_message_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let us = node(dir.path(), "ours").await;
    let v1 = V1Peer::start();

    let sent = ok(&us.home, &["request-contact", &v1.url]);
    assert_eq!(
        (sent["outcome"].as_str(), sent["peer"]["agent_id"].as_str()),
        (Some("delivered"), Some(v1.agent_id.as_str()))
    );
    let pending = wait_for(WAIT, || async { v1.state().await["pending"].as_array()?.first().cloned() })
        .await
        .expect("request arrives");
    assert_eq!(pending["request_id"], sent["request"]["request_id"]);

    // Until the V1 owner approves, V1 refuses our messages; we keep them queued and retry.
    let early = ok(&us.home, &["send-message", "--to", &v1.agent_id, "--text", "first"]);
    let early_id = early["message_id"].as_str().expect("id").to_owned();
    let waiting = wait_for(WAIT, || async { outgoing(&us, &early_id).await.filter(|m| m.attempts >= Some(1)) })
        .await
        .expect("attempted");
    assert_eq!(waiting.status, agentmesh_api::MessageStatus::Sent);
    assert!(waiting.last_error.as_deref().expect("error").contains("untrusted"), "{waiting:?}");

    v1.call("/test/approve", json!({"request_id": pending["request_id"]})).await;
    wait_status(&us, &early_id, agentmesh_api::MessageStatus::Delivered).await;
    assert_eq!(v1.state().await["inbox"][0]["body"]["text"], "first");

    // The V1 peer can message us only after our owner trusts it (V1 is one-sided): it cannot yet.
    let refused = v1.call("/test/send", json!({"url": us.peer_url, "to": us.agent_id, "text": "hi"})).await;
    assert_eq!(refused["status"], 403);
    assert!(inbox(&us).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_identity_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let us = node(dir.path(), "ours").await;
    let v1 = V1Peer::start();
    let sent = v1.call("/test/request-contact", json!({"url": us.peer_url})).await;
    assert_eq!(sent["status"], 200);
    let base = counts(&us.home);
    let post = |body: Value| {
        v1.call("/test/post", json!({"url": us.peer_url, "path": "/agent-mesh/contact-request", "body": body}))
    };

    // Same agent id, another key: refused as a key mismatch (the first key is pinned).
    let other = V1Peer::start();
    let theirs = other.call("/test/request-contact", json!({"url": other.url})).await; // a signed request by another key
    let mut impostor = theirs["request"].clone();
    impostor["from"]["agent_id"] = json!(v1.agent_id);
    impostor["request_id"] = json!(format!("req_{}", "9".repeat(32)));
    let r = post(impostor).await;
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(r["answer"]["error"], "key_mismatch");

    // Fingerprint that is not SHA-256 of the PEM: 400.
    let mut bad_fp = sent["request"].clone();
    bad_fp["from"]["fingerprint"] = json!(format!("sha256:{}", "0".repeat(64)));
    let r = post(bad_fp).await;
    assert_eq!((r["status"].as_u64(), r["answer"]["error"].as_str()), (Some(400), Some("fingerprint_mismatch")));

    // Stale timestamp: 400.
    let mut stale = sent["request"].clone();
    stale["timestamp"] = json!("2020-01-01T00:00:00Z");
    let r = post(stale).await;
    assert_eq!((r["status"].as_u64(), r["answer"]["error"].as_str()), (Some(400), Some("stale_timestamp")));

    // Tampered purpose: 401.
    let mut tampered = sent["request"].clone();
    tampered["purpose"] = json!("changed");
    tampered["request_id"] = json!(format!("req_{}", "8".repeat(32)));
    let r = post(tampered).await;
    assert_eq!((r["status"].as_u64(), r["answer"]["error"].as_str()), (Some(401), Some("bad_signature")));

    assert_eq!(counts(&us.home), base, "nothing stored by refused requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_finds_a_v1_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let us = node(dir.path(), "ours").await;
    let v1 = V1Peer::start();
    let report = ok(&us.home, &["scan", &v1.url]);
    let found = &report["found"][0];
    assert_eq!(found["agent_id"], v1.agent_id.as_str(), "{report}");
    assert_eq!(found["protocol"], "openclaw-agent-mesh/v1");
    assert_eq!((found["signature_valid"].as_bool(), found["recorded"].as_str()), (Some(true), Some("new")));
    let peers = us.client.peers(false).await.expect("peers");
    assert_eq!(peers.peers[0].trust, agentmesh_api::TrustState::Discovered);
}
