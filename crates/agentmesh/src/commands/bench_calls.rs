//! `agentmesh bench --calls N`: call ping-pong between two real nodes on loopback.
//!
//! The caller rings, the callee answers, then N rounds one at a time: the caller says a line
//! (control API → outbox → HTTP → the callee's pipeline → its event stream), a consumer of the
//! callee's event stream says a line back as soon as the caller's line reaches it, and the round
//! ends when that answer's event reaches the caller's consumer. Each round is two full deliveries,
//! each stored on both sides before it is acknowledged. 127.0.0.1 only.

use std::time::{Duration, Instant};

use agentmesh_api::control::{AnswerArgs, CallArgs};
use agentmesh_api::{CallState, Event, LineKind, Side};
use agentmesh_client::{EventStream, StreamItem};
use agentmesh_testkit::local;
use anyhow::{Result, anyhow, bail};
use serde_json::json;

use super::Ctx;
use super::bench::{pair, trust};
use crate::output;

/// The next line the peer said in `call_id`, from `stream`.
async fn next_peer_line(stream: &mut EventStream, call_id: &str) -> Result<Instant> {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .map_err(|_| anyhow!("no line from the peer within 30 s"))?
            .ok_or_else(|| anyhow!("the event stream ended"))??;
        if let StreamItem::Event(logged) = item
            && let Event::Call { call, line: Some(line) } = &logged.event
            && call.call_id == call_id
            && line.speaker == Side::Peer
            && line.kind == LineKind::Say
        {
            return Ok(Instant::now());
        }
    }
}

pub(crate) async fn run(ctx: &Ctx, rounds: usize, size: usize) -> Result<()> {
    if rounds == 0 {
        bail!("--calls needs at least 1 round");
    }
    let (_dir, mut caller, mut callee) = pair("agentmesh-bench-calls-").await?;
    trust(&caller, &callee).await?;
    let (mut at_caller, mut at_callee) = (caller.client.events(None).await?, callee.client.events(None).await?);
    let args = CallArgs { to: callee.agent_id.clone(), topic: "bench".into(), ring_secs: None };
    let call_id = caller.client.call(&args).await?.call.call_id;
    local::wait_for(Duration::from_secs(20), || async {
        let t = callee.client.transcript(&call_id).await.ok()?;
        (t.call.state == CallState::Ringing).then_some(())
    })
    .await
    .ok_or_else(|| anyhow!("the call never rang"))?;
    callee.client.answer(&call_id, &AnswerArgs { accept: true, reason: None }).await?;
    local::wait_for(Duration::from_secs(20), || async {
        let t = caller.client.transcript(&call_id).await.ok()?;
        (t.call.state == CallState::Active).then_some(())
    })
    .await
    .ok_or_else(|| anyhow!("the answer never reached the caller"))?;

    // The callee's agent: answers each line as soon as its event arrives.
    let responder = {
        let (client, call_id) = (callee.client.clone(), call_id.clone());
        let pong = "p".repeat(size.max(1));
        tokio::spawn(async move {
            loop {
                next_peer_line(&mut at_callee, &call_id).await?;
                client.say(&call_id, &pong).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        })
    };

    let ping = "q".repeat(size.max(1));
    let warmup = (rounds / 10).clamp(10, 200);
    let mut rtts = Vec::with_capacity(rounds);
    let mut started = Instant::now();
    for n in 0..warmup + rounds {
        if n == warmup {
            started = Instant::now();
        }
        let t0 = Instant::now();
        caller.client.say(&call_id, &ping).await?;
        let t1 = next_peer_line(&mut at_caller, &call_id).await?;
        if n >= warmup {
            rtts.push(t1.saturating_duration_since(t0));
        }
    }
    let elapsed = started.elapsed();
    responder.abort();
    caller.client.end_call(&call_id, None).await?;
    let lines = caller.client.transcript(&call_id).await?.call.lines;
    let (c_ok, r_ok) = (caller.stop().await, callee.stop().await);

    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(Duration::ZERO)
    };
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let report = json!({
        "rounds": rounds,
        "size_bytes": size.max(1),
        "round_trips_per_s": (rounds as f64 / elapsed.as_secs_f64()).round(),
        "rtt_ms": {"p50": ms(pct(0.50)), "p90": ms(pct(0.90)), "p99": ms(pct(0.99)), "max": ms(pct(1.0))},
        "lines_in_transcript": lines,
        "clean_shutdown": c_ok && r_ok,
    });
    if lines as usize != 2 * (warmup + rounds) {
        bail!("the transcript holds {lines} lines, expected {}", 2 * (warmup + rounds));
    }
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!("{rounds} call round trips of {}-byte lines, one at a time", size.max(1)));
        output::line(&format!("  rate  {} round trips/s", report["round_trips_per_s"]));
        let r = &report["rtt_ms"];
        output::line(&format!(
            "  RTT   p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            r["p50"], r["p90"], r["p99"], r["max"]
        ));
    }
    Ok(())
}
