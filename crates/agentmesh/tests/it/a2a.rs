//! The A2A 1.0 endpoint: the real `a2a-sdk` 1.3 client (PyPI) delegates, streams, answers,
//! lists, subscribes and cancels against a real node whose agent this test plays; callers
//! without the owner's token, with a revoked one or with another client's, reach nothing.

use agentmesh_api::control::UpdateTaskArgs;
use agentmesh_api::{Direction, Event, Side, TaskEntryKind, TaskState};
use agentmesh_client::{Client, StreamItem};
use agentmesh_core::task::{Artifact, Part};
use serde_json::{Value, json};

use crate::support::*;

fn text(id: &str, text: &str) -> Artifact {
    Artifact { artifact_id: id.into(), name: None, parts: vec![Part::Text { text: text.into() }] }
}

/// Plays the node's agent for tasks from A2A clients: "hello" → completed "echo: hello";
/// "stream me" → working, then two artifacts, then completed; "ask me" → asks back, then completes
/// with the answer; "slow" → working, never done.
async fn play_agent(client: Client) {
    let mut events = client.events(None).await.expect("events");
    while let Some(Ok(item)) = events.next().await {
        let StreamItem::Event(logged) = item else { continue };
        let Event::Task { task, entry: Some(entry) } = &logged.event else { continue };
        if task.direction != Direction::Incoming
            || entry.speaker != Side::Peer
            || !task.peer_id.as_str().starts_with("a2a.")
        {
            continue;
        }
        let update = |state, status: Option<&str>, artifacts| UpdateTaskArgs {
            state,
            text: status.map(str::to_owned),
            artifacts,
        };
        let steps = match (entry.kind, task.text.as_str()) {
            (TaskEntryKind::Create, "hello") => {
                vec![update(TaskState::Completed, None, vec![text("a", "echo: hello")])]
            }
            (TaskEntryKind::Create, "stream me") => vec![
                update(TaskState::Working, None, vec![]),
                update(TaskState::Working, None, vec![text("p1", "part one")]),
                update(TaskState::Completed, None, vec![text("p2", "part two")]),
            ],
            (TaskEntryKind::Create, "ask me") => vec![update(TaskState::InputRequired, Some("which color?"), vec![])],
            (TaskEntryKind::Message, "ask me") => {
                let answer = format!("color: {}", entry.text.as_deref().unwrap_or_default());
                vec![update(TaskState::Completed, None, vec![text("c", &answer)])]
            }
            (TaskEntryKind::Create, "slow") => vec![update(TaskState::Working, None, vec![])],
            _ => vec![],
        };
        for step in steps {
            client.update_task(&task.task_id, &step).await.expect("the agent reports");
        }
    }
}

