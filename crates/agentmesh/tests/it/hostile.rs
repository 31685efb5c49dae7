//! Hostile peers over real sockets, round two: connection floods from one address and from
//! many, a peer that finds our clock off, a loose umask or home, clients that half-close.
//! Each test is named after the finding it guards against.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use agentmesh_api::control::ContactOutcome;
use agentmesh_api::{MessageStatus, RequestStatus, TrustState};
use agentmesh_core::time::now_ms;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
async fn closed(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(wait, stream.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// `GET /v1/card` over a fresh connection from `from`: the status, or `None` when the connection
/// was closed unanswered.
async fn card_from(from: [u8; 4], to: SocketAddr) -> Option<u16> {
    card_with(from, to, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_one_address_cannot_lock_everyone_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "max_connections = 40\nmax_connections_per_ip = 10\nreserved_connections = 10\n\
                  header_read_timeout_secs = 120\nbody_read_timeout_secs = 120\nother_requests_per_minute = 0\n";
    let target = node_with(dir.path(), "target", config, &[]).await;
    let friend = node(dir.path(), "friend").await;
    trust(&friend, &target).await;
    let first = send(&friend, &target.agent_id, "before the flood").await;
    wait_status(&friend, &first, MessageStatus::Delivered).await;
    let addr: SocketAddr = target.listen_addr().parse().expect("address");
    let (attacker, stranger) = ([127, 0, 0, 2], [127, 0, 0, 3]);

    // One address opens 200 idle sockets: it keeps at most its cap, its own oldest ones go.
    let mut flood = Vec::new();
    for n in 0..200 {
        flood.push(connect_from(attacker, addr).await);
        if n == 99 {
            // Past the grace a fresh connection has to send its first request, so the second
            // hundred can shed the first's.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    // Closed sockets stay closed: count until no more than the cap is left.
    let mut open = flood.len();
    let deadline = std::time::Instant::now() + WAIT;
    while open > 10 && std::time::Instant::now() < deadline {
        open = 0;
        for stream in &mut flood {
            if !closed(stream, Duration::from_millis(5)).await {
                open += 1;
            }
        }
    }
    assert!(open <= 10, "{open} of one address's 200 sockets still open (cap 10)");
    assert_eq!(card_from(stranger, addr).await, Some(200), "a new peer still gets in");

    drop(flood);

    // Many addresses, ten busy sockets each (a request head, then a body that never comes):
    // strangers fill their share, the reserve stays for contacts' addresses.
    let mut busy = Vec::new();
    for n in 1..=8u8 {
        for _ in 0..10 {
            let mut stream = connect_from([127, 0, 5, n], addr).await;
            let head = format!(
                "POST /v1/message HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            busy.push(stream);
        }
    }
    // Once their heads are read and their grace over, every stranger connection is busy.
    let turned_away = wait_for(WAIT, || async { card_from(stranger, addr).await.is_none().then_some(()) }).await;
    assert!(turned_away.is_some(), "with every stranger connection busy a stranger should wait");
    // A contact's address is served from the reserve, on new connections and in the outbox.
    assert_eq!(card_from([127, 0, 0, 1], addr).await, Some(200));
    let during = send(&friend, &target.agent_id, "during the flood").await;
    wait_status(&friend, &during, MessageStatus::Delivered).await;
    drop(busy);
    let stranger_again =
        wait_for(WAIT, || async { (card_from(stranger, addr).await == Some(200)).then_some(()) }).await;
    assert!(stranger_again.is_some(), "once the flood ends strangers get in again");
}

/// A proxy in front of a real node that, while `skewed`, refuses every POST the way a node
/// whose clock is ten minutes ahead of the sender's would: 400 `stale_timestamp` with its time;
/// with `overloaded` set, it answers the next POST 503 once.
struct SkewProxy {
    upstream: String,
    skewed: AtomicBool,
    overloaded: AtomicBool,
    refused: AtomicUsize,
    http: reqwest::Client,
}

const SKEW_MS: u64 = 600_000;

async fn skew_proxy(
    axum::extract::State(proxy): axum::extract::State<Arc<SkewProxy>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    if parts.method == axum::http::Method::POST && proxy.overloaded.swap(false, Ordering::SeqCst) {
        let body = serde_json::json!({"error": {"code": "internal", "message": "overloaded"}});
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if proxy.skewed.load(Ordering::SeqCst) && parts.method == axum::http::Method::POST {
        proxy.refused.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({"error": {
            "code": "stale_timestamp",
            "message": "sent_at is 600 s behind this node's clock",
            "now": now_ms() + SKEW_MS,
        }});
        return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let bytes = axum::body::to_bytes(body, 8 << 20).await.expect("body");
    let url = format!("{}{}", proxy.upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut forward = proxy.http.request(parts.method, url).body(bytes);
    if let Some(ct) = parts.headers.get("content-type") {
        forward = forward.header("content-type", ct);
    }
    let reply = forward.send().await.expect("upstream");
    let status = reply.status();
    let content_type = reply.headers().get("content-type").cloned();
    let bytes = reply.bytes().await.expect("upstream body");
    let mut response = (status, bytes).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_clock_the_peer_finds_off_is_reported_and_retried_not_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bob is reached only through the proxy: it advertises the proxy's URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy_url = format!("http://{}", listener.local_addr().expect("address"));
    let bob = node_with(dir.path(), "bob", "", &[("AGENTMESH_ENDPOINT", proxy_url.as_str())]).await;
    let proxy = Arc::new(SkewProxy {
        upstream: bob.peer_url.clone(),
        skewed: AtomicBool::new(true),
        overloaded: AtomicBool::new(false),
        refused: AtomicUsize::new(0),
        http: agentmesh_node::net::client(&Default::default()).expect("client"),
    });
    let app = axum::Router::new().fallback(skew_proxy).with_state(Arc::clone(&proxy));
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Few attempts allowed: refusals for our clock must not use them up.
    let alice = node_with(dir.path(), "alice", "max_attempts = 2\nretry_base_ms = 50\nretry_max_ms = 200\n", &[]).await;

    // The contact request is refused for alice's clock: it stays pending and queued, and alice's
    // owner is told by how much the peer finds her clock off.
    let reply = ask(&alice, &proxy_url).await;
    assert_eq!(reply.outcome, ContactOutcome::Queued, "{reply:?}");
    let request_id = reply.request.expect("request").request_id;
    let skew = wait_for(WAIT, || async { alice.client.status().await.ok()?.clock_skews.into_iter().next() })
        .await
        .expect("the skew is reported");
    assert_eq!(skew.peer_id.as_str(), bob.agent_id);
    assert!(skew.skew_ms.abs_diff(SKEW_MS as i64) < 60_000, "{skew:?}");
    wait_for(WAIT, || async { (proxy.refused.load(Ordering::SeqCst) >= 5).then_some(()) })
        .await
        .expect("alice keeps retrying");
    assert_eq!(request(&alice, &request_id).await.expect("request").status, RequestStatus::Pending);

    // The clock is fixed: the next attempt, with a fresh sent_at, goes through.
    proxy.skewed.store(false, Ordering::SeqCst);
    incoming(&bob, &request_id).await;
    bob.client.approve(&request_id).await.expect("approve");
    wait_trust(&alice, &bob.agent_id, TrustState::Trusted).await;
    wait_for(WAIT, || async { alice.client.status().await.ok()?.clock_skews.is_empty().then_some(()) })
        .await
        .expect("the skew report clears once the peer accepts again");

    // Same for a message: never failed for the clock, and the refusals did not use up its
    // attempts (a 503 once the clock is right is one attempt of two), delivered once it is right.
    proxy.skewed.store(true, Ordering::SeqCst);
    let refused_before = proxy.refused.load(Ordering::SeqCst);
    let id = send(&alice, &bob.agent_id, "sent with a wrong clock").await;
    wait_for(WAIT, || async { (proxy.refused.load(Ordering::SeqCst) >= refused_before + 5).then_some(()) })
        .await
        .expect("retried");
    let waiting = outgoing(&alice, &id).await.expect("message");
    assert_ne!(waiting.status, MessageStatus::Failed, "{waiting:?}");
    proxy.overloaded.store(true, Ordering::SeqCst);
    proxy.skewed.store(false, Ordering::SeqCst);
    wait_status(&alice, &id, MessageStatus::Delivered).await;
    assert!(!proxy.overloaded.load(Ordering::SeqCst), "the 503 was answered");
}

/// Every file and directory under `dir` with its mode.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("stat");
        out.push((entry.path().display().to_string(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            out.extend(modes(&entry.path()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // The binary run under umask 000.
    let wrapper = dir.path().join("agentmesh-umask-000");
    std::fs::write(&wrapper, format!("#!/bin/sh\numask 000\nexec '{}' \"$@\"\n", exe().display())).expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = dir.path().join("loose");
    local::init(&wrapper, &home, "loose", &[]).expect("init");
    let mut loose = LocalNode::start(&wrapper, &home, "127.0.0.1:0", &[]).await.expect("start");
    let other = node(dir.path(), "other").await;
    trust(&other, &loose).await;
    let id = send(&other, &loose.agent_id, "private text").await;
    wait_status(&other, &id, MessageStatus::Delivered).await;

    // (node.log is the test harness's, not the node's.)
    let files: Vec<_> = modes(&home).into_iter().filter(|(p, _)| !p.ends_with("node.log")).collect();
    for name in ["agentmesh.db", "agentmesh.db-wal", "profile.json", "node.lock", "node.json", "control.token"] {
        assert!(files.iter().any(|(p, _)| p.ends_with(name)), "{name} exists: {files:?}");
    }
    for (path, mode) in &files {
        assert_eq!(mode & 0o077, 0, "{path} is {mode:04o} under umask 000");
    }

    // A database left readable by others (an older version) is tightened at start.
    assert!(loose.stop().await);
    std::fs::set_permissions(home.join("agentmesh.db"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    loose.restart().await.expect("restart");
    let mode = std::fs::metadata(home.join("agentmesh.db")).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A home opened to others is refused, with the fix in the message.
    assert!(loose.stop().await);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = fails(&home, &["up", "--listen", "127.0.0.1:0"]);
    assert_eq!(err["error"]["code"], "insecure_file", "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("chmod 700")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_clients_that_half_close_get_their_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = node(dir.path(), "target").await;
    let addr: SocketAddr = target.listen_addr().parse().expect("address");
    let clients = (0..200u8).map(|n| {
        tokio::spawn(async move {
            // Spread over addresses, as 200 separate peers would be.
            let mut stream = connect_from([127, 0, 7, n % 50 + 1], addr).await;
            let head = format!("GET /v1/card HTTP/1.1\r\nhost: {addr}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.expect("write");
            stream.shutdown().await.expect("half-close");
            let mut reply = Vec::new();
            let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut reply)).await;
            String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200")
        })
    });
    let mut answered = 0;
    for client in clients {
        if client.await.expect("client") {
            answered += 1;
        }
    }
    assert_eq!(answered, 200, "every half-closed client gets its answer");
}

/// `GET /v1/card` from loopback address `from` with extra header lines: the status, or `None`
/// when the connection was closed unanswered.
async fn card_with(from: [u8; 4], to: SocketAddr, extra: &str) -> Option<u16> {
    let mut stream = connect_from(from, to).await;
    let head = format!("GET /v1/card HTTP/1.1\r\nhost: {to}\r\n{extra}connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut reply)).await.ok()?.ok()?;
    String::from_utf8_lossy(&reply).split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_behind_a_trusted_proxy_each_client_has_its_own_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "trusted_proxies = [\"127.0.0.2\"]\nother_requests_per_minute = 3\nmax_connections_per_ip = 2\n";
    let node = node_with(dir.path(), "alice", config, &[]).await;
    let to: SocketAddr = node.peer_url.trim_start_matches("http://").parse().expect("addr");
    let via_proxy = |client: &str| format!("x-forwarded-for: {client}, 127.0.0.2\r\n");
    // Through the proxy, each client has its own budget.
    for _ in 0..3 {
        assert_eq!(card_with([127, 0, 0, 2], to, &via_proxy("198.51.100.1")).await, Some(200));
    }
    assert_eq!(
        card_with([127, 0, 0, 2], to, &via_proxy("198.51.100.1")).await,
        Some(429),
        "client 1's budget is spent"
    );
    assert_eq!(card_with([127, 0, 0, 2], to, &via_proxy("198.51.100.2")).await, Some(200), "client 2 has its own");
    // The header the proxy does not write is the client's own: a fresh name in it each time
    // changes nothing (client 1's budget stays spent).
    for n in 0..3 {
        let spoof = format!("forwarded: for=192.0.2.{n}\r\n{}", via_proxy("198.51.100.1"));
        assert_eq!(card_with([127, 0, 0, 2], to, &spoof).await, Some(429), "a client picked its address");
    }
    // Anyone else's forwarding headers are ignored: a new name each time changes nothing.
    for n in 0..3 {
        assert_eq!(card_with([127, 0, 0, 3], to, &via_proxy(&format!("203.0.113.{n}"))).await, Some(200));
    }
    assert_eq!(card_with([127, 0, 0, 3], to, &via_proxy("203.0.113.99")).await, Some(429), "not a proxy of ours");
    // The proxy holds more connections than one address may (it carries many clients).
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 2], to).await);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut newest = connect_from([127, 0, 0, 2], to).await;
    newest
        .write_all(format!("GET /v1/card HTTP/1.1\r\nhost: {to}\r\nx-forwarded-for: 198.51.100.9\r\n\r\n").as_bytes())
        .await
        .expect("write");
    for stream in &mut held {
        assert!(
            !closed(stream, Duration::from_millis(200)).await,
            "a proxy connection was shed for the per-address cap"
        );
    }
}
