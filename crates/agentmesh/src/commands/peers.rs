//! `peers`, `block`, `unblock`, `remove`.

use anyhow::Result;

use super::Ctx;
use crate::output;

pub enum Change {
    Block,
    Unblock,
    Remove,
}

pub async fn list(ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.peers().await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let peers = reply["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        output::line("No peers yet; add one with `agentmesh request-contact <URL>`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                output::field(p, "agent_id"),
                match p["alias"].as_str() {
                    Some(alias) => format!("{} ({})", output::clean(alias, false), output::field(p, "name")),
                    None => output::field(p, "name"),
                },
                output::field(p, "trust"),
                output::field(p, "protocol"),
                output::field(p, "endpoint"),
                output::field(p, "fingerprint").chars().take(23).collect(),
                output::time(&p["last_seen"]),
            ]
        })
        .collect();
    output::table(&["AGENT ID", "NAME", "TRUST", "PROTOCOL", "ENDPOINT", "FINGERPRINT", "LAST SEEN (UTC)"], &rows);
    Ok(())
}

pub async fn change(ctx: &Ctx, agent_id: &str, change: Change) -> Result<()> {
    let client = ctx.client()?;
    let (reply, done) = match change {
        Change::Block => (ctx.check(client.block(agent_id).await)?, "blocked"),
        Change::Unblock => (ctx.check(client.unblock(agent_id).await)?, "unblocked (trust must be re-established)"),
        Change::Remove => (ctx.check(client.remove(agent_id).await)?, "removed"),
    };
    if ctx.json {
        output::json_doc(&reply);
    } else {
        output::line(&format!("{agent_id} {done}."));
    }
    Ok(())
}
