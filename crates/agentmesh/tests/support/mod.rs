//! Helpers shared by the integration tests: temp homes, CLI invocations, real nodes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agentmesh_client::RequestDirection;
use agentmesh_client::local::{self, LocalNode};
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentmesh"))
}

/// Runs `agentmesh --home HOME --json ARGS…`.
pub fn cli(home: &Path, args: &[&str]) -> Output {
    cli_with_stdin(home, args, None)
}

pub fn cli_with_stdin(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(exe());
    cmd.arg("--home").arg(home).arg("--json").args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agentmesh");
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("agentmesh output")
}

/// Runs a command that must succeed and returns its single JSON document.
pub fn ok(home: &Path, args: &[&str]) -> Value {
    let out = cli(home, args);
    assert!(out.status.success(), "agentmesh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("agentmesh {args:?} printed non-JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Runs a command that must fail; returns the JSON error from stderr.
pub fn fails(home: &Path, args: &[&str]) -> Value {
    let out = cli(home, args);
    assert!(!out.status.success(), "agentmesh {args:?} should fail");
    assert!(out.stdout.is_empty(), "a failing --json command prints nothing on stdout");
    serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

/// Creates an identity and starts its node on a free loopback port.
pub async fn node(dir: &Path, name: &str) -> LocalNode {
    let home = dir.join(name);
    local::init(&exe(), &home, name, &["chat"]).expect("init");
    LocalNode::start(&exe(), &home, "127.0.0.1:0", &[]).await.expect("start node")
}

/// `a` asks `b` for contact and `b` approves; returns when `a` trusts `b`.
pub async fn trust(a: &LocalNode, b: &LocalNode) {
    let reply = a.client.request_contact(&b.peer_url, "test").await.expect("request contact");
    let id = reply["request_id"].as_str().expect("request id").to_owned();
    local::wait_for(WAIT, || async {
        let r = b.client.requests(Some(RequestDirection::Incoming)).await.ok()?;
        r["requests"].as_array()?.iter().any(|x| x["request_id"] == id.as_str()).then_some(())
    })
    .await
    .expect("request arrives");
    b.client.approve(&id).await.expect("approve");
    local::wait_for(WAIT, || async {
        let p = a.client.peers().await.ok()?;
        p["peers"]
            .as_array()?
            .iter()
            .any(|x| x["agent_id"] == b.agent_id.as_str() && x["trust"] == "trusted")
            .then_some(())
    })
    .await
    .expect("a trusts b");
}

/// Row counts of every table in a home's database.
pub fn counts(home: &Path) -> Vec<(&'static str, i64)> {
    agentmesh_store::Store::open(&home.join("agentmesh.db")).expect("open db").table_counts().expect("counts")
}

/// An outgoing message's row as listed by the node.
pub async fn outgoing(node: &LocalNode, id: &str) -> Option<Value> {
    let q = agentmesh_client::MessageQuery {
        direction: Some(RequestDirection::Outgoing),
        limit: Some(10_000),
        ..Default::default()
    };
    let list = node.client.messages(&q).await.ok()?;
    list["messages"].as_array()?.iter().find(|m| m["id"] == id).cloned()
}

/// Waits until outgoing message `id` has status `status`.
pub async fn wait_status(node: &LocalNode, id: &str, status: &str) -> Value {
    match local::wait_for(WAIT, || async { outgoing(node, id).await.filter(|m| m["status"] == status) }).await {
        Some(m) => m,
        None => panic!("{id} never became {status}; last: {:?}", outgoing(node, id).await),
    }
}
