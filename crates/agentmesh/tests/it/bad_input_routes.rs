//! Bad input on the routes added since the second hardening round (calls, files, tasks,
//! escalations, A2A, events, MCP over HTTP): each hostile request gets its status and JSON error
//! code (or JSON-RPC error code), and nothing is stored; next to each group one request that is
//! taken, so the refusals are not vacuous.
//!
//! Inventory: each route, what was tested before this module (and where), and what is added here.
//! Peer envelopes are real signed, sealed envelopes of a contact the test drives. (hostile.rs
//! covers connections, clocks and file modes, none of these routes' input.)
//!
//! | route | tested before (where) | added here |
//! |---|---|---|
//! | `POST /v1/message`, call steps | unknown call, unknown op, thread not the call, id out of shape, topic over 1,000 (`malformed_body`); a line before the answer, the caller accepting (`call_state`); another contact's line (`unknown_call`) or invitation (`duplicate_call`); late answers to a missed call (bad_input.rs); past `max_open_calls(_per_peer)` (`too_many_calls`, claims.rs) | the caller declining, an inline file before the answer (`call_state`); an inline file not base64, nameless or over 64 KiB, an escalation reason over 1,000, `ring_until` past 9999, a line without text, an id in upper case, no thread, a body that is not JSON (`malformed_body`); another contact answering our call (`unknown_call`) |
//! | `POST /v1/message`, task steps | unknown task, unknown op or state, thread, id out of shape, an artifact without parts, an update back to `submitted` (`malformed_body`); the delegator reporting (`task_state`); another contact's cancel (`unknown_task`) or creation (`duplicate_task`); overtaking updates (bad_input.rs); past `max_open_tasks(_per_peer)` (`too_many_tasks`, claims.rs) | the worker answering or cancelling, an answer to a final task, artifacts past `max_task_artifact_bytes` (`task_state`); `seq` 0 or past `i64`, 65 artifacts, 65 parts, a creation without text, an escalation reason over 1,000, an id in upper case (`malformed_body`); another contact reporting on our task (`unknown_task`); a contact naming an A2A client's task (`unknown_task`, `duplicate_task`) |
//! | `POST /v1/message`, file steps | unknown transfer, unknown op, thread, chunk size, key, empty name, id out of shape (`malformed_body`); a stranger's offer (`unknown_sender`); the sender confirming its own file (`transfer_state`); another contact cancelling (`unknown_transfer`) (bad_input.rs) | the sender declining its own offer (`transfer_state`); another contact's offer under a held id, or its answer to our offer (`unknown_transfer`); a size over 1 TiB, a digest out of shape, a name over 1,024 bytes, a call id out of shape, a reason over 1,000, a receipt whose digest is out of shape (`malformed_body`) |
//! | `POST /v1/batch` with steps | per-envelope results for messages; 129 envelopes (bad_input.rs) | call, task and file refusals, each with the status and code of its own route |
//! | `GET /v1/files/{id}` | no token, a wrong token (`unauthorized`), an unknown id (404), `from=x` (400) (files.rs); a receiver's share of serving slots (429, files.rs); a file changed since the offer (409 `file_changed`, claims.rs) | every code checked: Authorization out of shape, another transfer's token (401); an id out of shape, in upper case, unknown, or of a transfer offered *to* us (404 `unknown_transfer`); `from` not a number, negative or past the end, an unknown query member (400 `malformed`); a receiver no longer a contact (403 `untrusted_sender`); a transfer that is over (409 `transfer_state`); a wrong method (405); a fetch that is served |
//! | `GET /.well-known/agent-card.json` | the card (a2a.rs) | the card; a wrong method (405) |
//! | `POST /a2a/v1` | no, forged, revoked or malformed token (401); another client's task (-32001); unknown method (-32601); push (-32003); file parts (-32005); a client's share of streams (a2a.rs) | 401 before the content type and body; 415; 413; a wrong method (405); not JSON (-32700); a batch, not an object, another or no `jsonrpc`, no method (-32600, a batched `SendMessage` makes no task); params out of shape (-32602); A2A-Version 2 (-32009); the extended card (-32007); cancel of a final task (-32002); a message to or subscription on a final task (-32004); unknown tasks, another client's, a contact's (-32001); nothing stored for any |
//! | `POST /control/calls`, `GET /control/calls`, `GET /control/calls/{id}`, `…/answer`, `…/say`, `…/end` | not a contact (`not_found`), out of turn (`call_state`), an unknown call for `say` (`unknown_call`), an empty line (calls.rs, through the CLI) | 401 (no, wrong or malformed token), 421; a body not JSON, truncated, with an unknown member or a member of the wrong type (`malformed`), or a JSON array (`malformed`, its own test), 415, 413; unknown and out-of-shape ids on every route (`unknown_call`); a topic or reason over 1,000, an inline file out of shape (`invalid_argument`); a line over `max_text_bytes` (413); queries out of shape (`malformed`), an unknown peer in a query (`not_found`) |
//! | `POST /control/tasks`, `GET /control/tasks`, `GET /control/tasks/{id}`, `…/update`, `…/message`, `…/cancel` | out of turn (`task_state`), an unknown task for `task`, a state that is none (`invalid_argument`), a reused id (`duplicate_task`) (tasks.rs, CLI) | the same token, Host, body and query cases; unknown ids on every route (`unknown_task`); cancelling a task delegated to us (`task_state`); a task id out of shape, back to `submitted`, an artifact without parts (`invalid_argument`); an empty text (`empty_message`); text or data over `max_text_bytes` (413) |
//! | `POST /control/files`, `GET /control/files`, `GET /control/files/{id}`, `…/accept`, `…/cancel` | a missing path, a directory, a call id out of shape (`invalid_argument`), accepting twice (`transfer_state`), an unknown id for `accept-file` (files.rs, CLI); files of the home (mcp.rs) | the same token, Host, body and query cases; unknown ids on every route (`unknown_transfer`); accepting our own offer (`transfer_state`); a relative path (`invalid_argument`); a call of no one (`unknown_call`); a reason over 1,000 (`invalid_argument`) |
//! | `POST /control/escalations`, `GET /control/escalations`, `…/{id}/resolve` | too many (`too_many_escalations`), answered twice (`already_decided`), an unknown call (`not_found`) (tasks.rs, CLI) | the same token, Host, body and query cases; unknown and out-of-shape escalation ids (`not_found`); a conversation that is a transfer (`not_found`); a reason or answer empty or over 1,000, 17 options, an empty option (`invalid_argument`) |
//! | `POST /control/a2a/clients`, `GET …`, `DELETE …/{name}` | issue, list, revoke (a2a.rs) | the token, Host and body cases; a name out of shape or empty (`invalid_argument`), taken (409 `invalid_argument`); revoking no one (`not_found`) |
//! | `GET /control/events`, `GET /v1/events` (control port) | 401, `after=x` (in-process, handler_tests.rs); `events --limit 0` (events.rs, CLI); past `max_event_streams` (429 `rate_limited`), the gap frame after pruning (claims.rs) | on a real node: 401, 421; `after` and `limit` out of shape (`malformed`); `Last-Event-ID` not a cursor or negative (`malformed`); a negative `after` (`malformed`, its own test); a page and a stream that are served |
//! | MCP streamable HTTP `/mcp` (`agentmesh mcp --http`) | no, wrong or extended token (401) (mcp.rs) | 401 with its JSON body for malformed tokens, before the Host and the body are looked at; a Host that is not loopback (403); a wrong content type or a body that is not a JSON-RPC message (415, rmcp's answer); no Accept (406); over 4 MiB (413); an unknown session (404); in a session: an unknown method (-32601) or tool (-32602), tool refusals carrying the node's code, arguments out of shape (`invalid_argument`); nothing stored |

use std::path::Path;

use agentmesh_api::control::{CallArgs, DelegateArgs, EscalateArgs, SendFileArgs, UpdateTaskArgs};
use agentmesh_api::{CallState, TaskState, TransferState};
use agentmesh_core::call::{CALL_CONTENT_TYPE, new_call_id};
use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft};
use agentmesh_core::file::{FILE_CONTENT_TYPE, TransferKey, new_transfer_id};
use agentmesh_core::task::{TASK_CONTENT_TYPE, new_task_id};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, Envelope, EnvelopeKind, Identity, PROTOCOL_NATIVE};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Row counts of every table, as [`counts`] takes them.
type Counts = Vec<(&'static str, i64)>;

/// A contact driven by the test: its own keys, no node (its endpoint is closed, so whatever the
/// node sends it waits in the outbox).
struct Fake {
    id: Identity,
    card: AgentCard,
}

impl Fake {
    fn new(name: &str) -> Self {
        let id = Identity::generate();
        let card = AgentCard::new(
            &id,
            name,
            vec!["http://127.0.0.1:9".into()],
            vec![],
            vec![PROTOCOL_NATIVE.into()],
            now_ms(),
        );
        Fake { id, card }
    }

    fn agent_id(&self) -> String {
        self.id.agent_id().to_string()
    }
}

/// An HTTP answer: status, headers, the body as JSON (`Null` when it is not) and as text.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    async fn of(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("a body");
        Reply { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
    }
}

