//! `agentmesh bench`: two real nodes on loopback, N messages through the whole path
//! (control API → outbox → HTTP → checks → decrypt → store → receipt → outbox marked delivered).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentmesh_api::control::{ContactArgs, RequestsQuery, SendArgs};
use agentmesh_api::{Direction, Event, MessageStatus, TrustState};
use agentmesh_client::StreamItem;
use agentmesh_core::EnvelopeKind;
use agentmesh_testkit::local::{self, LocalNode};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use super::Ctx;
use crate::cli::BenchArgs;
use crate::cli::BenchCarrier;
use crate::output;

pub(crate) async fn run(ctx: &Ctx, args: BenchArgs) -> Result<()> {
    if args.mcp {
        return super::bench_mcp::run(ctx, args.messages, args.size).await;
    }
    if args.flood {
        return super::flood::run(ctx, &args).await;
    }
    if let Some(sockets) = args.hold_sockets {
        return super::bench_sockets::run(ctx, sockets).await;
    }
    if let Some(nodes) = args.gossip {
        return super::bench_gossip::run(ctx, nodes).await;
    }
    if let Some(rounds) = args.tasks {
        return super::bench_tasks::run(ctx, rounds).await;
    }
    if let Some(rounds) = args.calls {
        return super::bench_calls::run(ctx, rounds, args.size).await;
    }
    if let Some(mib) = args.file_mib {
        return super::bench_files::run(ctx, mib, args.carrier).await;
    }
    if let Some(messages) = args.events {
        return super::bench_events::run(ctx, messages, args.size).await;
    }
    if args.messages == 0 || args.concurrency == 0 || args.size == 0 {
        bail!("--messages, --concurrency and --size must be at least 1");
    }
    let (_dir, mut sender, mut receiver) = pair_over("agentmesh-bench-", args.carrier).await?;
    let idle = (sender.memory_kib(), receiver.memory_kib());
    // Trust, the real way.
    trust(&sender, &receiver).await?;

    let body: String = "x".repeat(args.size);
    // Warm-up: connections, caches, SQLite pages.
    let warmup = (args.messages / 20).clamp(50, 1000);
    blast(&sender, &receiver.agent_id, &body, warmup, args.concurrency).await?;
    let cpu = |n: &LocalNode| n.pid().and_then(local::cpu_seconds).unwrap_or(0.0);
    let cpu_before = (cpu(&sender), cpu(&receiver), local::cpu_seconds(std::process::id()).unwrap_or(0.0));
    let (elapsed, mut latencies) = blast(&sender, &receiver.agent_id, &body, args.messages, args.concurrency).await?;
    // What carried them, as the sender saw it.
    let path = path_to(&sender, &receiver).await;
    let cpu_used = (
        cpu(&sender) - cpu_before.0,
        cpu(&receiver) - cpu_before.1,
        local::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu_before.2,
    );
    let peaks = (sender.memory_kib(), receiver.memory_kib());
    let stored = receiver.client.status().await?.unread_messages as usize;
    let (s_ok, r_ok) = (sender.stop().await, receiver.stop().await);

    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let rate = args.messages as f64 / elapsed.as_secs_f64();
    let mib = |k: Option<(u64, u64)>, peak: bool| {
        k.map(|(hwm, rss)| ((if peak { hwm } else { rss }) as f64 / 1024.0 * 10.0).round() / 10.0)
    };
    let report = json!({
        "carrier": args.carrier.name(),
        "path": path,
        "messages": args.messages,
        "concurrency": args.concurrency,
        "size_bytes": args.size,
        "elapsed_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "messages_per_s": rate.round(),
        "latency_ms": {"p50": ms(pct(0.50)), "p90": ms(pct(0.90)), "p99": ms(pct(0.99)), "max": ms(pct(1.0))},
        "receiver_stored": stored,
        "rss_mib": {
            "sender_idle": mib(idle.0, false), "receiver_idle": mib(idle.1, false),
            "sender_peak": mib(peaks.0, true), "receiver_peak": mib(peaks.1, true),
        },
        "cpu_s": {"sender": round2(cpu_used.0), "receiver": round2(cpu_used.1), "load_generator": round2(cpu_used.2)},
        "cpu_us_per_message": {
            "sender": (cpu_used.0 * 1e6 / args.messages as f64).round(),
            "receiver": (cpu_used.1 * 1e6 / args.messages as f64).round(),
            "load_generator": (cpu_used.2 * 1e6 / args.messages as f64).round(),
        },
        "clean_shutdown": s_ok && r_ok,
    });
    if stored != args.messages + warmup {
        bail!("the receiver stored {stored} messages, expected {}", args.messages + warmup);
    }
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!(
            "{} messages of {} bytes, concurrency {}, over {}",
            args.messages,
            args.size,
            args.concurrency,
            path.as_str().unwrap_or("an unknown path")
        ));
        output::line(&format!("  throughput   {:.0} messages/s ({:.2} s)", rate, elapsed.as_secs_f64()));
        output::line(&format!(
            "  send→receipt p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            report["latency_ms"]["p50"],
            report["latency_ms"]["p90"],
            report["latency_ms"]["p99"],
            report["latency_ms"]["max"]
        ));
        let r = &report["rss_mib"];
        output::line(&format!("  RSS idle     sender {} MiB, receiver {} MiB", r["sender_idle"], r["receiver_idle"]));
        output::line(&format!("  RSS peak     sender {} MiB, receiver {} MiB", r["sender_peak"], r["receiver_peak"]));
        let c = &report["cpu_us_per_message"];
        output::line(&format!(
            "  CPU/message  sender {} µs, receiver {} µs, load generator {} µs",
            c["sender"], c["receiver"], c["load_generator"]
        ));
        output::line(&format!("  stored by receiver: {stored} (incl. {warmup} warm-up), every receipt verified"));
    }
    Ok(())
}

