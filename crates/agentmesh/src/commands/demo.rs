//! `agentmesh demo`: two real nodes in temporary homes find, trust and message each other, then
//! the receiver is killed with SIGKILL while a message is queued, restarted, and receives it;
//! one rotates its keys, then a block is told to the other side.

use std::time::{Duration, Instant};

use agentmesh_api::control::{ContactArgs, MessagesQuery, RequestsQuery, SendArgs};
use agentmesh_api::{Direction, Message, MessageStatus, RequestStatus, TrustState};
use agentmesh_core::AgentCard;
use agentmesh_testkit::local::{self, LocalNode};
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

pub(crate) async fn run(ctx: &Ctx) -> Result<()> {
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

    let contact =
        ContactArgs { to: bob.peer_url.clone(), purpose: "demo: let's plan together".into(), ..ContactArgs::default() };
    let reply = alice.client.request_contact(&contact).await?;
    let request_id = reply.request.as_ref().map(|r| r.request_id.clone()).unwrap_or_default();
    story.step(
        "alice asked bob for contact (signed, encrypted contact request through her outbox)",
        vec![format!("request {request_id}: {:?}", reply.outcome)],
        json!(reply),
    );

    let incoming = local::wait_for(WAIT, || async {
        let q = RequestsQuery { direction: Some(Direction::Incoming), ..RequestsQuery::default() };
        let r = bob.client.requests(&q).await.ok()?;
        r.requests.into_iter().find(|x| x.request_id == request_id)
    })
    .await
    .ok_or_else(|| anyhow!("bob never saw alice's contact request"))?;
    if incoming.status != RequestStatus::Pending || incoming.peer_id.as_str() != alice.agent_id {
        bail!("unexpected request at bob: {incoming:?}");
    }
    let refused = bob.client.send_text(&alice.agent_id, "hello?").await;
    story.step(
        "bob sees a pending request from alice; nothing is trusted yet",
        vec![
            format!("purpose: {}", incoming.purpose),
            format!("fingerprint: {}", incoming.fingerprint.as_deref().unwrap_or("-")),
            format!(
                "bob messaging alice now is refused: {}",
                refused.err().map(|e| e.to_string()).unwrap_or_else(|| "NOT refused".into())
            ),
        ],
        json!(incoming),
    );

    bob.client.approve(&request_id).await?;
    let alice_sees = local::wait_for(WAIT, || async {
        let peers = alice.client.peers(false).await.ok()?;
        peers.peers.into_iter().find(|p| p.agent_id.as_str() == bob.agent_id && p.trust == TrustState::Trusted)
    })
    .await
    .ok_or_else(|| anyhow!("alice never learned that bob approved"))?;
    story.step(
        "bob approved; his node sent a signed acceptance and alice's node now trusts bob too",
        vec![format!("alice's view of bob: {}", alice_sees.trust)],
        json!(alice_sees),
    );

    let send = |to: &str, text: &str, reply_to: Option<String>| SendArgs {
        to: to.to_owned(),
        text: text.to_owned(),
        reply_to,
        thread: Some("plan".into()),
    };
    let to_bob = alice.client.send(&send(&bob.agent_id, "Hi bob! Shall we split the research?", None)).await?;
    let to_bob_id = to_bob.message_id;
    let delivered = wait_status(&alice, &to_bob_id, &[MessageStatus::Delivered]).await?;
    story.step(
        "alice -> bob: signed, HPKE-encrypted, stored by bob before a signed delivery receipt came back",
        vec![format!("message {to_bob_id}: {}", delivered.status)],
        json!(delivered),
    );

    let to_alice = bob
        .client
        .send(&send(&alice.agent_id, "Yes: I take search, you take planning.", Some(to_bob_id.clone())))
        .await?;
    let to_alice_id = to_alice.message_id;
    let delivered = wait_status(&bob, &to_alice_id, &[MessageStatus::Delivered]).await?;
    story.step(
        "bob -> alice: reply delivered with receipt",
        vec![format!("message {to_alice_id}: {}", delivered.status)],
        json!(delivered),
    );

    let read = bob.client.read(&to_bob_id).await?;
    let body = read.message.text.unwrap_or_default();
    let marked = wait_status(&alice, &to_bob_id, &[MessageStatus::Read]).await?;
    story.step(
        "bob read alice's message; a signed read receipt marked it read at alice",
        vec![format!("bob read: \"{body}\""), format!("alice's outbox: {}", marked.status)],
        json!(marked),
    );

    bob.kill();
    story.step("Crash: bob's node was killed with SIGKILL", vec![], json!({}));

    let queued = alice.client.send(&send(&bob.agent_id, "Are you still there? This must not get lost.", None)).await?;
    let queued_id = queued.message_id;
    let pending = local::wait_for(WAIT, || async {
        let m = find_outgoing(&alice, &queued_id).await?;
        (m.attempts.unwrap_or(0) >= 1).then_some(m)
    })
    .await
    .ok_or_else(|| anyhow!("alice's outbox never tried to deliver"))?;
    story.step(
        "alice sends while bob is down: the message waits in her durable outbox",
        vec![
            format!("message {queued_id}: {} after {} attempt(s)", pending.status, pending.attempts.unwrap_or(0)),
            format!("last error: {}", pending.last_error.as_deref().unwrap_or("-")),
        ],
        json!(pending),
    );

    bob.restart().await?;
    story.step(
        "bob restarted on the same address",
        vec![format!("bob at {}", bob.peer_url)],
        json!({"url": bob.peer_url}),
    );

    let delivered = wait_status(&alice, &queued_id, &[MessageStatus::Delivered]).await?;
    let inbox = bob
        .client
        .messages(&MessagesQuery {
            direction: Some(Direction::Incoming),
            peer: Some(alice.agent_id.clone()),
            ..MessagesQuery::default()
        })
        .await?;
    let copies = inbox.messages.iter().filter(|m| m.id == queued_id).count();
    if copies != 1 {
        bail!("bob holds {copies} copies of the queued message, expected exactly 1");
    }
    story.step(
        "The queued message was delivered after the restart, exactly once",
        vec![
            format!("message {queued_id}: {} after {} attempt(s)", delivered.status, delivered.attempts.unwrap_or(0)),
            format!("copies in bob's inbox: {copies}"),
        ],
        json!(delivered),
    );

    let rotated = alice.client.rotate_key().await?;
    let new_fp = rotated.fingerprint.clone();
    let followed = local::wait_for(WAIT, || async {
        let peers = bob.client.peers(false).await.ok()?;
        peers.peers.into_iter().find(|p| p.agent_id.as_str() == alice.agent_id && p.fingerprint == new_fp)
    })
    .await
    .ok_or_else(|| anyhow!("bob never followed alice's key rotation"))?;
    let after = alice.client.send(&send(&bob.agent_id, "New keys, same me.", None)).await?;
    let after_id = after.message_id;
    let delivered = wait_status(&alice, &after_id, &[MessageStatus::Delivered]).await?;
    story.step(
        "alice rotated her keys; bob verified the signed chain, moved his pin, and still trusts her",
        vec![
            format!("agent id unchanged: {}", rotated.agent_id),
            format!("fingerprint {} -> {}", rotated.old_fingerprint, new_fp),
            format!("bob: {} / {}; message {after_id}: {}", followed.trust, followed.fingerprint, delivered.status),
        ],
        json!({"rotation": rotated, "bob_sees": followed, "message": delivered}),
    );

    // Trust changes are told to the other side: bob blocks alice, and her node knows at once.
    let blocked = bob.client.block(&alice.agent_id).await?;
    let alice_view = local::wait_for(WAIT, || async {
        let peers = alice.client.peers(false).await.ok()?;
        peers.peers.into_iter().find(|p| p.agent_id.as_str() == bob.agent_id && p.trust == TrustState::Rejected)
    })
    .await
    .ok_or_else(|| anyhow!("alice never learned that bob blocked her"))?;
    bob.client.unblock(&alice.agent_id).await?;
    let asked =
        alice.client.request_contact(&ContactArgs { to: bob.agent_id.clone(), ..ContactArgs::default() }).await?;
    story.step(
        "bob blocked alice: her node was told (signed contact_update) and shows it; after unblocking, she asks again",
        vec![
            format!("bob told alice: {}", blocked.told),
            format!(
                "alice's view of bob: {} ({})",
                alice_view.trust,
                alice_view.trust_reason.as_ref().map(|r| r.to_string()).unwrap_or_default()
            ),
            format!("alice asks again: {:?}", asked.outcome),
        ],
        json!({"blocked": blocked, "alice_sees": alice_view, "asked_again": asked}),
    );

    let mut alice = alice;
    let (a, b) = (alice.stop().await, bob.stop().await);
    if !(a && b) {
        bail!("a node did not shut down cleanly on SIGTERM");
    }
    story.step("Both nodes shut down cleanly on SIGTERM", vec![], json!({}));
    Ok(())
}

async fn find_outgoing(node: &LocalNode, id: &str) -> Option<Message> {
    let q = MessagesQuery { direction: Some(Direction::Outgoing), ..MessagesQuery::default() };
    let list = node.client.messages(&q).await.ok()?;
    list.messages.into_iter().find(|m| m.id == id)
}

async fn wait_status(node: &LocalNode, id: &str, wanted: &[MessageStatus]) -> Result<Message> {
    let found = local::wait_for(WAIT, || async {
        let m = find_outgoing(node, id).await?;
        wanted.contains(&m.status).then_some(m)
    })
    .await;
    match found {
        Some(m) => Ok(m),
        None => {
            let last = find_outgoing(node, id).await;
            Err(anyhow!("message {id} did not reach {wanted:?}; last seen: {last:?}"))
        }
    }
}
