//! `delegate`, `tasks`, `task`, `update-task`, `reply-task`, `cancel-task`, `escalate`,
//! `escalations`, `resolve-escalation`.

use std::io::Read;
use std::time::Duration;

use agentmesh_api::control::{
    DelegateArgs as DelegateBody, EscalateArgs as EscalateBody, EscalationsQuery, EventListQuery, TasksQuery,
    UpdateTaskArgs as UpdateBody,
};
use agentmesh_api::{Direction, ErrorCode, Event, Task, TaskState};
use agentmesh_client::StreamItem;
use agentmesh_core::task::{Artifact, Part};
use anyhow::{Context, Result};

use super::{Ctx, fail};
use crate::cli::{A2aCommand, DelegateArgs, EscalateArgs, TasksArgs, UpdateTaskArgs};
use crate::output;

/// Most bytes read from stdin for one text.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024 + 1;

fn text_or_stdin(text: Option<String>, what: &str) -> Result<String> {
    let text = match text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin().take(MAX_STDIN_BYTES).read_to_string(&mut t).context("reading stdin")?;
            t.trim_end_matches('\n').to_owned()
        }
    };
    if text.is_empty() {
        return Err(fail(ErrorCode::EmptyMessage, format!("{what} is empty; pass --text or pipe it on stdin")));
    }
    Ok(text)
}

fn json_arg(value: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(value).map_err(|e| fail(ErrorCode::InvalidArgument, format!("{what} is not JSON: {e}")))
}

fn describe(task: &Task) -> String {
    let mut state = task.state.to_string();
    if let Some(text) = &task.status_text {
        state.push_str(&format!(": {}", output::clean(text, false).chars().take(60).collect::<String>()));
    }
    if task.waiting_for_owner.is_some() {
        state.push_str(" (waiting for the owner)");
    }
    state
}

/// Delegates `args` with `files` (absolute paths on the node's machine) offered to the same peer
/// alongside: each is sent first (as `send-file` does) and listed in the task's data as
/// `files: [{transfer_id, name, size, sha256}]` (data that is not an object moves to `input`).
/// When `args` names a task id that exists already (a retry), that task is returned and nothing
/// is sent again.
pub(crate) async fn delegate_with_files(
    client: &agentmesh_client::Client,
    mut args: DelegateBody,
    files: &[String],
) -> Result<agentmesh_api::control::TaskReply, agentmesh_client::ClientError> {
    if files.is_empty() {
        return client.delegate(&args).await;
    }
    if let Some(id) = &args.task_id
        && let Ok(detail) = client.task(id).await
    {
        return Ok(agentmesh_api::control::TaskReply { task: detail.task });
    }
    let mut refs = Vec::with_capacity(files.len());
    for path in files {
        let offer =
            agentmesh_api::control::SendFileArgs { to: args.to.clone(), path: path.clone(), name: None, call_id: None };
        let t = client.send_file(&offer).await?.transfer;
        refs.push(
            serde_json::json!({"transfer_id": t.transfer_id, "name": t.name, "size": t.size, "sha256": t.sha256}),
        );
    }
    args.data = Some(match args.data.take() {
        Some(serde_json::Value::Object(mut fields)) => {
            fields.insert("files".into(), serde_json::Value::Array(refs));
            serde_json::Value::Object(fields)
        }
        Some(other) => serde_json::json!({"input": other, "files": refs}),
        None => serde_json::json!({"files": refs}),
    });
    client.delegate(&args).await
}

