//! The control API: what the owner (the CLI, MCP, tests) calls. Bound to `127.0.0.1` only; every
//! request needs `Authorization: Bearer <token>` with the token from `<home>/control.token`.
//! Routes, request and reply types are in [`agentmesh_api::control`]; each handler here only
//! decodes, calls a service and encodes. Refusals are `{"error":{"code","message"}}`.

use std::sync::Arc;

use agentmesh_api::control::{
    AnswerArgs, CallArgs, CallList, CallReply, CallsQuery, CancelFileArgs, ContactArgs, DiscoverQuery, DiscoveredArgs,
    EndArgs, EventList, EventListQuery, EventsQuery, FilesQuery, HealthReply, MessagesQuery, PeerList, PeerReply,
    PeersQuery, RejectArgs, RejectManyArgs, RepinArgs, RequestList, RequestReply, RequestsQuery, SayArgs, SendArgs,
    SendFileArgs, TransferList, TransferReply,
};
use agentmesh_api::control::{
    DelegateArgs, EscalateArgs, EscalationList, EscalationReply, EscalationsQuery, ResolveArgs, TaskList,
    TaskMessageArgs, TaskReply, TasksQuery, UpdateTaskArgs,
};
use agentmesh_api::{AgentCard, Status};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::Node;
use crate::api_error::{ApiError, Respond, read_json_body};
use crate::error::Error;
use crate::events::{Feed, Frame};
use crate::home::Home;
use crate::service::{calls, contacts, discovery, escalations, files, keys, messages, status, tasks};

/// State of the control API: the node, the bearer token, our bound peer URL and home.
#[derive(Clone)]
pub(crate) struct ControlState {
    node: Arc<Node>,
    token: Arc<str>,
    /// The control listener's own address (`ip:port`): the only `Host` it answers, with the
    /// loopback names for its port.
    bound: std::net::SocketAddr,
    peer_url: Arc<str>,
    home: Arc<Home>,
    /// Serializes key rotations.
    rotating: Arc<tokio::sync::Mutex<()>>,
    /// Event streams that may be open at once.
    streams: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the node stops: event streams end then.
    stop: tokio_util::sync::CancellationToken,
}

type Reply<T> = Result<Json<T>, ApiError>;

