//! The hooks push: events reach a (fake, loopback) OpenClaw gateway's webhooks once it is up,
//! each once, with the token only in the Authorization header, across a node restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// What the fake gateway saw: (path, Authorization, Idempotency-Key, body).
type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

/// Serves `/hooks/agent` and `/hooks/wake` on `listener`, answering the first request with 503.
fn fake_gateway(listener: tokio::net::TcpListener, seen: Seen) {
    let record = |path: &'static str, seen: Seen| {
        move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = Arc::clone(&seen);
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                let first = seen.is_empty();
                seen.push((path.to_owned(), header("authorization"), header("idempotency-key"), body));
                if first {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"ok": false, "error": "gateway_unavailable"})),
                    );
                }
                (StatusCode::OK, Json(json!({"ok": true})))
            }
        }
    };
    let app = axum::Router::new()
        .route("/hooks/agent", axum::routing::post(record("agent", Arc::clone(&seen))))
        .route("/hooks/wake", axum::routing::post(record("wake", seen)));
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_a_gateway_that_was_down_each_once_with_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The gateway's port, not served yet: it is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let token = "hooks-secret-5f1c9a";
    let token_file = dir.path().join("hooks.token");
    std::fs::write(&token_file, token).expect("token file");
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let config = format!(
        "[hooks]\nurl = \"http://127.0.0.1:{port}/hooks\"\ntoken_file = \"{}\"\nevents = [\"message\", \"contact_request\"]\n",
        token_file.display()
    );
    let a = node(dir.path(), "alice").await;
    let mut b = node_with(dir.path(), "bob", &config, &[]).await;
    trust(&a, &b).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(send(&a, &b.agent_id, &format!("hello {n}")).await);
    }
    for id in &sent {
        wait_status(&a, id, agentmesh_api::MessageStatus::Delivered).await;
    }
    // A restart while the gateway is down: the push resumes from its saved cursor.
    assert!(b.stop().await);
    b.restart().await.expect("restart");

    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("gateway port");
    fake_gateway(listener, Arc::clone(&seen));
    let all_pushed = wait_for(Duration::from_secs(60), || async {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let texts: Vec<String> = seen.iter().filter(|s| s.0 == "agent").map(|s| s.3["message"].to_string()).collect();
        let wakes = seen.iter().filter(|s| s.0 == "wake").count();
        (sent.iter().all(|id| texts.iter().any(|t| t.contains(id.as_str()))) && wakes >= 1).then_some(seen)
    })
    .await
    .expect("every message and the contact request pushed once the gateway is up");

    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (path, auth, key, body) in &all_pushed {
        assert_eq!(auth, &format!("Bearer {token}"), "{path}: the token, as a bearer credential");
        assert!(key.starts_with(&format!("agentmesh:{}:", b.agent_id)), "{key}");
        if path == "agent" {
            assert_eq!(body["idempotencyKey"].as_str(), Some(key.as_str()));
            assert_eq!(body["name"], "agentmesh");
        }
        *by_key.entry(key).or_default() += 1;
    }
    // Only the request the gateway answered 503 was sent again, under the same key.
    let repeated: Vec<_> = by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.len() == 1 && repeated.iter().all(|(_, n)| **n == 2), "{by_key:?}");
    let wake = all_pushed.iter().find(|s| s.0 == "wake").expect("a wake");
    assert!(wake.3["text"].as_str().unwrap_or("").contains("asks the owner for contact"), "{}", wake.3);
    // Restarted with the gateway up: nothing it took is pushed again, a new message is. (Once
    // the push saved its cursor past what the gateway took: a push the gateway took just before
    // a stop is sent again, under the same key, by design.)
    let last: i64 = all_pushed.iter().filter_map(|s| s.2.rsplit(':').next()?.parse().ok()).max().expect("a seq");
    wait_for(WAIT, || async {
        let store = agentmesh_store::Store::open(&b.home.join("agentmesh.db")).ok()?;
        let saved: i64 = store.meta("hooks_cursor").ok()??.parse().ok()?;
        (saved >= last).then_some(())
    })
    .await
    .expect("the push saves its cursor");
    assert!(b.stop().await);
    b.restart().await.expect("restart");
    let later = send(&a, &b.agent_id, "after the second restart").await;
    let seen_now = wait_for(WAIT, || async {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        seen.iter().any(|s| s.3["message"].to_string().contains(later.as_str())).then_some(seen)
    })
    .await
    .expect("the new message pushed");
    assert_eq!(seen_now.len(), all_pushed.len() + 1, "only the new one: {seen_now:?}");
    // The token never reaches the node's log.
    let log = std::fs::read_to_string(&b.log).expect("log");
    assert!(!log.contains(token));
}
