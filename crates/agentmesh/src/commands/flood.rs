//! `agentmesh bench --flood`: does one flooding sender slow the others down?
//!
//! A receiver node with its default rate limits, a well-behaved sender node, and a flooder (an
//! identity driven from this process, trusted by the receiver like any contact, that ignores
//! `Retry-After` and keeps `--flood-connections` requests in flight with fresh, validly signed
//! envelopes). The well-behaved sender's send→receipt latency is measured twice: alone, then
//! while the flood runs. The run fails unless the flood was still going when the second
//! measurement ended (enough envelopes are signed beforehand), and unless every message of the
//! well-behaved sender was delivered with a verified receipt. The flood's rate counts requests
//! the receiver answered; connection failures are reported apart. All traffic stays on
//! 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentmesh_testkit::local::{self, LocalNode};
use anyhow::{Context, Result};
use serde_json::json;

use super::Ctx;
use super::bench_peer::DrivenPeer;
use crate::cli::BenchArgs;
use crate::output;

/// Messages the well-behaved sender sends in each phase.
const PHASE_MESSAGES: usize = 300;
/// Envelopes the flooder prepares (each sent once: no cheap replays): about three seconds of
/// flood at ~20,000 requests/s, several times the measured window.
const FLOOD_ENVELOPES: usize = 60_000;

pub(crate) async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("agentmesh-flood-").tempdir()?;
    let exe = std::env::current_exe()?;
    let (w_home, r_home) = (dir.path().join("sender"), dir.path().join("receiver"));
    local::init(&exe, &w_home, "sender", &[])?;
    local::init(&exe, &r_home, "receiver", &[])?;
    // Default limits but a budget the well-behaved sender never reaches in this run.
    std::fs::write(r_home.join("config.toml"), "messages_per_minute = 1000\n").context("writing config")?;
    let mut sender = LocalNode::start(&exe, &w_home, "127.0.0.1:0", &[]).await?;
    let mut receiver = LocalNode::start(&exe, &r_home, "127.0.0.1:0", &[]).await?;
    super::bench::trust(&sender, &receiver).await?;

    let flooder = DrivenPeer::trusted_by(&receiver, "flooder").await?;
    let http = flooder.http.clone();

    output_progress(ctx, "preparing the flood");
    let mut flood = Vec::with_capacity(FLOOD_ENVELOPES);
    for i in 0..FLOOD_ENVELOPES {
        flood.push(flooder.message(&format!("flood {i}"))?.1);
    }

    let body = "x".repeat(args.size);
    let concurrency = args.concurrency.clamp(1, 8);
    super::bench::blast(&sender, &receiver.agent_id, &body, 50, concurrency).await?; // warm-up
    output_progress(ctx, "measuring alone");
    let (_, alone) = super::bench::blast(&sender, &receiver.agent_id, &body, PHASE_MESSAGES, concurrency).await?;

    output_progress(ctx, "measuring under the flood");
    let flood = Arc::new(flood);
    let next = Arc::new(AtomicUsize::new(0));
    let statuses: Arc<[AtomicUsize; 6]> = Arc::new(Default::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut floods = Vec::new();
    for _ in 0..args.flood_connections.max(1) {
        let (http, flood, next, statuses, stop) =
            (http.clone(), Arc::clone(&flood), Arc::clone(&next), Arc::clone(&statuses), Arc::clone(&stop));
        let url = format!("{}/v1/message", receiver.peer_url);
        floods.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(envelope) = flood.get(i) else { break };
                let send = http.post(&url).header("content-type", "application/json").body(envelope.clone()).send();
                let status = tokio::select! {
                    _ = stop.notified() => break,
                    r = send => r.map(|r| r.status().as_u16()).unwrap_or(0),
                };
                let slot = match status {
                    200 => 0,
                    429 => 1,
                    400..=499 => 2,
                    500..=599 => 3,
                    0 => 4,
                    _ => 5,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the flood is in full swing
    let (_, flooded) = super::bench::blast(&sender, &receiver.agent_id, &body, PHASE_MESSAGES, concurrency).await?;
    let flood_secs = started.elapsed().as_secs_f64();
    // Still flooding as the window closed? Every prepared envelope taken means it may have run dry.
    let still_flooding = next.load(Ordering::Relaxed) < flood.len();
    stop.notify_waiters();
    for f in floods {
        f.abort();
    }
    if !still_flooding {
        anyhow::bail!(
            "the flood ran out of its {} envelopes before the measurement ended: no figure \"during the flood\"",
            flood.len()
        );
    }
    // Requests the receiver answered; a connection that failed is no request.
    let answered: usize = [0, 1, 2, 3, 5].iter().map(|&i| statuses[i].load(Ordering::Relaxed)).sum();
    let (s_ok, r_ok) = (sender.stop().await, receiver.stop().await);

    let summary = |mut l: Vec<Duration>| {
        l.sort_unstable();
        let pct = |p: f64| {
            let d = l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
            (d.as_secs_f64() * 100_000.0).round() / 100.0
        };
        json!({"messages": l.len(), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
    };
    let report = json!({
        "well_behaved": {"concurrency": concurrency, "size_bytes": args.size, "alone": summary(alone), "during_flood": summary(flooded)},
        "flood": {
            "connections": args.flood_connections,
            "ran_through_the_window": still_flooding,
            "requests": answered,
            "requests_per_s": (answered as f64 / flood_secs).round(),
            "accepted": statuses[0].load(Ordering::Relaxed),
            "rate_limited": statuses[1].load(Ordering::Relaxed),
            "other_4xx": statuses[2].load(Ordering::Relaxed),
            "server_errors": statuses[3].load(Ordering::Relaxed),
            "transport_errors": statuses[4].load(Ordering::Relaxed),
        },
        "clean_shutdown": s_ok && r_ok,
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        let w = &report["well_behaved"];
        let f = &report["flood"];
        output::line(&format!("well-behaved sender, {} messages at concurrency {concurrency}:", PHASE_MESSAGES));
        for phase in ["alone", "during_flood"] {
            let p = &w[phase];
            output::line(&format!(
                "  {phase:<13} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                p["p50_ms"], p["p90_ms"], p["p99_ms"], p["max_ms"]
            ));
        }
        output::line(&format!(
            "flood: {} requests ({} /s) on {} connections: {} accepted, {} rate-limited (429), {} other 4xx, {} 5xx, {} transport errors",
            f["requests"],
            f["requests_per_s"],
            f["connections"],
            f["accepted"],
            f["rate_limited"],
            f["other_4xx"],
            f["server_errors"],
            f["transport_errors"]
        ));
    }
    Ok(())
}

fn output_progress(ctx: &Ctx, what: &str) {
    if !ctx.json {
        eprintln!("… {what}");
    }
}
