//! `send-message`, `list-messages`, `read`, `retry`, `clear-failed`.

use std::collections::{HashSet, VecDeque};
use std::io::Read;

use agentmesh_api::control::{EventListQuery, MessagesQuery, SendArgs as SendBody};
use agentmesh_api::{Direction, ErrorCode, Event, Message, PeerId};
use agentmesh_client::StreamItem;
use anyhow::{Context, Result};

use super::{Ctx, NodeNotRunning, fail};
use crate::cli::{ListMessagesArgs, SendArgs};
use crate::output;

/// Most bytes read from stdin for one message: far over any node's text limit, so the limit is
/// what the owner is told, while memory stays bounded.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024 + 1;

pub(crate) async fn send(ctx: &Ctx, args: SendArgs) -> Result<()> {
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin().take(MAX_STDIN_BYTES).read_to_string(&mut t).context("reading the message from stdin")?;
            t.trim_end_matches('\n').to_owned()
        }
    };
    if text.is_empty() {
        return Err(fail(ErrorCode::EmptyMessage, "the message is empty; pass --text or pipe it on stdin"));
    }
    // Refused here, in the node's words, rather than by a node that may close the connection
    // on a body it will not read while the body is still being sent.
    let limit = agentmesh_node::config::Config::load(&ctx.home.config_path())?.max_text_bytes;
    if text.len() > limit {
        return Err(fail(ErrorCode::TooLarge, format!("message text exceeds the limit of {limit} bytes")));
    }
    let client = ctx.client()?;
    let body = SendBody { to: args.to, text, reply_to: args.reply_to, thread: args.thread };
    let reply = ctx.check(client.send(&body).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else {
        let how =
            if reply.encrypted { "signed, end-to-end encrypted" } else { "signed, not encrypted (Agent Mesh V1)" };
        output::line(&format!("Queued {} to {} ({how}).", reply.message_id, reply.to));
    }
    Ok(())
}

fn message_row(m: &Message) -> Vec<String> {
    let arrow = if m.direction == Direction::Incoming { "<-" } else { "->" };
    let lock = if m.encrypted { "e2e" } else { "plain" };
    let text: String = output::text(m.text.as_deref()).chars().take(60).collect();
    let status = match (&m.last_error, m.status) {
        (Some(e), agentmesh_api::MessageStatus::Failed) => {
            format!("failed: {}", output::clean(e, false).chars().take(60).collect::<String>())
        }
        (_, status) => status.to_string(),
    };
    vec![output::time(m.created_at), format!("{arrow} {}", m.peer_id), status, lock.to_owned(), m.id.clone(), text]
}

const HEADER: [&str; 6] = ["TIME (UTC)", "PEER", "STATUS", "ENC", "ID", "TEXT"];

fn query(args: &ListMessagesArgs) -> MessagesQuery {
    let direction = match (args.incoming, args.outgoing || args.failed) {
        (true, _) => Some(Direction::Incoming),
        (_, true) => Some(Direction::Outgoing),
        _ => None,
    };
    MessagesQuery {
        direction,
        unread: args.unread,
        failed: args.failed,
        peer: args.peer.clone(),
        limit: Some(args.limit),
    }
}

pub(crate) async fn list(ctx: &Ctx, args: ListMessagesArgs) -> Result<()> {
    let q = query(&args);
    if !args.follow {
        let client = ctx.client()?;
        let reply = ctx.check(client.messages(&q).await)?;
        if ctx.json {
            output::json_doc(&reply);
        } else if reply.messages.is_empty() {
            output::line("No messages.");
        } else {
            output::table(&HEADER, &reply.messages.iter().map(message_row).collect::<Vec<_>>());
        }
        return Ok(());
    }
    follow(ctx, &args, &q).await
}

/// What `--follow` printed already (bounded), so a catch-up after a reconnect repeats nothing.
struct Seen {
    set: HashSet<(Direction, String)>,
    order: VecDeque<(Direction, String)>,
}

impl Seen {
    const MAX: usize = 100_000;