/// A request to one of the node's APIs, as the test builds it.
struct Req<'a> {
    method: Method,
    path: String,
    /// `Content-Type` and body; `None`: neither.
    body: Option<(&'a str, Vec<u8>)>,
    /// The whole `Authorization` header; `None`: none.
    auth: Option<String>,
    /// A `Host` other than the URL's.
    host: Option<String>,
    headers: Vec<(&'a str, String)>,
}

/// A real node under test, the loopback HTTP client that hits it, and its control API's address
/// and token.
struct Target {
    node: LocalNode,
    card: AgentCard,
    x25519: [u8; 32],
    http: reqwest::Client,
    control_url: String,
    token: String,
}

impl Target {
    /// Starts a node named `target` with `config` as its config.toml.
    async fn start(dir: &Path, config: &str) -> Target {
        let node = node_with(dir, "target", config, &[]).await;
        let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
            timeout_ms: Some(15_000),
            ..Default::default()
        })
        .expect("http client");
        let card: AgentCard =
            http.get(format!("{}/v1/card", node.peer_url)).send().await.expect("card").json().await.expect("json");
        let x25519 = card.verify().expect("card").x25519;
        let info: Value =
            serde_json::from_slice(&std::fs::read(node.home.join("node.json")).expect("node.json")).expect("json");
        let control_url = info["control_url"].as_str().expect("control url").to_owned();
        let token = std::fs::read_to_string(node.home.join("control.token")).expect("token").trim().to_owned();
        Target { node, card, x25519, http, control_url, token }
    }

    fn counts(&self) -> Counts {
        counts(&self.node.home)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A contact: `name` asks for contact (request id `req_` + `n` repeated), the owner approves.
    async fn contact(&self, name: &str, n: u8) -> Fake {
        let fake = Fake::new(name);
        let request_id = format!("req_{}", format!("{n:02x}").repeat(16));
        let body = serde_json::to_vec(&ContactRequestBody { request_id: request_id.clone(), purpose: "hi".into() })
            .expect("json");
        let mut draft = Draft::new(
            EnvelopeKind::ContactRequest,
            fake.id.agent_id(),
            self.card.agent_id,
            now_ms(),
            3_600_000,
            APPLICATION_JSON,
            body,
        );
        draft.card = Some(fake.card.clone());
        let env = draft.seal(&self.x25519).expect("seal").sign(&fake.id, now_ms());
        let r = self.peer(Method::POST, "/v1/contact-request", Some(("application/json", to_bytes(&env)))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        self.node.client.approve(&request_id).await.expect("approve");
        fake
    }

    /// A `message` envelope from `from` of `content_type` carrying `body` as it is, in `thread`.
    fn step_bytes(&self, from: &Fake, content_type: &str, body: Vec<u8>, thread: Option<&str>) -> Envelope {
        let mut draft = Draft::new(
            EnvelopeKind::Message,
            from.id.agent_id(),
            self.card.agent_id,
            now_ms(),
            3_600_000,
            content_type,
            body,
        );
        draft.thread = thread.map(str::to_owned);
        draft.seal(&self.x25519).expect("seal").sign(&from.id, now_ms())
    }

    /// A conversation step: `body` as JSON, in the thread named by its id member.
    fn step(&self, from: &Fake, content_type: &str, body: &Value) -> Envelope {
        let thread = ["call_id", "task_id", "transfer_id"].iter().find_map(|k| body[*k].as_str());
        self.step_bytes(from, content_type, serde_json::to_vec(body).expect("json"), thread)
    }

    fn call_step(&self, from: &Fake, body: &Value) -> Envelope {
        self.step(from, CALL_CONTENT_TYPE, body)
    }

    fn task_step(&self, from: &Fake, body: &Value) -> Envelope {
        self.step(from, TASK_CONTENT_TYPE, body)
    }

    fn file_step(&self, from: &Fake, body: &Value) -> Envelope {
        self.step(from, FILE_CONTENT_TYPE, body)
    }

    async fn send(&self, env: &Envelope) -> Reply {
        self.peer(Method::POST, "/v1/message", Some(("application/json", to_bytes(env)))).await
    }

    async fn fetch(&self, req: Req<'_>, base: &str) -> Reply {
        let mut r = self.http.request(req.method.clone(), format!("{base}{}", req.path));
        if let Some((content_type, body)) = req.body {
            if !content_type.is_empty() {
                r = r.header("content-type", content_type);
            }
            r = r.body(body);
        }
        if let Some(auth) = req.auth {
            r = r.header("authorization", auth);
        }
        if let Some(host) = req.host {
            r = r.header("host", host);
        }
        for (name, value) in req.headers {
            r = r.header(name, value);
        }
        let r = r.send().await.unwrap_or_else(|e| panic!("{} {}: {e:?}", req.method, req.path));
        Reply::of(r).await
    }

    /// A request to the peer API.
    async fn peer(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
        let req = Req { method, path: path.to_owned(), body, auth: None, host: None, headers: vec![] };
        self.fetch(req, &self.node.peer_url.clone()).await
    }

    /// A request to the control API with the owner's token.
    async fn control(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
        let req = Req { method, path: path.to_owned(), body, auth: Some(self.bearer()), host: None, headers: vec![] };
        self.control_req(req).await
    }

    async fn control_req(&self, req: Req<'_>) -> Reply {
        let base = self.control_url.clone();
        self.fetch(req, &base).await
    }

    /// A control POST with `body` as JSON.
    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.control(Method::POST, path, Some(("application/json", to_bytes(body)))).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.control(Method::GET, path, None).await
    }

    /// Checks a refusal: its status, its JSON error code with a message for people, and that no
    /// table gained or lost a row.
    fn refused(&self, what: &str, status: u16, code: &str, r: &Reply, before: &Counts) {
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{what}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message: {}", r.text);
        assert_eq!(&self.counts(), before, "{what}: nothing may be stored");
    }

    /// Checks an answer that was taken.
    fn taken(what: &str, r: &Reply) {
        assert_eq!(r.status, 200, "{what}: {}", r.text);
    }
}

fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

/// `call_`, `task_` or `file_` followed by 32 zeros: in shape, held by no one.
fn zeros(prefix: &str) -> String {
    format!("{prefix}_{}", "0".repeat(32))
}

