//! `agentmesh registry bench` (the `dev-tools` feature): N synthetic agents in a registry served
//! on 127.0.0.1, search latency and signed heartbeat ingest.

use std::sync::Arc;
use std::time::Instant;

use agentmesh_core::Identity;
use agentmesh_core::time::now_ms;
use agentmesh_registry::client::RegistryClient;
use agentmesh_registry::conformance::sample;
use agentmesh_registry::{Options, Registry, RegistryStore};
use anyhow::{Result, anyhow, bail};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::RegistryBenchArgs;
use crate::output;

const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "ba", "do", "fi", "gu", "ha", "ji", "ko", "la", "mo", "pu",
    "re",
];

/// Word `n` of a 400-word synthetic vocabulary (two syllables).
fn word(n: usize) -> String {
    format!("{}{}", SYLLABLES[n % 20], SYLLABLES[(n / 20) % 20])
}

/// A deterministic pseudo-random number for (`i`, `k`).
fn mix(i: usize, k: usize) -> usize {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 29)) as usize
}

/// Capability tag of agent `i`, slot `k`: 200 tags, skewed towards the first ones.
fn tag(i: usize, k: usize) -> String {
    let r = mix(i, k + 100) % 200;
    format!("cap{}", r * r / 200)
}

/// `registry bench`: loads N agents, serves them over real HTTP on 127.0.0.1, and measures search
/// latency (text, capability, both) and signed heartbeat ingest.
pub(crate) async fn bench(ctx: &Ctx, args: RegistryBenchArgs) -> Result<()> {
    if args.agents < 1_000 {
        bail!("--agents must be at least 1000");
    }
    let dir = tempfile::Builder::new().prefix("agentmesh-registry-bench-").tempdir()?;
    let (store, backend): (Arc<dyn RegistryStore>, &str) = match &args.database {
        Some(url) => {
            let url = url.clone();
            let pg = tokio::task::spawn_blocking(move || {
                let pg = agentmesh_registry::postgres::PostgresStore::connect(&url, 16)?;
                pg.truncate()?;
                Ok::<_, agentmesh_registry::StoreError>(pg)
            })
            .await??;
            (Arc::new(pg), "postgresql")
        }
        None => (Arc::new(agentmesh_registry::sqlite::SqliteStore::open(&dir.path().join("registry.db"))?), "sqlite"),
    };
    let heartbeaters = 2_000.min(args.agents);
    let identities: Vec<Identity> = (0..heartbeaters).map(|_| Identity::generate()).collect();
    let now = now_ms() as i64;
    let load_started = Instant::now();
    let records: Vec<_> = (0..args.agents)
        .map(|i| {
            let w = |k: usize| word(mix(i, k) % 400);
            let caps: Vec<String> = (0..4).map(|k| tag(i, k)).collect();
            let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
            let mut r = sample(
                i as u32 + 1,
                &format!("{} {}", w(0), w(1)),
                &format!("{} {} {} {} {} {}", w(2), w(3), w(4), w(5), w(6), w(7)),
                &caps,
                now,
            );
            r.id = match identities.get(i) {
                Some(id) => {
                    r.public_key = id.public().ed25519.to_bytes();
                    id.agent_id().to_string()
                }
                None => format!("{:016x}", 0x1000_0000_0000u64 + i as u64),
            };
            r.last_request = 0;
            r
        })
        .collect();
    let st = Arc::clone(&store);
    tokio::task::spawn_blocking(move || st.bulk_insert(&records)).await??;
    let load_secs = load_started.elapsed().as_secs_f64();

    let options = Options { per_ip_per_minute: 0, per_key_per_minute: 0, ..Options::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn(agentmesh_registry::server::serve(listener, Registry::new(store, options), stop.clone()));
    let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
        pool_max_idle_per_host: 128,
        ..Default::default()
    })?;
    let client = RegistryClient::new(http, &url, None);

    let mut kinds = serde_json::Map::new();
    for kind in ["text", "capability", "both"] {
        let mut latencies = Vec::with_capacity(args.searches);
        let mut matched = 0u64;
        for i in 0..args.searches {
            // "both" asks for a word and a tag that one agent has together: at least one match.
            let agent = mix(i, 7) % args.agents;
            let text = word(mix(agent, mix(i, 8) % 8) % 400);
            let cap = tag(agent, mix(i, 9) % 4);
            let (text, caps) = match kind {
                "text" => (Some(text.as_str()), vec![]),
                "capability" => (None, vec![cap]),
                _ => (Some(text.as_str()), vec![cap]),
            };
            let t0 = Instant::now();
            let reply = client.search(text, &caps, 20, 0).await.map_err(|e| anyhow!("search: {e}"))?;
            latencies.push(t0.elapsed());
            matched += reply["total"].as_u64().unwrap_or(0);
        }
        latencies.sort_unstable();
        let pct = |p: f64| {
            let d = latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
            (d.as_secs_f64() * 100_000.0).round() / 100.0
        };
        kinds.insert(
            kind.into(),
            json!({"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0), "mean_matches": matched / args.searches as u64}),
        );
    }

    let identities = Arc::new(identities);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, identities, next, n) =
            (client.clone(), Arc::clone(&identities), Arc::clone(&next), args.heartbeats);
        tasks.push(tokio::spawn(async move {
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let id = &identities[i % identities.len()];
                if client.heartbeat(id, &id.agent_id().to_string()).await.is_err() {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;

    let report = json!({
        "backend": backend,
        "agents": args.agents,
        "load_s": (load_secs * 10.0).round() / 10.0,
        "search": kinds,
        "heartbeats": args.heartbeats,
        "heartbeats_failed": failed,
        "heartbeats_per_s": (args.heartbeats as f64 / ingest_secs).round(),
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!("{backend}: {} agents loaded in {:.1} s", args.agents, load_secs));
        for kind in ["text", "capability", "both"] {
            let k = &report["search"][kind];
            output::line(&format!(
                "  search {kind:<10} p50 {} ms, p99 {} ms, max {} ms ({} matches on average)",
                k["p50_ms"], k["p99_ms"], k["max_ms"], k["mean_matches"]
            ));
        }
        output::line(&format!(
            "  heartbeats   {} /s ({} signed heartbeats over 64 connections, {failed} failed)",
            report["heartbeats_per_s"], args.heartbeats
        ));
    }
    if failed > 0 {
        bail!("{failed} heartbeats failed");
    }
    Ok(())
}
