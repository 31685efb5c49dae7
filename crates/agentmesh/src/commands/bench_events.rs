//! `agentmesh bench --events N`: how soon a message the receiver accepted reaches a consumer of
//! its event stream (`GET /v1/events`, Server-Sent Events).
//!
//! A receiver node, a peer driven from this process (so the bench knows when each envelope
//! leaves), and one SSE consumer. Messages go one at a time. For each, the bench takes the time
//! it posts the envelope, the time the receipt comes back (the node answers after it committed
//! and published the event), and the time the consumer gets the `message` event. The
//! accepted→event latency is at most send→event (which also holds verifying, decrypting and
//! storing); `event_minus_receipt` shows the event usually beats the receipt. 127.0.0.1 only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentmesh_api::{Direction, Event};
use agentmesh_client::StreamItem;
use agentmesh_testkit::local::{self, LocalNode};
use anyhow::{Context, Result, bail};
use serde_json::json;

use super::Ctx;
use super::bench_peer::DrivenPeer;
use crate::output;

pub(crate) async fn run(ctx: &Ctx, messages: usize, size: usize) -> Result<()> {
    if messages == 0 {
        bail!("--events needs at least 1 message");
    }
    let dir = tempfile::Builder::new().prefix("agentmesh-bench-events-").tempdir()?;
    let exe = std::env::current_exe()?;
    let home = dir.path().join("receiver");
    local::init(&exe, &home, "receiver", &[])?;
    std::fs::write(home.join("config.toml"), "messages_per_minute = 0\n").context("writing config")?;
    let mut receiver = LocalNode::start(&exe, &home, "127.0.0.1:0", &[]).await?;
    let peer = DrivenPeer::trusted_by(&receiver, "sender").await?;

    // The consumer: reports each incoming message's id with the time its event arrived.
    let mut stream = receiver.client.events(None).await?;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let consumer = tokio::spawn(async move {
        while let Some(Ok(item)) = stream.next().await {
            let now = Instant::now();
            if let StreamItem::Event(logged) = item
                && let Event::Message { message } = &logged.event
                && message.direction == Direction::Incoming
                && seen_tx.send((message.id.clone(), now)).is_err()
            {
                break;
            }
        }
    });

    let text = "x".repeat(size.max(1));
    let warmup = (messages / 10).clamp(20, 200);
    let envelopes: Vec<(String, Vec<u8>)> =
        (0..warmup + messages).map(|_| peer.message(&text)).collect::<Result<_>>()?;
    let url = format!("{}/v1/message", peer.url);
    let mut early: HashMap<String, Instant> = HashMap::new();
    let (mut to_event, mut to_receipt, mut event_minus_receipt) = (Vec::new(), Vec::new(), Vec::new());
    for (n, (id, body)) in envelopes.into_iter().enumerate() {
        let sent = Instant::now();
        let response = peer.http.post(&url).header("content-type", "application/json").body(body).send().await?;
        let receipt = Instant::now();
        if !response.status().is_success() {
            bail!("the receiver refused message {id}: {}", response.text().await?);
        }
        let _ = response.bytes().await;
        let event = loop {
            if let Some(at) = early.remove(&id) {
                break at;
            }
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
                .await
                .context("no event within 10 s")?
                .context("the event stream ended")?;
            if got == id {
                break at;
            }
            early.insert(got, at);
        };
        if n >= warmup {
            to_event.push(event.saturating_duration_since(sent));
            to_receipt.push(receipt.saturating_duration_since(sent));
            event_minus_receipt
                .push(event.duration_since(sent).as_secs_f64() - receipt.duration_since(sent).as_secs_f64());
        }
    }
    consumer.abort();
    let clean = receiver.stop().await;

    let summary = |mut l: Vec<Duration>| {
        l.sort_unstable();
        let pct = |p: f64| {
            let d = l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
            (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
        };
        json!({"p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
    };
    event_minus_receipt.sort_by(f64::total_cmp);
    let median_gap = event_minus_receipt.get(event_minus_receipt.len() / 2).copied().unwrap_or_default();
    let report = json!({
        "messages": messages,
        "size_bytes": size,
        "send_to_event": summary(to_event),
        "send_to_receipt": summary(to_receipt),
        "event_minus_receipt_p50_ms": (median_gap * 1_000_000.0).round() / 1000.0,
        "clean_shutdown": clean,
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        for (what, key) in
            [("send → event at the SSE consumer", "send_to_event"), ("send → receipt", "send_to_receipt")]
        {
            let p = &report[key];
            output::line(&format!(
                "{what:<34} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                p["p50_ms"], p["p90_ms"], p["p99_ms"], p["max_ms"]
            ));
        }
        output::line(&format!(
            "the event arrives {} ms after the receipt (median; negative: before it)",
            report["event_minus_receipt_p50_ms"]
        ));
    }
    Ok(())
}
