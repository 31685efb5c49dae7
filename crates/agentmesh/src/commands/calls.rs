//! `call`, `answer`, `say`, `end`, `transcript`, `calls`.

use std::io::Read;
use std::time::Duration;

use agentmesh_api::control::{AnswerArgs as AnswerBody, CallArgs as CallBody, CallsQuery, EventListQuery};
use agentmesh_api::{Call, CallState, Direction, ErrorCode, Event};
use agentmesh_client::StreamItem;
use anyhow::{Context, Result};

use super::{Ctx, fail};
use crate::cli::{AnswerArgs, CallArgs, CallsArgs, Decision, TranscriptFormat};
use crate::output;

/// Most bytes read from stdin for one line: over any node's text limit, so the limit is what
/// the owner is told, while memory stays bounded.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024 + 1;

fn describe(call: &Call) -> String {
    let mut state = call.state.to_string();
    if let Some(by) = call.ended_by {
        state.push_str(&format!(" by {by}"));
    }
    if let Some(reason) = &call.reason {
        state.push_str(&format!(": {}", output::clean(reason, false)));
    }
    state
}

pub(crate) async fn call(ctx: &Ctx, args: CallArgs) -> Result<()> {
    let client = ctx.client()?;
    // The log's cursor before ringing: the answer cannot slip past a `--wait`.
    let cursor = if args.wait {
        Some(ctx.check(client.event_list(&EventListQuery { after: None, limit: Some(1) }).await)?.last)
    } else {
        None
    };
    let body = CallBody { to: args.peer, topic: args.topic, ring_secs: args.ring_secs };
    let mut call = ctx.check(client.call(&body).await)?.call;
    if let Some(cursor) = cursor {
        if !ctx.json {
            eprintln!("Ringing {} ({})…", call.peer_id, call.call_id);
        }
        call = wait_answered(ctx, cursor, call).await?;
    }
    if ctx.json {
        output::json_doc(&call);
    } else if call.state == CallState::Ringing {
        output::line(&format!(
            "Ringing {} — call {}. It is missed if not answered by {} UTC.",
            call.peer_id,
            call.call_id,
            output::time(call.ring_until)
        ));
    } else {
        output::line(&format!("Call {} with {}: {}.", call.call_id, call.peer_id, describe(&call)));
    }
    Ok(())
}

/// Follows the event log until `call` stops ringing; the call as it stands then.
async fn wait_answered(ctx: &Ctx, cursor: i64, call: Call) -> Result<Call> {
    let client = ctx.client()?;
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis((call.ring_until - agentmesh_core::time::now_ms() as i64).max(0) as u64)
        + Duration::from_secs(5);
    let mut stream = ctx.check(client.events(Some(cursor)).await)?;
    loop {
        let item = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => item?,
            // The stream ended (the node stopped) or the ring time is over: as it stands.
            Ok(None) | Err(_) => return Ok(ctx.check(client.transcript(&call.call_id).await)?.call),
        };
        if let StreamItem::Event(logged) = item
            && let Event::Call { call: now, .. } = &logged.event
            && now.call_id == call.call_id
            && now.state != CallState::Ringing
        {
            return Ok(now.clone());
        }
    }
}

pub(crate) async fn answer(ctx: &Ctx, args: AnswerArgs) -> Result<()> {
    let client = ctx.client()?;
    let body = AnswerBody { accept: args.decision == Decision::Accept, reason: args.reason };
    let call = ctx.check(client.answer(&args.call_id, &body).await)?.call;
    if ctx.json {
        output::json_doc(&call);
    } else if call.state == CallState::Active {
        output::line(&format!(
            "Answered {} from {}. Speak with `agentmesh say {} \"…\"`.",
            call.call_id, call.peer_id, call.call_id
        ));
    } else {
        output::line(&format!("Declined {} from {}.", call.call_id, call.peer_id));
    }
    Ok(())
}

pub(crate) async fn say(ctx: &Ctx, call_id: &str, text: Option<String>) -> Result<()> {
    let text = match text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin().take(MAX_STDIN_BYTES).read_to_string(&mut t).context("reading the line from stdin")?;
            t.trim_end_matches('\n').to_owned()
        }
    };
    if text.is_empty() {
        return Err(fail(ErrorCode::EmptyMessage, "there is nothing to say; pass the text or pipe it on stdin"));
    }
    let limit = agentmesh_node::config::Config::load(&ctx.home.config_path())?.max_text_bytes;
    if text.len() > limit {
        return Err(fail(ErrorCode::TooLarge, format!("message text exceeds the limit of {limit} bytes")));
    }
    let client = ctx.client()?;
    let reply = ctx.check(client.say(call_id, &text).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else {
        output::line(&format!("Queued {} in {} to {}.", reply.line.line_id, reply.call.call_id, reply.call.peer_id));
    }
    Ok(())
}

pub(crate) async fn end(ctx: &Ctx, call_id: &str, reason: Option<String>) -> Result<()> {
    let client = ctx.client()?;
    let call = ctx.check(client.end_call(call_id, reason.as_deref()).await)?.call;
    if ctx.json {
        output::json_doc(&call);
    } else {
        output::line(&format!("Hung up {} with {} ({} lines said).", call.call_id, call.peer_id, call.lines));
    }
    Ok(())
}

pub(crate) async fn transcript(ctx: &Ctx, call_id: &str, format: TranscriptFormat) -> Result<()> {
    let client = ctx.client()?;
    let transcript = ctx.check(client.transcript(call_id).await)?;
    if ctx.json || format == TranscriptFormat::Json {
        output::json_doc(&transcript);
    } else {
        output::line(transcript.markdown().trim_end());
    }
    Ok(())
}

pub(crate) async fn list(ctx: &Ctx, args: CallsArgs) -> Result<()> {
    let client = ctx.client()?;
    let query = CallsQuery { peer: args.peer, state: None, open: args.open, limit: Some(args.limit) };
    let reply = ctx.check(client.calls(&query).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else if reply.calls.is_empty() {
        output::line("No calls.");
    } else {
        let rows: Vec<Vec<String>> = reply
            .calls
            .iter()
            .map(|c| {
                let arrow = if c.direction == Direction::Incoming { "<-" } else { "->" };
                vec![
                    output::time(c.created_at),
                    format!("{arrow} {}", c.peer_id),
                    describe(c),
                    c.lines.to_string(),
                    c.call_id.clone(),
                    output::text(Some(&c.topic)).chars().take(40).collect(),
                ]
            })
            .collect();
        output::table(&["PLACED (UTC)", "PEER", "STATE", "LINES", "ID", "TOPIC"], &rows);
    }
    Ok(())
}
