//! `agentmesh scan` against real nodes and hand-made HTTP servers, all on 127.0.0.1.

use std::net::TcpListener as StdListener;

use crate::support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port `p` such that `p..p+5` are all free on 127.0.0.1 right now.
fn free_block() -> u16 {
    for _ in 0..200 {
        let first = StdListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if first > 65_000 {
            continue;
        }
        let held: Vec<_> = (first..first + 5).filter_map(|p| StdListener::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == 5 {
            return first;
        }
    }
    panic!("no block of 5 free ports");
}

/// Serves `status` with `body` to every request on `port`, until the test ends.
async fn serve(port: u16, status: &'static str, body: String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_verifies_and_records_agents_in_a_port_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = free_block();
    // p: an HTTP server that is no agent; p+1, p+3: agents; p+2: nothing; p+4: a forged card.
    serve(p, "404 Not Found", "{}".into()).await;
    let mut agents = Vec::new();
    for (name, port) in [("alice", p + 1), ("bob", p + 3)] {
        let home = dir.path().join(name);
        local::init(&exe(), &home, name, &["search"]).expect("init");
        agents.push(LocalNode::start(&exe(), &home, &format!("127.0.0.1:{port}"), &[]).await.expect("start"));
    }
    let mut forged: Value = serde_json::to_value(agents[0].client.card().await.expect("card")).expect("json");
    forged["name"] = "mallory".into();
    serve(p + 4, "200 OK", forged.to_string()).await;

    let scanner = node(dir.path(), "scanner").await;
    let range = format!("http://127.0.0.1:{p}-{}", p + 4);
    let report = ok(&scanner.home, &["scan", &range, "--timeout", "2"]);
    assert_eq!(report["probed"], 5, "{report}");
    assert_eq!(report["answered"], 4, "{report}");
    let found = report["found"].as_array().expect("found");
    assert_eq!(found.len(), 3, "{report}");
    let by_endpoint = |port: u16| {
        found.iter().find(|f| f["endpoint"] == format!("http://127.0.0.1:{port}")).cloned().expect("found at port")
    };
    for (agent, port) in [(&agents[0], p + 1), (&agents[1], p + 3)] {
        let f = by_endpoint(port);
        assert_eq!(f["agent_id"], agent.agent_id.as_str());
        assert_eq!(f["protocol"], "agentmesh/1");
        assert_eq!(f["signature_valid"], true);
        assert_eq!(f["recorded"], "new");
        assert_eq!(f["fingerprint"], agent.client.status().await.expect("status").fingerprint.as_str());
    }
    let bad = by_endpoint(p + 4);
    assert_eq!((bad["signature_valid"].as_bool(), bad["recorded"].as_str()), (Some(false), Some("refused")));
    assert!(bad["problem"].as_str().is_some_and(|m| m.contains("signature")), "{bad}");

    // Recorded as discovered: known, untrusted.
    let peers = serde_json::to_value(scanner.client.peers(false).await.expect("peers")).expect("json");
    let peers = peers["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|x| x["trust"] == "discovered"));

    // Again: nothing new, nothing changed.
    let again = ok(&scanner.home, &["scan", &format!("http://127.0.0.1:{}", p + 1)]);
    assert_eq!(again["found"][0]["recorded"], "refreshed");

    // With the node stopped, the scan records into the store directly.
    let mut scanner = scanner;
    assert!(scanner.stop().await);
    let offline = ok(&scanner.home, &["scan", &format!("http://127.0.0.1:{}", p + 3)]);
    assert_eq!(offline["found"][0]["recorded"], "refreshed");
}

#[test]
fn scan_targets_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["http://127.0.0.1:9-1", "not a url", "ftp://127.0.0.1:1", "http://127.0.0.1:0-70000"] {
        let e = fails(dir.path(), &["scan", bad]);
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{bad}: {e}");
    }
    let e = fails(dir.path(), &["scan", "--cidr", "10.0.0.0/8"]);
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("at most")), "{e}");
    let e = fails(dir.path(), &["scan"]);
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("nothing to scan")), "{e}");
}