    fn insert(&mut self, m: &Message) -> bool {
        let key = (m.direction, m.id.clone());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::MAX
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Streams new messages and status changes; when the node stops, waits for it to come back and
/// picks up where it left (from the node's event log: nothing is missed or repeated).
async fn follow(ctx: &Ctx, args: &ListMessagesArgs, q: &MessagesQuery) -> Result<()> {
    let client = ctx.client()?;
    // The log's cursor before listing: what arrives meanwhile is both listed and streamed, and
    // printed once.
    let listed = async {
        let cursor = client.event_list(&EventListQuery { after: None, limit: Some(1) }).await?.last;
        let list = client.messages(q).await?;
        let peer: Option<PeerId> = match &args.peer {
            Some(p) => Some(client.peer(p).await?.peer.agent_id),
            None => None,
        };
        Ok::<_, agentmesh_client::ClientError>((cursor, list, peer))
    };
    let (cursor, list, peer) = match listed.await {
        Ok(listed) => listed,
        Err(e @ agentmesh_client::ClientError::Api { .. }) => return Err(e.into()),
        Err(_) => return Err(NodeNotRunning::for_home(ctx).into()),
    };
    let mut seen = Seen { set: HashSet::new(), order: VecDeque::new() };
    for m in &list.messages {
        if seen.insert(m) {
            print_message(ctx, m);
        }
    }
    super::events::follow(ctx, cursor, async |item| {
        let StreamItem::Event(logged) = item else { return };
        match &logged.event {
            Event::Message { message } => {
                let wanted = q.direction.is_none_or(|d| d == message.direction)
                    && !q.failed
                    && peer.as_ref().is_none_or(|p| *p == message.peer_id);
                if wanted && seen.insert(message) {
                    print_message(ctx, message);
                }
            }
            Event::Status { kind, peer_id, id, status, error, .. } => {
                let wanted = !q.unread
                    && q.direction != Some(Direction::Incoming)
                    && *kind == agentmesh_core::EnvelopeKind::Message
                    && peer.as_ref().is_none_or(|p| p == peer_id)
                    && (!q.failed || *status == agentmesh_api::MessageStatus::Failed);
                if !wanted {
                    return;
                }
                if ctx.json {
                    output::json(logged);
                } else {
                    let error = error.as_deref().map(|e| format!(" ({})", output::clean(e, false))).unwrap_or_default();
                    output::line(&format!("{}  -> {peer_id}  {status}  {id}{error}", output::time(logged.at)));
                }
            }
            _ => {}
        }
    })
    .await
}

fn print_message(ctx: &Ctx, m: &Message) {
    if ctx.json {
        output::json(&Event::Message { message: m.clone() });
    } else {
        output::line(&message_row(m).join("  "));
    }
}

pub(crate) async fn read(ctx: &Ctx, message_id: &str) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.read(message_id).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let m = &reply.message;
    output::line(&format!("From:    {}", m.peer_id));
    output::line(&format!("Id:      {}", m.id));
    output::line(&format!("Sent:    {} UTC", output::time(m.created_at)));
    let security = if m.encrypted { "signed, end-to-end encrypted" } else { "signed, not encrypted (Agent Mesh V1)" };
    output::line(&format!("Security: {security}"));
    if let Some(r) = &m.reply_to {
        output::line(&format!("Reply to: {}", output::clean(r, false)));
    }
    output::line("");
    output::line(&output::clean(m.text.as_deref().unwrap_or_default(), true));
    Ok(())
}

pub(crate) async fn retry(ctx: &Ctx, message_id: &str) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.retry(message_id).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else {
        output::line(&format!("{} to {} is queued again.", reply.message.id, reply.message.peer_id));
    }
    Ok(())
}

pub(crate) async fn clear_failed(ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.clear_failed().await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else {
        output::line(&format!(
            "Deleted {} failed outbox entr{}.",
            reply.cleared,
            if reply.cleared == 1 { "y" } else { "ies" }
        ));
    }
    Ok(())
}
