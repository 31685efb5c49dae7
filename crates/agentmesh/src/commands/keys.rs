//! `repin` and `rotate-key`.

use agentmesh_api::ErrorCode;
use agentmesh_api::control::RotateReply;
use agentmesh_node::Config;
use anyhow::Result;

use super::{Ctx, fail};
use crate::output;

pub(crate) async fn repin(ctx: &Ctx, peer: &str, fingerprint: &str) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.repin(peer, fingerprint).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let p = &reply.peer;
    output::line(&format!(
        "Pinned {} ({}) to {}. It is no longer refused.",
        output::clean(&p.display_name(), false),
        p.agent_id,
        output::clean(&p.fingerprint, false)
    ));
    Ok(())
}

/// Rotates through the running node (which tells contacts at once), or on the key files when
/// the node is down (contacts are told when it next starts).
pub(crate) async fn rotate(ctx: &Ctx) -> Result<()> {
    let (reply, online) = if ctx.node_running().await {
        (ctx.check(ctx.client()?.rotate_key().await)?, true)
    } else {
        (offline(ctx)?, false)
    };
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    output::line(&format!("Rotated the keys of {}.", reply.agent_id));
    output::line(&format!("  old fingerprint: {}", reply.old_fingerprint));
    output::line(&format!("  new fingerprint: {}", reply.fingerprint));
    if online {
        output::line(&format!("  {} contact(s) are being sent the signed rotation.", reply.contacts_told));
    } else {
        output::line("  Contacts are sent the signed rotation when the node next starts.");
    }
    Ok(())
}

fn offline(ctx: &Ctx) -> Result<RotateReply> {
    let home = &ctx.home;
    let Some(_lock) = home.try_lock()? else {
        return Err(fail(
            ErrorCode::NodeRunning,
            format!("the node for {} is running but not answering; try again", home.root().display()),
        ));
    };
    let config = Config::load(&home.config_path())?;
    let old = home.load_identity()?.fingerprint().to_string();
    let state = home.rotate_keys(config.rotation_grace_secs.saturating_mul(1000))?;
    Ok(RotateReply {
        agent_id: state.identity.agent_id(),
        old_fingerprint: old,
        fingerprint: state.identity.fingerprint().to_string(),
        key_rotations: state.identity.rotations().len(),
        previous_key_until: state.previous.as_ref().map(|(_, until)| *until as i64),
        contacts_told: 0,
    })
}
