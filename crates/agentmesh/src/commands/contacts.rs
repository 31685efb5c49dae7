//! `request-contact`, `list-requests`, `approve-request`, `reject-request`.

use agentmesh_client::RequestDirection;
use anyhow::Result;
use serde_json::Value;

use super::Ctx;
use crate::cli::{AddPeerArgs, ListRequestsArgs, RequestContactArgs};
use crate::output;

pub async fn request(ctx: &Ctx, args: RequestContactArgs) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.request_contact(&args.url, &args.purpose).await)?;
    report(ctx, &reply)
}

pub async fn add_peer(ctx: &Ctx, args: AddPeerArgs) -> Result<()> {
    let client = ctx.client()?;
    let reply =
        ctx.check(client.add_peer(&args.agent_id, &args.endpoint, args.alias.as_deref(), &args.purpose).await)?;
    report(ctx, &reply)
}

fn report(ctx: &Ctx, reply: &Value) -> Result<()> {
    if ctx.json {
        output::json_doc(reply);
        return Ok(());
    }
    let peer = &reply["peer"];
    let who = format!("{} ({})", output::field(peer, "name"), output::field(peer, "agent_id"));
    if reply["status"] == "already_trusted" {
        output::line(&format!("{who} is already a trusted contact."));
    } else {
        output::line(&format!("Contact request {} sent to {who}", output::field(reply, "request_id")));
        output::line(&format!("  fingerprint: {}", output::field(peer, "fingerprint")));
        output::line(&format!("  protocol:    {}", output::field(peer, "protocol")));
        output::line("Waiting for its owner to approve; see `agentmesh list-requests --outgoing`.");
    }
    Ok(())
}

pub async fn list(ctx: &Ctx, args: ListRequestsArgs) -> Result<()> {
    let direction = match (args.incoming, args.outgoing) {
        (true, _) => Some(RequestDirection::Incoming),
        (_, true) => Some(RequestDirection::Outgoing),
        _ => None,
    };
    let client = ctx.client()?;
    let reply = ctx.check(client.requests(direction).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let requests = reply["requests"].as_array().cloned().unwrap_or_default();
    if requests.is_empty() {
        output::line("No contact requests.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            vec![
                output::field(r, "request_id"),
                output::field(r, "direction"),
                output::field(r, "status"),
                format!("{} ({})", output::field(r, "peer_name"), output::field(r, "peer_id")),
                output::field(r, "fingerprint").chars().take(23).collect(),
                output::time(&r["created_at"]),
                output::field(r, "purpose"),
            ]
        })
        .collect();
    output::table(&["REQUEST", "DIRECTION", "STATUS", "PEER", "FINGERPRINT", "CREATED (UTC)", "PURPOSE"], &rows);
    Ok(())
}

pub async fn decide(ctx: &Ctx, request_id: &str, approve: bool, reason: Option<String>) -> Result<()> {
    let client = ctx.client()?;
    let reply = if approve {
        ctx.check(client.approve(request_id).await)?
    } else {
        ctx.check(client.reject(request_id, reason.as_deref()).await)?
    };
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let r: &Value = &reply["request"];
    let who = format!("{} ({})", output::field(r, "peer_name"), output::field(r, "peer_id"));
    if approve {
        output::line(&format!("Approved {request_id}: {who} is now a trusted contact."));
    } else {
        output::line(&format!("Rejected {request_id} from {who}."));
    }
    Ok(())
}