/// A JSON-RPC call to the node's A2A endpoint with `token` (none: no `Authorization`).
async fn rpc(url: &str, token: Option<&str>, method: &str, params: Value) -> (u16, Option<String>, Value) {
    let http = agentmesh_node::net::client(&Default::default()).expect("http client");
    let mut request = http
        .post(format!("{url}/a2a/v1"))
        .header("content-type", "application/json")
        .header("a2a-version", "1.0")
        .body(json!({"jsonrpc": "2.0", "id": "1", "method": method, "params": params}).to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("A2A request");
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, challenge, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the a2a-sdk Python package from PyPI; .ci/run runs it"]
async fn the_a2a_sdk_client_delegates_streams_lists_and_cancels() {
    let python = python_with("a2a-sdk", "1.3.0", "the A2A client test");
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let issued = ok(&alice.home, &["a2a", "add-client", "ci"]);
    let token_file = issued["token_file"].as_str().expect("token file").to_owned();
    let agent = tokio::spawn(play_agent(alice.client.clone()));

    let config = json!({"base": alice.peer_url, "token_file": token_file});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/a2a_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(config.to_string())
        .output()
        .await
        .expect("run the a2a-sdk client");
    agent.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the a2a-sdk client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for check in ["card", "send", "stream", "get", "multi-turn", "list", "cancel", "errors", "auth"] {
        assert!(stdout.lines().any(|l| l == format!("ok {check}")), "{check} not checked:\n{stdout}");
    }

    // Our side: ordinary incoming tasks of peer a2a.ci, with their history.
    let tasks = alice.client.tasks(&Default::default()).await.expect("tasks").tasks;
    assert_eq!(tasks.len(), 4, "{tasks:#?}");
    assert!(tasks.iter().all(|t| t.peer_id.as_str() == "a2a.ci" && t.direction == Direction::Incoming));
}

#[tokio::test(flavor = "multi_thread")]
async fn a2a_clients_reach_only_their_own_tasks_with_the_owners_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let issued = ok(&alice.home, &["a2a", "add-client", "ci"]);
    let token_file = issued["token_file"].as_str().expect("token file").to_owned();
    assert!(!issued.to_string().contains("a2a_"), "the token is never in a reply: {issued}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).expect("token file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let token = std::fs::read_to_string(&token_file).expect("token");
    let token = token.trim();
    let made = json!({"message": {"messageId": "first", "role": "ROLE_USER", "parts": [{"text": "work"}]},
        "configuration": {"returnImmediately": true}});
    let (_, _, created) = rpc(&alice.peer_url, Some(token), "SendMessage", made).await;
    let task_id = created["result"]["task"]["id"].as_str().expect("a task").to_owned();
    let tasks = alice.client.tasks(&Default::default()).await.expect("tasks").tasks;
    assert!(tasks.iter().any(|t| t.task_id == task_id && t.peer_id.as_str() == "a2a.ci"), "{tasks:#?}");

    // Without the token, with another client's, or once revoked: nothing.
    let (status, challenge, _) = rpc(&alice.peer_url, None, "GetTask", json!({"id": task_id})).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
    let (status, _, _) = rpc(&alice.peer_url, Some("a2a_forged"), "ListTasks", json!({})).await;
    assert_eq!(status, 401);
    let other = ok(&alice.home, &["a2a", "add-client", "other"]);
    let other_token = std::fs::read_to_string(other["token_file"].as_str().expect("file")).expect("token");
    let (status, _, body) = rpc(&alice.peer_url, Some(&other_token), "GetTask", json!({"id": task_id})).await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (200, Some(-32001)),
        "another client's task is not found: {body}"
    );
    let (_, _, body) = rpc(&alice.peer_url, Some(&other_token), "ListTasks", json!({})).await;
    assert_eq!(body["result"]["tasks"], json!([]), "{body}");
    // A SendMessage repeated with its messageId (a retry) makes one task.
    let once = json!({"message": {"messageId": "retry-1", "role": "ROLE_USER", "parts": [{"text": "slow"}]},
        "configuration": {"returnImmediately": true}});
    let (_, _, first) = rpc(&alice.peer_url, Some(token), "SendMessage", once.clone()).await;
    let (_, _, again) = rpc(&alice.peer_url, Some(token), "SendMessage", once).await;
    let first_id = first["result"]["task"]["id"].as_str().expect("a task").to_owned();
    assert_eq!(again["result"]["task"]["id"].as_str(), Some(first_id.as_str()), "{again}");
    let (_, _, body) = rpc(&alice.peer_url, Some(&other_token), "CancelTask", json!({"id": first_id})).await;
    assert_eq!(body["error"]["code"], -32001, "another client cannot cancel it: {body}");
    let (_, _, body) = rpc(&alice.peer_url, Some(&other_token), "SubscribeToTask", json!({"id": first_id})).await;
    assert_eq!(body["error"]["code"], -32001, "nor follow it: {body}");
    let (_, _, body) = rpc(&alice.peer_url, Some(token), "NoSuchMethod", json!({})).await;
    assert_eq!(body["error"]["code"], -32601);
    let (_, _, body) = rpc(&alice.peer_url, Some(token), "CreateTaskPushNotificationConfig", json!({})).await;
    assert_eq!(body["error"]["code"], -32003);
    let file =
        json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"raw": "AA==", "filename": "x"}]}});
    let (_, _, body) = rpc(&alice.peer_url, Some(token), "SendMessage", file).await;
    assert_eq!(body["error"]["code"], -32005, "{body}");
    ok(&alice.home, &["a2a", "revoke", "ci"]);
    let (status, _, _) = rpc(&alice.peer_url, Some(token), "GetTask", json!({"id": task_id})).await;
    assert_eq!(status, 401, "a revoked token no longer works");
    let listed = ok(&alice.home, &["a2a", "clients"]);
    assert!(listed["clients"][0]["revoked_at"].is_i64(), "{listed}");

    // The card is public, and carries our signed card.
    let http = agentmesh_node::net::client(&Default::default()).expect("http client");
    let card: Value = http
        .get(format!("{}/.well-known/agent-card.json", alice.peer_url))
        .send()
        .await
        .expect("card")
        .json()
        .await
        .expect("json");
    assert_eq!(card["capabilities"]["extensions"][0]["params"]["agent_id"], alice.agent_id.as_str());
}

