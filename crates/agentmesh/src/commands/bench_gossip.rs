//! `agentmesh bench --gossip N`: N real nodes on 127.0.0.1, one of them the bootstrap; how long
//! until every node has learnt every other.

use std::time::{Duration, Instant};

use agentmesh_api::control::DiscoverQuery;
use agentmesh_testkit::local::{self, LocalNode};
use anyhow::{Result, bail};
use serde_json::json;

use super::Ctx;
use crate::output;

/// Gossip round interval used by the benchmark, seconds.
const INTERVAL_SECS: u64 = 1;

pub(crate) async fn run(ctx: &Ctx, nodes: usize) -> Result<()> {
    if !(2..=200).contains(&nodes) {
        bail!("--gossip takes 2 to 200 nodes");
    }
    let dir = tempfile::Builder::new().prefix("agentmesh-gossip-").tempdir()?;
    let exe = std::env::current_exe()?;
    // All nodes share 127.0.0.1: the per-IP limit on gossip routes would throttle them.
    let common = format!("gossip_interval_secs = {INTERVAL_SECS}\nother_requests_per_minute = 0\n");
    let boot_home = dir.path().join("bootstrap");
    local::init(&exe, &boot_home, "bootstrap", &[])?;
    std::fs::write(boot_home.join("config.toml"), format!("{common}bootstrap_mode = true\n"))?;
    let mut running = vec![LocalNode::start(&exe, &boot_home, "127.0.0.1:0", &[]).await?];
    let first_started = Instant::now();
    for i in 1..nodes {
        let home = dir.path().join(format!("agent{i}"));
        local::init(&exe, &home, &format!("agent{i}"), &[])?;
        std::fs::write(home.join("config.toml"), format!("{common}bootstrap = [\"{}\"]\n", running[0].peer_url))?;
        running.push(LocalNode::start(&exe, &home, "127.0.0.1:0", &[]).await?);
    }
    let all_started = Instant::now();
    let ids: Vec<String> = running.iter().map(|n| n.agent_id.clone()).collect();
    let converged = local::wait_for(Duration::from_secs(120), || async {
        for node in &running {
            let query = DiscoverQuery { limit: Some(10_000), ..DiscoverQuery::default() };
            let reply = node.client.discover(&query).await.ok()?;
            let known: Vec<&str> = reply.agents.iter().map(|a| a.agent_id.as_str()).collect();
            if ids.iter().any(|id| *id != node.agent_id && !known.contains(&id.as_str())) {
                return None;
            }
        }
        Some(Instant::now())
    })
    .await;
    let rss: u64 = running.iter().filter_map(|n| n.memory_kib().map(|(_, rss)| rss)).sum();
    for node in &mut running {
        node.stop().await;
    }
    let Some(done) = converged else { bail!("{nodes} nodes did not converge within 120 s") };
    let report = json!({
        "nodes": nodes,
        "gossip_interval_secs": INTERVAL_SECS,
        "start_all_ms": all_started.duration_since(first_started).as_millis() as u64,
        "converged_after_last_start_ms": done.duration_since(all_started).as_millis() as u64,
        "converged_after_first_start_ms": done.duration_since(first_started).as_millis() as u64,
        "total_rss_mib": (rss as f64 / 1024.0).round(),
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!(
            "{nodes} nodes (1 bootstrap), gossip every {INTERVAL_SECS} s: every node knew every other {} ms after the last \
             one started ({} ms after the first; starting them took {} ms); {} MiB RSS in all",
            report["converged_after_last_start_ms"],
            report["converged_after_first_start_ms"],
            report["start_all_ms"],
            report["total_rss_mib"]
        ));
    }
    Ok(())
}
