//! SIGKILL at the worst moments: nothing acknowledged or queued is lost, nothing is stored twice.

use std::collections::HashSet;

use crate::support::*;

async fn inbox_ids(node: &LocalNode) -> Vec<String> {
    inbox(node).await.into_iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn receiver_killed_mid_stream_gets_each_message_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let mut bob = node(dir.path(), "bob").await;
    trust(&alice, &bob).await;

    const N: usize = 300;
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let reply = alice.client.send_text(&bob.agent_id, &format!("message {i}")).await.expect("send");
        ids.push(reply.message_id);
        if i == N / 3 {
            // Kill bob while deliveries are in flight.
            bob.kill();
        }
    }
    // Deliveries fail while bob is down: wait until the last message has been tried.
    let last = ids.last().cloned().expect("ids");
    wait_for(WAIT, || async { outgoing(&alice, &last).await.filter(|m| m.attempts >= Some(1)) })
        .await
        .expect("attempted while bob is down");
    bob.restart().await.expect("restart bob");

    for id in &ids {
        wait_status(&alice, id, agentmesh_api::MessageStatus::Delivered).await;
    }
    let received = inbox_ids(&bob).await;
    assert_eq!(received.len(), N, "every message stored exactly once");
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), N);
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    let status = alice.client.status().await.expect("status");
    assert_eq!((status.outbox_depth, status.failed_deliveries), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sender_killed_with_a_queued_outbox_delivers_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = node(dir.path(), "alice").await;
    let mut bob = node(dir.path(), "bob").await;
    trust(&alice, &bob).await;

    // Bob is down, so alice's outbox fills; then alice is killed too.
    bob.kill();
    let mut ids = Vec::new();
    for i in 0..25 {
        let reply = alice.client.send_text(&bob.agent_id, &format!("queued {i}")).await.expect("send");
        ids.push(reply.message_id);
    }
    wait_for(WAIT, || async { outgoing(&alice, &ids[0]).await.filter(|m| m.attempts >= Some(1)) })
        .await
        .expect("attempted");
    alice.kill();

    bob.restart().await.expect("restart bob");
    alice.restart().await.expect("restart alice");
    let status = alice.client.status().await.expect("status");
    assert!(status.outbox_depth > 0 || ids.is_empty(), "the outbox survived the crash: {status:?}");
    for id in &ids {
        wait_status(&alice, id, agentmesh_api::MessageStatus::Delivered).await;
    }
    let received = inbox_ids(&bob).await;
    assert_eq!(received.len(), ids.len());
    assert_eq!(received.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_a_receiver_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let mut bob = node(dir.path(), "bob").await;
    trust(&alice, &bob).await;
    let id = send(&alice, &bob.agent_id, "keep me").await;
    wait_status(&alice, &id, agentmesh_api::MessageStatus::Delivered).await;
    // The receipt came back, so bob stored it before answering: a SIGKILL now loses nothing.
    bob.kill();
    bob.restart().await.expect("restart");
    assert_eq!(inbox_ids(&bob).await, vec![id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_on_sigterm_and_one_node_per_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = node(dir.path(), "alice").await;
    // A second node on the same home is refused.
    let out = cli(&alice.home, &["up", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_running"));
    assert!(alice.stop().await, "clean exit on SIGTERM");
    assert!(!alice.home.join("node.json").exists(), "runtime files removed");
    assert!(!alice.home.join("control.token").exists());
    assert_eq!(fails(&alice.home, &["peers"])["error"]["code"], "node_not_running");
}
