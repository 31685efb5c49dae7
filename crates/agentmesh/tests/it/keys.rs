//! TOFU pinning, key rotation and key mismatches, between real nodes over loopback.

use std::path::Path;

use agentmesh_api::{MessageStatus, TrustState};

use crate::support::{self, *};

async fn send(from: &LocalNode, to: &LocalNode, text: &str) -> String {
    support::send(from, &to.agent_id, text).await
}

async fn peer(node: &LocalNode, id: &str) -> agentmesh_api::Peer {
    support::peer(node, id).await.expect("peer known")
}

/// Copies a home the way `cp -a` would: modes kept (a node refuses a home open to others).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::metadata(from).expect("stat").permissions()).expect("chmod");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_peer_pins_the_expected_id_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node(dir.path(), "bob").await;
    let c = node(dir.path(), "carol").await;

    // The card at the URL belongs to someone else: nothing is pinned or sent.
    let wrong = fails(&a.home, &["add-peer", &b.agent_id, "--endpoint", &c.peer_url]);
    assert_eq!(wrong["error"]["code"], "agent_id_mismatch", "{wrong}");
    assert!(a.client.peers(true).await.expect("peers").peers.is_empty());

    let added = ok(&a.home, &["add-peer", &b.agent_id, "--endpoint", &b.peer_url, "--alias", "bob-laptop"]);
    assert_eq!(added["outcome"], "delivered");
    assert_eq!(added["peer"]["agent_id"], b.agent_id.as_str());
    let pinned = peer(&a, &b.agent_id).await;
    assert_eq!(pinned.alias.as_deref(), Some("bob-laptop"));
    assert_eq!(pinned.fingerprint, b.client.status().await.expect("status").fingerprint);
    // The contact request went out and arrived at bob.
    let id = added["request"]["request_id"].as_str().expect("id").to_owned();
    assert_eq!(incoming(&b, &id).await.peer_id.as_str(), a.agent_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_id_and_the_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    let before = wait_status(&a, &send(&a, &b, "before").await, MessageStatus::Delivered).await;
    assert_eq!(before.status, MessageStatus::Delivered);
    let old = serde_json::json!(a.client.status().await.expect("status").fingerprint);

    let rotated = ok(&a.home, &["rotate-key"]);
    assert_eq!(rotated["agent_id"], a.agent_id.as_str(), "the id survives");
    assert_eq!(rotated["old_fingerprint"], old);
    assert_ne!(rotated["fingerprint"], old);
    assert_eq!(rotated["contacts_told"], 1);
    let card = a.client.card().await.expect("card");
    assert_eq!(card.rotations.len(), 1);
    assert_eq!(card.fingerprint.as_str(), rotated["fingerprint"]);

    // Bob verifies the chain and moves its pin with no owner action.
    let new_fp = rotated["fingerprint"].as_str().expect("fingerprint").to_owned();
    wait_for(WAIT, || async { (peer(&b, &a.agent_id).await.fingerprint == new_fp).then_some(()) })
        .await
        .expect("bob updates its pin");
    assert_eq!(peer(&b, &a.agent_id).await.trust, TrustState::Trusted);

    // Both directions keep working, signed and sealed with the new keys.
    wait_status(&a, &send(&a, &b, "after rotation").await, MessageStatus::Delivered).await;
    wait_status(&b, &send(&b, &a, "reply after rotation").await, MessageStatus::Delivered).await;
    let bob_status = b.client.status().await.expect("status");
    assert!(bob_status.key_mismatches.is_empty(), "{bob_status:?}");

    // The rotation survives a restart (keys and chain on disk), and a second rotation chains on.
    let mut a = a;
    assert!(a.stop().await);
    a.restart().await.expect("restart");
    assert_eq!(a.client.status().await.expect("status").fingerprint, new_fp);
    let again = ok(&a.home, &["rotate-key"]);
    assert_eq!(again["key_rotations"], 2);
    let newest = again["fingerprint"].as_str().expect("fingerprint").to_owned();
    wait_for(WAIT, || async { (peer(&b, &a.agent_id).await.fingerprint == newest).then_some(()) })
        .await
        .expect("bob follows the second rotation");
    wait_status(&a, &send(&a, &b, "after two rotations").await, MessageStatus::Delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_key_is_refused_until_repinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = node(dir.path(), "alice").await;
    let b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    let listen = a.peer_url.trim_start_matches("http://").to_owned();

    // A backup of alice's home, then a rotation bob learns about.
    assert!(a.stop().await);
    let backup = dir.path().join("alice-backup");
    copy_dir(&a.home, &backup);
    a.restart().await.expect("restart");
    let first = ok(&a.home, &["rotate-key"]);
    let first_fp = first["fingerprint"].as_str().expect("fingerprint").to_owned();
    wait_for(WAIT, || async { (peer(&b, &a.agent_id).await.fingerprint == first_fp).then_some(()) })
        .await
        .expect("bob follows the first rotation");
    assert!(a.stop().await);

    // The backup is restored and rotated another way: a valid chain from the genesis key that
    // does not pass through the key bob pinned.
    std::fs::remove_file(backup.join("node.json")).ok();
    let forked = ok(&backup, &["rotate-key"]);
    assert_eq!(forked["contacts_told"], 0, "offline rotation: told at next start");
    let fork = LocalNode::start(&exe(), &backup, &listen, &[]).await.expect("start the fork");

    // Its announcement reaches bob, who refuses it (403 key_mismatch) and records it.
    let mismatch = wait_for(WAIT, || async { b.client.status().await.ok()?.key_mismatches.into_iter().next() })
        .await
        .expect("bob records the mismatch");
    assert_eq!(mismatch.peer_id.as_str(), a.agent_id);
    assert_eq!(mismatch.pinned_fingerprint, first_fp);
    assert_eq!(mismatch.presented_fingerprint.as_str(), forked["fingerprint"]);
    assert_eq!(mismatch.direction, agentmesh_api::MismatchDirection::Inbound);
    assert_eq!(peer(&b, &a.agent_id).await.fingerprint, first_fp, "the pin did not move");

    // Messages from the fork are refused too: they do not verify under the pinned key.
    let refused = send(&fork, &b, "from the fork").await;
    let failed = wait_status(&fork, &refused, MessageStatus::Failed).await;
    assert!(failed.last_error.as_deref().is_some_and(|e| e.contains("401")), "{failed:?}");

    // Outbound: bob fetching the card now also refuses, with a clear error.
    let out = fails(&b.home, &["add-peer", &a.agent_id, "--endpoint", &fork.peer_url]);
    assert_eq!(out["error"]["code"], "key_mismatch", "{out}");
    assert!(out["error"]["message"].as_str().is_some_and(|m| m.contains("repin")));
    let human = cli(&b.home, &["status"]);
    assert!(human.status.success());

    // Repin needs the exact fingerprint the owner checked.
    let typo = fails(&b.home, &["repin", &a.agent_id, "--fingerprint", "sha256:00"]);
    assert_eq!(typo["error"]["code"], "fingerprint_mismatch");
    let forked_fp = forked["fingerprint"].as_str().expect("fingerprint");
    let repinned = ok(&b.home, &["repin", &a.agent_id, "--fingerprint", forked_fp]);
    assert_eq!(repinned["peer"]["fingerprint"], forked_fp);
    assert!(b.client.status().await.expect("status").key_mismatches.is_empty());

    // Now the fork's messages are accepted.
    wait_status(&fork, &send(&fork, &b, "after repin").await, MessageStatus::Delivered).await;
}
