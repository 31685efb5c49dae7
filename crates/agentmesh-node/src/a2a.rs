//! The A2A 1.0 endpoint: agents that speak A2A instead of our envelopes delegate tasks to our
//! agent over JSON-RPC 2.0 (A2A specification v1.0, §9 "JSON-RPC binding").
//!
//! | route | what |
//! |---|---|
//! | `GET /.well-known/agent-card.json` | the A2A agent card, made from our signed card (public) |
//! | `POST /a2a/v1` | JSON-RPC: `SendMessage`, `SendStreamingMessage`, `GetTask`, `ListTasks`, `CancelTask`, `SubscribeToTask` |
//!
//! Only callers with a bearer token our owner issued (`agentmesh a2a add-client`, kept as its
//! SHA-256) reach the RPC route; anything else is HTTP 401 with `WWW-Authenticate: Bearer`. A
//! client sees only its own tasks. Its tasks are ordinary incoming tasks (peer id `a2a.<name>`):
//! our agent works on them with `update-task` like any other, and the client reads the changes
//! back. Bodies are ProtoJSON (camelCase members, enum values by full name such as
//! `TASK_STATE_COMPLETED`); domain errors are JSON-RPC errors with the A2A codes (-32001 task not
//! found, -32002 not cancelable, -32003 push notifications, -32004 unsupported operation, -32005
//! content type, -32007 extended card, -32009 version) in HTTP 200 answers. Streams are
//! Server-Sent Events, each `data:` a JSON-RPC response whose `result` holds one of `task`,
//! `statusUpdate`, `artifactUpdate`; a stream ends (the response closes) once the task is final or
//! waits for input. A request without `A2A-Version` is taken as 1.0; another major version is
//! -32009.

use std::sync::Arc;
use std::time::Duration;

use agentmesh_api::{ErrorCode, Event, Task, TaskDetail, TaskEntryKind, TaskState};
use agentmesh_core::task::Part;
use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Node;
use crate::api_error::{Respond, read_json_body};
use crate::error::Error;
use crate::events::{Feed, Frame};
use crate::service::tasks;

/// The path of the JSON-RPC endpoint.
pub(crate) const RPC_PATH: &str = "/a2a/v1";

/// Longest a blocking `SendMessage` waits for the task to be final or to ask for input, before
/// it answers with the task as it stands.
const BLOCKING_WAIT: Duration = Duration::from_secs(120);

/// ListTasks page size: default and most.
const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 100;

/// The A2A routes, merged into the peer API.
pub(crate) fn router() -> Router<Arc<Node>> {
    Router::new().route("/.well-known/agent-card.json", get(card)).route(RPC_PATH, post(rpc))
}

/// A JSON-RPC error: code and message.
struct RpcError(i64, String);

impl RpcError {
    fn invalid(message: impl Into<String>) -> Self {
        RpcError(-32602, message.into())
    }

    fn not_found(id: &str) -> Self {
        RpcError(-32001, format!("task {id} not found"))
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        let code = match e.code() {
            ErrorCode::UnknownTask => -32001,
            ErrorCode::TaskState => -32004,
            ErrorCode::EmptyMessage | ErrorCode::TooLarge | ErrorCode::InvalidArgument => -32602,
            _ => -32603,
        };
        RpcError(code, crate::api_error::ApiError::from(e).detail().message)
    }
}

/// The A2A name of a state (`TASK_STATE_…`).
fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Submitted => "TASK_STATE_SUBMITTED",
        TaskState::Working => "TASK_STATE_WORKING",
        TaskState::InputRequired => "TASK_STATE_INPUT_REQUIRED",
        TaskState::AuthRequired => "TASK_STATE_AUTH_REQUIRED",
        TaskState::Completed => "TASK_STATE_COMPLETED",
        TaskState::Failed => "TASK_STATE_FAILED",
        TaskState::Canceled => "TASK_STATE_CANCELED",
        TaskState::Rejected => "TASK_STATE_REJECTED",
    }
}

