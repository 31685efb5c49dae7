//! `agentmesh demo`: two real nodes in temporary homes find, trust and message each other, then
//! the receiver is killed with SIGKILL while a message is queued, restarted, and receives it.

use std::time::{Duration, Instant};

use agentmesh_client::local::{self, LocalNode};
use agentmesh_client::{MessageQuery, RequestDirection};
use agentmesh_core::AgentCard;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::Ctx;
use crate::output;

const WAIT: Duration = Duration::from_secs(20);

/// The story so far: printed step by step for a person, or as one JSON trace.
struct Story {
    json: bool,
    steps: Vec<Value>,
    started: Instant,
}

impl Story {
    fn step(&mut self, title: &str, details: Vec<String>, data: Value) {
        let n = self.steps.len() + 1;
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        if !self.json {
            output::line(&format!("[{n:>2}] {title}"));
            for d in &details {
                output::line(&format!("     {d}"));
            }
        }
        self.steps.push(
            json!({"step": n, "title": title, "ok": true, "elapsed_ms": elapsed_ms, "details": details, "data": data}),
        );
    }
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("agentmesh-demo-").tempdir().context("creating a temporary directory")?;
    let mut story = Story { json: ctx.json, steps: Vec::new(), started: Instant::now() };
    if !ctx.json {
        output::line("agentmesh demo: two agents on this machine find, trust and message each other.");
        output::line(&format!("(temporary homes under {}; all traffic stays on 127.0.0.1)", dir.path().display()));
        output::line("");
    }
    let result = walk(&mut story, dir.path()).await;
    let ok = result.is_ok();
    if ctx.json {
        let mut trace = json!({"ok": ok, "steps": story.steps});
        if let Err(e) = &result {
            trace["error"] = json!(format!("{e:#}"));
        }
        output::json_doc(&trace);
    } else if ok {
        output::line("");
        output::line(&format!("Demo complete in {:.1} s: every step passed.", story.started.elapsed().as_secs_f64()));
    }
    if let Err(e) = result {
        if ctx.json {
            // The trace on stdout already carries the error; exit non-zero.
            std::process::exit(1);
        }
        return Err(e.context(format!("demo failed at step {}", story.steps.len() + 1)));
    }
    Ok(())
}