pub(crate) async fn delegate(ctx: &Ctx, args: DelegateArgs) -> Result<()> {
    let text = text_or_stdin(args.text, "the task")?;
    let data = args.data.as_deref().map(|d| json_arg(d, "--data")).transpose()?;
    let files = args
        .files
        .iter()
        .map(|f| {
            std::path::absolute(f)
                .map(|p| p.display().to_string())
                .map_err(|e| fail(ErrorCode::Io, format!("{}: {e}", f.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let client = ctx.client()?;
    let cursor = if args.wait {
        Some(ctx.check(client.event_list(&EventListQuery { after: None, limit: Some(1) }).await)?.last)
    } else {
        None
    };
    let body = DelegateBody { to: args.peer, text, data, task_id: args.id };
    let mut task = ctx.check(delegate_with_files(&client, body, &files).await)?.task;
    if let Some(cursor) = cursor {
        task = wait_settled(ctx, cursor, task, Duration::from_secs(args.timeout)).await?;
    }
    if ctx.json {
        output::json_doc(&task);
    } else {
        output::line(&format!("Task {} at {}: {}.", task.task_id, task.peer_id, describe(&task)));
        for artifact in &task.artifacts {
            print_artifact(artifact);
        }
    }
    Ok(())
}

/// Follows the event log until `task` is final or asks for input (or `limit` passes).
async fn wait_settled(ctx: &Ctx, cursor: i64, task: Task, limit: Duration) -> Result<Task> {
    let settled =
        |t: &Task| t.state.is_final() || matches!(t.state, TaskState::InputRequired | TaskState::AuthRequired);
    if settled(&task) {
        return Ok(task);
    }
    let client = ctx.client()?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut stream = ctx.check(client.events(Some(cursor)).await)?;
    loop {
        let item = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => item?,
            Ok(None) | Err(_) => return Ok(ctx.check(client.task(&task.task_id).await)?.task),
        };
        if let StreamItem::Event(logged) = item
            && let Event::Task { task: now, .. } = &logged.event
            && now.task_id == task.task_id
            && settled(now)
        {
            // The event's task leaves the artifacts out: the task as it stands now has them.
            return Ok(ctx.check(client.task(&task.task_id).await)?.task);
        }
    }
}

fn print_artifact(artifact: &Artifact) {
    let name = artifact.name.as_deref().unwrap_or(&artifact.artifact_id);
    for part in &artifact.parts {
        match part {
            Part::Text { text } => {
                output::line(&format!("  [{}] {}", output::clean(name, false), output::clean(text, true)))
            }
            Part::Data { data } => output::line(&format!("  [{}] {data}", output::clean(name, false))),
        }
    }
}

pub(crate) async fn list(ctx: &Ctx, args: TasksArgs) -> Result<()> {
    let direction = match (args.incoming, args.outgoing) {
        (true, _) => Some(Direction::Incoming),
        (_, true) => Some(Direction::Outgoing),
        _ => None,
    };
    let q = TasksQuery { peer: args.peer, direction, state: None, open: args.open, limit: Some(args.limit) };
    let client = ctx.client()?;
    let reply = ctx.check(client.tasks(&q).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else if reply.tasks.is_empty() {
        output::line("No tasks.");
    } else {
        let rows: Vec<Vec<String>> = reply
            .tasks
            .iter()
            .map(|t| {
                let arrow = if t.direction == Direction::Incoming { "<-" } else { "->" };
                vec![
                    output::time(t.updated_at),
                    format!("{arrow} {}", t.peer_id),
                    describe(t),
                    t.task_id.clone(),
                    output::text(Some(&t.text)).chars().take(40).collect(),
                ]
            })
            .collect();
        output::table(&["CHANGED (UTC)", "PEER", "STATE", "ID", "TASK"], &rows);
    }
    Ok(())
}

pub(crate) async fn show(ctx: &Ctx, task_id: &str) -> Result<()> {
    let client = ctx.client()?;
    let detail = ctx.check(client.task(task_id).await)?;
    if ctx.json {
        output::json_doc(&detail);
        return Ok(());
    }
    let t = &detail.task;
    let who = if t.direction == Direction::Outgoing { "delegated to" } else { "delegated by" };
    output::line(&format!("Task {} {who} {}: {}", t.task_id, t.peer_id, describe(t)));
    output::line(&format!("  asked: {}", output::clean(&t.text, true)));
    for e in &detail.history {
        let state = e.state.map(|s| format!(" {s}")).unwrap_or_default();
        let text = e.text.as_deref().map(|x| format!(": {}", output::clean(x, true))).unwrap_or_default();
        let status = e.status.map(|s| format!(" ({s})")).unwrap_or_default();
        output::line(&format!("  {} {} {}{state}{text}{status}", output::time(e.at), e.speaker, e.kind));
    }
    for artifact in &t.artifacts {
        print_artifact(artifact);
    }
    Ok(())
}

pub(crate) async fn update(ctx: &Ctx, args: UpdateTaskArgs) -> Result<()> {
    let state: TaskState = args.state.parse().map_err(|_| {
        fail(
            ErrorCode::InvalidArgument,
            format!("--state {:?} is not one of working, input_required, auth_required, completed, failed, canceled, rejected", args.state),
        )
    })?;
    let mut artifacts: Vec<Artifact> = args
        .artifacts
        .into_iter()
        .enumerate()
        .map(|(n, text)| Artifact {
            artifact_id: format!("text-{}", n + 1),
            name: None,
            parts: vec![Part::Text { text }],
        })
        .collect();
    if let Some(data) = &args.artifact_data {
        let data = json_arg(data, "--artifact-data")?;
        artifacts.push(Artifact { artifact_id: "data".into(), name: None, parts: vec![Part::Data { data }] });
    }
    // Artifact ids unique per update; an id given again later replaces that artifact.
    let seen = agentmesh_core::time::now_ms();
    for a in &mut artifacts {
        a.artifact_id = format!("{}-{seen}", a.artifact_id);
    }
    let client = ctx.client()?;
    let body = UpdateBody { state, text: args.text, artifacts };
    let task = ctx.check(client.update_task(&args.task_id, &body).await)?.task;
    if ctx.json {
        output::json_doc(&task);
    } else {
        output::line(&format!("Task {} is {}; {} is told.", task.task_id, task.state, task.peer_id));
    }
    Ok(())
}

pub(crate) async fn reply(ctx: &Ctx, task_id: &str, text: Option<String>) -> Result<()> {
    let text = text_or_stdin(text, "the answer")?;
    let client = ctx.client()?;
    let task = ctx.check(client.task_message(task_id, &text).await)?.task;
    if ctx.json {
        output::json_doc(&task);
    } else {
        output::line(&format!("Answered task {} ({}).", task.task_id, task.peer_id));
    }
    Ok(())
}

pub(crate) async fn cancel(ctx: &Ctx, task_id: &str) -> Result<()> {
    let client = ctx.client()?;
    let task = ctx.check(client.cancel_task(task_id).await)?.task;
    if ctx.json {
        output::json_doc(&task);
    } else {
        output::line(&format!("Asked {} to cancel task {}.", task.peer_id, task.task_id));
    }
    Ok(())
}

pub(crate) async fn escalate(ctx: &Ctx, args: EscalateArgs) -> Result<()> {
    let client = ctx.client()?;
    let body = EscalateBody { conversation_id: args.conversation_id, reason: args.reason, options: args.options };
    let e = ctx.check(client.escalate(&body).await)?.escalation;
    if ctx.json {
        output::json_doc(&e);
    } else {
        output::line(&format!(
            "Escalated to the owner as {} ({} waits). The owner answers with `agentmesh resolve-escalation {} --answer …`.",
            e.escalation_id, e.conversation_id, e.escalation_id
        ));
    }
    Ok(())
}

pub(crate) async fn escalations(ctx: &Ctx, open: bool) -> Result<()> {
    let client = ctx.client()?;
    let reply = ctx.check(client.escalations(&EscalationsQuery { open, limit: None }).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else if reply.escalations.is_empty() {
        output::line("No escalations.");
    } else {
        let rows: Vec<Vec<String>> = reply
            .escalations
            .iter()
            .map(|e| {
                let options =
                    if e.options.is_empty() { String::new() } else { format!(" [{}]", output::list(&e.options)) };
                vec![
                    output::time(e.created_at),
                    e.state.to_string(),
                    e.escalation_id.clone(),
                    e.conversation_id.clone(),
                    format!("{}{options}", output::text(Some(&e.reason))),
                    output::text(e.answer.as_deref()),
                ]
            })
            .collect();
        output::table(&["RAISED (UTC)", "STATE", "ID", "ABOUT", "QUESTION", "ANSWER"], &rows);
    }
    Ok(())
}

pub(crate) async fn resolve(ctx: &Ctx, escalation_id: &str, answer: &str) -> Result<()> {
    let client = ctx.client()?;
    let e = ctx.check(client.resolve_escalation(escalation_id, answer).await)?.escalation;
    if ctx.json {
        output::json_doc(&e);
    } else {
        output::line(&format!("Answered {}; {} and {} are told.", e.escalation_id, e.conversation_id, e.peer_id));
    }
    Ok(())
}

pub(crate) async fn a2a(ctx: &Ctx, command: A2aCommand) -> Result<()> {
    let client = ctx.client()?;
    match command {
        A2aCommand::AddClient { name } => {
            let reply = ctx.check(client.add_a2a_client(&name).await)?;
            if ctx.json {
                output::json_doc(&reply);
            } else {
                output::line(&format!(
                    "A2A client {} may call this agent. Its bearer token is in {} (hand it over privately); \
                     the agent card is at {}.",
                    reply.client.name,
                    reply.token_file.as_deref().unwrap_or("-"),
                    reply.card_url
                ));
            }
        }
        A2aCommand::Clients => {
            let reply = ctx.check(client.a2a_clients().await)?;
            if ctx.json {
                output::json_doc(&reply);
            } else if reply.clients.is_empty() {
                output::line("No A2A clients (`agentmesh a2a add-client <name>` issues a token).");
            } else {
                let rows: Vec<Vec<String>> = reply
                    .clients
                    .iter()
                    .map(|c| {
                        let state =
                            c.revoked_at.map_or("active".to_owned(), |t| format!("revoked {}", output::time(t)));
                        vec![c.name.clone(), output::time(c.created_at), state]
                    })
                    .collect();
                output::table(&["NAME", "ISSUED (UTC)", "STATE"], &rows);
            }
        }
        A2aCommand::Revoke { name } => {
            let reply = ctx.check(client.revoke_a2a_client(&name).await)?;
            if ctx.json {
                output::json_doc(&reply);
            } else {
                output::line(&format!("Revoked A2A client {}: its token no longer works.", reply.client.name));
            }
        }
    }
    Ok(())
}
