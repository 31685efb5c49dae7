//! `agentmesh registry serve`, `agentmesh search`.

use agentmesh_core::time::now_ms;
use agentmesh_node::Config;
use agentmesh_registry::client::RegistryClient;
use agentmesh_registry::{Options, Registry};
use anyhow::{Context, Result};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::{RegistryServeArgs, SearchArgs};
use crate::output;

pub(crate) async fn serve(ctx: &Ctx, args: RegistryServeArgs) -> Result<()> {
    let database = args.database.unwrap_or_else(|| ctx.home.root().join("registry.db").display().to_string());
    if !database.contains("://") {
        std::fs::create_dir_all(ctx.home.root()).with_context(|| format!("creating {}", ctx.home.root().display()))?;
    }
    let api_key = args.api_key_file.as_deref().map(agentmesh_node::home::read_private_text).transpose()?;
    let store = tokio::task::spawn_blocking(move || agentmesh_registry::open_store(&database)).await??;
    let options = Options {
        api_key,
        heartbeat_secs: args.heartbeat_secs.max(1),
        per_key_per_minute: args.per_key_per_minute,
        per_ip_per_minute: args.per_ip_per_minute,
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    if ctx.json {
        output::json(&json!({"event": "ready", "url": url}));
    } else {
        output::line(&format!("agentmesh registry listening on {url} (Ctrl-C to stop)"));
    }
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    let term = stop.clone();
    tokio::spawn(async move {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
            term.cancel();
        }
    });
    agentmesh_registry::server::serve(listener, Registry::new(store, options), stop).await?;
    Ok(())
}

/// A registry record (`../shared/PROTOCOLS.md` §4) in the names `discover` uses.
fn known_agent(record: &serde_json::Value, now: i64) -> Option<agentmesh_api::KnownAgent> {
    let text = |k: &str| record.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let last_seen = agentmesh_core::time::parse_iso(&text("last_seen")).map(|t| t as i64).unwrap_or(now);
    Some(agentmesh_api::KnownAgent {
        agent_id: agentmesh_api::PeerId::parse(&text("id")).ok()?,
        name: text("display_name"),
        endpoint: text("p2p_endpoint"),
        protocol: agentmesh_api::Protocol::Native,
        fingerprint: text("fingerprint"),
        capabilities: serde_json::from_value(record.get("capabilities").cloned().unwrap_or_default())
            .unwrap_or_default(),
        description: Some(text("description")).filter(|d| !d.is_empty()),
        source: agentmesh_api::Source::Registry,
        trust: None,
        last_seen,
        age_secs: ((now - last_seen).max(0) / 1000) as u64,
        expires_at: None,
    })
}

pub(crate) async fn search(ctx: &Ctx, args: SearchArgs) -> Result<()> {
    let node = if ctx.node_running().await { ctx.client().ok() } else { None };
    let list = query(&ctx.home, &args, node.as_ref()).await?;
    if ctx.json {
        output::json_doc(&list);
        return Ok(());
    }
    if list.agents.is_empty() {
        output::line("No agents match.");
        return Ok(());
    }
    super::scan::print_agents(&list.agents);
    output::line(&format!(
        "{} of {} shown. Ask one for contact: agentmesh request-contact <ENDPOINT>",
        list.agents.len(),
        list.total.unwrap_or(list.agents.len() as u64)
    ));
    Ok(())
}

/// Searches a registry (`args.registry`, else `registry` in config.toml) the way `agentmesh
/// search` does; with `node`, each agent also says where contact with it stands. Shared by the
/// command and the MCP `search` tool.
pub(crate) async fn query(
    home: &agentmesh_node::Home,
    args: &SearchArgs,
    node: Option<&agentmesh_client::Client>,
) -> Result<agentmesh_api::control::AgentList> {
    let config = Config::load(&home.config_path())?;
    let url = match &args.registry {
        Some(url) => url.clone(),
        None => config.registry.clone().ok_or_else(|| {
            super::fail(
                agentmesh_api::ErrorCode::InvalidArgument,
                "no registry: pass --registry URL (MCP: `registry`) or set `registry` in config.toml",
            )
        })?,
    };
    let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
        timeout_ms: Some(10_000),
        extra_ca_file: config.tls_ca_file.clone(),
        ..Default::default()
    })?;
    let api_key = config.registry_api_key_file.as_deref().map(agentmesh_node::home::read_private_text).transpose()?;
    let client = RegistryClient::new(http, &url, api_key);
    let reply = client
        .search(args.text.as_deref(), &args.capabilities, args.limit, args.offset)
        .await
        .with_context(|| format!("searching {url}"))?;
    let now = now_ms() as i64;
    let mut agents: Vec<agentmesh_api::KnownAgent> = reply
        .get("agents")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(|r| known_agent(r, now)).collect())
        .unwrap_or_default();
    // Where contact stands with each, when our node runs.
    if let Some(node) = node
        && let Ok(peers) = node.peers(false).await
    {
        for agent in &mut agents {
            agent.trust = peers.peers.iter().find(|p| p.agent_id == agent.agent_id).map(|p| p.trust);
        }
    }
    Ok(agentmesh_api::control::AgentList { agents, total: reply.get("total").and_then(serde_json::Value::as_u64) })
}
