//! The registry's HTTP API: the Agent Registry REST of `../shared/PROTOCOLS.md` §4, with every
//! write signed by the agent's key.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `POST /api/v1/agents/` | signed | `201` (new) or `200` the record |
//! | `PUT /api/v1/agents/{id}` | signed by `id`'s key | `200` the record |
//! | `POST /api/v1/agents/{id}/heartbeat` | signed by `id`'s key | `200 {"id","last_seen","status"}` |
//! | `DELETE /api/v1/agents/{id}` | signed by `id`'s key | `200 {"id","deleted":true}` |
//! | `GET /api/v1/agents/search?q=&capabilities=&limit=&offset=` | — | `{"agents":[…],"total":N}` |
//! | `GET /api/v1/agents/by-hostname/{hostname}` | — | the record (404 unknown or offline) |
//! | `GET /api/v1/agents/{id}` | — | the record (404 unknown) |
//! | `GET /health` | — | `{"status":"ok"}` |
//!
//! Signed requests carry `X-Agent-Key` (base64 Ed25519 key), `X-Agent-Timestamp` (ms; within
//! ±300 s of our clock and later than the agent's previous accepted request) and
//! `X-Agent-Signature` (see [`crate::model::signing_bytes`]). The record id is the agent id derived
//! from the key, or the id of an attached card whose rotation chain leads to the key. A record
//! changes key only along such a chain; a hostname belongs to the first agent that claims it.
//! An agent is online while its last registration or heartbeat is under three heartbeat intervals
//! old. Errors: `{"detail":"…"}`; 429 with `Retry-After` (whole seconds, the real wait). With an
//! API key configured, every request needs `X-Registry-Key`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_core::time::{iso_seconds, now_ms};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};

use crate::model::{
    AgentRecord, HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_LIMIT, MAX_SEARCH_CAPABILITIES, Registration,
    SearchQuery, normalize_capabilities, signer_id, verify_request,
};
use crate::store::{Heartbeat, RegistryStore, StoreError, Upsert};

/// Largest request body, bytes.
pub const MAX_BODY: usize = 32 * 1024;
/// Allowed clock difference of a signed request, ms.
pub const FRESHNESS_MS: u64 = 300_000;

/// Registry settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Required `X-Registry-Key`, if any.
    pub api_key: Option<String>,
    /// Heartbeat interval agents use, seconds; offline after 3 missed. Default 60.
    pub heartbeat_secs: u64,
    /// Signed writes per agent per minute; 0 disables. Default 60.
    pub per_key_per_minute: u32,
    /// Requests per source IP per minute; 0 disables. Default 1,200.
    pub per_ip_per_minute: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { api_key: None, heartbeat_secs: 60, per_key_per_minute: 60, per_ip_per_minute: 1_200 }
    }
}

struct Limits {
    by_key: Option<DefaultKeyedRateLimiter<String>>,
    by_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

fn quota(per_minute: u32) -> Option<Quota> {
    let n = NonZeroU32::new(per_minute)?;
    Quota::with_period(Duration::from_secs(60) / per_minute).map(|q| q.allow_burst(n))
}

/// Shared state of the registry server.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    options: Arc<Options>,
    limits: Arc<Limits>,
}

/// An error answer: `{"detail":"…"}`.
#[derive(Debug)]
pub struct Detail {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
}

impl Detail {
    /// 409: the request's timestamp does not follow the agent's last accepted one.
    fn stale() -> Self {
        Detail::new(StatusCode::CONFLICT, "replayed or out-of-order request: X-Agent-Timestamp must increase")
    }

    /// 403: signed by a key other than the record's.
    fn not_owner() -> Self {
        Detail::new(StatusCode::FORBIDDEN, "only the agent itself may change its record")
    }

    fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Detail { status, detail: detail.into(), retry_after: None }
    }
}

impl IntoResponse for Detail {
    fn into_response(self) -> Response {
        let mut body = json!({ "detail": self.detail });
        let mut response = match self.retry_after {
            Some(secs) => {
                body["retry_after"] = json!(secs);
                (self.status, [(header::RETRY_AFTER, secs.to_string())], Json(body)).into_response()
            }
            None => (self.status, Json(body)).into_response(),
        };
        response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        response
    }
}

impl From<StoreError> for Detail {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "registry storage failed");
        Detail::new(StatusCode::INTERNAL_SERVER_ERROR, "storage failed; nothing was changed")
    }
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn RegistryStore>, options: Options) -> Self {
        let limits = Limits {
            by_key: quota(options.per_key_per_minute).map(RateLimiter::keyed),
            by_ip: quota(options.per_ip_per_minute).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        };
        Registry { store, options: Arc::new(options), limits: Arc::new(limits) }
    }

    /// The HTTP router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/api/v1/agents/", post(register))
            .route("/api/v1/agents", post(register))
            .route("/api/v1/agents/search", get(search))
            .route("/api/v1/agents/by-hostname/{hostname}", get(by_hostname))
            .route("/api/v1/agents/{id}", get(get_agent).put(update).delete(deregister))
            .route("/api/v1/agents/{id}/heartbeat", post(heartbeat))
            .fallback(|| async { Detail::new(StatusCode::NOT_FOUND, "no such route") })
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    fn online_since(&self) -> i64 {
        now_ms() as i64 - (self.options.heartbeat_secs.max(1) * 3 * 1000) as i64
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn RegistryStore) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T, Detail> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| Detail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(Detail::from)
    }
}

