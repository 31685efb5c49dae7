//! What a new user met at the terminal: hints that say who must act, one limit, peers by name,
//! readable numbers, JSON errors for bad arguments, endpoints peers can use, `--follow` across a
//! restart, plain log files (regression tests, one per finding).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use agentmesh_api::{MessageStatus, TrustState};
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn regression_scan_never_records_the_scanning_node_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let port: u16 = a.peer_url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let range = format!("http://127.0.0.1:{}-{}", port.saturating_sub(1).max(1), port);
    let report = ok(&a.home, &["scan", &range, "--timeout", "0.5"]);
    let me = report["found"].as_array().expect("found").iter().find(|f| f["agent_id"] == a.agent_id.as_str()).cloned();
    assert_eq!(me.expect("the scan reaches us")["recorded"], "refused");
    assert_eq!(ok(&a.home, &["peers"])["peers"].as_array().map(Vec::len), Some(0));
    assert_eq!(fails_with(&a.home, &["block", &a.agent_id]), "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_hints_say_who_must_act_and_peers_answer_to_their_alias() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    let asked = ok(&a.home, &["request-contact", &b.peer_url, "--alias", "bobby"]);
    let id = asked["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&b, &id).await;
    // bob must approve, and is told so (with the command).
    let err = fails(&b.home, &["send-message", "--to", "alice", "--text", "hi"]);
    let text = err["error"]["message"].as_str().expect("message");
    assert!(text.contains(&format!("agentmesh approve-request {id}")), "{text}");
    // alice waits for bob, and is told that instead.
    let err = fails(&a.home, &["send-message", "--to", "bobby", "--text", "hi"]);
    assert!(err["error"]["message"].as_str().expect("message").contains("has not answered"), "{err}");
    ok(&b.home, &["reject-request", &id, "--reason", "busy"]);
    wait_trust(&a, &b.agent_id, TrustState::Rejected).await;
    let err = fails(&a.home, &["send-message", "--to", "bobby", "--text", "hi"]);
    let text = err["error"]["message"].as_str().expect("message");
    assert!(text.contains("declined") && text.contains("request-contact"), "{text}");
    let err = fails(&b.home, &["send-message", "--to", "alice", "--text", "hi"]);
    assert!(err["error"]["message"].as_str().expect("message").contains("you rejected"), "{err}");
    // After contact, the alias (and a unique prefix) address bob.
    let again = ok(&a.home, &["request-contact", "bobby"]);
    let id2 = again["request"]["request_id"].as_str().expect("id").to_owned();
    incoming(&b, &id2).await;
    ok(&b.home, &["approve-request", &id2]);
    wait_trust(&a, &b.agent_id, TrustState::Trusted).await;
    assert_eq!(ok(&a.home, &["send-message", "--to", "bobby", "--text", "hi"])["to"], b.agent_id.as_str());
    assert_eq!(ok(&a.home, &["send-message", "--to", &b.agent_id[..6], "--text", "hi"])["to"], b.agent_id.as_str());
    assert_eq!(fails_with(&a.home, &["send-message", "--to", "nobody", "--text", "hi"]), "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_texts_over_the_limit_report_one_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let mut messages = Vec::new();
    for size in [200_000usize, 5_000_000] {
        let text = "x".repeat(size);
        let out = cli_with_stdin(&a.home, &["send-message", "--to", "bob"], Some(&text));
        assert!(!out.status.success());
        let err: Value = serde_json::from_slice(&out.stderr).expect("json");
        assert_eq!(err["error"]["code"], "too_large", "{size}: {err}");
        messages.push(err["error"]["message"].as_str().expect("message").to_owned());
    }
    assert_eq!(messages[0], messages[1], "both say the same limit");
    assert!(messages[0].contains("196608"), "{}", messages[0]);
    assert_eq!(fails_with(&a.home, &["send-message", "--to", "bob", "--text", ""]), "empty_message");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_numbers_in_tables_are_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    ok(&a.home, &["scan", &b.peer_url]);
    let out = Command::new(exe()).arg("--home").arg(&a.home).arg("discover").output().expect("discover");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let row = text.lines().find(|l| l.contains(&b.agent_id)).expect("bob listed");
    let age = row.split_whitespace().last().expect("age");
    assert!(age.trim_end_matches(['s', 'm', 'h', 'd']).parse::<u64>().is_ok(), "AGE is {age:?}: {row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_argument_errors_are_json_with_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("a");
    let out = Command::new(exe()).arg("--home").arg(&home).args(["--json", "send-message"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr).expect("stderr is JSON");
    assert_eq!(err["error"]["code"], "invalid_argument");
    assert!(err["error"]["message"].as_str().expect("message").contains("--to"), "{err}");
    let out = Command::new(exe()).args(["--json", "no-such-command"]).output().expect("run");
    let err: Value = serde_json::from_slice(&out.stderr).expect("stderr is JSON");
    assert_eq!(err["error"]["code"], "invalid_argument");
    // Help is not an error.
    assert!(Command::new(exe()).arg("--help").output().expect("help").status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_taken_port_and_a_running_node_have_their_own_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let other = dir.path().join("other");
    ok(&other, &["init", "--name", "other"]);
    let out = cli(&other, &["up", "--listen", &a.listen_addr()]);
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stderr).expect("json");
    assert_eq!(err["error"]["code"], "address_in_use", "{err}");
    let out = cli(&a.home, &["up", "--listen", "127.0.0.1:0"]);
    let err: Value = serde_json::from_slice(&out.stderr).expect("json");
    assert_eq!(err["error"]["code"], "node_running", "{err}");
}

/// Starts `agentmesh up` with `args` and returns the child and the first stdout line.
fn up(home: &std::path::Path, args: &[&str]) -> (std::process::Child, Option<String>) {
    let mut child = Command::new(exe())
        .arg("--home")
        .arg(home)
        .args(["--json", "up"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("up");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout).lines().next().and_then(Result::ok);
    (child, line)
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_up_listens_where_init_said_and_never_advertises_every_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let home = dir.path().join("a");
    ok(&home, &["init", "--name", "alice", "--endpoint", &format!("http://127.0.0.1:{port}")]);
    let (mut child, line) = up(&home, &["--no-mdns"]);
    let ready: Value = serde_json::from_str(&line.expect("a ready line")).expect("json");
    assert_eq!(ready["peer_url"], format!("http://127.0.0.1:{port}"), "up listens where the endpoint points");
    let _ = nix_term(&mut child);

    // A listener on every address needs an endpoint peers can use: refused with the fix, before
    // anything is bound.
    let plain = dir.path().join("b");
    ok(&plain, &["init", "--name", "bob"]);
    let out = cli(&plain, &["up", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stderr).expect("json");
    assert_eq!(err["error"]["code"], "invalid_endpoint");
    assert!(err["error"]["message"].as_str().expect("message").contains("--endpoint http://"), "{err}");

    // An endpoint on this host but another port than `--listen` is refused too (from the profile).
    let out = cli(&home, &["up", "--listen", "127.0.0.1:0"]);
    let err: Value = serde_json::from_slice(&out.stderr).expect("json");
    assert_eq!(err["error"]["code"], "invalid_endpoint", "{err}");
    assert!(err["error"]["message"].as_str().expect("message").contains(&format!("--listen 127.0.0.1:{port}")));
}

fn nix_term(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    child.wait().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_follow_reconnects_when_the_node_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let (mut follow, rx) = spawn_lines(&b.home, &["list-messages", "--incoming", "--follow"]);
    let first = send(&a, &b.agent_id, "before the restart").await;
    let next = |rx: &std::sync::mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(20)).expect("a line");
    assert!(next(&rx).contains(&first));
    assert!(b.stop().await);
    let queued = send(&a, &b.agent_id, "while it was down").await;
    b.restart().await.expect("restart");
    let after = send(&a, &b.agent_id, "after the restart").await;
    let mut seen = String::new();
    while !(seen.contains(&queued) && seen.contains(&after)) {
        seen.push_str(&next(&rx));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    wait_status(&a, &after, MessageStatus::Delivered).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_log_files_are_plain_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = node_with(dir.path(), "alice", "max_attempts = 1\n", &[]).await;
    let mut b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    b.kill();
    let m = send(&a, &b.agent_id, "to fail").await;
    wait_status(&a, &m, MessageStatus::Failed).await;
    assert!(a.stop().await);
    let log = std::fs::read_to_string(&a.log).expect("log");
    assert!(log.contains("delivery failed"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a log file");
    assert!(!log.contains("Some("), "no Rust debug text: {log}");
}
