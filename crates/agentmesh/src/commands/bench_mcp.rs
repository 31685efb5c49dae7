//! `agentmesh bench --mcp --messages N`: the round trip of the MCP tool `send_message` with
//! `wait_for_delivery`, through a real `agentmesh mcp` child process on stdio, from the
//! `tools/call` request to its reply (which comes after the receiver's signed delivery receipt
//! was stored). Two nodes on 127.0.0.1; calls go one at a time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;

use super::Ctx;
use crate::output;

pub(crate) async fn run(ctx: &Ctx, calls: usize, size: usize) -> Result<()> {
    if calls == 0 || size == 0 {
        bail!("--messages and --size must be at least 1");
    }
    let (_dir, mut sender, mut receiver) = super::bench::pair("agentmesh-bench-mcp-").await?;
    super::bench::trust(&sender, &receiver).await?;

    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("--home").arg(&sender.home).arg("mcp");
    let (transport, _) = TokioChildProcess::builder(command).stderr(Stdio::null()).spawn()?;
    let mcp = ().serve(transport).await.context("starting the MCP session")?;
    let text = "x".repeat(size);
    let args = json!({"to": receiver.agent_id, "text": text, "wait_for_delivery": true, "timeout_ms": 60000});
    let args = args.as_object().cloned().unwrap_or_default();
    let call = || async {
        let started = Instant::now();
        let reply = mcp
            .peer()
            .call_tool(CallToolRequestParams::new("send_message").with_arguments(args.clone()))
            .await
            .context("tools/call send_message")?;
        if reply.is_error == Some(true) {
            return Err(anyhow!("send_message failed: {:?}", reply.structured_content));
        }
        Ok::<Duration, anyhow::Error>(started.elapsed())
    };
    // Warm-up: the child's runtime, connections, SQLite pages.
    for _ in 0..(calls / 10).clamp(10, 100) {
        call().await?;
    }
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        latencies.push(call().await?);
    }
    let elapsed = started.elapsed();
    let _ = mcp.cancel().await;
    let (s_ok, r_ok) = (sender.stop().await, receiver.stop().await);

    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
    };
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let report = json!({
        "shape": "mcp",
        "calls": calls,
        "size_bytes": size,
        "elapsed_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "calls_per_s": (calls as f64 / elapsed.as_secs_f64()).round(),
        "round_trip_ms": {"p50": ms(pct(0.50)), "p90": ms(pct(0.90)), "p99": ms(pct(0.99)), "max": ms(pct(1.0))},
        "clean_shutdown": s_ok && r_ok,
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        let r = &report["round_trip_ms"];
        output::line(&format!(
            "{calls} MCP send_message calls (wait_for_delivery, {size} bytes) over stdio, one at a time"
        ));
        output::line(&format!("  {} calls/s ({:.2} s)", report["calls_per_s"], elapsed.as_secs_f64()));
        output::line(&format!(
            "  tools/call → delivered reply p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            r["p50"], r["p90"], r["p99"], r["max"]
        ));
    }
    Ok(())
}
