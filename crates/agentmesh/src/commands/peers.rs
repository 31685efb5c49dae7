//! `peers`, `check`, `block`, `unblock`, `remove`.

use agentmesh_api::{Peer, TrustState};
use anyhow::Result;

use super::Ctx;
use crate::cli::PeersArgs;
use crate::output;

pub(crate) enum Change {
    Block,
    Unblock,
    Remove,
}

/// `trusted`, or `rejected (by peer: blocked)`.
pub(crate) fn trust(p: &Peer) -> String {
    match (&p.trust, &p.trust_reason) {
        (TrustState::Rejected | TrustState::Blocked | TrustState::Removed, Some(r)) => {
            format!("{} ({})", p.trust, output::clean(&r.to_string(), false))
        }
        (state, _) => state.to_string(),
    }
}

pub(crate) async fn list(ctx: &Ctx, args: PeersArgs) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.peers(args.all).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    if reply.peers.is_empty() {
        output::line("No peers yet; add one with `agentmesh request-contact <URL>`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reply
        .peers
        .iter()
        .map(|p| {
            vec![
                p.agent_id.to_string(),
                output::clean(&p.display_name(), false),
                trust(p),
                p.protocol.to_string(),
                output::clean(&p.endpoint, false),
                output::short_fingerprint(&p.fingerprint),
                output::time(p.last_seen),
            ]
        })
        .collect();
    output::table(&["AGENT ID", "NAME", "TRUST", "PROTOCOL", "ENDPOINT", "FINGERPRINT", "LAST SEEN (UTC)"], &rows);
    Ok(())
}

pub(crate) async fn check(ctx: &Ctx, peer: &str) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.health(peer).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let who = format!("{} ({})", output::clean(&reply.peer.display_name(), false), reply.peer.agent_id);
    match (reply.reachable, reply.rtt_ms) {
        (true, Some(ms)) => {
            output::line(&format!("{who} answers at {} with the pinned key ({ms} ms).", reply.peer.endpoint))
        }
        _ => output::line(&format!(
            "{who} does not answer at {} as pinned: {}",
            output::clean(&reply.peer.endpoint, false),
            output::text(reply.error.as_deref())
        )),
    }
    Ok(())
}

pub(crate) async fn change(ctx: &Ctx, peer: &str, change: Change) -> Result<()> {
    let client = ctx.client()?;
    let (reply, done) = match change {
        Change::Block => (ctx.check(client.block(peer).await)?, "blocked"),
        Change::Unblock => (ctx.check(client.unblock(peer).await)?, "unblocked"),
        Change::Remove => (ctx.check(client.remove(peer).await)?, "removed"),
    };
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let told = if reply.told { "; it is told" } else { "" };
    output::line(&format!(
        "{} ({}) {done}{told}.",
        output::clean(&reply.peer.display_name(), false),
        reply.peer.agent_id
    ));
    if let Some(hint) = &reply.hint {
        output::line(&format!("  {hint}"));
    }
    Ok(())
}
