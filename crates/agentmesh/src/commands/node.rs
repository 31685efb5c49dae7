//! `agentmesh up`, `card`, `status`.

use agentmesh_api::Status;
use agentmesh_core::AgentCard;
use agentmesh_node::{Config, UpOptions};
use anyhow::Result;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::UpArgs;
use crate::output;

pub(crate) async fn up(ctx: &Ctx, args: UpArgs) -> Result<()> {
    let json_mode = ctx.json;
    let options = UpOptions {
        listen: args.listen,
        endpoint: args.endpoint,
        bootstrap: args.bootstrap,
        bootstrap_mode: args.bootstrap_mode,
        no_mdns: args.no_mdns,
        registry: args.registry,
    };
    agentmesh_node::run(ctx.home.clone(), options, CancellationToken::new(), |info| {
        if json_mode {
            output::json(&json!({"event": "ready", "agent_id": info.agent_id, "peer_url": info.peer_url, "control_url": info.control_url, "pid": info.pid}));
        } else {
            output::line(&format!("agentmesh node {} listening on {} (Ctrl-C to stop)", info.agent_id, info.peer_url));
        }
    })
    .await
}

pub(crate) async fn card(ctx: &Ctx) -> Result<()> {
    let card = match ctx.client() {
        Ok(client) => match client.card().await {
            Ok(card) => card,
            Err(_) => local_card(ctx)?,
        },
        Err(_) => local_card(ctx)?,
    };
    output::json_doc(&card);
    Ok(())
}

/// The card as the node would publish it, built offline from the identity and profile.
fn local_card(ctx: &Ctx) -> Result<AgentCard> {
    let identity = ctx.home.load_identity()?;
    let profile = ctx.home.load_profile()?;
    let config = Config::load(&ctx.home.config_path())?;
    let endpoint = profile
        .endpoint
        .clone()
        .or(config.endpoint.clone())
        .unwrap_or_else(|| format!("http://{}", config.listen_addr(profile.endpoint.as_deref())));
    Ok(AgentCard::new(
        &identity,
        &profile.name,
        vec![endpoint],
        profile.capabilities,
        vec![agentmesh_core::PROTOCOL_NATIVE.into(), agentmesh_core::PROTOCOL_AGENT_MESH_V1.into()],
        profile.created_at,
    ))
}

/// Identity and the stored counters, when no node runs.
async fn offline_status(ctx: &Ctx) -> Result<Status> {
    let identity = ctx.home.load_identity()?;
    let profile = ctx.home.load_profile()?;
    let db = ctx.home.db_path();
    let (stats, mismatches) = tokio::task::spawn_blocking(move || {
        agentmesh_store::Store::open(&db).and_then(|s| Ok((s.stats()?, s.key_mismatches(true)?)))
    })
    .await??;
    Ok(Status {
        agent_id: identity.agent_id(),
        name: profile.name,
        fingerprint: identity.fingerprint().to_string(),
        key_rotations: identity.rotations().len(),
        previous_key_until: None,
        key_mismatches: mismatches.iter().map(|m| m.view()).collect(),
        clock_skews: Vec::new(),
        running: false,
        listen: None,
        endpoint: profile.endpoint,
        endpoints: Vec::new(),
        paths: Default::default(),
        relays: Vec::new(),
        protocols: Vec::new(),
        capabilities: profile.capabilities,
        peers: stats.peers,
        trusted_peers: stats.trusted_peers,
        pending_requests: stats.pending_requests,
        outgoing_requests: stats.outgoing_requests,
        unread_messages: stats.unread_messages,
        outbox_depth: stats.outbox_depth,
        failed_deliveries: stats.failed_deliveries,
        warnings: Vec::new(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

pub(crate) async fn status(ctx: &Ctx) -> Result<()> {
    let live = match ctx.client() {
        Ok(client) => client.status().await.ok(),
        Err(_) => None,
    };
    let status = match live {
        Some(s) => s,
        None => offline_status(ctx).await?,
    };
    if ctx.json {
        output::json_doc(&status);
        return Ok(());
    }
    output::line(&format!("agent       {} ({})", output::clean(&status.name, false), status.agent_id));
    output::line(&format!("fingerprint {}", status.fingerprint));
    if status.running {
        output::line(&format!(
            "node        running, listening on {}, advertising {}",
            output::text(status.listen.as_deref()),
            output::text(status.endpoint.as_deref())
        ));
        for other in status.endpoints.iter().filter(|e| Some(e.as_str()) != status.endpoint.as_deref()) {
            output::line(&format!("            and {}", output::clean(other, false)));
        }
        for relay in &status.relays {
            let state = if relay.connected { "connected" } else { "NOT connected" };
            output::line(&format!("relay       {} {state}", output::clean(&relay.url, false)));
        }
        let p = status.paths;
        if p.http + p.direct + p.relayed > 0 {
            output::line(&format!("paths       {} direct, {} relayed, {} over HTTP", p.direct, p.relayed, p.http));
        }
    } else {
        output::line(&format!("node        not running (start: agentmesh up --home {})", ctx.home.root().display()));
    }
    output::line(&format!("peers       {} ({} trusted)", status.peers, status.trusted_peers));
    output::line(&format!(
        "requests    {} waiting for you, {} waiting for peers",
        status.pending_requests, status.outgoing_requests
    ));
    output::line(&format!("inbox       {} unread", status.unread_messages));
    output::line(&format!("outbox      {} waiting, {} failed", status.outbox_depth, status.failed_deliveries));
    if status.failed_deliveries > 0 {
        output::line(
            "            (`agentmesh list-messages --failed`, then `agentmesh retry <id>` or `agentmesh clear-failed`)",
        );
    }
    for warning in &status.warnings {
        output::line(&format!("WARNING: {warning}"));
    }
    for skew in &status.clock_skews {
        output::line(&format!(
            "WARNING: {} reports our clock is {:.0} s {}; messages to it are retried meanwhile. Fix this host's clock (NTP).",
            skew.peer_id,
            skew.skew_ms.unsigned_abs() as f64 / 1000.0,
            if skew.skew_ms > 0 { "behind" } else { "ahead" }
        ));
    }
    if !status.key_mismatches.is_empty() {
        output::line("");
        output::line(&format!(
            "WARNING: {} pinned peer(s) presented another key and are refused:",
            status.key_mismatches.len()
        ));
        for m in &status.key_mismatches {
            output::line(&format!(
                "  {}  pinned {}  presented {}  ({}, {} time{}, last {})",
                m.peer_id,
                output::clean(&m.pinned_fingerprint, false),
                output::clean(&m.presented_fingerprint, false),
                m.direction,
                m.count,
                if m.count == 1 { "" } else { "s" },
                output::time(m.last_at),
            ));
        }
        output::line(
            "Check the new fingerprint with the peer's owner, then: agentmesh repin <agent_id> --fingerprint <sha256:…>",
        );
    }
    Ok(())
}