async fn walk(story: &mut Story, dir: &std::path::Path) -> Result<()> {
    let exe = std::env::current_exe().context("locating the agentmesh binary")?;
    let (alice_home, bob_home) = (dir.join("alice"), dir.join("bob"));
    local::init(&exe, &alice_home, "alice", &["chat", "planning"])?;
    local::init(&exe, &bob_home, "bob", &["chat", "search"])?;
    story.step("Created two identities (Ed25519 signing key + X25519 encryption key each)", vec![], json!({}));

    let alice = LocalNode::start(&exe, &alice_home, "127.0.0.1:0", &[]).await?;
    let mut bob = LocalNode::start(&exe, &bob_home, "127.0.0.1:0", &[]).await?;
    story.step(
        "Started two nodes as separate processes",
        vec![format!("alice {} at {}", alice.agent_id, alice.peer_url), format!("bob   {} at {}", bob.agent_id, bob.peer_url)],
        json!({"alice": {"agent_id": alice.agent_id, "url": alice.peer_url}, "bob": {"agent_id": bob.agent_id, "url": bob.peer_url}}),
    );

    // Discovery by URL: anyone can fetch and check a card; it proves key ownership, not trust.
    let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
        timeout_ms: Some(5_000),
        ..Default::default()
    })?;
    let card: AgentCard = http.get(format!("{}/v1/card", bob.peer_url)).send().await?.json().await?;
    let keys = card.verify().map_err(|e| anyhow!("bob's card does not verify: {e}"))?;
    story.step(
        "Discovered bob by URL: fetched his agent card and verified its self-signature",
        vec![
            format!("agent id {} = first 8 bytes of SHA-256(Ed25519 key)", keys.agent_id()),
            format!("fingerprint {}", card.fingerprint),
            format!("capabilities: {}", card.capabilities.join(", ")),
        ],
        json!({"card": card}),
    );

    let reply = alice.client.request_contact(&bob.peer_url, "demo: let's plan together").await?;
    let request_id = reply["request_id"].as_str().unwrap_or_default().to_owned();
    story.step(
        "alice asked bob for contact (signed, encrypted contact request through her outbox)",
        vec![format!("request {request_id}")],
        reply.clone(),
    );

    let incoming = local::wait_for(WAIT, || async {
        let r = bob.client.requests(Some(RequestDirection::Incoming)).await.ok()?;
        r["requests"].as_array()?.iter().find(|x| x["request_id"] == request_id.as_str()).cloned()
    })
    .await
    .ok_or_else(|| anyhow!("bob never saw alice's contact request"))?;
    if incoming["status"] != "pending" || incoming["peer_id"] != alice.agent_id.as_str() {
        bail!("unexpected request at bob: {incoming}");
    }
    let refused = bob.client.send(&alice.agent_id, "hello?", None, None).await;
    story.step(
        "bob sees a pending request from alice; nothing is trusted yet",
        vec![
            format!("purpose: {}", incoming["purpose"].as_str().unwrap_or_default()),
            format!("fingerprint: {}", incoming["fingerprint"].as_str().unwrap_or_default()),
            format!(
                "bob messaging alice now is refused: {}",
                refused.err().map(|e| e.to_string()).unwrap_or_else(|| "NOT refused".into())
            ),
        ],
        incoming.clone(),
    );

    bob.client.approve(&request_id).await?;
    let alice_sees = local::wait_for(WAIT, || async {
        let peers = alice.client.peers().await.ok()?;
        peers["peers"]
            .as_array()?
            .iter()
            .find(|p| p["agent_id"] == bob.agent_id.as_str() && p["trust"] == "trusted")
            .cloned()
    })
    .await
    .ok_or_else(|| anyhow!("alice never learned that bob approved"))?;
    story.step(
        "bob approved; his node sent a signed acceptance and alice's node now trusts bob too",
        vec![format!("alice's view of bob: {}", text(&alice_sees["trust"]))],
        alice_sees,
    );

    let to_bob = alice.client.send(&bob.agent_id, "Hi bob! Shall we split the research?", None, Some("plan")).await?;
    let to_bob_id = to_bob["message_id"].as_str().unwrap_or_default().to_owned();
    let delivered = wait_status(&alice, &to_bob_id, &["delivered"]).await?;
    story.step(
        "alice -> bob: signed, HPKE-encrypted, stored by bob before a signed delivery receipt came back",
        vec![format!("message {to_bob_id}: {}", text(&delivered["status"]))],
        delivered,
    );

    let to_alice = bob
        .client
        .send(&alice.agent_id, "Yes: I take search, you take planning.", Some(&to_bob_id), Some("plan"))
        .await?;
    let to_alice_id = to_alice["message_id"].as_str().unwrap_or_default().to_owned();
    let delivered = wait_status(&bob, &to_alice_id, &["delivered"]).await?;
    story.step(
        "bob -> alice: reply delivered with receipt",
        vec![format!("message {to_alice_id}: {}", text(&delivered["status"]))],
        delivered,
    );

    let read = bob.client.read(&to_bob_id).await?;
    let body = read["message"]["text"].as_str().unwrap_or_default().to_owned();
    let marked = wait_status(&alice, &to_bob_id, &["read"]).await?;
    story.step(
        "bob read alice's message; a signed read receipt marked it read at alice",
        vec![format!("bob read: \"{body}\""), format!("alice's outbox: {}", text(&marked["status"]))],
        marked,
    );

    bob.kill();
    story.step("Crash: bob's node was killed with SIGKILL", vec![], json!({}));

    let queued =
        alice.client.send(&bob.agent_id, "Are you still there? This must not get lost.", None, Some("plan")).await?;
    let queued_id = queued["message_id"].as_str().unwrap_or_default().to_owned();
    let pending = local::wait_for(WAIT, || async {
        let m = find_outgoing(&alice, &queued_id).await?;
        (m["attempts"].as_i64().unwrap_or(0) >= 1).then_some(m)
    })
    .await
    .ok_or_else(|| anyhow!("alice's outbox never tried to deliver"))?;
    story.step(
        "alice sends while bob is down: the message waits in her durable outbox",
        vec![
            format!(
                "message {queued_id}: {} after {} attempt(s)",
                text(&pending["status"]),
                text(&pending["attempts"])
            ),
            format!("last error: {}", pending["last_error"].as_str().unwrap_or("-")),
        ],
        pending,
    );

    bob.restart().await?;
    story.step(
        "bob restarted on the same address",
        vec![format!("bob at {}", bob.peer_url)],
        json!({"url": bob.peer_url}),
    );

    let delivered = wait_status(&alice, &queued_id, &["delivered"]).await?;
    let inbox = bob
        .client
        .messages(&MessageQuery {
            direction: Some(RequestDirection::Incoming),
            peer: Some(alice.agent_id.clone()),
            ..Default::default()
        })
        .await?;
    let copies =
        inbox["messages"].as_array().map(|a| a.iter().filter(|m| m["id"] == queued_id.as_str()).count()).unwrap_or(0);
    if copies != 1 {
        bail!("bob holds {copies} copies of the queued message, expected exactly 1");
    }
    story.step(
        "The queued message was delivered after the restart, exactly once",
        vec![
            format!(
                "message {queued_id}: {} after {} attempt(s)",
                text(&delivered["status"]),
                text(&delivered["attempts"])
            ),
            format!("copies in bob's inbox: {copies}"),
        ],
        delivered,
    );

    let rotated = alice.client.rotate_key().await?;
    let new_fp = rotated["fingerprint"].clone();
    let followed = local::wait_for(WAIT, || async {
        let peers = bob.client.peers().await.ok()?;
        peers["peers"]
            .as_array()?
            .iter()
            .find(|p| p["agent_id"] == alice.agent_id.as_str() && p["fingerprint"] == new_fp)
            .cloned()
    })
    .await
    .ok_or_else(|| anyhow!("bob never followed alice's key rotation"))?;
    let after = alice.client.send(&bob.agent_id, "New keys, same me.", None, Some("plan")).await?;
    let after_id = after["message_id"].as_str().unwrap_or_default().to_owned();
    let delivered = wait_status(&alice, &after_id, &["delivered"]).await?;
    story.step(
        "alice rotated her keys; bob verified the signed chain, moved his pin, and still trusts her",
        vec![
            format!("agent id unchanged: {}", text(&rotated["agent_id"])),
            format!("fingerprint {} -> {}", text(&rotated["old_fingerprint"]), text(&new_fp)),
            format!(
                "bob: {} / {}; message {after_id}: {}",
                text(&followed["trust"]),
                text(&followed["fingerprint"]),
                text(&delivered["status"])
            ),
        ],
        json!({"rotation": rotated, "bob_sees": followed, "message": delivered}),
    );

    let mut alice = alice;
    let (a, b) = (alice.stop().await, bob.stop().await);
    if !(a && b) {
        bail!("a node did not shut down cleanly on SIGTERM");
    }
    story.step("Both nodes shut down cleanly on SIGTERM", vec![], json!({}));
    Ok(())
}

async fn find_outgoing(node: &LocalNode, id: &str) -> Option<Value> {
    let q = MessageQuery { direction: Some(RequestDirection::Outgoing), ..Default::default() };
    let list = node.client.messages(&q).await.ok()?;
    list["messages"].as_array()?.iter().find(|m| m["id"] == id).cloned()
}

async fn wait_status(node: &LocalNode, id: &str, wanted: &[&str]) -> Result<Value> {
    let found = local::wait_for(WAIT, || async {
        let m = find_outgoing(node, id).await?;
        wanted.iter().any(|w| m["status"] == *w).then_some(m)
    })
    .await;
    match found {
        Some(m) => Ok(m),
        None => {
            let last = find_outgoing(node, id).await.unwrap_or(Value::Null);
            Err(anyhow!("message {id} did not reach {wanted:?}; last seen: {last}"))
        }
    }
}

/// A JSON value as plain text (strings without quotes).
fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}
