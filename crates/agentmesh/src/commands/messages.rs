//! `send-message`, `list-messages`, `read`.

use std::io::Read;

use agentmesh_client::{MessageQuery, RequestDirection};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::{ListMessagesArgs, SendArgs};
use crate::output;

pub async fn send(ctx: &Ctx, args: SendArgs) -> Result<()> {
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin().take(1 << 20).read_to_string(&mut t).context("reading the message from stdin")?;
            t.trim_end_matches('\n').to_owned()
        }
    };
    if text.is_empty() {
        bail!("the message is empty; pass --text or pipe it on stdin");
    }
    let client = ctx.client()?;
    let reply = ctx.check(client.send(&args.to, &text, args.reply_to.as_deref(), args.thread.as_deref()).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else {
        let how = if reply["encrypted"] == json!(true) {
            "signed, end-to-end encrypted"
        } else {
            "signed, not encrypted (Agent Mesh V1)"
        };
        output::line(&format!(
            "Queued {} to {} ({how}).",
            output::field(&reply, "message_id"),
            output::field(&reply, "to")
        ));
    }
    Ok(())
}

fn message_row(m: &Value) -> Vec<String> {
    let arrow = if m["direction"] == "incoming" { "<-" } else { "->" };
    let lock = if m["encrypted"] == json!(true) { "e2e" } else { "plain" };
    let text: String = output::field(m, "text").chars().take(60).collect::<String>().replace('\n', " ");
    vec![
        output::time(&m["created_at"]),
        format!("{arrow} {}", output::field(m, "peer_id")),
        output::field(m, "status"),
        lock.to_owned(),
        output::field(m, "id"),
        text,
    ]
}

const HEADER: [&str; 6] = ["TIME (UTC)", "PEER", "STATUS", "ENC", "ID", "TEXT"];

pub async fn list(ctx: &Ctx, args: ListMessagesArgs) -> Result<()> {
    let direction = match (args.incoming, args.outgoing) {
        (true, _) => Some(RequestDirection::Incoming),
        (_, true) => Some(RequestDirection::Outgoing),
        _ => None,
    };
    let query = MessageQuery { direction, unread: args.unread, peer: args.peer.clone(), limit: Some(args.limit) };
    let client = ctx.client()?;
    // Subscribe before listing so nothing falls between the two.
    let mut events = if args.follow { Some(ctx.check(client.events().await)?) } else { None };
    let reply = ctx.check(client.messages(&query).await)?;
    let messages = reply["messages"].as_array().cloned().unwrap_or_default();
    match (&mut events, ctx.json) {
        (None, true) => output::json_doc(&reply),
        (None, false) if messages.is_empty() => output::line("No messages."),
        (None, false) => output::table(&HEADER, &messages.iter().map(message_row).collect::<Vec<_>>()),
        (Some(_), true) => messages.iter().for_each(|m| output::json(&json!({"event": "message", "message": m}))),
        (Some(_), false) => {
            for m in &messages {
                output::line(&message_row(m).join("  "));
            }
        }
    }
    let Some(events) = events.as_mut() else { return Ok(()) };
    while let Some(event) = events.next().await {
        let event = event?;
        let wanted = match event["event"].as_str() {
            Some("message") => {
                let m = &event["message"];
                direction != Some(RequestDirection::Outgoing) && args.peer.as_deref().is_none_or(|p| m["peer_id"] == p)
            }
            Some("status") => {
                !args.unread
                    && direction != Some(RequestDirection::Incoming)
                    && event["kind"] == "message"
                    && args.peer.as_deref().is_none_or(|p| event["peer_id"] == p)
            }
            Some("lagged") => true,
            _ => false,
        };
        if !wanted {
            continue;
        }
        if ctx.json {
            output::json(&event);
        } else if event["event"] == "message" {
            output::line(&message_row(&event["message"]).join("  "));
        } else if event["event"] == "lagged" {
            output::line(&format!("(missed {} events; run list-messages to catch up)", event["missed"]));
        } else {
            let error = event["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
            output::line(&format!(
                "{}  -> {}  {}  {}{error}",
                output::time(&event["at"]),
                output::field(&event, "peer_id"),
                output::field(&event, "status"),
                output::field(&event, "id")
            ));
        }
    }
    Ok(())
}

pub async fn read(ctx: &Ctx, message_id: &str) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.read(message_id).await)?;
    if ctx.json {
        output::json_doc(&reply);
        return Ok(());
    }
    let m = &reply["message"];
    output::line(&format!("From:    {}", output::field(m, "peer_id")));
    output::line(&format!("Id:      {}", output::field(m, "id")));
    output::line(&format!("Sent:    {} UTC", output::time(&m["created_at"])));
    let security = if m["encrypted"] == json!(true) {
        "signed, end-to-end encrypted"
    } else {
        "signed, not encrypted (Agent Mesh V1)"
    };
    output::line(&format!("Security: {security}"));
    if let Some(r) = m["reply_to"].as_str() {
        output::line(&format!("Reply to: {}", output::clean(r, false)));
    }
    output::line("");
    output::line(&output::clean(m["text"].as_str().unwrap_or_default(), true));
    Ok(())
}
