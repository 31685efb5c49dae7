//! `repin` and `rotate-key`.

use agentmesh_node::Config;
use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::Ctx;
use crate::output;

pub async fn repin(ctx: &Ctx, agent_id: &str, fingerprint: &str) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.repin(agent_id, fingerprint).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let peer = &reply["peer"];
    output::line(&format!(
        "Pinned {} ({}) to {}. It is no longer refused.",
        output::field(peer, "name"),
        output::field(peer, "agent_id"),
        output::field(peer, "fingerprint")
    ));
    Ok(())
}

/// Rotates through the running node (which tells contacts at once), or on the key files when
/// the node is down (contacts are told when it next starts).
pub async fn rotate(ctx: &Ctx) -> Result<()> {
    let reply = match ctx.home.runtime() {
        Some(_) if ctx.client()?.status().await.is_ok() => ctx.check(ctx.client()?.rotate_key().await)?,
        _ => offline(ctx)?,
    };
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    output::line(&format!("Rotated the keys of {}.", output::field(&reply, "agent_id")));
    output::line(&format!("  old fingerprint: {}", output::field(&reply, "old_fingerprint")));
    output::line(&format!("  new fingerprint: {}", output::field(&reply, "fingerprint")));
    match reply.get("contacts_told").and_then(Value::as_u64) {
        Some(n) => output::line(&format!("  {n} contact(s) are being sent the signed rotation.")),
        None => output::line("  Contacts are sent the signed rotation when the node next starts."),
    }
    Ok(())
}

fn offline(ctx: &Ctx) -> Result<Value> {
    let home = &ctx.home;
    let Some(_lock) = home.try_lock()? else {
        bail!("the node for {} is running but not answering; try again", home.root().display());
    };
    let config = Config::load(&home.config_path())?;
    let old = home.load_identity()?.fingerprint();
    let state = home.rotate_keys(config.rotation_grace_secs.saturating_mul(1000))?;
    Ok(json!({
        "agent_id": state.identity.agent_id().to_string(),
        "old_fingerprint": old,
        "fingerprint": state.identity.fingerprint(),
        "key_rotations": state.identity.rotations().len(),
        "previous_key_until": state.previous.as_ref().map(|(_, until)| *until),
        "contacts_told": null,
    }))
}
