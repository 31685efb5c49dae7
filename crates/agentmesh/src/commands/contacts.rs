//! `request-contact`, `add-peer`, `list-requests`, `approve-request`, `reject-request`,
//! `withdraw-request`.

use agentmesh_api::control::{
    ContactArgs, ContactOutcome, ContactReply, EventListQuery, RejectManyArgs, RequestsQuery,
};
use agentmesh_api::{ContactRequest, Direction, ErrorCode, Event, RequestStatus};
use agentmesh_client::StreamItem;
use anyhow::Result;

use super::{Ctx, fail};
use crate::cli::{AddPeerArgs, ListRequestsArgs, RejectRequestArgs, RequestContactArgs};
use crate::output;

pub(crate) async fn request(ctx: &Ctx, args: RequestContactArgs) -> Result<()> {
    let client = ctx.client()?;
    let contact = ContactArgs {
        to: args.target,
        purpose: args.purpose,
        agent_id: None,
        alias: args.alias,
        wait_ms: Some((args.wait.clamp(0.0, 60.0) * 1000.0) as u64),
        without_approving: false,
    };
    let reply = ctx.check(client.request_contact(&contact).await)?;
    report(ctx, &reply)
}

pub(crate) async fn add_peer(ctx: &Ctx, args: AddPeerArgs) -> Result<()> {
    let client = ctx.client()?;
    let contact = ContactArgs {
        to: args.endpoint,
        purpose: args.purpose,
        agent_id: Some(args.agent_id),
        alias: args.alias,
        wait_ms: None,
        without_approving: false,
    };
    let reply = ctx.check(client.request_contact(&contact).await)?;
    report(ctx, &reply)
}

/// Shows how a contact request went; a refusal is an error (non-zero exit) carrying the peer's
/// reason code.
fn report(ctx: &Ctx, reply: &ContactReply) -> Result<()> {
    let peer = &reply.peer;
    let who = format!("{} ({})", output::clean(&peer.display_name(), false), peer.agent_id);
    let request_id = reply.request.as_ref().map(|r| r.request_id.clone()).unwrap_or_default();
    if reply.outcome == ContactOutcome::Refused {
        let (code, message) = reply.refusal.as_ref().map(|r| (r.code.clone(), r.message.clone())).unwrap_or_default();
        return Err(fail(
            ErrorCode::ContactRefused,
            format!("{who} refused the contact request {request_id}: {code} ({})", output::clean(&message, false)),
        ));
    }
    if ctx.json {
        output::json_doc(reply);
        return Ok(());
    }
    match reply.outcome {
        ContactOutcome::Trusted => match &reply.request {
            Some(r) => output::line(&format!(
                "{who} had asked you for contact ({}): approved, you are contacts now.",
                r.request_id
            )),
            None => output::line(&format!("{who} is already a trusted contact.")),
        },
        ContactOutcome::Delivered => {
            output::line(&format!("Contact request {request_id} delivered to {who}."));
            output::line(&format!("  fingerprint: {}", output::clean(&peer.fingerprint, false)));
            output::line(&format!("  protocol:    {}", peer.protocol));
            output::line(
                "Its owner decides; `agentmesh list-requests --outgoing` and `agentmesh peers` show the answer.",
            );
        }
        ContactOutcome::Queued => {
            let why =
                reply.refusal.as_ref().map(|r| format!(" ({})", output::clean(&r.message, false))).unwrap_or_default();
            output::line(&format!("Contact request {request_id} to {who} is not delivered yet{why}."));
            output::line("The node keeps trying; `agentmesh list-requests --outgoing` shows where it stands.");
        }
        _ => output::json_doc(reply),
    }
    Ok(())
}

fn request_row(r: &ContactRequest) -> Vec<String> {
    let mut peer = format!("{} ({})", output::text(r.peer_name.as_deref()), r.peer_id);
    if let Some(other) = &r.name_collides_with {
        peer.push_str(&format!(" [same name as contact {other}!]"));
    }
    if r.unbound {
        peer.push_str(" [V1: not addressed to us alone]");
    }
    let status = match (&r.reason_code, r.status) {
        (Some(code), status) if status != RequestStatus::Pending => {
            format!("{status} ({})", output::clean(code, false))
        }
        (_, status) => status.to_string(),
    };
    vec![
        r.request_id.clone(),
        r.direction.to_string(),
        status,
        peer,
        output::short_fingerprint(r.fingerprint.as_deref().unwrap_or("-")),
        output::time(r.created_at),
        output::clean(r.source_ip.as_deref().unwrap_or("-"), false),
        output::clean(if r.reason.is_some() { r.reason.as_deref().unwrap_or("") } else { &r.purpose }, false),
    ]
}