fn state_from_name(name: &str) -> Option<TaskState> {
    TaskState::ALL.iter().copied().find(|s| state_name(*s) == name)
}

/// Where a stream or a blocking send stops: the task is final or waits for its client.
fn settled(state: TaskState) -> bool {
    state.is_final() || matches!(state, TaskState::InputRequired | TaskState::AuthRequired)
}

fn timestamp(ms: i64) -> String {
    agentmesh_core::time::iso_seconds(ms.max(0) as u64)
}

fn parts_json(parts: &[Part]) -> Value {
    parts
        .iter()
        .map(|p| match p {
            Part::Text { text } => json!({"text": text}),
            Part::Data { data } => json!({"data": data}),
        })
        .collect()
}

fn artifact_json(a: &agentmesh_core::task::Artifact) -> Value {
    let mut v = json!({"artifactId": a.artifact_id, "parts": parts_json(&a.parts)});
    if let Some(name) = &a.name {
        v["name"] = json!(name);
    }
    v
}

/// A2A `TaskStatus`: the state, when it changed, and the worker's words with it.
fn status_json(task: &Task, context: &str) -> Value {
    let mut status = json!({"state": state_name(task.state), "timestamp": timestamp(task.updated_at)});
    if let Some(text) = &task.status_text {
        status["message"] = json!({
            "messageId": format!("{}-status-{}", task.task_id, task.updated_at),
            "contextId": context,
            "taskId": task.task_id,
            "role": "ROLE_AGENT",
            "parts": [{"text": text}],
        });
    }
    status
}

/// A2A `Task`, with the last `history` messages (all when `None`) and the artifacts unless left
/// out.
fn task_json(detail: &TaskDetail, context: &str, history: Option<usize>, artifacts: bool) -> Value {
    let task = &detail.task;
    let mut messages: Vec<Value> = detail
        .history
        .iter()
        .filter_map(|e| {
            let (role, mut parts) = match (e.kind, e.text.as_deref()) {
                (TaskEntryKind::Create | TaskEntryKind::Message, Some(t)) => ("ROLE_USER", vec![json!({"text": t})]),
                (TaskEntryKind::Update, Some(t)) => ("ROLE_AGENT", vec![json!({"text": t})]),
                (TaskEntryKind::Escalate, Some(t)) => {
                    ("ROLE_AGENT", vec![json!({"text": format!("waiting for my owner: {t}")})])
                }
                (TaskEntryKind::Resolved, Some(t)) => {
                    ("ROLE_AGENT", vec![json!({"text": format!("my owner answered: {t}")})])
                }
                _ => return None,
            };
            if e.kind == TaskEntryKind::Create
                && let Some(data) = &task.data
            {
                parts.push(json!({"data": data}));
            }
            Some(json!({
                "messageId": e.entry_id, "contextId": context, "taskId": task.task_id, "role": role, "parts": parts,
            }))
        })
        .collect();
    if let Some(n) = history {
        let skip = messages.len().saturating_sub(n);
        messages.drain(..skip);
    }
    let mut v = json!({"id": task.task_id, "contextId": context, "status": status_json(task, context)});
    if !messages.is_empty() {
        v["history"] = Value::Array(messages);
    }
    if artifacts && !task.artifacts.is_empty() {
        v["artifacts"] = task.artifacts.iter().map(artifact_json).collect();
    }
    v
}

