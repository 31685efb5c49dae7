//! The event log and its SSE stream: resuming after a node restart loses and repeats nothing, a
//! stalled consumer is cut off while the others are served, peers going offline and coming back
//! are events, and `events` / `list-requests --follow` print them.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use agentmesh_api::{Direction, Event, LoggedEvent, MessageStatus};
use agentmesh_client::{EventStream, StreamItem};

use crate::support::*;

/// The next event of `stream`, skipping notices; panics after [`WAIT`].
async fn next_event(stream: &mut EventStream) -> LoggedEvent {
    loop {
        let item = tokio::time::timeout(WAIT, stream.next()).await.expect("an event in time");
        match item.expect("the stream is open").expect("a frame") {
            StreamItem::Event(event) => return *event,
            _ => continue,
        }
    }
}

/// Incoming message ids among `events`.
fn incoming_ids(events: &[LoggedEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Message { message } if message.direction == Direction::Incoming => Some(message.id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_resumes_after_a_node_restart_and_loses_or_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let mut stream = b.client.events(None).await.expect("events");
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(send(&a, &b.agent_id, &format!("before {n}")).await);
    }
    let mut seen = Vec::new();
    while incoming_ids(&seen).len() < 3 {
        seen.push(next_event(&mut stream).await);
    }
    let cursor = seen.last().map(|e| e.seq).expect("a cursor");
    drop(stream);

    // Bob goes down; Alice's node finds it unreachable and says so in her log.
    assert!(b.stop().await);
    let alice_cursor = a.client.event_list(&Default::default()).await.expect("log").last;
    for n in 0..3 {
        sent.push(send(&a, &b.agent_id, &format!("while down {n}")).await);
    }
    let offline = wait_for(WAIT, || async {
        let q = agentmesh_api::control::EventListQuery { after: Some(alice_cursor), limit: Some(1000) };
        let log = a.client.event_list(&q).await.ok()?;
        log.events
            .into_iter()
            .find(|e| matches!(&e.event, Event::PeerOffline { peer_id, .. } if peer_id.as_str() == b.agent_id))
    })
    .await;
    assert!(offline.is_some(), "no peer_offline event for bob");

    b.restart().await.expect("restart");
    for id in &sent[3..] {
        wait_status(&a, id, MessageStatus::Delivered).await;
    }
    sent.push(send(&a, &b.agent_id, "after").await);
    // Resuming after the last cursor seen, as an SSE client does with Last-Event-ID.
    let mut stream = b.client.events(Some(cursor)).await.expect("events");
    let mut resumed = Vec::new();
    while incoming_ids(&resumed).len() < 4 {
        resumed.push(next_event(&mut stream).await);
    }
    assert!(resumed.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    assert!(resumed[0].seq > cursor, "nothing repeated");
    let mut all = incoming_ids(&seen);
    all.extend(incoming_ids(&resumed));
    assert_eq!(all.len(), sent.len(), "nothing twice: {all:?}");
    assert_eq!(all.iter().collect::<HashSet<_>>(), sent.iter().collect::<HashSet<_>>(), "every message");
    // And Alice's log says Bob answers again.
    let online = wait_for(WAIT, || async {
        let q = agentmesh_api::control::EventListQuery { after: Some(alice_cursor), limit: Some(1000) };
        let log = a.client.event_list(&q).await.ok()?;
        log.events
            .into_iter()
            .find(|e| matches!(&e.event, Event::PeerOnline { peer_id } if peer_id.as_str() == b.agent_id))
    })
    .await;
    assert!(online.is_some(), "no peer_online event for bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_consumer_is_cut_off_while_the_node_serves_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node_with(dir.path(), "bob", "control_write_timeout_secs = 1\n", &[]).await;
    trust(&a, &b).await;
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.home.join("node.json")).expect("node.json")).expect("json");
    let control = runtime["control_url"].as_str().expect("control url").trim_start_matches("http://").to_owned();
    let token = std::fs::read_to_string(b.home.join("control.token")).expect("token");

    // A consumer that asks for the stream and then never reads.
    let mut stalled = std::net::TcpStream::connect(&control).expect("connect");
    write!(stalled, "GET /v1/events HTTP/1.1\r\nHost: {control}\r\nAuthorization: Bearer {token}\r\n\r\n")
        .expect("request");
    // A consumer that reads as events come.
    let mut reader = b.client.events(None).await.expect("events");
    let (ids_tx, mut ids) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        loop {
            if let Event::Message { message } = next_event(&mut reader).await.event
                && ids_tx.send(message.id).is_err()
            {
                break;
            }
        }
    });

    // More event data than the stalled socket's buffers hold (a receive buffer that is never
    // read does not grow; the send buffer stops at 4 MiB here): 64 messages of 120 KB.
    let text = "x".repeat(120 * 1024);
    let mut sent = HashSet::new();
    for _ in 0..64 {
        sent.insert(send(&a, &b.agent_id, &text).await);
    }
    let mut received = HashSet::new();
    while received.len() < sent.len() {
        let id = tokio::time::timeout(WAIT, ids.recv()).await.expect("in time").expect("the reader runs");
        received.insert(id);
    }
    assert_eq!(received, sent, "the reading consumer got everything");

    reading.abort();

    // The stalled one was disconnected: reading it now ends (EOF or reset) instead of waiting.
    stalled.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled consumer was never cut off ({total} bytes read): {e}"),
        }
    }

    assert!(total < 64 * 120 * 1024, "it was cut before getting everything ({total} bytes)");
    // The node still answers.
    b.client.status().await.expect("status");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_and_list_requests_follow_print_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    let (mut follow, rx) = spawn_lines(&b.home, &["list-requests", "--incoming", "--follow"]);
    // Give the follower time to connect; a request made before it did would be listed anyway.
    let reply = ask(&a, &b.peer_url).await;
    let id = reply.request.expect("request").request_id;
    let line = rx.recv_timeout(WAIT).expect("a line");
    let request: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(request["request_id"], id.as_str());
    assert_eq!(request["status"], "pending");
    b.client.approve(&id).await.expect("approve");
    let line = rx.recv_timeout(WAIT).expect("a line");
    let request: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!((request["request_id"].as_str(), request["status"].as_str()), (Some(id.as_str()), Some("approved")));
    let _ = follow.kill();
    let _ = follow.wait();

    // `events --after 0` lists the log with cursors.
    let out = cli(&b.home, &["events", "--after", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(events.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
    assert!(events.iter().any(|e| e["event"] == "contact_request" && e["request"]["request_id"] == id.as_str()));
    assert!(events.iter().any(|e| e["event"] == "trust" && e["trust"] == "trusted"));
    assert_eq!(fails_with(&b.home, &["events", "--limit", "0"]), "invalid_argument");
}
