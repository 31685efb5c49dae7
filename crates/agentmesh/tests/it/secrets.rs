//! Secrets stay secret: no private key, control token or decrypted body in the logs, even at
//! `RUST_LOG=trace`, and none in any `--json` output.

use crate::support::*;

/// Every secret of `home`; with `rotated`, the previous keys a rotation keeps too (which must be
/// there).
fn secrets_of(home: &std::path::Path, rotated: bool) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["keys/ed25519.key", "keys/x25519.key", "control.token"] {
        let text = std::fs::read_to_string(home.join(file)).expect("secret file");
        let text = text.trim().to_owned();
        // Base64 as stored, and the raw bytes in hex (a Debug print of a key would show those).
        if let Some(bytes) = agentmesh_core::b64::decode(&text) {
            out.push(hex::encode(bytes));
        }
        out.push(text);
    }
    // After a rotation: the previous secret keys kept for the grace period.
    if rotated {
        let text = std::fs::read_to_string(home.join("keys/rotation.json")).expect("rotation.json after a rotation");
        let state: serde_json::Value = serde_json::from_str(&text).expect("rotation.json");
        for key in ["ed25519", "x25519"] {
            let b64 = state["previous"][key].as_str().expect("previous secret").to_owned();
            out.push(hex::encode(agentmesh_core::b64::decode(&b64).expect("base64")));
            out.push(b64);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_hold_no_keys_tokens_or_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = [("RUST_LOG", "trace")];
    let mut nodes = Vec::new();
    for name in ["alice", "bob"] {
        let home = dir.path().join(name);
        local::init(&exe(), &home, name, &[]).expect("init");
        nodes.push(LocalNode::start(&exe(), &home, "127.0.0.1:0", &trace).await.expect("start"));
    }
    let (alice, bob) = (&nodes[0], &nodes[1]);
    trust(alice, bob).await;
    let body = "the launch code is 0000-TOP-SECRET";
    let id = send(alice, &bob.agent_id, body).await;
    wait_status(alice, &id, agentmesh_api::MessageStatus::Delivered).await;
    bob.client.read(&id).await.expect("read");
    wait_status(alice, &id, agentmesh_api::MessageStatus::Read).await;

    // A key rotation in the middle of the flow: old and new secrets alike stay out of sight.
    let mut secrets = secrets_of(&alice.home, false);
    let mut printed = ok(&alice.home, &["rotate-key"]).to_string();
    let after = send(alice, &bob.agent_id, body).await;
    wait_status(alice, &after, agentmesh_api::MessageStatus::Delivered).await;

    // Everything a --json command prints for the owner: no secret there either.
    for args in [&["status"][..], &["card"], &["peers"], &["list-requests"]] {
        printed.push_str(&ok(&alice.home, args).to_string());
    }

    secrets.extend(secrets_of(&alice.home, true));
    secrets.extend(secrets_of(&bob.home, false));
    for node in &mut nodes {
        assert!(node.stop().await);
    }
    for node in &nodes {
        let log = std::fs::read_to_string(&node.log).expect("log");
        assert!(log.contains("DEBUG") && log.contains("processed envelopes"), "debug logging is on: {log}");
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "a secret appears in {}", node.log.display());
            assert!(!printed.contains(secret.as_str()), "a secret appears in --json output");
        }
        assert!(!log.contains(body), "a decrypted body appears in {}", node.log.display());
        assert!(!log.contains("TOP-SECRET"), "part of a decrypted body appears in {}", node.log.display());
    }
}