/// `GET /.well-known/agent-card.json`: our A2A agent card (A2A v1.0 `AgentCard`), with our signed
/// agentmesh card as an extension so a caller can check whose agent it reaches.
async fn card(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
) -> Response {
    if let Err(e) = node.limits().other_from(remote) {
        return e.respond();
    }
    let ours = node.keys().card.clone();
    let skills: Vec<Value> = if ours.capabilities.is_empty() {
        vec![json!({"id": "tasks", "name": "Tasks", "description": "Tasks its agent takes on", "tags": ["agentmesh"]})]
    } else {
        ours.capabilities.iter().map(|c| json!({"id": c, "name": c, "description": c, "tags": [c]})).collect()
    };
    let modes = ["text/plain", "application/json"];
    Json(json!({
        "name": ours.name,
        "description": format!(
            "agentmesh agent {} ({}): delegate tasks to it with a bearer token from its owner",
            ours.agent_id, ours.fingerprint
        ),
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("{}{RPC_PATH}", node.endpoint().trim_end_matches('/')),
            "protocolBinding": "JSONRPC",
            "protocolVersion": "1.0",
        }],
        "capabilities": {
            "streaming": true,
            "pushNotifications": false,
            "extensions": [{
                "uri": "urn:agentmesh:agent-card:v1",
                "description": "the agent's signed agentmesh card (docs/PROTOCOL.md, Agent card)",
                "required": false,
                "params": ours,
            }],
        },
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}},
        "securityRequirements": [{"schemes": {"bearer": {}}}],
        "defaultInputModes": modes,
        "defaultOutputModes": modes,
        "skills": skills,
    }))
    .into_response()
}

fn unauthorized() -> Response {
    let body = json!({"error": {"code": "unauthorized", "message": "an A2A bearer token from this agent's owner is required"}});
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response()
}

/// The client a request's bearer token belongs to.
async fn client_of(node: &Arc<Node>, headers: &HeaderMap) -> Result<Option<String>, Error> {
    // Exactly as RFC 6750 writes it: "Bearer <token> " is not the token.
    let Some(token) = crate::credentials::bearer_token(headers) else { return Ok(None) };
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    node.db(move |s| Ok(s.a2a_client_by_token(&hash)?)).await
}

fn rpc_result(id: &Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn rpc_error(id: &Value, e: RpcError) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.0, "message": e.1}})).into_response()
}

/// `POST /a2a/v1`.
async fn rpc(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
    headers: HeaderMap,
    body: HttpBody,
) -> Response {
    if let Err(e) = node.limits().other_from(remote) {
        return e.respond();
    }
    let client = match client_of(&node, &headers).await {
        Ok(Some(client)) => client,
        Ok(None) => return unauthorized(),
        Err(e) => return e.respond(),
    };
    let limit = node.config().max_message_bytes;
    let bytes = match read_json_body(&headers, body, limit, "A2A request", node.body_timeout()).await {
        Ok(b) => b,
        Err(e) => return e.respond(),
    };
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return rpc_error(&Value::Null, RpcError(-32700, format!("not JSON: {e}"))),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str);
    let (Some(method), Some("2.0")) = (method, request.get("jsonrpc").and_then(Value::as_str)) else {
        return rpc_error(&id, RpcError(-32600, "a JSON-RPC 2.0 request with a method is expected".into()));
    };
    if let Some(version) = headers.get("a2a-version").and_then(|v| v.to_str().ok())
        && !version.trim().is_empty()
        && version.trim().split('.').next() != Some("1")
    {
        return rpc_error(
            &id,
            RpcError(-32009, format!("A2A version {version:?} is not supported; this agent speaks 1.0")),
        );
    }
    let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
    let outcome = match method {
        "SendMessage" => send(&node, client, &id, &params, false).await,
        "SendStreamingMessage" => send(&node, client, &id, &params, true).await,
        "GetTask" => get_task(&node, client, &params).await.map(|r| rpc_result(&id, r)),
        "ListTasks" => list_tasks(&node, client, &params).await.map(|r| rpc_result(&id, r)),
        "CancelTask" => cancel_task(&node, client, &params).await.map(|r| rpc_result(&id, r)),
        "SubscribeToTask" => subscribe(&node, client, &id, &params).await,
        "CreateTaskPushNotificationConfig"
        | "GetTaskPushNotificationConfig"
        | "ListTaskPushNotificationConfigs"
        | "DeleteTaskPushNotificationConfig" => {
            Err(RpcError(-32003, "push notifications are not supported; stream or poll instead".into()))
        }
        "GetExtendedAgentCard" => Err(RpcError(-32007, "this agent has no extended card".into())),
        other => Err(RpcError(-32601, format!("method {other:?} not found"))),
    };
    outcome.unwrap_or_else(|e| rpc_error(&id, e))
}