fn rate_limited<K: Clone + std::hash::Hash + Eq>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
    clock: &DefaultClock,
) -> Result<(), Detail> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(clock.now());
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        Detail { status: StatusCode::TOO_MANY_REQUESTS, detail: "rate limited".into(), retry_after: Some(secs) }
    })
}

/// API key (constant time) and the per-IP limit, before anything else.
async fn guard(State(reg): State<Registry>, request: Request, next: Next) -> Response {
    if let Some(expected) = &reg.options.api_key {
        let presented = request.headers().get("x-registry-key").and_then(|v| v.to_str().ok()).unwrap_or("");
        let same = presented.len() == expected.len()
            && presented.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return Detail::new(StatusCode::UNAUTHORIZED, "missing or wrong X-Registry-Key").into_response();
        }
    }
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(ip) = ip
        && let Err(e) = rate_limited(&reg.limits.by_ip, &ip, &reg.limits.clock)
    {
        return e.into_response();
    }
    next.run(request).await
}

/// A verified signed request: the signer's key and the request time.
struct Signed {
    key: ed25519_dalek::VerifyingKey,
    timestamp: u64,
}

fn signed(reg: &Registry, headers: &HeaderMap, method: &Method, path: &str, body: &[u8]) -> Result<Signed, Detail> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(key), Some(ts), Some(sig)) = (h(HEADER_KEY), h(HEADER_TIMESTAMP), h(HEADER_SIGNATURE)) else {
        return Err(Detail::new(
            StatusCode::UNAUTHORIZED,
            "writes must be signed: X-Agent-Key, X-Agent-Timestamp and X-Agent-Signature",
        ));
    };
    let timestamp: u64 =
        ts.parse().map_err(|_| Detail::new(StatusCode::BAD_REQUEST, "X-Agent-Timestamp must be ms since the epoch"))?;
    if timestamp.abs_diff(now_ms()) > FRESHNESS_MS {
        return Err(Detail::new(StatusCode::BAD_REQUEST, "X-Agent-Timestamp is more than 300 s from our clock"));
    }
    let key = verify_request(key, timestamp, sig, method.as_str(), path, body)
        .map_err(|e| Detail::new(StatusCode::UNAUTHORIZED, e))?;
    rate_limited(&reg.limits.by_key, &agentmesh_core::AgentId::from_key(&key).to_string(), &reg.limits.clock)?;
    Ok(Signed { key, timestamp })
}

async fn register(State(reg): State<Registry>, headers: HeaderMap, request: Request) -> Response {
    write_record(reg, headers, request, None).await.unwrap_or_else(IntoResponse::into_response)
}

async fn update(State(reg): State<Registry>, Path(id): Path<String>, headers: HeaderMap, request: Request) -> Response {
    write_record(reg, headers, request, Some(id)).await.unwrap_or_else(IntoResponse::into_response)
}

async fn body_of(request: Request) -> Result<(Method, String, Bytes), Detail> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| Detail::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {MAX_BODY} bytes")))?;
    Ok((method, path, bytes))
}

async fn write_record(
    reg: Registry,
    headers: HeaderMap,
    request: Request,
    path_id: Option<String>,
) -> Result<Response, Detail> {
    let (method, path, body) = body_of(request).await?;
    let s = signed(&reg, &headers, &method, &path, &body)?;
    let registration: Registration = serde_json::from_slice(&body)
        .map_err(|e| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, format!("not a registration: {e}")))?;
    let capabilities = registration.check().map_err(|e| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let (id, history) =
        signer_id(&s.key, registration.card.as_ref()).map_err(|e| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let id = id.to_string();
    if path_id.as_ref().is_some_and(|p| *p != id) {
        return Err(Detail::not_owner());
    }
    let now = now_ms() as i64;
    let lookup = id.clone();
    let existing = reg.blocking(move |st| st.get(&lookup)).await?;
    if path_id.is_some() && existing.is_none() {
        return Err(Detail::new(StatusCode::NOT_FOUND, format!("no agent {id}")));
    }
    if let Some(e) = &existing
        && e.public_key != s.key.to_bytes()
        && !history.contains(&e.public_key)
    {
        return Err(Detail::new(StatusCode::FORBIDDEN, "this agent id is registered with another key"));
    }
    let record = AgentRecord {
        id: id.clone(),
        hostname: registration.hostname.clone(),
        display_name: registration.display_name.clone(),
        description: registration.description.clone(),
        capabilities,
        p2p_endpoint: registration.p2p_endpoint.clone(),
        visibility: registration.visibility,
        public_key: s.key.to_bytes(),
        registered_at: existing.as_ref().map(|e| e.registered_at).unwrap_or(now),
        last_seen: now,
        last_request: s.timestamp as i64,
    };
    let stored = record.clone();
    let outcome = reg.blocking(move |st| st.upsert(&stored)).await?;
    let online_since = reg.online_since();
    match outcome {
        Upsert::Stored(new) => {
            let status = if new { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(record.to_json(online_since))).into_response())
        }
        Upsert::HostnameTaken => {
            Err(Detail::new(StatusCode::CONFLICT, format!("hostname {} belongs to another agent", record.hostname)))
        }
        Upsert::Stale => Err(Detail::stale()),
    }
}