/// A small file to send, outside the node's home.
fn a_file(dir: &Path, name: &str, bytes: usize) -> String {
    let path = dir.join(name);
    std::fs::write(&path, vec![7u8; bytes]).expect("write");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_steps_out_of_turn_out_of_shape_or_past_limits_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "max_task_artifact_bytes = 4096\n").await;
    let (fake, other) = (t.contact("mallory", 0x01).await, t.contact("trudy", 0x02).await);

    // Calls. An invitation rings.
    let call = new_call_id();
    let invite = json!({"call_id": call, "op": "invite", "topic": "t", "ring_until": now_ms() + 600_000});
    Target::taken("an invitation", &t.send(&t.call_step(&fake, &invite)).await);
    assert_eq!(t.node.client.transcript(&call).await.expect("rings").call.state, CallState::Ringing);
    let before = t.counts();
    let upper = format!("call_{}", "AB".repeat(16));
    let too_big = agentmesh_core::b64::encode(vec![0u8; 64 * 1024 + 1]);
    let cases = [
        ("the caller declining its own call", json!({"call_id": call, "op": "reject"}), 409, "call_state"),
        (
            "an inline file before the answer",
            json!({"call_id": call, "op": "file", "name": "a.txt", "data": "aGk="}),
            409,
            "call_state",
        ),
        (
            "an inline file that is not base64",
            json!({"call_id": call, "op": "file", "name": "a", "data": "%%%"}),
            400,
            "malformed_body",
        ),
        (
            "a nameless inline file",
            json!({"call_id": call, "op": "file", "name": "", "data": "aGk="}),
            400,
            "malformed_body",
        ),
        (
            "an inline file over 64 KiB",
            json!({"call_id": call, "op": "file", "name": "big", "data": too_big}),
            400,
            "malformed_body",
        ),
        (
            "an escalation reason over 1000 characters",
            json!({"call_id": call, "op": "escalate", "escalation_id": "esc_1", "reason": "x".repeat(1001)}),
            400,
            "malformed_body",
        ),
        (
            "ring_until past the year 9999",
            json!({"call_id": new_call_id(), "op": "invite", "ring_until": 253_402_300_800_000u64}),
            400,
            "malformed_body",
        ),
        ("a line without text", json!({"call_id": call, "op": "say"}), 400, "malformed_body"),
        ("a call id in upper case", json!({"call_id": upper, "op": "end"}), 400, "malformed_body"),
    ];
    for (what, body, status, code) in cases {
        t.refused(what, status, code, &t.send(&t.call_step(&fake, &body)).await, &before);
    }
    let end = to_bytes(&json!({"call_id": call, "op": "end"}));
    let no_thread = t.step_bytes(&fake, CALL_CONTENT_TYPE, end, None);
    t.refused("a call step without its thread", 400, "malformed_body", &t.send(&no_thread).await, &before);
    let not_json = t.step_bytes(&fake, CALL_CONTENT_TYPE, b"op=end".to_vec(), Some(&call));
    t.refused("a call step that is not JSON", 400, "malformed_body", &t.send(&not_json).await, &before);

    // Our call to mallory: trudy cannot answer it; mallory can.
    let args = CallArgs { to: fake.agent_id(), topic: "ours".into(), ring_secs: None };
    let ours = t.node.client.call(&args).await.expect("call").call.call_id;
    let before = t.counts();
    let accept = json!({"call_id": ours, "op": "accept"});
    t.refused(
        "another contact answering our call",
        404,
        "unknown_call",
        &t.send(&t.call_step(&other, &accept)).await,
        &before,
    );
    Target::taken("the callee answering", &t.send(&t.call_step(&fake, &accept)).await);
    assert_eq!(t.node.client.transcript(&ours).await.expect("call").call.state, CallState::Active);

    // Tasks. A delegation to us is taken.
    let theirs = new_task_id();
    Target::taken(
        "a delegation",
        &t.send(&t.task_step(&fake, &json!({"task_id": theirs, "op": "create", "text": "do it"}))).await,
    );
    let before = t.counts();
    let part = json!({"kind": "text", "text": "x"});
    let artifact = |parts: usize| json!({"artifact_id": "a", "parts": vec![part.clone(); parts]});
    let artifacts: Vec<Value> = (0..65).map(|n| json!({"artifact_id": format!("a{n}"), "parts": [part]})).collect();
    let upper = format!("task_{}", "AB".repeat(16));
    let cases = [
        ("seq 0", json!({"task_id": theirs, "op": "update", "seq": 0, "state": "working"})),
        ("seq past i64", json!({"task_id": theirs, "op": "update", "seq": u64::MAX, "state": "working"})),
        (
            "65 artifacts",
            json!({"task_id": theirs, "op": "update", "seq": 1, "state": "working", "artifacts": artifacts}),
        ),
        (
            "an artifact of 65 parts",
            json!({"task_id": theirs, "op": "update", "seq": 1, "state": "working", "artifacts": [artifact(65)]}),
        ),
        ("a delegation without text", json!({"task_id": new_task_id(), "op": "create"})),
        (
            "an escalation reason over 1000 characters",
            json!({"task_id": theirs, "op": "escalate", "escalation_id": "e", "reason": "x".repeat(1001)}),
        ),
        ("a task id in upper case", json!({"task_id": upper, "op": "create", "text": "x"})),
    ];
    for (what, body) in cases {
        t.refused(what, 400, "malformed_body", &t.send(&t.task_step(&fake, &body)).await, &before);
    }
    // Once final, a task takes no answer.
    let done = UpdateTaskArgs { state: TaskState::Completed, text: None, artifacts: vec![] };
    t.node.client.update_task(&theirs, &done).await.expect("complete");
    let before = t.counts();
    let answer = json!({"task_id": theirs, "op": "message", "text": "more"});
    t.refused("an answer to a final task", 409, "task_state", &t.send(&t.task_step(&fake, &answer)).await, &before);

    // Our task at mallory: only mallory reports; it neither answers nor cancels; trudy touches it not.
    let args = DelegateArgs { to: fake.agent_id(), text: "work".into(), ..Default::default() };
    let delegated = t.node.client.delegate(&args).await.expect("delegate").task.task_id;
    let before = t.counts();
    let big = json!({"artifact_id": "big", "parts": [{"kind": "text", "text": "y".repeat(5000)}]});
    let cases = [
        ("the worker answering", &fake, json!({"task_id": delegated, "op": "message", "text": "?"}), 409, "task_state"),
        ("the worker cancelling", &fake, json!({"task_id": delegated, "op": "cancel"}), 409, "task_state"),
        (
            "another contact reporting on our task",
            &other,
            json!({"task_id": delegated, "op": "update", "seq": 1, "state": "completed"}),
            404,
            "unknown_task",
        ),
    ];
    for (what, from, body, status, code) in cases {
        t.refused(what, status, code, &t.send(&t.task_step(from, &body)).await, &before);
    }
    let past = json!({"task_id": delegated, "op": "update", "seq": 1, "state": "working", "artifacts": [big]});
    let r = t.send(&t.task_step(&fake, &past)).await;
    t.refused("artifacts past max_task_artifact_bytes", 409, "task_state", &r, &before);
    assert!(r.text.contains("max_task_artifact_bytes"), "{}", r.text);
    let working = json!({"task_id": delegated, "op": "update", "seq": 1, "state": "working"});
    Target::taken("the worker reporting", &t.send(&t.task_step(&fake, &working)).await);
    assert_eq!(t.node.client.task(&delegated).await.expect("task").task.state, TaskState::Working);

    // Files. An offer waits for the owner.
    let key = TransferKey::generate().to_base64();
    let offered = new_transfer_id();
    let offer = |id: &str, name: &str, size: u64, sha: &str, call: Option<&str>| {
        let mut o = json!({"transfer_id": id, "op": "offer", "name": name, "size": size, "sha256": sha,
                           "chunk_size": 65536, "key": key});
        if let Some(c) = call {
            o["call_id"] = json!(c);
        }
        o
    };
    let sha = "a".repeat(64);
    Target::taken("an offer", &t.send(&t.file_step(&fake, &offer(&offered, "a.txt", 10, &sha, None))).await);
    assert_eq!(t.node.client.file(&offered).await.expect("offered").transfer.state, TransferState::Offered);
    let path = a_file(dir.path(), "ours.bin", 3000);
    let args = SendFileArgs { to: fake.agent_id(), path: path.clone(), name: None, call_id: None };
    let sent = t.node.client.send_file(&args).await.expect("send file").transfer;
    let before = t.counts();
    let fresh = new_transfer_id();
    let cases = [
        ("a file over 1 TiB", &fake, offer(&fresh, "a", (1 << 40) + 1, &sha, None), 400, "malformed_body"),
        ("a digest in upper case", &fake, offer(&fresh, "a", 10, &"A".repeat(64), None), 400, "malformed_body"),
        ("a name over 1024 bytes", &fake, offer(&fresh, &"n".repeat(1025), 10, &sha, None), 400, "malformed_body"),
        ("a call id out of shape", &fake, offer(&fresh, "a", 10, &sha, Some("call_X")), 400, "malformed_body"),
        (
            "a reason over 1000 characters",
            &fake,
            json!({"transfer_id": offered, "op": "cancel", "reason": "r".repeat(1001)}),
            400,
            "malformed_body",
        ),
        (
            "a receipt whose digest is out of shape",
            &fake,
            json!({"transfer_id": sent.transfer_id, "op": "received", "sha256": "zz"}),
            400,
            "malformed_body",
        ),
        (
            "the sender declining its own offer",
            &fake,
            json!({"transfer_id": offered, "op": "decline"}),
            409,
            "transfer_state",
        ),
        (
            "another contact's offer under a held id",
            &other,
            offer(&offered, "b", 10, &sha, None),
            404,
            "unknown_transfer",
        ),
        (
            "another contact answering our offer",
            &other,
            json!({"transfer_id": sent.transfer_id, "op": "decline"}),
            404,
            "unknown_transfer",
        ),
    ];
    for (what, from, body, status, code) in cases {
        t.refused(what, status, code, &t.send(&t.file_step(from, &body)).await, &before);
    }

    // In a batch, each step gets what it would get on its own route.
    let steps = vec![
        t.call_step(&fake, &json!({"call_id": call, "op": "reject"})),
        t.call_step(&fake, &json!({"call_id": zeros("call"), "op": "say", "text": "hi"})),
        t.task_step(&fake, &json!({"task_id": theirs, "op": "message", "text": "more"})),
        t.task_step(&fake, &json!({"task_id": zeros("task"), "op": "cancel"})),
        t.file_step(&fake, &json!({"transfer_id": offered, "op": "decline"})),
        t.file_step(&fake, &json!({"transfer_id": zeros("file"), "op": "cancel"})),
    ];
    let expected = [
        (409, "call_state"),
        (404, "unknown_call"),
        (409, "task_state"),
        (404, "unknown_task"),
        (409, "transfer_state"),
        (404, "unknown_transfer"),
    ];
    let r = t.peer(Method::POST, "/v1/batch", Some(("application/json", to_bytes(&json!({"envelopes": steps}))))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().expect("results");
    for ((result, step), (status, code)) in results.iter().zip(&steps).zip(expected) {
        assert_eq!(result["id"], step.id.as_str());
        assert_eq!(
            (result["ok"].as_bool(), result["status"].as_u64(), result["error"]["code"].as_str()),
            (Some(false), Some(status), Some(code)),
            "{result}"
        );
    }
    assert_eq!(t.counts(), before, "a batch of refused steps stores nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunk_fetches_without_the_right_token_id_query_or_state_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "").await;
    let (fake, other) = (t.contact("mallory", 0x01).await, t.contact("trudy", 0x02).await);
    let send = |to: &Fake, name: &str| SendFileArgs {
        to: to.agent_id(),
        path: a_file(dir.path(), name, 3000),
        name: None,
        call_id: None,
    };
    let served = t.node.client.send_file(&send(&fake, "served.bin")).await.expect("send").transfer;
    let over = t.node.client.send_file(&send(&fake, "over.bin")).await.expect("send").transfer;
    let to_other = t.node.client.send_file(&send(&other, "other.bin")).await.expect("send").transfer;
    // An offer to us, with its key.
    let key = TransferKey::generate();
    let incoming = new_transfer_id();
    let offer = json!({"transfer_id": incoming, "op": "offer", "name": "in.txt", "size": 10, "sha256": "a".repeat(64),
                       "chunk_size": 65536, "key": key.to_base64()});
    Target::taken("an offer to us", &t.send(&t.file_step(&fake, &offer)).await);
    let token = |id: &str| {
        let store = agentmesh_store::Store::open(&t.node.home.join("agentmesh.db")).expect("db");
        let record = store.transfer(id).expect("read").expect("a transfer");
        TransferKey::from_bytes(record.key).token(id)
    };
    let (good, others) = (token(&served.transfer_id), token(&to_other.transfer_id));
    let fetch = |path: String, auth: Option<String>| Req {
        method: Method::GET,
        path,
        body: None,
        auth,
        host: None,
        headers: vec![],
    };
    let id = served.transfer_id.clone();
    let bearer = |token: &str| Some(format!("Bearer {token}"));
    let before = t.counts();
    let cases = [
        ("no token", format!("/v1/files/{id}"), None, 401, "unauthorized"),
        ("another scheme", format!("/v1/files/{id}"), Some(format!("Basic {good}")), 401, "unauthorized"),
        ("a second word", format!("/v1/files/{id}"), Some(format!("Bearer {good} x")), 401, "unauthorized"),
        ("no token after the scheme", format!("/v1/files/{id}"), Some("Bearer ".into()), 401, "unauthorized"),
        ("a wrong token", format!("/v1/files/{id}"), bearer(&"0".repeat(64)), 401, "unauthorized"),
        ("another transfer's token", format!("/v1/files/{id}"), bearer(&others), 401, "unauthorized"),
        ("an id out of shape", "/v1/files/file_X".into(), bearer(&good), 404, "unknown_transfer"),
        ("an id in upper case", format!("/v1/files/{}", id.to_uppercase()), bearer(&good), 404, "unknown_transfer"),
        ("an unknown id", format!("/v1/files/{}", zeros("file")), bearer(&good), 404, "unknown_transfer"),
        (
            "a transfer offered to us",
            format!("/v1/files/{incoming}"),
            bearer(&key.token(&incoming)),
            404,
            "unknown_transfer",
        ),
        ("from that is not a number", format!("/v1/files/{id}?from=x"), bearer(&good), 400, "malformed"),
        ("a negative from", format!("/v1/files/{id}?from=-1"), bearer(&good), 400, "malformed"),
        ("from past the last chunk", format!("/v1/files/{id}?from=2"), bearer(&good), 400, "malformed"),
        ("an unknown query member", format!("/v1/files/{id}?from=0&offset=9"), bearer(&good), 400, "malformed"),
    ];
    for (what, path, auth, status, code) in cases {
        t.refused(what, status, code, &t.fetch(fetch(path, auth), &t.node.peer_url).await, &before);
    }
    // Only GET.
    let r = t.peer(Method::POST, &format!("/v1/files/{id}"), Some(("application/json", b"{}".to_vec()))).await;
    assert_eq!((r.status, r.headers.get("allow").and_then(|v| v.to_str().ok())), (405, Some("GET,HEAD")), "{}", r.text);
    assert_eq!(t.counts(), before);
    assert_eq!(t.node.client.file(&id).await.expect("file").transfer.state, TransferState::Offered);

    // Over (cancelled by the owner): 409; to a receiver no longer a contact: 403.
    t.node.client.cancel_file(&over.transfer_id, Some("changed my mind")).await.expect("cancel");
    t.node.client.block(&other.agent_id()).await.expect("block");
    let before = t.counts();
    let path = format!("/v1/files/{}", over.transfer_id);
    let r = t.fetch(fetch(path, bearer(&token(&over.transfer_id))), &t.node.peer_url).await;
    t.refused("a transfer that is over", 409, "transfer_state", &r, &before);
    let path = format!("/v1/files/{}", to_other.transfer_id);
    let r = t.fetch(fetch(path, bearer(&others)), &t.node.peer_url).await;
    t.refused("a receiver no longer a contact", 403, "untrusted_sender", &r, &before);

    // The right token gets the one sealed chunk: its length, then 3000 bytes and the tag.
    let r = t.http.get(format!("{}/v1/files/{id}?from=0", t.node.peer_url)).bearer_auth(&good).send().await;
    let r = r.expect("fetch");
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r.bytes().await.expect("frames");
    assert_eq!(bytes.len(), 4 + 3000 + 16);
    assert_eq!(bytes[..4], (3000u32 + 16).to_be_bytes());
}

/// A2A: a JSON-RPC call with `token`; `body` as sent.
async fn a2a(t: &Target, token: Option<&str>, body: Vec<u8>, content_type: &str, version: Option<&str>) -> Reply {
    let mut headers = vec![];
    if let Some(v) = version {
        headers.push(("a2a-version", v.to_owned()));
    }
    let req = Req {
        method: Method::POST,
        path: "/a2a/v1".into(),
        body: Some((content_type, body)),
        auth: token.map(|t| format!("Bearer {t}")),
        host: None,
        headers,
    };
    t.fetch(req, &t.node.peer_url).await
}

fn rpc(method: &str, params: Value) -> Vec<u8> {
    to_bytes(&json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": params}))
}

/// A JSON-RPC refusal: HTTP 200, the JSON-RPC error `code` with a message, nothing stored.
fn rpc_refused(t: &Target, what: &str, code: i64, r: &Reply, before: &Counts) {
    assert_eq!(r.status, 200, "{what}: {}", r.text);
    assert_eq!(
        (r.body["jsonrpc"].as_str(), r.body["error"]["code"].as_i64()),
        (Some("2.0"), Some(code)),
        "{what}: {}",
        r.text
    );
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", r.text);
    assert!(r.body.get("result").is_none(), "{what}: {}", r.text);
    assert_eq!(&t.counts(), before, "{what}: nothing may be stored");
}

/// A `SendMessage` of `text` under `message_id`, answered at once.
fn send_message(message_id: &str, text: &str) -> Value {
    json!({"message": {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]},
           "configuration": {"returnImmediately": true}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a2a_requests_out_of_shape_or_out_of_turn_get_their_json_rpc_code_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "").await;
    let issue = |name: &'static str| {
        let client = t.node.client.clone();
        async move {
            let issued = client.add_a2a_client(name).await.expect("issue");
            std::fs::read_to_string(issued.token_file.expect("token file")).expect("token").trim().to_owned()
        }
    };
    let (token, rival) = (issue("planner").await, issue("rival").await);
    // A contact's task, which no A2A client may reach either.
    let fake = t.contact("mallory", 0x01).await;
    let contacts = new_task_id();
    let create = json!({"task_id": contacts, "op": "create", "text": "a contact's"});
    Target::taken("a contact's delegation", &t.send(&t.task_step(&fake, &create)).await);
    let json = "application/json";

    // The public card, and a task made and read back.
    let card = t.peer(Method::GET, "/.well-known/agent-card.json", None).await;
    assert_eq!((card.status, card.body["name"].as_str()), (200, Some("target")), "{}", card.text);
    let made = a2a(&t, Some(&token), rpc("SendMessage", send_message("m1", "hello")), json, None).await;
    let task_id =
        made.body["result"]["task"]["id"].as_str().unwrap_or_else(|| panic!("a task: {}", made.text)).to_owned();
    let got = a2a(&t, Some(&token), rpc("GetTask", json!({"id": task_id})), json, None).await;
    assert_eq!(got.body["result"]["id"], task_id.as_str(), "{}", got.text);
    let rivals = a2a(&t, Some(&rival), rpc("SendMessage", send_message("r1", "mine")), json, None).await;
    let rivals = rivals.body["result"]["task"]["id"].as_str().expect("the rival's task").to_owned();
    let ended = a2a(&t, Some(&token), rpc("SendMessage", send_message("m2", "soon over")), json, None).await;
    let ended = ended.body["result"]["task"]["id"].as_str().expect("a task").to_owned();
    let canceled = a2a(&t, Some(&token), rpc("CancelTask", json!({"id": ended})), json, None).await;
    assert_eq!(canceled.body["result"]["status"]["state"], "TASK_STATE_CANCELED", "{}", canceled.text);
    let before = t.counts();

    // HTTP refusals: the token first, then the content type and size.
    let huge = rpc("SendMessage", send_message("big", &"x".repeat(300 * 1024)));
    let cases = [
        // (Small bodies: the node answers 401 without reading the body, then closes.)
        ("no token, not JSON", None, b"{".to_vec(), json, 401, "unauthorized"),
        ("no token, a wrong content type", None, rpc("ListTasks", json!({})), "text/plain", 401, "unauthorized"),
        ("a forged token", Some("a2a_forged"), rpc("ListTasks", json!({})), json, 401, "unauthorized"),
        (
            "a wrong content type",
            Some(token.as_str()),
            rpc("ListTasks", json!({})),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        ("no content type", Some(token.as_str()), rpc("ListTasks", json!({})), "", 415, "unsupported_media_type"),
        ("a body too large", Some(token.as_str()), huge, json, 413, "too_large"),
    ];
    for (what, token, body, content_type, status, code) in cases {
        let r = a2a(&t, token, body, content_type, None).await;
        t.refused(what, status, code, &r, &before);
        if status == 401 {
            assert_eq!(r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"), "{what}");
        }
    }
    let r = t.peer(Method::GET, "/a2a/v1", None).await;
    assert_eq!((r.status, r.headers.get("allow").and_then(|v| v.to_str().ok())), (405, Some("POST")), "{}", r.text);
    let r = t.peer(Method::POST, "/.well-known/agent-card.json", Some((json, b"{}".to_vec()))).await;
    assert_eq!((r.status, r.headers.get("allow").and_then(|v| v.to_str().ok())), (405, Some("GET,HEAD")), "{}", r.text);
    assert_eq!(t.counts(), before);

    // JSON-RPC refusals.
    let r = a2a(&t, Some(&token), b"{\"jsonrpc\": \"2.0\", \"method\"".to_vec(), json, None).await;
    rpc_refused(&t, "not JSON", -32700, &r, &before);
    assert_eq!(r.body["id"], Value::Null, "{}", r.text);
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": send_message("b1", "batched")}]);
    let envelope = |v: Value| to_bytes(&v);
    let invalid = [
        ("a batch", envelope(batch)),
        ("an empty batch", envelope(json!([]))),
        ("a string", envelope(json!("SendMessage"))),
        ("a number", envelope(json!(42))),
        ("null", envelope(Value::Null)),
        ("jsonrpc 1.0", envelope(json!({"jsonrpc": "1.0", "id": 1, "method": "ListTasks"}))),
        ("no jsonrpc", envelope(json!({"id": 1, "method": "SendMessage", "params": send_message("n1", "x")}))),
        ("no method", envelope(json!({"jsonrpc": "2.0", "id": 1}))),
        ("a method that is not a string", envelope(json!({"jsonrpc": "2.0", "id": 1, "method": 7}))),
    ];
    for (what, body) in invalid {
        rpc_refused(&t, what, -32600, &a2a(&t, Some(&token), body, json, None).await, &before);
    }
    let message = |m: Value| json!({"message": m});
    let part = json!([{"text": "x"}]);
    let params = [
        ("SendMessage without params", "SendMessage", Value::Null, -32602),
        ("params that are an array", "SendMessage", json!([send_message("p1", "x")]), -32602),
        ("a message that is a string", "SendMessage", message(json!("hello")), -32602),
        ("a message without messageId", "SendMessage", message(json!({"parts": part})), -32602),
        (
            "a messageId over 128 characters",
            "SendMessage",
            message(json!({"messageId": "m".repeat(129), "parts": part})),
            -32602,
        ),
        ("a message without parts", "SendMessage", message(json!({"messageId": "p2"})), -32602),
        ("parts that are not a list", "SendMessage", message(json!({"messageId": "p3", "parts": "x"})), -32602),
        ("an empty text", "SendMessage", message(json!({"messageId": "p4", "parts": [{"text": ""}]})), -32602),
        (
            "a contextId over 128 characters",
            "SendMessage",
            message(json!({"messageId": "p5", "contextId": "c".repeat(129), "parts": part})),
            -32602,
        ),
        ("a file part", "SendMessage", message(json!({"messageId": "p6", "parts": [{"raw": "AA=="}]})), -32005),
        (
            "a message to no task",
            "SendMessage",
            message(json!({"messageId": "p7", "taskId": zeros("task"), "parts": part})),
            -32001,
        ),
        (
            "a message to another client's task",
            "SendMessage",
            message(json!({"messageId": "p8", "taskId": rivals, "parts": part})),
            -32001,
        ),
        (
            "a message in another context",
            "SendMessage",
            message(json!({"messageId": "p9", "taskId": task_id, "contextId": "elsewhere", "parts": part})),
            -32602,
        ),
        (
            "a message to a final task",
            "SendMessage",
            message(json!({"messageId": "p10", "taskId": ended, "parts": part})),
            -32004,
        ),
        ("GetTask without id", "GetTask", json!({}), -32602),
        ("GetTask with a number", "GetTask", json!({"id": 5}), -32602),
        ("GetTask of no task", "GetTask", json!({"id": zeros("task")}), -32001),
        ("GetTask of another client's task", "GetTask", json!({"id": rivals}), -32001),
        ("GetTask of a contact's task", "GetTask", json!({"id": contacts}), -32001),
        ("CancelTask of a contact's task", "CancelTask", json!({"id": contacts}), -32001),
        ("SubscribeToTask of a contact's task", "SubscribeToTask", json!({"id": contacts}), -32001),
        (
            "a message to a contact's task",
            "SendMessage",
            message(json!({"messageId": "p11", "taskId": contacts, "parts": part})),
            -32001,
        ),
        ("ListTasks with a page token not ours", "ListTasks", json!({"pageToken": "x"}), -32602),
        ("ListTasks with an unknown status", "ListTasks", json!({"status": "DONE"}), -32602),
        ("CancelTask without id", "CancelTask", json!({}), -32602),
        ("CancelTask of no task", "CancelTask", json!({"id": "task_X"}), -32001),
        ("CancelTask of a final task", "CancelTask", json!({"id": ended}), -32002),
        ("SubscribeToTask of no task", "SubscribeToTask", json!({"id": zeros("task")}), -32001),
        ("SubscribeToTask of a final task", "SubscribeToTask", json!({"id": ended}), -32004),
        ("an unknown method", "DeleteTask", json!({"id": task_id}), -32601),
        ("push notifications", "CreateTaskPushNotificationConfig", json!({}), -32003),
        ("the extended card", "GetExtendedAgentCard", json!({}), -32007),
    ];
    for (what, method, params, code) in params {
        let body = if params.is_null() {
            to_bytes(&json!({"jsonrpc": "2.0", "id": "r1", "method": method}))
        } else {
            rpc(method, params)
        };
        let r = a2a(&t, Some(&token), body, json, None).await;
        rpc_refused(&t, what, code, &r, &before);
        assert_eq!(r.body["id"], "r1", "{what}: the answer carries the request's id");
    }
    let r = a2a(&t, Some(&token), rpc("SendMessage", send_message("v2", "x")), json, Some("2.0")).await;
    rpc_refused(&t, "A2A version 2", -32009, &r, &before);

    // A contact cannot reach an A2A client's task by its id.
    let update = json!({"task_id": task_id, "op": "update", "seq": 1, "state": "completed"});
    t.refused(
        "a contact reporting on an A2A task",
        404,
        "unknown_task",
        &t.send(&t.task_step(&fake, &update)).await,
        &before,
    );
    let create = json!({"task_id": task_id, "op": "create", "text": "mine now"});
    t.refused(
        "a contact's task under an A2A task's id",
        409,
        "duplicate_task",
        &t.send(&t.task_step(&fake, &create)).await,
        &before,
    );
}

/// Everything the control API tests need in place: calls, tasks and transfers both ways with
/// a contact, and an open escalation.
struct Scene {
    fake: Fake,
    out_call: String,
    in_call: String,
    out_task: String,
    in_task: String,
    out_file: String,
    in_file: String,
    escalation: String,
    path: String,
}

async fn scene(t: &Target, dir: &Path) -> Scene {
    let fake = t.contact("mallory", 0x01).await;
    let args = CallArgs { to: fake.agent_id(), topic: "ours".into(), ring_secs: None };
    let out_call = t.node.client.call(&args).await.expect("call").call.call_id;
    let in_call = new_call_id();
    let invite = json!({"call_id": in_call, "op": "invite", "topic": "theirs", "ring_until": now_ms() + 600_000});
    Target::taken("an invitation", &t.send(&t.call_step(&fake, &invite)).await);
    let args = DelegateArgs { to: fake.agent_id(), text: "ours".into(), ..Default::default() };
    let out_task = t.node.client.delegate(&args).await.expect("delegate").task.task_id;
    let in_task = new_task_id();
    let create = json!({"task_id": in_task, "op": "create", "text": "theirs"});
    Target::taken("a delegation", &t.send(&t.task_step(&fake, &create)).await);
    let path = a_file(dir, "ours.bin", 1000);
    let args = SendFileArgs { to: fake.agent_id(), path: path.clone(), name: None, call_id: None };
    let out_file = t.node.client.send_file(&args).await.expect("send file").transfer.transfer_id;
    let in_file = new_transfer_id();
    let offer = json!({"transfer_id": in_file, "op": "offer", "name": "theirs.txt", "size": 10,
                       "sha256": "a".repeat(64), "chunk_size": 65536, "key": TransferKey::generate().to_base64()});
    Target::taken("an offer", &t.send(&t.file_step(&fake, &offer)).await);
    let args = EscalateArgs { conversation_id: out_call.clone(), reason: "may I?".into(), options: vec![] };
    let escalation = t.node.client.escalate(&args).await.expect("escalate").escalation.escalation_id;
    Scene { fake, out_call, in_call, out_task, in_task, out_file, in_file, escalation, path }
}

#[tokio::test(flavor = "multi_thread")]
async fn control_routes_of_calls_tasks_files_and_escalations_refuse_bad_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small limits make bodies over them cheap to send.
    let t = Target::start(dir.path(), "max_text_bytes = 1000\nmax_batch_bytes = 262144\n").await;
    let s = scene(&t, dir.path()).await;
    let to = s.fake.agent_id();
    let before = t.counts();

    // Each route with a body: a body it takes (never sent here), the member to pad, and a size
    // over the route's limit (64 KiB, or a bound derived from max_text_bytes or max_batch_bytes).
    let routes: Vec<(String, Value, &str, usize)> = vec![
        ("/control/calls".into(), json!({"to": to, "topic": "t"}), "topic", 70_000),
        (format!("/control/calls/{}/answer", s.in_call), json!({"accept": true, "reason": "r"}), "reason", 70_000),
        (format!("/control/calls/{}/say", s.out_call), json!({"text": "hi"}), "text", 80_000),
        // An optional body may be up to 1 MiB; just over it, the node has read it all when it answers.
        (format!("/control/calls/{}/end", s.out_call), json!({"reason": "r"}), "reason", 1_048_600),
        ("/control/tasks".into(), json!({"to": to, "text": "t"}), "text", 150_000),
        (format!("/control/tasks/{}/update", s.in_task), json!({"state": "working", "text": "t"}), "text", 270_000),
        (format!("/control/tasks/{}/message", s.out_task), json!({"text": "t"}), "text", 80_000),
        ("/control/files".into(), json!({"to": to, "path": s.path, "name": "n"}), "name", 70_000),
        (format!("/control/files/{}/cancel", s.in_file), json!({"reason": "r"}), "reason", 1_048_600),
        ("/control/escalations".into(), json!({"conversation_id": s.in_call, "reason": "r"}), "reason", 70_000),
        (format!("/control/escalations/{}/resolve", s.escalation), json!({"answer": "a"}), "answer", 70_000),
        ("/control/a2a/clients".into(), json!({"name": "n"}), "name", 5_000),
    ];
    for (path, good, pad, over) in &routes {
        let send =
            |content_type: &'static str, body: Vec<u8>| t.control(Method::POST, path, Some((content_type, body)));
        let text = to_bytes(good);
        t.refused(
            &format!("{path}: not JSON"),
            400,
            "malformed",
            &send("application/json", b"{to:".to_vec()).await,
            &before,
        );
        let cut = text[..text.len() - 2].to_vec();
        t.refused(&format!("{path}: truncated"), 400, "malformed", &send("application/json", cut).await, &before);
        let mut extra = good.clone();
        extra["admin"] = json!(true);
        t.refused(
            &format!("{path}: an unknown member"),
            400,
            "malformed",
            &send("application/json", to_bytes(&extra)).await,
            &before,
        );
        let mut wrong = good.clone();
        wrong[*pad] = json!(["not", "a", "string"]);
        t.refused(
            &format!("{path}: a member of the wrong type"),
            400,
            "malformed",
            &send("application/json", to_bytes(&wrong)).await,
            &before,
        );
        let r = send("text/plain", text.clone()).await;
        t.refused(&format!("{path}: text/plain"), 415, "unsupported_media_type", &r, &before);
        let r = send("application/x-www-form-urlencoded", b"to=x".to_vec()).await;
        t.refused(&format!("{path}: a form"), 415, "unsupported_media_type", &r, &before);
        let mut big = good.clone();
        big[*pad] = json!("x".repeat(*over));
        t.refused(
            &format!("{path}: over its limit"),
            413,
            "too_large",
            &send("application/json", to_bytes(&big)).await,
            &before,
        );
    }

    // The token and the Host, on every route of the groups.
    let gets = [
        "/control/calls".to_owned(),
        format!("/control/calls/{}", s.out_call),
        "/control/tasks".into(),
        format!("/control/tasks/{}", s.in_task),
        "/control/files".into(),
        format!("/control/files/{}", s.in_file),
        "/control/escalations".into(),
        "/control/a2a/clients".into(),
        "/control/events".into(),
        "/v1/events?after=0".into(),
    ];
    let mut requests: Vec<(Method, String, Option<Vec<u8>>)> =
        gets.iter().map(|p| (Method::GET, p.clone(), None)).collect();
    requests.extend(routes.iter().map(|(path, good, _, _)| (Method::POST, path.clone(), Some(to_bytes(good)))));
    requests.push((Method::POST, format!("/control/files/{}/accept", s.in_file), None));
    requests.push((Method::POST, format!("/control/tasks/{}/cancel", s.out_task), None));
    requests.push((Method::DELETE, "/control/a2a/clients/n".into(), None));
    let port = t.control_url.rsplit(':').next().expect("port").to_owned();
    let auths = [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Basic {}", t.token)),
        Some(format!("Bearer {} x", t.token)),
        Some(format!("Bearer {}x", t.token)),
        Some(format!("Bearer{}", t.token)),
        Some(t.token.clone()),
    ];
    for (method, path, body) in &requests {
        let req = |auth: Option<String>, host: Option<String>| Req {
            method: method.clone(),
            path: path.clone(),
            body: body.clone().map(|b| ("application/json", b)),
            auth,
            host,
            headers: vec![],
        };
        for auth in &auths {
            let r = t.control_req(req(auth.clone(), None)).await;
            t.refused(&format!("{method} {path} with {auth:?}"), 401, "unauthorized", &r, &before);
            assert_eq!(r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        }
        for host in [format!("evil.example:{port}"), format!("127.0.0.1.evil.example:{port}"), "127.0.0.1:1".into()] {
            let r = t.control_req(req(Some(t.bearer()), Some(host.clone()))).await;
            t.refused(&format!("{method} {path} for Host {host}"), 421, "wrong_host", &r, &before);
        }
    }

    // Unknown ids, or ids out of shape, on every route that names one.
    let unknown =
        |prefix: &str| [zeros(prefix), format!("{prefix}_X"), zeros(prefix).to_uppercase(), "..%2Fstatus".into()];
    for id in unknown("call") {
        let cases = [
            (Method::GET, format!("/control/calls/{id}"), None),
            (Method::POST, format!("/control/calls/{id}/answer"), Some(json!({"accept": true}))),
            (Method::POST, format!("/control/calls/{id}/say"), Some(json!({"text": "hi"}))),
            (Method::POST, format!("/control/calls/{id}/end"), Some(json!({}))),
        ];
        for (method, path, body) in cases {
            let r = t.control(method.clone(), &path, body.map(|b| ("application/json", to_bytes(&b)))).await;
            t.refused(&format!("{method} {path}"), 404, "unknown_call", &r, &before);
        }
    }
    for id in unknown("task") {
        let cases = [
            (Method::GET, format!("/control/tasks/{id}"), None),
            (Method::POST, format!("/control/tasks/{id}/update"), Some(json!({"state": "working"}))),
            (Method::POST, format!("/control/tasks/{id}/message"), Some(json!({"text": "x"}))),
            (Method::POST, format!("/control/tasks/{id}/cancel"), None),
        ];
        for (method, path, body) in cases {
            let r = t.control(method.clone(), &path, body.map(|b| ("application/json", to_bytes(&b)))).await;
            t.refused(&format!("{method} {path}"), 404, "unknown_task", &r, &before);
        }
    }
    for id in unknown("file") {
        let cases = [
            (Method::GET, format!("/control/files/{id}"), None),
            (Method::POST, format!("/control/files/{id}/accept"), None),
            (Method::POST, format!("/control/files/{id}/cancel"), Some(json!({}))),
        ];
        for (method, path, body) in cases {
            let r = t.control(method.clone(), &path, body.map(|b| ("application/json", to_bytes(&b)))).await;
            t.refused(&format!("{method} {path}"), 404, "unknown_transfer", &r, &before);
        }
    }
    for id in unknown("esc") {
        let r = t.post(&format!("/control/escalations/{id}/resolve"), &json!({"answer": "yes"})).await;
        t.refused(&format!("resolving {id}"), 404, "not_found", &r, &before);
    }
    let cases = [
        (
            "an escalation about no call",
            "/control/escalations",
            json!({"conversation_id": zeros("call"), "reason": "r"}),
            404,
            "not_found",
        ),
        (
            "an escalation about a call id out of shape",
            "/control/escalations",
            json!({"conversation_id": "call_X", "reason": "r"}),
            404,
            "not_found",
        ),
        (
            "an escalation about a transfer",
            "/control/escalations",
            json!({"conversation_id": s.in_file, "reason": "r"}),
            404,
            "not_found",
        ),
        ("a call to no one", "/control/calls", json!({"to": "nobody-at-all"}), 404, "not_found"),
        ("a task for no one", "/control/tasks", json!({"to": "nobody-at-all", "text": "x"}), 404, "not_found"),
        (
            "a task id out of shape",
            "/control/tasks",
            json!({"to": to, "text": "x", "task_id": "task_X"}),
            400,
            "invalid_argument",
        ),
        (
            "a task id in upper case",
            "/control/tasks",
            json!({"to": to, "text": "x", "task_id": zeros("task").to_uppercase()}),
            400,
            "invalid_argument",
        ),
        (
            "a file in a call of no one",
            "/control/files",
            json!({"to": to, "path": s.path, "call_id": zeros("call")}),
            404,
            "unknown_call",
        ),
        (
            "a file in a call id out of shape",
            "/control/files",
            json!({"to": to, "path": s.path, "call_id": "call_X"}),
            400,
            "invalid_argument",
        ),
        ("a relative path", "/control/files", json!({"to": to, "path": "ours.bin"}), 400, "invalid_argument"),
        (
            "an A2A client name out of shape",
            "/control/a2a/clients",
            json!({"name": "../evil"}),
            400,
            "invalid_argument",
        ),
        ("an empty A2A client name", "/control/a2a/clients", json!({"name": ""}), 400, "invalid_argument"),
    ];
    for (what, path, body, status, code) in cases {
        t.refused(what, status, code, &t.post(path, &body).await, &before);
    }
    let r = t.control(Method::DELETE, "/control/a2a/clients/nobody", None).await;
    t.refused("revoking no client", 404, "not_found", &r, &before);

    // Steps out of turn, and arguments out of shape.
    let long = "x".repeat(1001);
    let options: Vec<String> = (0..17).map(|n| format!("o{n}")).collect();
    let cases = [
        (
            "answering our own call",
            format!("/control/calls/{}/answer", s.out_call),
            json!({"accept": true}),
            409,
            "call_state",
        ),
        (
            "speaking in our ringing call",
            format!("/control/calls/{}/say", s.out_call),
            json!({"text": "hi"}),
            409,
            "call_state",
        ),
        (
            "speaking in a call not answered",
            format!("/control/calls/{}/say", s.in_call),
            json!({"text": "hi"}),
            409,
            "call_state",
        ),
        ("hanging up a call not answered", format!("/control/calls/{}/end", s.in_call), json!({}), 409, "call_state"),
        (
            "a topic over 1000 characters",
            "/control/calls".into(),
            json!({"to": to, "topic": long}),
            400,
            "invalid_argument",
        ),
        (
            "a reason over 1000 characters",
            format!("/control/calls/{}/answer", s.in_call),
            json!({"accept": false, "reason": long}),
            400,
            "invalid_argument",
        ),
        (
            "a hang-up reason over 1000",
            format!("/control/calls/{}/end", s.out_call),
            json!({"reason": long}),
            400,
            "invalid_argument",
        ),
        ("an empty line", format!("/control/calls/{}/say", s.in_call), json!({"text": ""}), 400, "empty_message"),
        (
            "a line over max_text_bytes",
            format!("/control/calls/{}/say", s.in_call),
            json!({"text": long}),
            413,
            "too_large",
        ),
        (
            "an inline file out of shape",
            format!("/control/calls/{}/say", s.in_call),
            json!({"text": "sendfile a %%%"}),
            400,
            "invalid_argument",
        ),
        (
            "reporting on our own task",
            format!("/control/tasks/{}/update", s.out_task),
            json!({"state": "working"}),
            409,
            "task_state",
        ),
        (
            "answering a task delegated to us",
            format!("/control/tasks/{}/message", s.in_task),
            json!({"text": "x"}),
            409,
            "task_state",
        ),
        (
            "back to submitted",
            format!("/control/tasks/{}/update", s.in_task),
            json!({"state": "submitted"}),
            400,
            "invalid_argument",
        ),
        (
            "a state that is none",
            format!("/control/tasks/{}/update", s.in_task),
            json!({"state": "done"}),
            400,
            "malformed",
        ),
        (
            "an artifact without parts",
            format!("/control/tasks/{}/update", s.in_task),
            json!({"state": "working", "artifacts": [{"artifact_id": "a", "parts": []}]}),
            400,
            "invalid_argument",
        ),
        ("an empty task", "/control/tasks".into(), json!({"to": to, "text": ""}), 400, "empty_message"),
        ("a task text over max_text_bytes", "/control/tasks".into(), json!({"to": to, "text": long}), 413, "too_large"),
        (
            "task data over max_text_bytes",
            "/control/tasks".into(),
            json!({"to": to, "text": "x", "data": {"d": long}}),
            413,
            "too_large",
        ),
        (
            "an empty answer to a task",
            format!("/control/tasks/{}/message", s.out_task),
            json!({"text": ""}),
            400,
            "empty_message",
        ),
        (
            "a cancel reason over 1000",
            format!("/control/files/{}/cancel", s.in_file),
            json!({"reason": long}),
            400,
            "invalid_argument",
        ),
        (
            "an empty escalation",
            "/control/escalations".into(),
            json!({"conversation_id": s.in_call, "reason": "  "}),
            400,
            "invalid_argument",
        ),
        (
            "an escalation over 1000",
            "/control/escalations".into(),
            json!({"conversation_id": s.in_call, "reason": long}),
            400,
            "invalid_argument",
        ),
        (
            "17 options",
            "/control/escalations".into(),
            json!({"conversation_id": s.in_call, "reason": "r", "options": options}),
            400,
            "invalid_argument",
        ),
        (
            "an empty option",
            "/control/escalations".into(),
            json!({"conversation_id": s.in_call, "reason": "r", "options": ["yes", " "]}),
            400,
            "invalid_argument",
        ),
        (
            "an empty answer",
            format!("/control/escalations/{}/resolve", s.escalation),
            json!({"answer": " "}),
            400,
            "invalid_argument",
        ),
        (
            "an answer over 1000",
            format!("/control/escalations/{}/resolve", s.escalation),
            json!({"answer": long}),
            400,
            "invalid_argument",
        ),
    ];
    for (what, path, body, status, code) in cases {
        t.refused(what, status, code, &t.post(&path, &body).await, &before);
    }
    let r = t.control(Method::POST, &format!("/control/tasks/{}/cancel", s.in_task), None).await;
    t.refused("cancelling a task delegated to us", 409, "task_state", &r, &before);
    let r = t.control(Method::POST, &format!("/control/files/{}/accept", s.out_file), None).await;
    t.refused("accepting our own offer", 409, "transfer_state", &r, &before);

    // Queries out of shape.
    let queries = [
        ("/control/calls?limit=abc", 400, "malformed"),
        ("/control/calls?limit=-1", 400, "malformed"),
        ("/control/calls?state=humming", 400, "malformed"),
        ("/control/calls?open=maybe", 400, "malformed"),
        ("/control/calls?peer=nobody-at-all", 404, "not_found"),
        ("/control/tasks?direction=sideways", 400, "malformed"),
        ("/control/tasks?state=done", 400, "malformed"),
        ("/control/tasks?limit=4294967296", 400, "malformed"),
        ("/control/files?direction=up", 400, "malformed"),
        ("/control/files?open=2", 400, "malformed"),
        ("/control/files?peer=nobody-at-all", 404, "not_found"),
        ("/control/escalations?open=yes", 400, "malformed"),
        ("/control/escalations?limit=x", 400, "malformed"),
        ("/control/events?after=x", 400, "malformed"),
        ("/control/events?after=1e3", 400, "malformed"),
        ("/control/events?limit=4294967296", 400, "malformed"),
        ("/v1/events?after=x", 400, "malformed"),
        ("/v1/events?after=", 400, "malformed"),
        ("/v1/events?after=9223372036854775808", 400, "malformed"),
    ];
    for (path, status, code) in queries {
        t.refused(path, status, code, &t.get(path).await, &before);
    }
    for id in ["abc", "-1", "1.5", " ", "9223372036854775808"] {
        let req = Req {
            method: Method::GET,
            path: "/v1/events".into(),
            body: None,
            auth: Some(t.bearer()),
            host: None,
            headers: vec![("last-event-id", id.to_owned())],
        };
        t.refused(&format!("Last-Event-ID {id:?}"), 400, "malformed", &t.control_req(req).await, &before);
    }

    // What is in shape is served: pages, a stream from a cursor, a step in turn.
    let page = t.get("/control/events?after=0&limit=3").await;
    assert_eq!((page.status, page.body["events"].as_array().map(Vec::len)), (200, Some(3)), "{}", page.text);
    assert_eq!(page.body["events"][0]["seq"], 1);
    let calls = t.get("/control/calls?open=true&limit=10").await;
    assert_eq!((calls.status, calls.body["calls"].as_array().map(Vec::len)), (200, Some(2)), "{}", calls.text);
    let mut stream = t
        .http
        .get(format!("{}/v1/events", t.control_url))
        .bearer_auth(&t.token)
        .header("last-event-id", "0")
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    let mut frame = String::new();
    while !frame.contains("\n\n") {
        let chunk = tokio::time::timeout(WAIT, stream.chunk()).await.expect("a frame in time").expect("read");
        frame.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is open")));
    }
    assert!(frame.starts_with("id: 1\n"), "{frame}");
    drop(stream);
    assert_eq!(t.counts(), before, "reading stores nothing");
    let answered = t.post(&format!("/control/calls/{}/answer", s.in_call), &json!({"accept": true})).await;
    assert_eq!((answered.status, answered.body["call"]["state"].as_str()), (200, Some("active")), "{}", answered.text);
    let said = t.post(&format!("/control/calls/{}/say", s.in_call), &json!({"text": "x".repeat(1000)})).await;
    Target::taken("a line of max_text_bytes", &said);
    let resolved = t.post(&format!("/control/escalations/{}/resolve", s.escalation), &json!({"answer": "yes"})).await;
    assert_eq!(resolved.body["escalation"]["state"], "resolved", "{}", resolved.text);
    let issued = t.post("/control/a2a/clients", &json!({"name": "n"})).await;
    Target::taken("an A2A client", &issued);
    let before = t.counts();
    let again = t.post("/control/a2a/clients", &json!({"name": "n"})).await;
    t.refused("an A2A client name taken", 409, "invalid_argument", &again, &before);
}

/// `agentmesh mcp --http 127.0.0.1:0` for `home`: the child, its URL and its token.
async fn mcp_http(home: &Path) -> (tokio::process::Child, String, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(exe())
        .arg("--home")
        .arg(home)
        .args(["--json", "mcp", "--http", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agentmesh mcp --http");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("stderr line") {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["event"] == "ready"
            {
                return v;
            }
        }
        panic!("agentmesh mcp --http exited before it was ready");
    })
    .await
    .expect("ready in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let token = std::fs::read_to_string(home.join("mcp.token")).expect("token").trim().to_owned();
    (child, ready["url"].as_str().expect("url").to_owned(), token)
}

/// The JSON-RPC message with `id` among the `data:` lines of an SSE body, or the body itself
/// when it is JSON.
async fn mcp_answer(response: reqwest::Response, id: i64) -> Value {
    let mut response = response;
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(WAIT, response.chunk()).await.expect("an answer in time").expect("read");
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return v;
        }
        let found = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v["id"] == id);
        if let Some(v) = found {
            return v;
        }
    }
    panic!("no answer to request {id} in: {text}");
}