fn str_param<'a>(params: &'a Value, name: &str) -> Option<&'a str> {
    params.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `SendMessage` / `SendStreamingMessage`: a new task, or a message to one of the client's.
async fn send(
    node: &Arc<Node>,
    client: String,
    id: &Value,
    params: &Value,
    stream: bool,
) -> Result<Response, RpcError> {
    let message =
        params.get("message").filter(|m| m.is_object()).ok_or_else(|| RpcError::invalid("message is required"))?;
    let message_id =
        str_param(message, "messageId").ok_or_else(|| RpcError::invalid("message.messageId is required"))?;
    if message_id.len() > 128 {
        return Err(RpcError::invalid("message.messageId is limited to 128 characters"));
    }
    let parts =
        message.get("parts").and_then(Value::as_array).ok_or_else(|| RpcError::invalid("message.parts is required"))?;
    let mut texts = Vec::new();
    let mut data = Vec::new();
    for part in parts {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            texts.push(t.to_owned());
        } else if let Some(d) = part.get("data") {
            data.push(d.clone());
        } else {
            return Err(RpcError(-32005, "only text and data parts are supported (no files yet)".into()));
        }
    }
    let mut text = texts.join("\n");
    let data = match data.len() {
        0 => None,
        1 => data.pop(),
        _ => Some(Value::Array(data)),
    };
    if text.is_empty() && data.is_some() {
        text = "(structured input)".into();
    }
    let return_now = params.pointer("/configuration/returnImmediately").and_then(Value::as_bool).unwrap_or(false);
    let task = match str_param(message, "taskId") {
        Some(task_id) => {
            let (_, context) = tasks::a2a_detail(node, client.clone(), task_id.to_owned()).await?;
            if str_param(message, "contextId").is_some_and(|c| c != context) {
                return Err(RpcError::invalid("message.contextId is not the task's context"));
            }
            tasks::a2a_message(node, client.clone(), task_id.to_owned(), message_id.to_owned(), text).await?
        }
        None => {
            let context =
                str_param(message, "contextId").map(str::to_owned).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            if context.len() > 128 {
                return Err(RpcError::invalid("message.contextId is limited to 128 characters"));
            }
            tasks::a2a_create(node, client.clone(), context, message_id.to_owned(), text, data).await?
        }
    };
    if stream {
        return Ok(stream_task(node, client, id.clone(), task.task_id).await?);
    }
    if !return_now {
        wait_settled(node, client.clone(), &task.task_id).await?;
    }
    let (detail, context) = tasks::a2a_detail(node, client, task.task_id).await?;
    Ok(rpc_result(id, json!({"task": task_json(&detail, &context, None, true)})))
}

/// Client `client`'s task `task_id` with its history and context, and the event log's cursor at
/// that moment (read together: the task reflects exactly the events up to the cursor).
async fn snapshot(node: &Arc<Node>, client: String, task_id: String) -> Result<(TaskDetail, String, i64), Error> {
    node.db(move |s| {
        let unknown = || Error::conflict(ErrorCode::UnknownTask, format!("no task {task_id}"));
        let (owner, context) = s.a2a_task(&task_id)?.ok_or_else(unknown)?;
        if owner != client {
            return Err(unknown());
        }
        let (task, _) = s.task(&task_id)?.ok_or_else(unknown)?;
        Ok((TaskDetail { history: s.task_history(&task_id)?, task }, context, s.last_event_seq()?))
    })
    .await
}

