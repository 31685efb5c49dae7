//! `agentmesh scan`: probe HTTP endpoints for agents and record them as discovered.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmesh_api::control::{DiscoverQuery, DiscoveredArgs, FoundDocument, Recorded};
use agentmesh_node::discovery::{self, Found};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use reqwest::Url;
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::ScanArgs;
use crate::output;

/// Most endpoints one scan may probe.
pub(crate) const MAX_TARGETS: usize = 65_536;

/// Expands the targets into base URLs: `http://host:port`, `http://host:LOW-HIGH` (a port range),
/// and every host of `--cidr` at `--port`.
pub(crate) fn expand(args: &ScanArgs) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |url: String| -> Result<()> {
        if out.len() >= MAX_TARGETS {
            bail!("a scan probes at most {MAX_TARGETS} endpoints; narrow the targets");
        }
        out.push(url);
        Ok(())
    };
    for target in &args.targets {
        let target = target.trim().trim_end_matches('/');
        // A port range is not URL syntax: split it off, check the rest as a URL.
        let (base, range) = match target.rsplit_once(':') {
            Some((head, tail)) if tail.contains('-') && head.contains("://") => {
                let (lo, hi) = tail.split_once('-').unwrap_or((tail, tail));
                let (lo, hi): (u16, u16) = (
                    lo.parse().with_context(|| format!("bad port range in {target}"))?,
                    hi.parse().with_context(|| format!("bad port range in {target}"))?,
                );
                if lo == 0 || lo > hi {
                    bail!("bad port range in {target}: give LOW-HIGH with 1 <= LOW <= HIGH");
                }
                (format!("{head}:{lo}"), Some((lo, hi)))
            }
            _ => (target.to_owned(), None),
        };
        let url = Url::parse(&base).with_context(|| format!("{target} is not a URL like http://127.0.0.1:8787"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("{target}: give an http:// or https:// base URL");
        }
        let host = url.host_str().unwrap_or_default();
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        match range {
            Some((lo, hi)) => {
                for port in lo..=hi {
                    push(format!("{}://{host}:{port}", url.scheme()))?;
                }
            }
            None => push(base.trim_end_matches('/').to_owned())?,
        }
    }
    if let Some(cidr) = &args.cidr {
        let net: ipnet::IpNet =
            cidr.parse().with_context(|| format!("{cidr} is not a CIDR block like 192.168.1.0/24"))?;
        let port = args.port;
        let hosts: Box<dyn Iterator<Item = IpAddr>> = if net.prefix_len() == net.max_prefix_len() {
            Box::new(std::iter::once(net.addr()))
        } else {
            Box::new(net.hosts())
        };
        for ip in hosts {
            match ip {
                IpAddr::V4(v4) => push(format!("http://{v4}:{port}"))?,
                IpAddr::V6(v6) => push(format!("http://[{v6}]:{port}"))?,
            }
        }
    }
    if out.is_empty() {
        bail!("nothing to scan: give base URLs, URL port ranges, or --cidr with --port");
    }
    Ok(out)
}

pub(crate) async fn run(ctx: &Ctx, args: ScanArgs) -> Result<()> {
    let targets = expand(&args)?;
    let concurrency = args.concurrency.clamp(1, 1024);
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.05, 60.0));
    let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
        connect_timeout_ms: Some(timeout.as_millis() as u64),
        timeout_ms: Some(timeout.as_millis() as u64),
        pool_max_idle_per_host: 0,
        user_agent: concat!("agentmesh-scan/", env!("CARGO_PKG_VERSION")).to_owned(),
        extra_ca_file: agentmesh_node::Config::load(&ctx.home.config_path())?.tls_ca_file,
        ..Default::default()
    })?;
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        // Drawn on stderr, and only when it is a terminal.
        let bar = indicatif::ProgressBar::new(targets.len() as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} endpoints probed, {msg} [{elapsed}]")
        {
            bar.set_style(style);
        }
        bar
    };
    let started = Instant::now();
    let bar = Arc::new(bar);
    let mut found: Vec<Found> = Vec::new();
    let mut answered = 0usize;
    let mut probes = futures_util::stream::iter(targets.iter().cloned())
        .map(|base| {
            let http = http.clone();
            async move { discovery::probe(&http, &base, timeout).await }
        })
        .buffered(concurrency);
    while let Some(result) = probes.next().await {
        bar.inc(1);
        match result {
            Ok(Some(f)) => {
                answered += 1;
                found.push(f);
                bar.set_message(format!("{} agent(s) found", found.len()));
            }
            Ok(None) => answered += 1,
            Err(_) => {}
        }
    }
    bar.finish_and_clear();
    report(ctx, found, targets.len(), answered, started).await
}

