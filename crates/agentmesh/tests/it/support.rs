//! Helpers shared by the integration tests: temporary homes, CLI invocations, real nodes, and
//! waiting for a condition rather than sleeping.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agentmesh_api::control::{ContactArgs, ContactReply, MessagesQuery, RequestsQuery};
use agentmesh_api::{ContactRequest, Direction, Event, Message, MessageStatus, Peer, TrustState};
pub(crate) use agentmesh_testkit::local::{self, LocalNode, wait_for};
use serde_json::Value;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentmesh"))
}

/// Runs `agentmesh --home HOME --json ARGS…`.
pub(crate) fn cli(home: &Path, args: &[&str]) -> Output {
    cli_with_stdin(home, args, None)
}

pub(crate) fn cli_with_stdin(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(exe());
    cmd.arg("--home").arg(home).arg("--json").args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agentmesh");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        // The CLI may stop reading early (a bounded read): a broken pipe is not a test failure.
        let _ = pipe.write_all(text.as_bytes());
    }
    child.wait_with_output().expect("agentmesh output")
}

/// Starts `agentmesh --home HOME --json ARGS…` (a `--follow`) and returns it with its stdout
/// lines as they come; kill it when done.
pub(crate) fn spawn_lines(home: &Path, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(exe())
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agentmesh");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Runs a command that must succeed and returns its single JSON document.
pub(crate) fn ok(home: &Path, args: &[&str]) -> Value {
    let out = cli(home, args);
    assert!(out.status.success(), "agentmesh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("agentmesh {args:?} printed non-JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Runs a command that must fail; returns the JSON error from stderr.
pub(crate) fn fails(home: &Path, args: &[&str]) -> Value {
    let out = cli(home, args);
    assert!(!out.status.success(), "agentmesh {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "a failing --json command prints nothing on stdout");
    serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

/// The error code of a failing command.
pub(crate) fn fails_with(home: &Path, args: &[&str]) -> String {
    fails(home, args)["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Creates an identity and starts its node on a free loopback port.
pub(crate) async fn node(dir: &Path, name: &str) -> LocalNode {
    node_with(dir, name, "", &[]).await
}

/// Like [`node`], with `config` as its config.toml and extra environment variables.
pub(crate) async fn node_with(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> LocalNode {
    let home = dir.join(name);
    local::init(&exe(), &home, name, &["chat"]).expect("init");
    if !config.is_empty() {
        std::fs::write(home.join("config.toml"), config).expect("config");
    }
    LocalNode::start(&exe(), &home, "127.0.0.1:0", env).await.expect("start node")
}

/// `a` asks `to` (a URL or peer reference) for contact through the control API.
pub(crate) async fn ask(a: &LocalNode, to: &str) -> ContactReply {
    let args = ContactArgs { to: to.to_owned(), purpose: "test".into(), ..ContactArgs::default() };
    a.client.request_contact(&args).await.expect("request contact")
}

/// The incoming request `id` once it arrived at `node`.
pub(crate) async fn incoming(node: &LocalNode, id: &str) -> ContactRequest {
    wait_for(WAIT, || async {
        let q = RequestsQuery { direction: Some(Direction::Incoming), ..RequestsQuery::default() };
        node.client.requests(&q).await.ok()?.requests.into_iter().find(|r| r.request_id == id)
    })
    .await
    .unwrap_or_else(|| panic!("request {id} never arrived"))
}

/// The request `id` as `node` lists it.
pub(crate) async fn request(node: &LocalNode, id: &str) -> Option<ContactRequest> {
    node.client.requests(&RequestsQuery::default()).await.ok()?.requests.into_iter().find(|r| r.request_id == id)
}

/// `node`'s view of peer `id`, removed ones included.
pub(crate) async fn peer(node: &LocalNode, id: &str) -> Option<Peer> {
    node.client.peers(true).await.ok()?.peers.into_iter().find(|p| p.agent_id.as_str() == id)
}

/// Waits until `node` sees peer `id` in `state`; returns the peer.
pub(crate) async fn wait_trust(node: &LocalNode, id: &str, state: TrustState) -> Peer {
    match wait_for(WAIT, || async { peer(node, id).await.filter(|p| p.trust == state) }).await {
        Some(p) => p,
        None => panic!("{id} never became {state} at {}; last: {:?}", node.agent_id, peer(node, id).await),
    }
}

/// `a` asks `b` for contact and `b` approves; returns when `a` trusts `b`.
pub(crate) async fn trust(a: &LocalNode, b: &LocalNode) {
    let reply = ask(a, &b.peer_url).await;
    let id = reply.request.expect("a request").request_id;
    incoming(b, &id).await;
    b.client.approve(&id).await.expect("approve");
    wait_trust(a, &b.agent_id, TrustState::Trusted).await;
}

/// Row counts of every table in a home's database. Events count without `peer_offline` and
/// `peer_online`: the outbox logs those in the background whenever a (fake) peer cannot be
/// reached, whatever a test sends.
pub(crate) fn counts(home: &Path) -> Vec<(&'static str, i64)> {
    let store = agentmesh_store::Store::open(&home.join("agentmesh.db")).expect("open db");
    let mut counts = store.table_counts().expect("counts");
    let logged = store.events_after(0, usize::MAX).expect("events");
    let caused = logged.iter().filter(|e| !matches!(e.event, Event::PeerOffline { .. } | Event::PeerOnline { .. }));
    for (table, n) in &mut counts {
        if *table == "events" {
            *n = caused.clone().count() as i64;
        }
    }
    counts
}

/// An outgoing message as listed by the node.
pub(crate) async fn outgoing(node: &LocalNode, id: &str) -> Option<Message> {
    let q = MessagesQuery { direction: Some(Direction::Outgoing), limit: Some(10_000), ..MessagesQuery::default() };
    node.client.messages(&q).await.ok()?.messages.into_iter().find(|m| m.id == id)
}

/// Incoming messages of `node`.
pub(crate) async fn inbox(node: &LocalNode) -> Vec<Message> {
    let q = MessagesQuery { direction: Some(Direction::Incoming), limit: Some(10_000), ..MessagesQuery::default() };
    node.client.messages(&q).await.expect("messages").messages
}

/// Waits until outgoing message `id` has `status`.
pub(crate) async fn wait_status(node: &LocalNode, id: &str, status: MessageStatus) -> Message {
    match wait_for(WAIT, || async { outgoing(node, id).await.filter(|m| m.status == status) }).await {
        Some(m) => m,
        None => panic!("{id} never became {status}; last: {:?}", outgoing(node, id).await),
    }
}

/// Sends `text` from `from` to `to` (agent id) and returns the message id.
pub(crate) async fn send(from: &LocalNode, to: &str, text: &str) -> String {
    from.client.send_text(to, text).await.expect("send").message_id
}

/// A Python with `dist` at `version` from PyPI: a private venv per package under cargo's test
/// tmpdir, made once (under a file lock: nextest runs tests as processes). The tests that need
/// one are ignored by default (they need PyPI), so when one runs, a failed install fails it
/// (`what` says which test).
pub(crate) fn python_with(dist: &str, version: &str, what: &str) -> PathBuf {
    let package = format!("{dist}=={version}");
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{dist}-{version}-venv"));
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("venv lock file");
    lock.lock().expect("venv lock");
    let py = venv.join("bin").join("python3");
    let check = format!("import importlib.metadata as m, sys; sys.exit(m.version({dist:?}) != {version:?})");
    let ready =
        |py: &Path| Command::new(py).args(["-c", &check]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if ready(&py) {
        return py;
    }
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    let installed = made
        && Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", &package])
            .status()
            .is_ok_and(|s| s.success());
    if installed && ready(&py) {
        return py;
    }
    panic!("could not install {package} into {} (python3 -m venv, then pip): {what} needs it", venv.display());
}