/// Waits (at most [`BLOCKING_WAIT`]) until task `task_id` is final or asks for input.
async fn wait_settled(node: &Arc<Node>, client: String, task_id: &str) -> Result<(), Error> {
    let (detail, _, cursor) = snapshot(node, client, task_id.to_owned()).await?;
    if settled(detail.task.state) {
        return Ok(());
    }
    let mut feed = Feed::open(Arc::clone(node), Some(cursor)).await?;
    let until = tokio::time::Instant::now() + BLOCKING_WAIT;
    loop {
        match tokio::time::timeout_at(until, feed.next()).await {
            Ok(Some(Ok(Frame::Event(e)))) => {
                if let Event::Task { task, .. } = &e.event
                    && task.task_id == task_id
                    && settled(task.state)
                {
                    return Ok(());
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}

/// Longest an A2A stream stays open.
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);

/// How often an open stream checks that its client's token still works.
const STREAM_RECHECK: Duration = Duration::from_secs(15);

/// Where an A2A stream stands.
struct StreamState {
    node: Arc<Node>,
    client: String,
    id: Value,
    task_id: String,
    context: String,
    feed: Feed,
    pending: std::collections::VecDeque<Value>,
    /// The state and status text the client last saw.
    seen: (TaskState, Option<String>),
    done: bool,
    until: tokio::time::Instant,
    checked: tokio::time::Instant,
    _permit: crate::limits::Slot<String>,
}

impl StreamState {
    fn wrap(&self, result: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": self.id, "result": result})
    }

    /// A `statusUpdate` when the task's state or status text changed since the client last saw it.
    fn status(&mut self, task: &Task) {
        if (task.state, task.status_text.clone()) != self.seen {
            let update =
                json!({"taskId": self.task_id, "contextId": self.context, "status": status_json(task, &self.context)});
            let frame = self.wrap(json!({"statusUpdate": update}));
            self.pending.push_back(frame);
            self.seen = (task.state, task.status_text.clone());
        }
        self.done = settled(task.state);
    }

    /// The next frame to send, or `None` to close the stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if self.done || tokio::time::Instant::now() >= self.until {
                return None;
            }
            let next = tokio::time::timeout(STREAM_RECHECK, self.feed.next()).await;
            if self.checked.elapsed() >= STREAM_RECHECK {
                // A revoked token ends its streams too.
                self.checked = tokio::time::Instant::now();
                let client = self.client.clone();
                let active = self
                    .node
                    .db(move |s| Ok(s.a2a_clients()?.iter().any(|c| c.name == client && c.revoked_at.is_none())))
                    .await;
                if !matches!(active, Ok(true)) {
                    return None;
                }
            }
            match next {
                Err(_) => {}
                Ok(None) | Ok(Some(Err(_))) => return None,
                // Events were pruned before this stream read them: catch up from the task itself.
                Ok(Some(Ok(Frame::Notice(_)))) => {
                    let (detail, _, _) = snapshot(&self.node, self.client.clone(), self.task_id.clone()).await.ok()?;
                    self.status(&detail.task);
                }
                Ok(Some(Ok(Frame::Event(e)))) => {
                    let Event::Task { task, entry } = &e.event else { continue };
                    if task.task_id != self.task_id {
                        continue;
                    }
                    for artifact in entry.iter().flat_map(|e| &e.artifacts) {
                        let update = json!({"taskId": self.task_id, "contextId": self.context, "artifact": artifact_json(artifact), "lastChunk": true});
                        let frame = self.wrap(json!({"artifactUpdate": update}));
                        self.pending.push_back(frame);
                    }
                    self.status(task);
                }
            }
        }
    }
}