pub(crate) async fn list(ctx: &Ctx, args: ListRequestsArgs) -> Result<()> {
    let direction = match (args.incoming, args.outgoing) {
        (true, _) => Some(Direction::Incoming),
        (_, true) => Some(Direction::Outgoing),
        _ => None,
    };
    let status = args.open.then_some(RequestStatus::Pending);
    let client = ctx.client()?;
    if args.follow {
        return follow(ctx, &client, direction, status).await;
    }
    let reply = ctx.check(client.requests(&RequestsQuery { direction, status }).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    if reply.requests.is_empty() {
        output::line("No contact requests.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reply.requests.iter().map(request_row).collect();
    output::table(
        &["REQUEST", "DIRECTION", "STATUS", "PEER", "FINGERPRINT", "CREATED (UTC)", "FROM", "PURPOSE / REASON"],
        &rows,
    );
    Ok(())
}

/// `list-requests --follow`: the requests listed now, then each new request or change of one as
/// it happens (one JSON line per request with `--json`), across node restarts.
async fn follow(
    ctx: &Ctx,
    client: &agentmesh_client::Client,
    direction: Option<Direction>,
    status: Option<RequestStatus>,
) -> Result<()> {
    let cursor = ctx.check(client.event_list(&EventListQuery { after: None, limit: Some(1) }).await)?.last;
    let listed = ctx.check(client.requests(&RequestsQuery { direction, status }).await)?;
    let print = |r: &ContactRequest| {
        if ctx.json {
            output::json(r);
        } else {
            output::line(&request_row(r).join("  "));
        }
    };
    listed.requests.iter().for_each(print);
    super::events::follow(ctx, cursor, async |item| {
        if let StreamItem::Event(logged) = item
            && let Event::ContactRequest { request } = &logged.event
            && direction.is_none_or(|d| d == request.direction)
            && status.is_none_or(|s| s == request.status)
        {
            // Events leave out what the peer wrote: the owner reads it from the request itself.
            match client.request_detail(&request.request_id).await {
                Ok(whole) => print(&whole.request),
                Err(_) => print(request),
            }
        }
    })
    .await
}

/// `reject-request`: one request by id, or every pending one that matches `--from` and
/// `--older-than`.
pub(crate) async fn reject(ctx: &Ctx, args: RejectRequestArgs) -> Result<()> {
    if let Some(request_id) = &args.request_id {
        return decide(ctx, request_id, Decision::Reject(args.reason)).await;
    }
    let client = ctx.client()?;
    let many =
        RejectManyArgs { from: args.from, older_than_secs: args.older_than.map(|d| d.as_secs()), reason: args.reason };
    let reply = ctx.check(client.reject_many(&many).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    match reply.rejected.len() {
        0 => output::line("No pending request matches."),
        n => output::line(&format!("Rejected {n} request(s); each requester is told.")),
    }
    if reply.more {
        output::line("More match: run the same command again.");
    }
    Ok(())
}

/// What to do with a request.
pub(crate) enum Decision {
    Approve,
    Reject(Option<String>),
    Withdraw,
}

pub(crate) async fn decide(ctx: &Ctx, request_id: &str, decision: Decision) -> Result<()> {
    let client = ctx.client()?;
    let reply = match &decision {
        Decision::Approve => ctx.check(client.approve(request_id).await)?,
        Decision::Reject(reason) => ctx.check(client.reject(request_id, reason.as_deref()).await)?,
        Decision::Withdraw => ctx.check(client.withdraw(request_id).await)?,
    };
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let who = format!("{} ({})", output::clean(&reply.peer.display_name(), false), reply.peer.agent_id);
    match decision {
        Decision::Approve => output::line(&format!("Approved {request_id}: {who} is now a trusted contact.")),
        Decision::Reject(_) => output::line(&format!("Rejected {request_id} from {who}; it is told.")),
        Decision::Withdraw => output::line(&format!("Withdrew {request_id} to {who}; it is told.")),
    }
    Ok(())
}
