//! `peers`, `check`, `block`, `unblock`, `remove`.

use agentmesh_api::{Peer, PeerPath, TrustState};
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
                p.path.as_ref().map(path).unwrap_or_else(|| "-".into()),
                output::short_fingerprint(&p.fingerprint),
                output::time(p.last_seen),
            ]
        })
        .collect();
    output::table(
        &["AGENT ID", "NAME", "TRUST", "PROTOCOL", "ENDPOINT", "PATH", "FINGERPRINT", "LAST SEEN (UTC)"],
        &rows,
    );
    Ok(())
}

/// `iroh direct 127.0.0.1:7843 (RTT 0.4 ms)`, `iroh relayed https://relay.example (RTT 31.0 ms)`,
/// `http http://127.0.0.1:8787 (RTT 1.2 ms)`.
pub(crate) fn path(p: &PeerPath) -> String {
    let how = match (&p.kind, &p.via) {
        (kind, _) if *kind == p.carrier => format!("{} {}", p.carrier, output::clean(&p.endpoint, false)),
        (kind, Some(via)) => format!("{} {kind} {}", p.carrier, output::clean(via, false)),
        (kind, None) => format!("{} {kind}", p.carrier),
    };
    match p.rtt_us {
        Some(us) => format!("{how} (RTT {:.1} ms)", us as f64 / 1000.0),
        None => how,
    }
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
            let over = match &reply.peer.path {
                Some(p) => path(p),
                None => output::clean(&reply.peer.endpoint, false),
            };
            output::line(&format!("{who} answers with the pinned key in {ms} ms, over {over}."))
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