/// A JSON-RPC call to `name` with `arguments` (`tools/call` params).
fn tool(name: &str, arguments: Value) -> Value {
    json!({"name": name, "arguments": arguments})
}

/// An MCP session over streamable HTTP at protocol 2025-11-25, driven by hand.
struct McpSession<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
    session: String,
    next_id: std::sync::atomic::AtomicI64,
}

impl<'a> McpSession<'a> {
    /// `initialize`, then `notifications/initialized`.
    async fn open(http: &'a reqwest::Client, url: &'a str, token: &'a str) -> McpSession<'a> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let mut mcp = McpSession { http, url, token, session: String::new(), next_id: 100.into() };
        let r = mcp.post(&init).await;
        assert_eq!(r.status().as_u16(), 200);
        mcp.session = r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).expect("a session").to_owned();
        let answer = mcp_answer(r, 1).await;
        assert_eq!(answer["result"]["protocolVersion"], "2025-11-25", "{answer}");
        let r = mcp.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        assert_eq!(r.status().as_u16(), 202);
        mcp
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        let mut r = self
            .http
            .post(self.url)
            .bearer_auth(self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(to_bytes(body));
        if !self.session.is_empty() {
            r = r.header("mcp-session-id", &self.session).header("mcp-protocol-version", "2025-11-25");
        }
        r.send().await.expect("MCP request")
    }