/// Builds the control router; `token` is the bearer credential, `bound` the control listener's
/// address, `peer_url` our bound peer URL; event streams end when `stop` is cancelled.
pub(crate) fn router(
    node: Arc<Node>,
    home: Home,
    token: String,
    bound: std::net::SocketAddr,
    peer_url: String,
    stop: tokio_util::sync::CancellationToken,
) -> Router {
    let streams = Arc::new(tokio::sync::Semaphore::new(node.config().max_event_streams.max(1)));
    let state = ControlState {
        node,
        token: token.into(),
        bound,
        peer_url: peer_url.into(),
        home: Arc::new(home),
        rotating: Arc::default(),
        streams,
        stop,
    };
    Router::new()
        .route("/control/status", get(get_status))
        .route("/control/card", get(card))
        .route("/control/contacts", post(request_contact))
        .route("/control/requests", get(list_requests))
        .route("/control/requests/reject", post(reject_many))
        .route("/control/requests/{id}", get(request_detail))
        .route("/control/requests/{id}/approve", post(approve))
        .route("/control/requests/{id}/reject", post(reject))
        .route("/control/requests/{id}/withdraw", post(withdraw))
        .route("/control/peers", get(list_peers))
        .route("/control/peers/{peer}", get(show_peer).delete(remove))
        .route("/control/peers/{peer}/block", post(block))
        .route("/control/peers/{peer}/unblock", post(unblock))
        .route("/control/peers/{peer}/repin", post(repin))
        .route("/control/peers/{peer}/health", get(health))
        .route("/control/rotate-key", post(rotate_key))
        .route("/control/discovered", post(record_discovered))
        .route("/control/discover", get(discover))
        .route("/control/messages", post(send_message).get(list_messages))
        .route("/control/messages/{id}/read", post(read_message))
        .route("/control/messages/{id}/retry", post(retry_message))
        .route("/control/outbox/clear-failed", post(clear_failed))
        .route("/control/calls", post(place_call).get(list_calls))
        .route("/control/files", post(send_file).get(list_files))
        .route("/control/files/{id}", get(get_file))
        .route("/control/files/{id}/accept", post(accept_file))
        .route("/control/files/{id}/cancel", post(cancel_file))
        .route("/control/calls/{id}", get(call_transcript))
        .route("/control/calls/{id}/answer", post(answer_call))
        .route("/control/calls/{id}/say", post(say))
        .route("/control/calls/{id}/end", post(end_call))
        .route("/control/tasks", post(delegate).get(list_tasks))
        .route("/control/tasks/{id}", get(task_detail))
        .route("/control/tasks/{id}/update", post(update_task))
        .route("/control/tasks/{id}/message", post(task_message))
        .route("/control/tasks/{id}/cancel", post(cancel_task))
        .route("/control/escalations", post(escalate).get(list_escalations))
        .route("/control/escalations/{id}/resolve", post(resolve_escalation))
        .route("/control/a2a/clients", post(add_a2a_client).get(list_a2a_clients))
        .route("/control/a2a/clients/{name}", axum::routing::delete(revoke_a2a_client))
        .route("/control/events", get(list_events))
        .route("/v1/events", get(events))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found() -> ApiError {
    Error::not_found("no such control route").into()
}

/// The listener's own `Host` first (a page that reached us through a rebound DNS name is turned
/// away before anything else: 421 `wrong_host`), then the bearer token (401).
async fn authenticate(State(state): State<ControlState>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !crate::credentials::is_own_host(host, state.bound.port(), &state.bound.to_string()) {
        return Error::WrongHost(format!("{host:?}")).respond();
    }
    let presented = crate::credentials::bearer_token(request.headers()).unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), state.token.as_bytes()) {
        return Error::Unauthorized.respond();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const CONTROL_BODY_LIMIT: usize = 1024 * 1024;

/// A control request's body: a JSON object of `T`'s shape. An array is refused like any other
/// non-object (serde would take it as `T`'s fields by position).
async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body, limit: usize) -> Result<T, Error> {
    let bytes = read_json_body(headers, body, limit, "request body", std::time::Duration::from_secs(30)).await?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(Error::malformed("the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| Error::malformed(e.to_string()))
}

/// An optional JSON body: none at all is the default value.
async fn optional_body<T: DeserializeOwned + Default>(headers: &HeaderMap, body: Body) -> Result<T, Error> {
    let empty = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_none_or(|v| v == "0")
        && headers.get(header::CONTENT_TYPE).is_none();
    if empty { Ok(T::default()) } else { json_body(headers, body, CONTROL_BODY_LIMIT).await }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    q.map(|Query(q)| q).map_err(|e| Error::malformed(e.body_text()))
}

async fn get_status(State(st): State<ControlState>) -> Reply<Status> {
    Ok(Json(status::status(&st.node, &st.peer_url).await?))
}

async fn card(State(st): State<ControlState>) -> Json<AgentCard> {
    Json(st.node.keys().card.clone())
}

async fn request_contact(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Response {
    let args: ContactArgs = match json_body(&headers, body, CONTROL_BODY_LIMIT).await {
        Ok(a) => a,
        Err(e) => return e.respond(),
    };
    match contacts::request_contact(&st.node, args).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn list_requests(
    State(st): State<ControlState>,
    q: Result<Query<RequestsQuery>, QueryRejection>,
) -> Reply<RequestList> {
    let q = query(q)?;
    let requests = st.node.db(move |s| Ok(s.requests(q.direction, q.status, 10_000)?)).await?;
    Ok(Json(RequestList { requests }))
}

async fn request_detail(State(st): State<ControlState>, Path(id): Path<String>) -> Reply<RequestReply> {
    Ok(Json(contacts::request_detail(&st.node, id).await?))
}

async fn approve(State(st): State<ControlState>, Path(id): Path<String>) -> Response {
    match contacts::decide(&st.node, id, true, None).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn reject(State(st): State<ControlState>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let args: RejectArgs = match optional_body(&headers, body).await {
        Ok(a) => a,
        Err(e) => return e.respond(),
    };
    match contacts::decide(&st.node, id, false, args.reason).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn reject_many(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Response {
    let args: RejectManyArgs = match json_body(&headers, body, CONTROL_BODY_LIMIT).await {
        Ok(a) => a,
        Err(e) => return e.respond(),
    };
    match contacts::reject_many(&st.node, args).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn withdraw(State(st): State<ControlState>, Path(id): Path<String>) -> Response {
    match contacts::withdraw(&st.node, id).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn list_peers(State(st): State<ControlState>, q: Result<Query<PeersQuery>, QueryRejection>) -> Reply<PeerList> {
    let q = query(q)?;
    let peers = st.node.db(move |s| Ok(s.peers(q.all)?)).await?;
    Ok(Json(PeerList { peers: peers.iter().map(|p| view_with_path(&st.node, p)).collect() }))
}

/// `peer` as the owner sees it, with the path this node reaches it on.
fn view_with_path(node: &Node, peer: &agentmesh_store::Peer) -> agentmesh_api::Peer {
    let mut view = peer.view();
    view.path = node.carriers().path(peer).map(|p| agentmesh_api::PeerPath {
        carrier: p.carrier.to_owned(),
        kind: p.kind.to_owned(),
        endpoint: p.endpoint,
        via: p.via,
        rtt_us: p.rtt.map(|d| d.as_micros().min(u128::from(u64::MAX)) as u64),
    });
    view
}

async fn show_peer(State(st): State<ControlState>, Path(peer): Path<String>) -> Reply<PeerReply> {
    let peer = st.node.db(move |s| contacts::resolve(s, &peer)).await?;
    Ok(Json(PeerReply { peer: view_with_path(&st.node, &peer), told: false, hint: None }))
}

async fn health(State(st): State<ControlState>, Path(peer): Path<String>) -> Reply<HealthReply> {
    let peer = st.node.db(move |s| contacts::resolve(s, &peer)).await?;
    let check = st.node.adapters().get(peer.protocol).health(&st.node, &peer).await;
    let (reachable, rtt_ms, error) = match check {
        Ok(ms) => (true, Some(ms), None),
        Err(e) => (false, None, Some(e)),
    };
    Ok(Json(HealthReply { peer: view_with_path(&st.node, &peer), reachable, rtt_ms, error }))
}

async fn change(st: &ControlState, peer: String, change: contacts::Change) -> Reply<PeerReply> {
    Ok(Json(contacts::change(&st.node, peer, change).await?))
}

async fn block(State(st): State<ControlState>, Path(peer): Path<String>) -> Reply<PeerReply> {
    change(&st, peer, contacts::Change::Block).await
}

async fn unblock(State(st): State<ControlState>, Path(peer): Path<String>) -> Reply<PeerReply> {
    change(&st, peer, contacts::Change::Unblock).await
}

async fn remove(State(st): State<ControlState>, Path(peer): Path<String>) -> Reply<PeerReply> {
    change(&st, peer, contacts::Change::Remove).await
}

async fn repin(State(st): State<ControlState>, Path(peer): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let args: RepinArgs = match json_body(&headers, body, CONTROL_BODY_LIMIT).await {
        Ok(a) => a,
        Err(e) => return e.respond(),
    };
    match contacts::repin(&st.node, peer, args.fingerprint).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn rotate_key(State(st): State<ControlState>) -> Response {
    let _one_at_a_time = st.rotating.lock().await;
    match keys::rotate(&st.node, &st.home).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn record_discovered(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Response {
    let args: DiscoveredArgs = match json_body(&headers, body, 16 * CONTROL_BODY_LIMIT).await {
        Ok(a) => a,
        Err(e) => return e.respond(),
    };
    match discovery::record_discovered(&st.node, args).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn discover(
    State(st): State<ControlState>,
    q: Result<Query<DiscoverQuery>, QueryRejection>,
) -> Reply<agentmesh_api::control::AgentList> {
    Ok(Json(discovery::discover(&st.node, query(q)?).await?))
}

async fn send_message(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Response {
    // JSON may escape each byte of the text into up to six: a body over that bound can only
    // hold a text over the limit, which is what the owner is told.
    let text_limit = st.node.config().max_text_bytes;
    let args: SendArgs = match json_body(&headers, body, text_limit.saturating_mul(6).saturating_add(64 * 1024)).await {
        Ok(a) => a,
        Err(Error::TooLarge { .. }) => {
            return Error::TooLarge { what: "message text", limit: text_limit }.respond();
        }
        Err(e) => return e.respond(),
    };
    match messages::send(&st.node, args).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn list_messages(
    State(st): State<ControlState>,
    q: Result<Query<MessagesQuery>, QueryRejection>,
) -> Reply<agentmesh_api::control::MessageList> {
    Ok(Json(messages::list(&st.node, query(q)?).await?))
}

async fn read_message(
    State(st): State<ControlState>,
    Path(id): Path<String>,
) -> Reply<agentmesh_api::control::MessageReply> {
    Ok(Json(messages::read(&st.node, id).await?))
}

async fn retry_message(
    State(st): State<ControlState>,
    Path(id): Path<String>,
) -> Reply<agentmesh_api::control::MessageReply> {
    Ok(Json(messages::retry(&st.node, id).await?))
}

async fn clear_failed(State(st): State<ControlState>) -> Reply<agentmesh_api::control::ClearedReply> {
    Ok(Json(messages::clear_failed(&st.node).await?))
}

async fn place_call(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Reply<CallReply> {
    let args: CallArgs = json_body(&headers, body, 64 * 1024).await?;
    Ok(Json(calls::place(&st.node, args).await?))
}

async fn list_calls(State(st): State<ControlState>, q: Result<Query<CallsQuery>, QueryRejection>) -> Reply<CallList> {
    Ok(Json(calls::list(&st.node, query(q)?).await?))
}

async fn call_transcript(State(st): State<ControlState>, Path(id): Path<String>) -> Reply<agentmesh_api::Transcript> {
    Ok(Json(calls::transcript(&st.node, id).await?))
}

async fn answer_call(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply<CallReply> {
    let args: AnswerArgs = json_body(&headers, body, 64 * 1024).await?;
    Ok(Json(calls::answer(&st.node, id, args).await?))
}

async fn say(State(st): State<ControlState>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    // As for messages: a body over this bound can only hold a text over the limit.
    let text_limit = st.node.config().max_text_bytes;
    let args: SayArgs = match json_body(&headers, body, text_limit.saturating_mul(6).saturating_add(64 * 1024)).await {
        Ok(a) => a,
        Err(Error::TooLarge { .. }) => {
            return Error::TooLarge { what: "message text", limit: text_limit }.respond();
        }
        Err(e) => return e.respond(),
    };
    match calls::say(&st.node, id, args).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => e.respond(),
    }
}

async fn end_call(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply<CallReply> {
    let args: EndArgs = optional_body(&headers, body).await?;
    Ok(Json(calls::end(&st.node, id, args).await?))
}

/// A body bound for routes that carry up to `max_text_bytes` of text (and JSON may escape each
/// byte into six).
fn text_body_limit(st: &ControlState) -> usize {
    st.node.config().max_text_bytes.saturating_mul(6).saturating_add(64 * 1024)
}

async fn delegate(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Reply<TaskReply> {
    let args: DelegateArgs = json_body(&headers, body, text_body_limit(&st).saturating_mul(2)).await?;
    Ok(Json(tasks::delegate(&st.node, args).await?))
}

async fn list_tasks(State(st): State<ControlState>, q: Result<Query<TasksQuery>, QueryRejection>) -> Reply<TaskList> {
    Ok(Json(tasks::list(&st.node, query(q)?).await?))
}

async fn task_detail(State(st): State<ControlState>, Path(id): Path<String>) -> Reply<agentmesh_api::TaskDetail> {
    Ok(Json(tasks::detail(&st.node, id).await?))
}

async fn update_task(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply<TaskReply> {
    // Artifacts may be large: up to a batch's worth.
    let args: UpdateTaskArgs = json_body(&headers, body, st.node.config().max_batch_bytes).await?;
    Ok(Json(tasks::update(&st.node, id, args).await?))
}

async fn task_message(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply<TaskReply> {
    let args: TaskMessageArgs = json_body(&headers, body, text_body_limit(&st)).await?;
    Ok(Json(tasks::message(&st.node, id, args.text).await?))
}

async fn cancel_task(State(st): State<ControlState>, Path(id): Path<String>) -> Reply<TaskReply> {
    Ok(Json(tasks::cancel(&st.node, id).await?))
}

async fn escalate(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Reply<EscalationReply> {
    let args: EscalateArgs = json_body(&headers, body, 64 * 1024).await?;
    Ok(Json(escalations::escalate(&st.node, args).await?))
}

async fn list_escalations(
    State(st): State<ControlState>,
    q: Result<Query<EscalationsQuery>, QueryRejection>,
) -> Reply<EscalationList> {
    Ok(Json(escalations::list(&st.node, query(q)?).await?))
}

async fn resolve_escalation(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply<EscalationReply> {
    let args: ResolveArgs = json_body(&headers, body, 64 * 1024).await?;
    Ok(Json(escalations::resolve(&st.node, id, args.answer).await?))
}

async fn add_a2a_client(
    State(st): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Reply<agentmesh_api::control::A2aClientReply> {
    let args: agentmesh_api::control::A2aClientArgs = json_body(&headers, body, 4096).await?;
    Ok(Json(crate::a2a::add_client(&st.node, &st.home, args.name).await?))
}

async fn list_a2a_clients(State(st): State<ControlState>) -> Reply<agentmesh_api::control::A2aClientList> {
    Ok(Json(crate::a2a::clients(&st.node).await?))
}

async fn revoke_a2a_client(
    State(st): State<ControlState>,
    Path(name): Path<String>,
) -> Reply<agentmesh_api::control::A2aClientReply> {
    Ok(Json(crate::a2a::revoke(&st.node, name).await?))
}

async fn send_file(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Reply<TransferReply> {
    let args: SendFileArgs = json_body(&headers, body, 64 * 1024).await?;
    Ok(Json(files::send(&st.node, args).await?))
}

async fn list_files(
    State(st): State<ControlState>,
    q: Result<Query<FilesQuery>, QueryRejection>,
) -> Reply<TransferList> {
    Ok(Json(files::list(&st.node, query(q)?).await?))
}

async fn get_file(State(st): State<ControlState>, Path(id): Path<String>) -> Reply<TransferReply> {
    Ok(Json(files::get(&st.node, id).await?))
}

async fn accept_file(State(st): State<ControlState>, Path(id): Path<String>) -> Reply<TransferReply> {
    Ok(Json(files::accept(&st.node, id).await?))
}

async fn cancel_file(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply<TransferReply> {
    let args: CancelFileArgs = optional_body(&headers, body).await?;
    Ok(Json(files::cancel(&st.node, id, args).await?))
}

/// `GET /control/events`: a page of the event log.
async fn list_events(
    State(st): State<ControlState>,
    q: Result<Query<EventListQuery>, QueryRejection>,
) -> Reply<EventList> {
    let q = query(q)?;
    if q.after.is_some_and(|a| a < 0) {
        return Err(Error::malformed("after: a cursor is 0 or more").into());
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000) as usize;
    let (events, last) = st
        .node
        .db(move |s| {
            let events = match q.after {
                Some(after) => s.events_after(after, limit)?,
                None => s.recent_events(limit)?,
            };
            Ok((events, s.last_event_seq()?))
        })
        .await?;
    Ok(Json(EventList { events, last }))
}

/// `GET /v1/events`: Server-Sent Events from the event log. Each event is a frame with `id:` =
/// its cursor, `event:` = its kind and `data:` = the [`LoggedEvent`](agentmesh_api::LoggedEvent)
/// JSON; notices about the stream ([`StreamNotice`](agentmesh_api::StreamNotice)) have no `id:`.
/// Starts after `Last-Event-ID` or `?after=`, else with new events only; a comment every 15 s
/// keeps idle connections open.
async fn events(
    State(st): State<ControlState>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::malformed("Last-Event-ID is not a cursor"))?,
        ),
        None => match q.after {
            Some(after) if after < 0 => return Err(Error::malformed("after: a cursor is 0 or more").into()),
            after => after,
        },
    };
    let permit = Arc::clone(&st.streams)
        .try_acquire_owned()
        .map_err(|_| Error::RateLimited { what: "event streams open at once", retry_after: 1 })?;
    let feed = Feed::open(Arc::clone(&st.node), resume).await?;
    let frames = futures_util::stream::unfold((feed, permit), |(mut feed, permit)| async move {
        let frame = match feed.next().await? {
            Ok(Frame::Event(event)) => {
                SseEvent::default().id(event.seq.to_string()).event(event.event.kind()).json_data(&*event).ok()?
            }
            Ok(Frame::Notice(notice)) => {
                let json = serde_json::to_value(&notice).ok()?;
                let kind = json.get("event").and_then(|k| k.as_str()).unwrap_or("notice").to_owned();
                SseEvent::default().event(kind).json_data(&json).ok()?
            }
            Err(_) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(frame), (feed, permit)))
    });
    let frames = futures_util::StreamExt::take_until(frames, st.stop.clone().cancelled_owned());
    Ok(Sse::new(frames).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))).into_response())
}
