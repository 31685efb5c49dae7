//! `agentmesh up`, `card`, `status`.

use agentmesh_core::AgentCard;
use agentmesh_node::{Config, UpOptions};
use anyhow::Result;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::UpArgs;
use crate::output;

pub async fn up(ctx: &Ctx, args: UpArgs) -> Result<()> {
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

pub async fn card(ctx: &Ctx) -> Result<()> {
    let card = match ctx.home.runtime() {
        Some(_) => match ctx.client()?.card().await {
            Ok(card) => card,
            Err(_) => local_card(ctx)?,
        },
        None => local_card(ctx)?,
    };
    output::json_doc(&card);
    Ok(())
}

/// The card as the node would publish it, built offline from the identity and profile.
fn local_card(ctx: &Ctx) -> Result<Value> {
    let identity = ctx.home.load_identity()?;
    let profile = ctx.home.load_profile()?;
    let config = Config::load(&ctx.home.config_path())?;
    let endpoint = profile.endpoint.clone().or(config.endpoint).unwrap_or_else(|| format!("http://{}", config.listen));
    let card = AgentCard::new(
        &identity,
        &profile.name,
        vec![endpoint],
        profile.capabilities,
        vec![agentmesh_core::PROTOCOL_NATIVE.into(), agentmesh_core::PROTOCOL_AGENT_MESH_V1.into()],
        profile.created_at,
    );
    Ok(serde_json::to_value(card)?)
}

pub async fn status(ctx: &Ctx) -> Result<()> {
    let live = match ctx.home.runtime() {
        Some(_) => ctx.client()?.status().await.ok(),
        None => None,
    };
    let status = match live {
        Some(mut s) => {
            s["running"] = json!(true);
            s
        }
        None => {
            // Offline: identity and the stored counters, and how to start the node.
            let identity = ctx.home.load_identity()?;
            let profile = ctx.home.load_profile()?;
            let db = ctx.home.db_path();
            let (stats, mismatches) = tokio::task::spawn_blocking(move || {
                agentmesh_store::Store::open(&db).and_then(|s| Ok((s.stats()?, s.key_mismatches(true)?)))
            })
            .await??;
            let mut s = json!({
                "agent_id": identity.agent_id().to_string(),
                "name": profile.name,
                "fingerprint": identity.fingerprint(),
                "key_rotations": identity.rotations().len(),
                "key_mismatches": mismatches,
                "running": false,
                "listen": null,
            });
            if let (Value::Object(target), Value::Object(extra)) = (&mut s, serde_json::to_value(stats)?) {
                target.extend(extra);
            }
            s
        }
    };
    if ctx.json {
        output::json_doc(&status);
        return Ok(());
    }
    let f = |k: &str| {
        status
            .get(k)
            .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
            .unwrap_or_else(|| "-".into())
    };
    output::line(&format!("agent       {} ({})", f("name"), f("agent_id")));
    output::line(&format!("fingerprint {}", f("fingerprint")));
    if status["running"] == json!(true) {
        output::line(&format!("node        running, listening on {}", f("listen")));
    } else {
        output::line(&format!("node        not running (start: agentmesh up --home {})", ctx.home.root().display()));
    }
    output::line(&format!("peers       {} ({} trusted)", f("peers"), f("trusted_peers")));
    output::line(&format!("requests    {} pending", f("pending_requests")));
    output::line(&format!("inbox       {} unread", f("unread_messages")));
    output::line(&format!("outbox      {} waiting, {} failed", f("outbox_depth"), f("failed_deliveries")));
    let mismatches = status["key_mismatches"].as_array().cloned().unwrap_or_default();
    if !mismatches.is_empty() {
        output::line("");
        output::line(&format!("WARNING: {} pinned peer(s) presented another key and are refused:", mismatches.len()));
        for m in &mismatches {
            output::line(&format!(
                "  {}  pinned {}  presented {}  ({}, {} time(s), last {})",
                output::field(m, "peer_id"),
                output::field(m, "pinned_fingerprint"),
                output::field(m, "presented_fingerprint"),
                output::field(m, "direction"),
                output::field(m, "count"),
                output::time(&m["last_at"]),
            ));
        }
        output::line(
            "Check the new fingerprint with the peer's owner, then: agentmesh repin <agent_id> --fingerprint <sha256:…>",
        );
    }
    Ok(())
}