    /// Sends a request (it carries its `id`) and returns the answer to it.
    async fn request(&self, body: Value) -> Value {
        let id = body["id"].as_i64().expect("an id");
        let r = self.post(&body).await;
        assert_eq!(r.status().as_u16(), 200, "{body}");
        mcp_answer(r, id).await
    }

    /// Calls tool `name` and returns the answer.
    async fn tool(&self, name: &str, arguments: &Value) -> Value {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.request(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": tool(name, arguments.clone())}),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_http_refuses_bad_requests_before_and_inside_a_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "").await;
    let fake = t.contact("mallory", 0x01).await;
    let (mut child, url, token) = mcp_http(&t.node.home).await;
    let (path, base) = ("/mcp", url.trim_end_matches("/mcp").to_owned());
    let accept = ("accept", "application/json, text/event-stream".to_owned());
    let init = to_bytes(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    let req = |auth: Option<String>, body: Option<(&'static str, Vec<u8>)>, headers: Vec<(&'static str, String)>| Req {
        method: Method::POST,
        path: path.to_owned(),
        body,
        auth,
        host: None,
        headers,
    };
    let before = t.counts();

    // The token first: 401 with a JSON body, whatever else is wrong.
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {token} x")),
        Some(format!("Bearer {token}0")),
        Some(token.clone()),
    ] {
        let reply =
            t.fetch(req(auth.clone(), Some(("application/json", init.clone())), vec![accept.clone()]), &base).await;
        t.refused(&format!("MCP with {auth:?}"), 401, "unauthorized", &reply, &before);
        assert!(reply.headers.contains_key("www-authenticate"));
        let mut evil = req(auth.clone(), Some(("text/plain", b"{".to_vec())), vec![]);
        evil.host = Some("evil.example".into());
        t.refused(
            &format!("MCP with {auth:?}, a foreign Host, no JSON"),
            401,
            "unauthorized",
            &t.fetch(evil, &base).await,
            &before,
        );
    }
    let bearer = Some(format!("Bearer {token}"));
    // Refused by the transport (rmcp): statuses with plain-text bodies; nothing reaches the node.
    // rmcp answers a body that is not a JSON-RPC message with 415, as it does a wrong content
    // type (the MCP transport only asks for an HTTP error status).
    let mut foreign = req(bearer.clone(), Some(("application/json", init.clone())), vec![accept.clone()]);
    foreign.host = Some(format!("evil.example:{}", base.rsplit(':').next().expect("port")));
    let r = t.fetch(foreign, &base).await;
    assert_eq!(r.status, 403, "a Host that is not loopback (DNS rebinding): {}", r.text);
    let cases = [
        ("text/plain", req(bearer.clone(), Some(("text/plain", init.clone())), vec![accept.clone()]), 415),
        ("no Accept", req(bearer.clone(), Some(("application/json", init.clone())), vec![]), 406),
        (
            "not JSON",
            req(bearer.clone(), Some(("application/json", b"{\"jsonrpc\":".to_vec())), vec![accept.clone()]),
            415,
        ),
        (
            "not JSON-RPC",
            req(bearer.clone(), Some(("application/json", b"{\"hello\": 1}".to_vec())), vec![accept.clone()]),
            415,
        ),
        (
            "over 4 MiB",
            req(bearer.clone(), Some(("application/json", vec![b' '; 4 * 1024 * 1024 + 1])), vec![accept.clone()]),
            413,
        ),
        (
            "an unknown session",
            req(
                bearer.clone(),
                Some(("application/json", to_bytes(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})))),
                vec![accept.clone(), ("mcp-session-id", "no-such-session".into())],
            ),
            404,
        ),
    ];
    for (what, request, status) in cases {
        let r = t.fetch(request, &base).await;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert_eq!(t.counts(), before, "{what}: nothing stored");
    }