/// An SSE stream of task `task_id` from the client's view: the task first, then a
/// `statusUpdate` per change of state or status text and an `artifactUpdate` per artifact an
/// update carries, until the task is final or asks for input (then the response closes). At most
/// `max_event_streams` at once (a quarter of them for one client), each for at most an hour; a
/// revoked token ends them.
async fn stream_task(node: &Arc<Node>, client: String, id: Value, task_id: String) -> Result<Response, Error> {
    // One client cannot take every stream: it has a quarter of them.
    let permit = node
        .a2a_streams()
        .try_take(&client)
        .ok_or(Error::RateLimited { what: "A2A streams open at once", retry_after: 1 })?;
    let (detail, context, cursor) = snapshot(node, client.clone(), task_id.clone()).await?;
    let feed = Feed::open(Arc::clone(node), Some(cursor)).await?;
    let first = json!({"jsonrpc": "2.0", "id": id, "result": {"task": task_json(&detail, &context, None, true)}});
    let now = tokio::time::Instant::now();
    let state = StreamState {
        node: Arc::clone(node),
        client,
        id,
        task_id,
        context,
        feed,
        pending: [first].into(),
        seen: (detail.task.state, detail.task.status_text.clone()),
        done: settled(detail.task.state),
        until: now + STREAM_LIFETIME,
        checked: now,
        _permit: permit,
    };
    let frames = futures_util::stream::unfold(state, |mut st| async move {
        let value = st.next().await?;
        let frame = SseEvent::default().json_data(&value).ok()?;
        Some((Ok::<_, std::convert::Infallible>(frame), st))
    });
    Ok(Sse::new(frames).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// `GetTask`.
async fn get_task(node: &Arc<Node>, client: String, params: &Value) -> Result<Value, RpcError> {
    let task_id = str_param(params, "id").ok_or_else(|| RpcError::invalid("id is required"))?;
    let history = params.get("historyLength").and_then(Value::as_u64).map(|n| n as usize);
    let (detail, context) =
        tasks::a2a_detail(node, client, task_id.to_owned()).await.map_err(|_| RpcError::not_found(task_id))?;
    Ok(task_json(&detail, &context, history, true))
}

/// `ListTasks`: the client's tasks, most recently changed first, a page at a time (`pageToken`
/// is the offset).
async fn list_tasks(node: &Arc<Node>, client: String, params: &Value) -> Result<Value, RpcError> {
    let size = params.get("pageSize").and_then(Value::as_u64).map_or(PAGE_DEFAULT, |n| (n as u32).clamp(1, PAGE_MAX));
    let offset: u32 = match str_param(params, "pageToken") {
        Some(t) => t.parse().map_err(|_| RpcError::invalid("pageToken is not one this agent gave"))?,
        None => 0,
    };
    let state = match str_param(params, "status") {
        Some(name) => Some(state_from_name(name).ok_or_else(|| RpcError::invalid(format!("unknown status {name:?}")))?),
        None => None,
    };
    let context = str_param(params, "contextId").map(str::to_owned);
    let history = params.get("historyLength").and_then(Value::as_u64).map(|n| n as usize);
    let artifacts = params.get("includeArtifacts").and_then(Value::as_bool).unwrap_or(false);
    let (page, total) = node
        .db(move |s| {
            let (ids, total) = s.a2a_tasks(&client, context.as_deref(), state.map(TaskState::as_str), offset, size)?;
            let mut page = Vec::with_capacity(ids.len());
            for (task_id, context) in ids {
                if let Some((task, _)) = s.task(&task_id)? {
                    page.push((TaskDetail { history: s.task_history(&task_id)?, task }, context));
                }
            }
            Ok((page, total))
        })
        .await?;
    let next = offset as i64 + page.len() as i64;
    let tasks: Vec<Value> = page.iter().map(|(d, c)| task_json(d, c, history.or(Some(0)), artifacts)).collect();
    Ok(json!({
        "tasks": tasks,
        "nextPageToken": if next < total { next.to_string() } else { String::new() },
        "pageSize": size,
        "totalSize": total,
    }))
}

/// `CancelTask`.
async fn cancel_task(node: &Arc<Node>, client: String, params: &Value) -> Result<Value, RpcError> {
    let task_id = str_param(params, "id").ok_or_else(|| RpcError::invalid("id is required"))?;
    match tasks::a2a_cancel(node, client.clone(), task_id.to_owned()).await {
        Ok(_) => {}
        Err(e) if e.code() == ErrorCode::TaskState => {
            return Err(RpcError(-32002, format!("task {task_id} is final and cannot be canceled")));
        }
        Err(e) => return Err(e.into()),
    }
    let (detail, context) = tasks::a2a_detail(node, client, task_id.to_owned()).await?;
    Ok(task_json(&detail, &context, None, true))
}

/// `SubscribeToTask`: the task, then its changes until it is final or asks for input.
async fn subscribe(node: &Arc<Node>, client: String, id: &Value, params: &Value) -> Result<Response, RpcError> {
    let task_id = str_param(params, "id").ok_or_else(|| RpcError::invalid("id is required"))?;
    let (detail, _) =
        tasks::a2a_detail(node, client.clone(), task_id.to_owned()).await.map_err(|_| RpcError::not_found(task_id))?;
    if detail.task.state.is_final() {
        return Err(RpcError(-32004, format!("task {task_id} is final: {}", state_name(detail.task.state))));
    }
    Ok(stream_task(node, client, id.clone(), task_id.to_owned()).await?)
}

/// Whether `name` may name an A2A client: 1 to 64 characters of `[A-Za-z0-9_-]`.
fn valid_client_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The URL of our A2A agent card.
fn card_url(node: &Node) -> String {
    format!("{}/.well-known/agent-card.json", node.endpoint().trim_end_matches('/'))
}

/// `POST /control/a2a/clients`: a new client with a fresh bearer token (32 random bytes,
/// base64url), written to `<home>/a2a/<name>.token` (0600) and kept here only as its SHA-256.
pub(crate) async fn add_client(
    node: &Arc<Node>,
    home: &crate::home::Home,
    name: String,
) -> Result<agentmesh_api::control::A2aClientReply, Error> {
    if !valid_client_name(&name) {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "a client name is 1 to 64 characters of [A-Za-z0-9_-]"));
    }
    let token = format!(
        "a2a_{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, rand::random::<[u8; 32]>())
    );
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let dir = home.root().join("a2a");
    let path = dir.join(format!("{name}.token"));
    let now = agentmesh_core::time::now_ms() as i64;
    let taken = {
        let name = name.clone();
        node.db(move |s| Ok(!s.insert_a2a_client(&name, &hash, now)?)).await?
    };
    if taken {
        return Err(Error::conflict(
            ErrorCode::InvalidArgument,
            format!("an A2A client named {name} exists; revoke it or pick another name"),
        ));
    }
    let written = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::fs::create_dir_all(&dir)?;
        crate::home::write_private(&path, token.as_bytes())
    });
    let path_text = home.root().join("a2a").join(format!("{name}.token")).display().to_string();
    if let Err(e) = written.await.map_err(anyhow::Error::from).and_then(|r| r) {
        // Without its file the token is lost: the client is not kept either.
        let n = name.clone();
        let _ = node.db(move |s| Ok(s.delete_a2a_client(&n)?)).await;
        return Err(Error::internal(format!("writing the token file: {e}")));
    }
    let client = agentmesh_api::A2aClient { name, created_at: now, revoked_at: None };
    Ok(agentmesh_api::control::A2aClientReply { client, token_file: Some(path_text), card_url: card_url(node) })
}

/// `GET /control/a2a/clients`.
pub(crate) async fn clients(node: &Arc<Node>) -> Result<agentmesh_api::control::A2aClientList, Error> {
    node.db(|s| Ok(agentmesh_api::control::A2aClientList { clients: s.a2a_clients()? })).await
}

/// `DELETE /control/a2a/clients/{name}`: the token stops working at once (its tasks stay).
pub(crate) async fn revoke(node: &Arc<Node>, name: String) -> Result<agentmesh_api::control::A2aClientReply, Error> {
    let now = agentmesh_core::time::now_ms() as i64;
    let n = name.clone();
    let client = node
        .db(move |s| {
            s.revoke_a2a_client(&n, now)?;
            Ok(s.a2a_clients()?.into_iter().find(|c| c.name == n))
        })
        .await?
        .ok_or_else(|| Error::not_found(format!("no A2A client {name}")))?;
    Ok(agentmesh_api::control::A2aClientReply { client, token_file: None, card_url: card_url(node) })
}