/// Loads `id` and checks the signer holds its key.
async fn owned(reg: &Registry, id: &str, s: &Signed) -> Result<AgentRecord, Detail> {
    let lookup = id.to_owned();
    let rec = reg
        .blocking(move |st| st.get(&lookup))
        .await?
        .ok_or_else(|| Detail::new(StatusCode::NOT_FOUND, format!("no agent {id}")))?;
    if rec.public_key != s.key.to_bytes() {
        return Err(Detail::not_owner());
    }
    Ok(rec)
}

async fn heartbeat(
    State(reg): State<Registry>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let run = async {
        let (method, path, body) = body_of(request).await?;
        let s = signed(&reg, &headers, &method, &path, &body)?;
        let now = now_ms() as i64;
        let (hid, key, ts) = (id.clone(), s.key.to_bytes(), s.timestamp as i64);
        match reg.blocking(move |st| st.heartbeat(&hid, &key, ts, now)).await? {
            Heartbeat::Recorded => {
                Ok(Json(json!({"id": id, "last_seen": iso_seconds(now as u64), "status": "online"})).into_response())
            }
            Heartbeat::Unknown => Err(Detail::new(StatusCode::NOT_FOUND, format!("no agent {id}"))),
            Heartbeat::WrongKey => Err(Detail::not_owner()),
            Heartbeat::Stale => Err(Detail::stale()),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn deregister(
    State(reg): State<Registry>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let run = async {
        let (method, path, body) = body_of(request).await?;
        let s = signed(&reg, &headers, &method, &path, &body)?;
        let rec = owned(&reg, &id, &s).await?;
        if s.timestamp as i64 <= rec.last_request {
            return Err(Detail::stale());
        }
        let did = id.clone();
        reg.blocking(move |st| st.delete(&did)).await?;
        Ok(Json(json!({"id": id, "deleted": true})).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn search(State(reg): State<Registry>, RawQuery(raw): RawQuery) -> Result<Json<Value>, Detail> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, format!("query string: {e}")))?;
    let mut q = SearchQuery { limit: 20, ..Default::default() };
    let mut caps = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "q" => q.text = Some(v).filter(|t| !t.trim().is_empty()),
            "capabilities" | "capability" => caps.push(v),
            "limit" => {
                q.limit =
                    v.parse().map_err(|_| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, "limit must be a number"))?
            }
            "offset" => {
                q.offset =
                    v.parse().map_err(|_| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, "offset must be a number"))?
            }
            _ => {}
        }
    }
    if !(1..=MAX_LIMIT).contains(&q.limit) {
        return Err(Detail::new(StatusCode::UNPROCESSABLE_ENTITY, format!("limit must be 1 to {MAX_LIMIT}")));
    }
    if q.offset > 10_000 {
        return Err(Detail::new(StatusCode::UNPROCESSABLE_ENTITY, "offset is limited to 10000"));
    }
    if q.text.as_ref().is_some_and(|t| t.len() > 256) {
        return Err(Detail::new(StatusCode::UNPROCESSABLE_ENTITY, "q is limited to 256 bytes"));
    }
    q.capabilities = normalize_capabilities(&caps, MAX_SEARCH_CAPABILITIES)
        .map_err(|e| Detail::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let online_since = reg.online_since();
    let (agents, total) = reg.blocking(move |st| st.search(&q, online_since)).await?;
    Ok(Json(json!({
        "agents": agents.iter().map(|a| a.to_json(online_since)).collect::<Vec<_>>(),
        "total": total,
    })))
}

async fn by_hostname(State(reg): State<Registry>, Path(hostname): Path<String>) -> Result<Json<Value>, Detail> {
    let online_since = reg.online_since();
    let h = hostname.clone();
    match reg.blocking(move |st| st.by_hostname(&h)).await? {
        Some(rec) if rec.last_seen >= online_since => Ok(Json(rec.to_json(online_since))),
        _ => Err(Detail::new(StatusCode::NOT_FOUND, format!("no online agent with hostname {hostname}"))),
    }
}

async fn get_agent(State(reg): State<Registry>, Path(id): Path<String>) -> Result<Json<Value>, Detail> {
    let online_since = reg.online_since();
    let lookup = id.clone();
    match reg.blocking(move |st| st.get(&lookup)).await? {
        Some(rec) => Ok(Json(rec.to_json(online_since))),
        None => Err(Detail::new(StatusCode::NOT_FOUND, format!("no agent {id}"))),
    }
}

/// Serves `registry` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = registry.router().into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