/// Two fresh nodes on 127.0.0.1, a sender and a receiver without the per-sender message limit
/// (a bench floods its peer on purpose, and a call's answers flood back), in a temporary directory that lives as long as the
/// returned guard.
pub(super) async fn pair(prefix: &str) -> Result<(tempfile::TempDir, LocalNode, LocalNode)> {
    pair_over(prefix, BenchCarrier::Http).await
}

/// `sender`'s path to `receiver`: `iroh 127.0.0.1:…` or the HTTP URL, as `check` says it.
pub(super) async fn path_to(sender: &LocalNode, receiver: &LocalNode) -> serde_json::Value {
    match sender.client.health(&receiver.agent_id).await.ok().and_then(|h| h.peer.path) {
        // An HTTP path is its URL; an iroh one names the carrier and where it runs.
        Some(p) if p.carrier == "http" => json!(p.endpoint),
        Some(p) => json!(format!("{} {}", p.carrier, p.via.unwrap_or(p.endpoint))),
        None => serde_json::Value::Null,
    }
}

/// [`pair`], the two talking over `carrier`.
pub(super) async fn pair_over(
    prefix: &str,
    carrier: BenchCarrier,
) -> Result<(tempfile::TempDir, LocalNode, LocalNode)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let exe = std::env::current_exe()?;
    let (a_home, b_home) = (dir.path().join("sender"), dir.path().join("receiver"));
    local::init(&exe, &a_home, "sender", &[])?;
    local::init(&exe, &b_home, "receiver", &[])?;
    for home in [&a_home, &b_home] {
        std::fs::write(home.join("config.toml"), "messages_per_minute = 0\n")
            .context("writing a bench node's config")?;
    }
    let sender = LocalNode::start(&exe, &a_home, "127.0.0.1:0", carrier.env()).await?;
    let receiver = LocalNode::start(&exe, &b_home, "127.0.0.1:0", carrier.env()).await?;
    Ok((dir, sender, receiver))
}