/// Opens a `SendStreamingMessage` stream for the client of `token`; returns the HTTP response
/// (its body unread) and its content type.
async fn open_stream(url: &str, token: &str, text: &str) -> reqwest::Response {
    let http = agentmesh_node::net::client(&Default::default()).expect("http client");
    let message =
        json!({"message": {"messageId": format!("m-{text}"), "role": "ROLE_USER", "parts": [{"text": text}]}});
    http.post(format!("{url}/a2a/v1"))
        .header("content-type", "application/json")
        .header("a2a-version", "1.0")
        .bearer_auth(token)
        .body(json!({"jsonrpc": "2.0", "id": "s", "method": "SendStreamingMessage", "params": message}).to_string())
        .send()
        .await
        .expect("stream request")
}

fn is_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_one_a2a_client_cannot_take_every_stream_and_a_revoked_one_loses_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 8 A2A streams in all, 2 for one client.
    let alice = node_with(dir.path(), "alice", "max_event_streams = 8\n", &[]).await;
    let token = |name: &str| {
        let issued = ok(&alice.home, &["a2a", "add-client", name]);
        std::fs::read_to_string(issued["token_file"].as_str().expect("file")).expect("token").trim().to_owned()
    };
    let (alpha, beta) = (token("alpha"), token("beta"));
    let mut alphas = Vec::new();
    for n in 0..2 {
        let response = open_stream(&alice.peer_url, &alpha, &format!("a{n}")).await;
        assert!(is_stream(&response), "alpha's stream {n}: {:?}", response.status());
        alphas.push(response);
    }
    let third = open_stream(&alice.peer_url, &alpha, "a2").await;
    assert!(!is_stream(&third));
    let refused: Value = third.json().await.expect("json");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("A2A streams")), "{refused}");
    let mut beta_stream = open_stream(&alice.peer_url, &beta, "b0").await;
    assert!(is_stream(&beta_stream), "beta still gets a stream");
    assert!(beta_stream.chunk().await.expect("frame").is_some(), "beta's stream starts with its task");

    // A token exactly as RFC 6750 writes it; whitespace or words around it make another one
    // (a space at the very end is not in the header's value at all: RFC 9110 §5.5).
    for header in
        [format!("Bearer {beta}x"), format!("Bearer \t{beta}"), format!("Bearer {beta} extra"), format!("Basic {beta}")]
    {
        let http = agentmesh_node::net::client(&Default::default()).expect("http client");
        let status = http
            .post(format!("{}/a2a/v1", alice.peer_url))
            .header("content-type", "application/json")
            .header("authorization", header.as_str())
            .body(json!({"jsonrpc": "2.0", "id": "1", "method": "ListTasks", "params": {}}).to_string())
            .send()
            .await
            .expect("request")
            .status()
            .as_u16();
        assert_eq!(status, 401, "{header:?}");
    }

    // Revoked, alpha's open streams end within 30 s; beta's goes on.
    ok(&alice.home, &["a2a", "revoke", "alpha"]);
    let started = std::time::Instant::now();
    for mut stream in alphas {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(_)) = stream.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "a revoked client's stream still open after {:?}", started.elapsed());
    }
    assert!(is_stream(&open_stream(&alice.peer_url, &beta, "b1").await), "beta's share is its own");
}
