//! `events`: the node's event log, and following it across node restarts (also used by
//! `list-messages --follow` and `list-requests --follow`).

use std::time::Duration;

use agentmesh_api::control::EventListQuery;
use agentmesh_api::{Event, LoggedEvent, StreamNotice};
use agentmesh_client::{ClientError, StreamItem};
use anyhow::Result;

use super::Ctx;
use crate::cli::EventsArgs;
use crate::output;

pub(crate) async fn events(ctx: &Ctx, args: EventsArgs) -> Result<()> {
    let client = ctx.client()?;
    if args.follow && args.after.is_none() {
        let last = ctx.check(client.event_list(&EventListQuery { after: None, limit: Some(1) }).await)?.last;
        return follow(ctx, last, async |item| print_item(ctx, item)).await;
    }
    let page = ctx.check(client.event_list(&EventListQuery { after: args.after, limit: Some(args.limit) }).await)?;
    for event in &page.events {
        print_item(ctx, &StreamItem::Event(Box::new(event.clone())));
    }
    if args.follow {
        let cursor = page.events.last().map_or(page.last.min(args.after.unwrap_or(0)), |e| e.seq);
        return follow(ctx, cursor, async |item| print_item(ctx, item)).await;
    }
    if !ctx.json && page.events.is_empty() {
        output::line("No events.");
    }
    Ok(())
}

/// Streams the events after `cursor` to `handle` until interrupted. When the node stops, waits
/// for it to come back (its control URL may change) and resumes after the last event seen, so
/// nothing is missed or repeated across restarts.
pub(crate) async fn follow(ctx: &Ctx, mut cursor: i64, mut handle: impl AsyncFnMut(&StreamItem)) -> Result<()> {
    let mut gone = false;
    loop {
        let stream = match ctx.client() {
            Ok(client) => client.events(Some(cursor)).await,
            Err(_) => Err(ClientError::Unreachable { message: "no node.json".into() }),
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e @ ClientError::Api { .. }) => return Err(e.into()),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if gone && !ctx.json {
            eprintln!("(reconnected to the node)");
        }
        while let Some(Ok(item)) = stream.next().await {
            if let Some(seq) = item.seq() {
                cursor = seq;
            }
            handle(&item).await;
        }
        if !ctx.json {
            eprintln!("(the node stopped; waiting for it to come back)");
        }
        gone = true;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_item(ctx: &Ctx, item: &StreamItem) {
    match item {
        StreamItem::Event(event) if ctx.json => output::json(event),
        StreamItem::Notice(notice) if ctx.json => output::json(notice),
        StreamItem::Event(event) => output::line(&describe(event)),
        StreamItem::Notice(StreamNotice::Gap { after, next }) => {
            output::line(&format!("(events after {after} were pruned; going on at {next})"))
        }
        StreamItem::Notice(StreamNotice::Reset { after, last }) => {
            output::line(&format!("(no event {after} here, the newest is {last}; starting over)"))
        }
        StreamItem::Notice(other) => output::line(&format!("({other:?})")),
        StreamItem::Unknown { seq, kind } if ctx.json => output::json(&serde_json::json!({"seq": seq, "event": kind})),
        StreamItem::Unknown { seq, kind } => output::line(&format!("{seq:>6}  {kind} (this build cannot show it)")),
        _ => {}
    }
}

/// One line for a person: cursor, time, kind, what.
fn describe(logged: &LoggedEvent) -> String {
    let what = match &logged.event {
        Event::Message { message } => format!(
            "{} {}  {}  {}",
            if message.direction == agentmesh_api::Direction::Incoming { "<-" } else { "->" },
            message.peer_id,
            message.id,
            output::clean(&output::text(message.text.as_deref()).chars().take(60).collect::<String>(), false)
        ),
        Event::Status { id, peer_id, kind, status, error, .. } => {
            let error = error.as_deref().map(|e| format!(" ({})", output::clean(e, false))).unwrap_or_default();
            format!("-> {peer_id}  {kind} {id} {status}{error}")
        }
        Event::ContactRequest { request } => {
            format!("{} {}  {}  {}", request.direction, request.peer_id, request.request_id, request.status)
        }
        Event::ContactResponse { request_id, peer_id, accepted } => {
            format!("{peer_id} {} {request_id}", if *accepted { "approved" } else { "rejected" })
        }
        Event::Trust { peer_id, trust, reason } => match reason {
            Some(reason) => format!("{peer_id} is {trust} ({reason})"),
            None => format!("{peer_id} is {trust}"),
        },
        Event::KeyMismatch { mismatch } => {
            format!(
                "{} presented {} (pinned {})",
                mismatch.peer_id, mismatch.presented_fingerprint, mismatch.pinned_fingerprint
            )
        }
        Event::KeyRotated { peer_id, fingerprint } => format!("{peer_id} rotated to {fingerprint}"),
        Event::ClockSkew { skew } => format!("{} finds our clock off by {} ms", skew.peer_id, skew.skew_ms),
        Event::PeerOnline { peer_id } => format!("{peer_id} answers again"),
        Event::PeerOffline { peer_id, error } => {
            format!("{peer_id} cannot be reached: {}", output::clean(error, false))
        }
        other => other.kind().to_owned(),
    };
    format!("{:>6}  {}  {:<16}  {what}", logged.seq, output::time(logged.at), logged.event.kind())
}