/// Browses the LAN with mDNS, then fetches and verifies each card heard of, and reports and
/// records them like a scan.
async fn lan(ctx: &Ctx, args: &crate::cli::DiscoverArgs) -> Result<()> {
    let started = Instant::now();
    let listen = Duration::from_secs_f64(args.timeout.clamp(0.5, 60.0));
    let heard = tokio::task::spawn_blocking(move || agentmesh_node::mdns::browse(listen)).await??;
    let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
        timeout_ms: Some(1500),
        extra_ca_file: agentmesh_node::Config::load(&ctx.home.config_path())?.tls_ca_file,
        ..Default::default()
    })?;
    let mut found = Vec::new();
    let mut answered = 0;
    for h in &heard {
        if let Ok(Some(mut f)) = discovery::probe(&http, &h.base_url, Duration::from_millis(1500)).await {
            answered += 1;
            if h.agent_id.as_deref().is_some_and(|id| id != f.agent_id) {
                f.signature_valid = false;
                f.problem = Some("the mDNS record names another agent than the card".into());
            }
            found.push(f);
        }
    }
    report(ctx, found, heard.len(), answered, started).await
}

async fn report(ctx: &Ctx, found: Vec<Found>, probed: usize, answered: usize, started: Instant) -> Result<()> {
    let valid: Vec<&Found> = found.iter().filter(|f| f.signature_valid).collect();
    let outcomes: Vec<(String, Recorded)> =
        valid.iter().map(|f| f.endpoint.clone()).zip(record(ctx, &valid).await?).collect();
    let recorded = |f: &Found| {
        outcomes.iter().find(|(endpoint, _)| *endpoint == f.endpoint).map(|(_, o)| *o).unwrap_or(Recorded::Refused)
    };
    if ctx.json {
        let rows: Vec<Value> = found
            .iter()
            .map(|f| {
                let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
                v["recorded"] = json!(recorded(f));
                v
            })
            .collect();
        output::json_doc(&json!({
            "probed": probed,
            "answered": answered,
            "found": rows,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }));
        return Ok(());
    }
    if found.is_empty() {
        output::line(&format!("No agents found ({probed} endpoints probed, {answered} answered)."));
        return Ok(());
    }
    let table: Vec<Vec<String>> = found
        .iter()
        .map(|f| {
            vec![
                output::clean(&f.agent_id, false),
                output::clean(&f.name, false),
                output::clean(&f.endpoint, false),
                f.protocol.to_string(),
                output::short_fingerprint(&f.fingerprint),
                if f.signature_valid {
                    "valid".into()
                } else {
                    format!("INVALID: {}", output::text(f.problem.as_deref()))
                },
                json!(recorded(f)).as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    output::table(&["AGENT ID", "NAME", "ENDPOINT", "PROTOCOL", "FINGERPRINT", "CARD", "RECORDED"], &table);
    output::line(&format!(
        "{} agent(s) at {} endpoints probed; found agents are untrusted until a contact request is approved \
         (agentmesh request-contact <endpoint>).",
        found.len(),
        probed
    ));
    Ok(())
}

/// Records verified finds as discovered: through the running node, or in the store directly.
/// One outcome per find, in order.
async fn record(ctx: &Ctx, finds: &[&Found]) -> Result<Vec<Recorded>> {
    if finds.is_empty() {
        return Ok(Vec::new());
    }
    if ctx.node_running().await {
        let client = ctx.client()?;
        let args = DiscoveredArgs {
            found: finds
                .iter()
                .map(|f| FoundDocument {
                    protocol: f.protocol,
                    endpoint: f.endpoint.clone(),
                    document: f.document.clone(),
                })
                .collect(),
        };
        let reply = ctx.check(client.record_discovered(&args).await)?;
        return Ok(reply.recorded.into_iter().map(|r| r.outcome).collect());
    }
    if !ctx.home.has_identity() {
        // No home to record into: report only.
        return Ok(Vec::new());
    }
    let me = ctx.home.load_identity()?.agent_id();
    let db = ctx.home.db_path();
    let finds: Vec<Found> = finds.iter().map(|f| (*f).clone()).collect();
    tokio::task::spawn_blocking(move || {
        let store = agentmesh_store::Store::open(&db)?;
        finds.iter().map(|f| Ok(discovery::record(&store, f.protocol, &f.endpoint, &f.document, me)?)).collect()
    })
    .await?
}

pub(crate) async fn discover(ctx: &Ctx, args: crate::cli::DiscoverArgs) -> Result<()> {
    if args.lan {
        return lan(ctx, &args).await;
    }
    let client = ctx.client()?;
    let query = DiscoverQuery {
        query: args.query.clone(),
        capability: (!args.capabilities.is_empty()).then(|| args.capabilities.join(",")),
        limit: Some(args.limit),
    };
    let reply = ctx.check(client.discover(&query).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    if reply.agents.is_empty() {
        output::line("No agents known yet: try `agentmesh scan`, or `agentmesh up --bootstrap URL`.");
        return Ok(());
    }
    print_agents(&reply.agents);
    Ok(())
}

/// The table `discover` and `search` print.
pub(crate) fn print_agents(agents: &[agentmesh_api::KnownAgent]) {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.to_string(),
                output::clean(&a.name, false),
                output::clean(&a.endpoint, false),
                output::list(&a.capabilities),
                a.source.to_string(),
                a.trust.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                output::age(a.age_secs),
            ]
        })
        .collect();
    output::table(&["AGENT ID", "NAME", "ENDPOINT", "CAPABILITIES", "SOURCE", "TRUST", "AGE"], &rows);
}