    // A session: requests out of shape, and tools the node refuses.
    let mcp = McpSession::open(&t.http, &url, &token).await;
    let protocol = [
        ("an unknown method", json!({"jsonrpc": "2.0", "id": 10, "method": "tools/destroy"}), -32601),
        (
            "an unknown tool",
            json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": tool("format_disk", json!({}))}),
            -32602,
        ),
    ];
    for (what, body, code) in protocol {
        let answer = mcp.request(body).await;
        assert_eq!(answer["error"]["code"].as_i64(), Some(code), "{what}: {answer}");
        assert_eq!(t.counts(), before, "{what}: nothing stored");
    }
    // A file outside every mcp_file_roots (there are none).
    let outside = a_file(dir.path(), "outside.txt", 10);
    let refusals = [
        ("answer", json!({"call_id": zeros("call"), "accept": true}), "unknown_call"),
        ("say", json!({"call_id": "call_X", "text": "hi"}), "unknown_call"),
        ("get_task", json!({"task_id": zeros("task")}), "unknown_task"),
        ("update_task", json!({"task_id": "task_X", "state": "working"}), "unknown_task"),
        ("update_task", json!({"task_id": zeros("task"), "state": "sideways"}), "invalid_argument"),
        ("delegate", json!({"to": fake.agent_id(), "text": "x", "task_id": "task_X"}), "invalid_argument"),
        ("delegate", json!({"to": fake.agent_id(), "text": ""}), "empty_message"),
        ("call", json!({"to": "nobody-at-all"}), "not_found"),
        ("escalate", json!({"conversation_id": zeros("call"), "reason": "why"}), "not_found"),
        ("send_file", json!({"to": fake.agent_id(), "path": outside}), "path_not_allowed"),
    ];
    for (name, arguments, code) in refusals {
        let answer = mcp.tool(name, &arguments).await;
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{name} {arguments}: {answer}");
        assert_eq!(result["structuredContent"]["error"]["code"], code, "{name} {arguments}: {answer}");
        assert_eq!(t.counts(), before, "{name} {arguments}: nothing stored");
    }
    // A tool in shape goes through.
    let answer = mcp.tool("delegate", &json!({"to": fake.agent_id(), "text": "over MCP"})).await;
    assert_eq!(answer["result"]["structuredContent"]["state"], "submitted", "{answer}");
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_bodies_that_are_json_arrays_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "").await;
    let s = scene(&t, dir.path()).await;
    let to = s.fake.agent_id();
    // serde takes a sequence for a struct (its members by position): an array must not pass for
    // an object, whatever it holds.
    let cases = [
        ("/control/calls".to_owned(), json!([to, "by position"])),
        (format!("/control/calls/{}/answer", s.in_call), json!([false, "by position"])),
        (format!("/control/calls/{}/end", s.out_call), json!([])),
        ("/control/tasks".into(), json!([to, "by position"])),
        (format!("/control/tasks/{}/update", s.in_task), json!(["working"])),
        (format!("/control/tasks/{}/message", s.out_task), json!(["by position"])),
        ("/control/files".into(), json!([to, s.path])),
        (format!("/control/files/{}/cancel", s.in_file), json!([])),
        ("/control/escalations".into(), json!([s.in_call, "by position"])),
        (format!("/control/escalations/{}/resolve", s.escalation), json!(["by position"])),
        ("/control/a2a/clients".into(), json!(["positional"])),
    ];
    let mut taken = Vec::new();
    for (path, body) in cases {
        let before = t.counts();
        let r = t.post(&path, &body).await;
        if (r.status, r.body["error"]["code"].as_str()) != (400, Some("malformed")) || t.counts() != before {
            taken.push(format!("POST {path} {body} -> {} {}", r.status, r.text));
        }
    }
    assert!(taken.is_empty(), "JSON arrays taken for objects:\n{}", taken.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_negative_after_is_refused_like_a_negative_last_event_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "").await;
    t.contact("mallory", 0x01).await;
    // A negative cursor is no more a cursor in the query than in Last-Event-ID.
    let r = t.http.get(format!("{}/v1/events?after=-1", t.control_url)).bearer_auth(&t.token).send().await;
    let mut r = r.expect("events");
    if r.status().as_u16() == 200 {
        let chunk = tokio::time::timeout(WAIT, r.chunk()).await.expect("a frame in time").expect("read");
        let frame = String::from_utf8_lossy(&chunk.unwrap_or_default()).into_owned();
        panic!("/v1/events?after=-1 was taken (Last-Event-ID: -1 is 400 malformed); its first frame: {frame:?}");
    }
    let before = t.counts();
    t.refused("/v1/events?after=-1", 400, "malformed", &Reply::of(r).await, &before);
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_tool_arguments_out_of_shape_are_refused_with_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Target::start(dir.path(), "").await;
    let (mut child, url, token) = mcp_http(&t.node.home).await;
    let mcp = McpSession::open(&t.http, &url, &token).await;
    let before = t.counts();
    // As README says of every failure: a tool result with `isError` and
    // `{"error":{"code":"invalid_argument",…}}` (not only a line of text, not a protocol error).
    let shapes = [
        ("answer", json!({"call_id": 5, "accept": "yes"})),
        ("delegate", json!({})),
        ("update_task", json!({"task_id": zeros("task"), "state": ["working"]})),
        ("escalate", json!({"conversation_id": zeros("call"), "reason": "r", "options": "yes,no"})),
    ];
    let mut wrong = Vec::new();
    for (name, arguments) in shapes {
        let answer = mcp.tool(name, &arguments).await;
        let result = &answer["result"];
        if result["isError"] != true || result["structuredContent"]["error"]["code"] != "invalid_argument" {
            wrong.push(format!("{name} {arguments} -> {answer}"));
        }
        assert_eq!(t.counts(), before, "{name} {arguments}: nothing stored");
    }
    let _ = child.kill().await;
    assert!(wrong.is_empty(), "arguments out of shape without an invalid_argument error:\n{}", wrong.join("\n"));
}