/// `sender` asks `receiver` for contact and `receiver` approves; returns once `sender` trusts it.
pub(super) async fn trust(sender: &LocalNode, receiver: &LocalNode) -> Result<()> {
    let ask = ContactArgs { to: receiver.peer_url.clone(), purpose: "bench".into(), ..ContactArgs::default() };
    let reply = sender.client.request_contact(&ask).await?;
    let request_id = reply.request.map(|r| r.request_id).unwrap_or_default();
    local::wait_for(Duration::from_secs(20), || async {
        let q = RequestsQuery { direction: Some(Direction::Incoming), ..RequestsQuery::default() };
        let r = receiver.client.requests(&q).await.ok()?;
        r.requests.iter().any(|x| x.request_id == request_id).then_some(())
    })
    .await
    .ok_or_else(|| anyhow!("the contact request never arrived"))?;
    receiver.client.approve(&request_id).await?;
    local::wait_for(Duration::from_secs(20), || async {
        let p = sender.client.peers(false).await.ok()?;
        p.peers.iter().any(|x| x.trust == TrustState::Trusted).then_some(())
    })
    .await
    .ok_or_else(|| anyhow!("trust was never established"))?;
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Where a message stands in the closed loop: its receipt arrived, or a sender waits for it.
enum Slot {
    Delivered(Instant),
    Waiting(tokio::sync::oneshot::Sender<Instant>),
}

/// Sends `n` messages keeping `concurrency` of them outstanding until their receipt (a closed
/// loop: a worker sends its next message only when the previous one is delivered). Returns the
/// time from the first send to the last receipt and each message's send→receipt latency; every
/// figure stands on verified work, so a message whose delivery (a receipt the sender's node
/// verified) was not seen within a minute fails the run.
pub(super) async fn blast(
    sender: &LocalNode,
    to: &str,
    body: &str,
    n: usize,
    concurrency: usize,
) -> Result<(Duration, Vec<Duration>)> {
    // Live once the response starts: the node subscribes before it answers.
    let mut events = sender.client.events(None).await?;
    let slots: Arc<Mutex<HashMap<String, Slot>>> = Arc::default();
    let watcher = {
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            let mut seen = 0usize;
            while let Some(Ok(item)) = events.next().await {
                let StreamItem::Event(logged) = item else { continue };
                let id = match logged.event {
                    Event::Status { id, kind: EnvelopeKind::Message, status: MessageStatus::Delivered, .. } => id,
                    _ => continue,
                };
                let now = Instant::now();
                let mut map = slots.lock().unwrap_or_else(|p| p.into_inner());
                match map.remove(&id) {
                    Some(Slot::Waiting(tx)) => {
                        let _ = tx.send(now);
                    }
                    _ => {
                        map.insert(id, Slot::Delivered(now));
                    }
                }
                seen += 1;
                if seen >= n {
                    break;
                }
            }
            seen < n
        })
    };
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(n) {
        let (client, next, slots) = (sender.client.clone(), Arc::clone(&next), Arc::clone(&slots));
        let (to, body) = (to.to_owned(), body.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t0 = Instant::now();
                let args = SendArgs { to: to.clone(), text: body.clone(), ..SendArgs::default() };
                let id = client.send(&args).await?.message_id;
                let waiting = {
                    let mut map = slots.lock().unwrap_or_else(|p| p.into_inner());
                    match map.remove(&id) {
                        Some(Slot::Delivered(t1)) => Err(t1),
                        _ => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            map.insert(id, Slot::Waiting(tx));
                            Ok(rx)
                        }
                    }
                };
                let t1 = match waiting {
                    Err(t1) => t1,
                    Ok(rx) => match tokio::time::timeout(Duration::from_secs(60), rx).await {
                        Ok(Ok(t1)) => t1,
                        _ => continue, // receipt not observed: counted as lost
                    },
                };
                latencies.push((t1.saturating_duration_since(t0), t1));
            }
            Ok::<_, agentmesh_client::ClientError>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.context("send task")??);
    }
    let cut_short = if all.len() < n {
        watcher.await.unwrap_or(true)
    } else {
        watcher.abort();
        false
    };
    let last = all.iter().map(|(_, t1)| *t1).max().unwrap_or_else(Instant::now);
    let latencies: Vec<Duration> = all.into_iter().map(|(d, _)| d).collect();
    let lost = n - latencies.len();
    if lost > 0 {
        let why = if cut_short { "the event stream ended early" } else { "no verified receipt within 60 s" };
        bail!("{lost} of {n} messages were not seen delivered ({why}): no figure from this run");
    }
    Ok((last.saturating_duration_since(started), latencies))
}
