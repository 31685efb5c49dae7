//! File transfers between real nodes: a file arrives whole under a sanitised name, an offer
//! waits for the owner and can be declined, a 1 GiB file survives two SIGKILLs of the receiver
//! in bounded memory, a tampered chunk is refused and fetched again, and fetches without the
//! transfer's token are refused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentmesh_api::control::SendFileArgs;
use agentmesh_api::{Transfer, TransferState};

use crate::support::*;

const AUTO: &str = "file_auto_accept = true\n";

/// Writes `mib` MiB (and `extra` bytes) of distinct pseudo-random blocks to `path`.
fn make_file(path: &Path, mib: u64, extra: usize) {
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_be_bytes());
        f.write_all(&block).expect("write");
    }
    f.write_all(&block[..extra]).expect("write");
    f.flush().expect("flush");
}

/// Whether two files hold the same bytes (read in 1 MiB pieces).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (std::fs::File::open(a).expect("open a"), std::fs::File::open(b).expect("open b"));
    if fa.metadata().expect("meta").len() != fb.metadata().expect("meta").len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).expect("read a");
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).expect("read b");
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

async fn offer(from: &LocalNode, to: &LocalNode, path: &Path, name: Option<&str>) -> Transfer {
    let args = SendFileArgs {
        to: to.agent_id.clone(),
        path: path.to_string_lossy().into_owned(),
        name: name.map(str::to_owned),
        call_id: None,
    };
    from.client.send_file(&args).await.expect("send file").transfer
}

/// The transfer `id` at `node` once `done` holds, within `timeout`.
async fn wait_transfer(node: &LocalNode, id: &str, timeout: Duration, done: impl Fn(&Transfer) -> bool) -> Transfer {
    let found = wait_for(timeout, || async {
        let t = node.client.file(id).await.ok()?.transfer;
        done(&t).then_some(t)
    })
    .await;
    match found {
        Some(t) => t,
        None => panic!("transfer {id} at {}: {:#?}", node.agent_id, node.client.file(id).await),
    }
}

#[tokio::test]
async fn a_file_arrives_whole_under_a_sanitised_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node_with(dir.path(), "bob", AUTO, &[]).await;
    trust(&a, &b).await;
    let src = dir.path().join("report.bin");
    make_file(&src, 3, 12_345);
    let sent = offer(&a, &b, &src, Some("../../../.ssh/authorized_keys")).await;
    assert_eq!(sent.state, TransferState::Offered);
    let got = wait_transfer(&b, &sent.transfer_id, WAIT, |t| t.state == TransferState::Done).await;
    let saved = PathBuf::from(got.path.expect("saved path"));
    assert_eq!(saved, b.home.join("files").join(a.agent_id.as_str()).join("authorized_keys"));
    assert!(same_bytes(&src, &saved), "the saved file holds the bytes sent");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&saved), 0o600, "received files are private");
    assert_eq!(mode(saved.parent().expect("dir")), 0o700);
    assert_eq!(mode(&b.home.join("files")), 0o700);
    assert_eq!(got.sha256, sent.sha256);
    let done = wait_transfer(&a, &sent.transfer_id, WAIT, |t| t.state == TransferState::Done).await;
    assert_eq!(done.bytes_done, done.size);
    assert!(!b.home.join("files/.partial").join(&sent.transfer_id).exists(), "no partial file is left");

    // The same name again gets a suffix, never the first file's place; an empty file works too.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("empty");
    let second = offer(&a, &b, &empty, Some("authorized_keys")).await;
    let got = wait_transfer(&b, &second.transfer_id, WAIT, |t| t.state == TransferState::Done).await;
    assert_eq!(PathBuf::from(got.path.expect("path")).file_name().expect("name"), "authorized_keys (1)");
    assert!(same_bytes(&src, &saved), "the first file is untouched");

    // The CLI lists both, with --json.
    let listed = ok(&b.home, &["files"]);
    assert_eq!(listed["transfers"].as_array().expect("list").len(), 2);
    let text = serde_json::to_string(&listed).expect("json");
    assert!(!text.contains("\"key\""), "the transfer key never leaves the node");
}

#[tokio::test]
async fn offers_wait_for_the_owner_and_can_be_declined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node_with(dir.path(), "bob", "max_file_bytes = 100000\n", &[]).await;
    let c = node(dir.path(), "carol").await;
    trust(&a, &b).await;
    let src = dir.path().join("notes.txt");
    std::fs::write(&src, "hello bob\n".repeat(1000)).expect("write");

    // Not a contact: refused before anything is read or sent.
    let code = fails_with(&a.home, &["send-file", &c.agent_id, src.to_str().expect("utf-8")]);
    assert!(code == "not_trusted" || code == "not_found", "{code}");

    // Bad input: a clear code, nothing stored.
    let before = a.client.files(&Default::default()).await.expect("files").transfers.len();
    let missing = dir.path().join("missing.txt");
    assert_eq!(fails_with(&a.home, &["send-file", &b.agent_id, missing.to_str().expect("utf-8")]), "invalid_argument");
    assert_eq!(
        fails_with(&a.home, &["send-file", &b.agent_id, dir.path().to_str().expect("utf-8")]),
        "invalid_argument"
    );
    let bad_call = ["send-file", &b.agent_id, src.to_str().expect("utf-8"), "--call", "call_nope"];
    assert_eq!(fails_with(&a.home, &bad_call), "invalid_argument");
    assert_eq!(a.client.files(&Default::default()).await.expect("files").transfers.len(), before);

    let sent = offer(&a, &b, &src, None).await;
    let t = wait_transfer(&b, &sent.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
    assert_eq!(t.name, "notes.txt");
    let accepted = ok(&b.home, &["accept-file", &sent.transfer_id]);
    assert_eq!(accepted["state"], "transferring");
    let got = wait_transfer(&b, &sent.transfer_id, WAIT, |t| t.state == TransferState::Done).await;
    assert!(same_bytes(&src, Path::new(&got.path.expect("path"))));
    assert_eq!(fails_with(&b.home, &["accept-file", &sent.transfer_id]), "transfer_state");
    assert_eq!(fails_with(&b.home, &["accept-file", "file_00000000000000000000000000000000"]), "unknown_transfer");

    // Declined by the owner: the sender is told.
    let second = offer(&a, &b, &src, Some("again.txt")).await;
    wait_transfer(&b, &second.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
    let declined = ok(&b.home, &["cancel-file", &second.transfer_id, "--reason", "no thanks"]);
    assert_eq!(declined["state"], "declined");
    let t = wait_transfer(&a, &second.transfer_id, WAIT, |t| t.state == TransferState::Declined).await;
    assert_eq!(t.error.as_deref(), Some("no thanks"));

    // Over the receiver's cap: declined at once, the sender told why.
    let big = dir.path().join("big.bin");
    make_file(&big, 1, 0);
    let third = offer(&a, &b, &big, None).await;
    let t = wait_transfer(&a, &third.transfer_id, WAIT, |t| t.state == TransferState::Declined).await;
    assert!(t.error.as_deref().unwrap_or_default().contains("limit"), "{t:?}");
}

#[tokio::test]
async fn fetches_without_the_transfer_token_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    let src = dir.path().join("secret.txt");
    std::fs::write(&src, "only for bob").expect("write");
    let sent = offer(&a, &b, &src, None).await;
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let url = format!("{}/v1/files/{}", a.peer_url, sent.transfer_id);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.get(&url).send().await.expect("get")), 401);
    let wrong = http.get(&url).bearer_auth("0".repeat(64)).send().await.expect("get");
    assert_eq!(wrong.status().as_u16(), 401);
    let body: serde_json::Value = wrong.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");
    let unknown = format!("{}/v1/files/file_{}", a.peer_url, "0".repeat(32));
    let r = http.get(&unknown).bearer_auth("0".repeat(64)).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let r = http.get(format!("{url}?from=x")).bearer_auth("0".repeat(64)).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 400);
    let t = a.client.file(&sent.transfer_id).await.expect("file").transfer;
    assert_eq!(t.state, TransferState::Offered, "refused fetches change nothing");
}

/// A 1 GiB file, the receiver killed with SIGKILL twice mid-way: it resumes from its last
/// committed chunk each time, the digest matches, and both nodes stay small.
#[tokio::test]
async fn a_gib_survives_two_receiver_kills_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let mut b = node_with(dir.path(), "bob", AUTO, &[]).await;
    trust(&a, &b).await;
    let src = dir.path().join("big.bin");
    make_file(&src, 1024, 0);
    let started = Instant::now();
    let sent = offer(&a, &b, &src, None).await;
    let size = sent.size;
    let mut peak_b = 0u64;
    let mut peak_a = 0u64;
    let mut resumed_from = Vec::new();
    for (kill, fraction) in [(1, 3u64), (2, 6)] {
        let at = size * fraction / 10;
        let t = wait_transfer(&b, &sent.transfer_id, Duration::from_secs(120), |t| {
            t.bytes_done >= at || t.state != TransferState::Transferring
        })
        .await;
        assert_eq!(t.state, TransferState::Transferring, "kill {kill}: still under way: {t:?}");
        peak_b = peak_b.max(b.memory_kib().expect("the receiver's memory (/proc)").0);
        peak_a = peak_a.max(a.memory_kib().expect("the sender's memory (/proc)").0);
        b.kill();
        b.restart().await.expect("restart");
        let t = b.client.file(&sent.transfer_id).await.expect("file").transfer;
        assert!(t.bytes_done >= at, "kill {kill}: resumes from its committed progress, not from 0: {t:?}");
        resumed_from.push(t.bytes_done);
    }
    let got = wait_transfer(&b, &sent.transfer_id, Duration::from_secs(180), |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    peak_b = peak_b.max(b.memory_kib().expect("the receiver's memory (/proc)").0);
    peak_a = peak_a.max(a.memory_kib().expect("the sender's memory (/proc)").0);
    let elapsed = started.elapsed();
    let saved = PathBuf::from(got.path.expect("path"));
    assert!(same_bytes(&src, &saved), "the saved file is the file sent");
    wait_transfer(&a, &sent.transfer_id, WAIT, |t| t.state == TransferState::Done).await;
    eprintln!(
        "1 GiB with two receiver SIGKILLs: {:.1} s (resumed at {:?} bytes); peak RSS sender {} KiB, receiver {} KiB",
        elapsed.as_secs_f64(),
        resumed_from,
        peak_a,
        peak_b
    );
    assert!(peak_a < 128 * 1024 && peak_b < 128 * 1024, "memory stays bounded: {peak_a} / {peak_b} KiB");
}

/// A proxy in front of the sender that flips one byte of the first chunk fetch's answer.
async fn tampering_proxy(upstream: Arc<Mutex<String>>, tampered: Arc<Mutex<u32>>) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let http = agentmesh_node::net::client(&Default::default()).expect("client");
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, upstream, tampered) = (http.clone(), Arc::clone(&upstream), Arc::clone(&tampered));
        async move {
            let base = upstream.lock().expect("lock").clone();
            let url = format!("{base}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let mut req = http.request(method, &url).body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    req = req.header(name, value);
                }
            }
            let resp = req.send().await.expect("upstream");
            let status = resp.status();
            let content_type = resp.headers().get("content-type").cloned();
            let mut bytes = resp.bytes().await.expect("upstream body").to_vec();
            if uri.path().starts_with("/v1/files/") && status.is_success() && bytes.len() > 200 {
                let mut n = tampered.lock().expect("lock");
                if *n == 0 {
                    bytes[104] ^= 0x01;
                }
                *n += 1;
            }
            let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
            *out.status_mut() = status;
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_tampered_chunk_is_refused_and_fetched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = Arc::new(Mutex::new(String::new()));
    let tampered = Arc::new(Mutex::new(0u32));
    let proxy = tampering_proxy(Arc::clone(&upstream), Arc::clone(&tampered)).await;
    // Alice advertises the proxy: everything bob sends her, and every chunk he fetches, passes it.
    // Over HTTP even when the suites run over iroh: the proxy is what this test is about.
    let a = node_with(dir.path(), "alice", "[iroh]\nfirst = false\n", &[("AGENTMESH_ENDPOINT", &proxy)]).await;
    *upstream.lock().expect("lock") = a.peer_url.clone();
    let b = node_with(dir.path(), "bob", AUTO, &[]).await;
    trust(&a, &b).await;
    let src = dir.path().join("data.bin");
    make_file(&src, 2, 777);
    let sent = offer(&a, &b, &src, None).await;
    let got = wait_transfer(&b, &sent.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    assert!(same_bytes(&src, Path::new(&got.path.expect("path"))));
    assert!(*tampered.lock().expect("lock") >= 2, "the tampered fetch was refused and the chunk fetched again");
}

/// p2p-comm's `sendfile <name> <base64>` in a call: offered like any file, saved once the owner
/// accepts it, listed with the call's id, a `file` line in both transcripts; over 64 KiB it is
/// refused with a pointer to `send-file`.
#[tokio::test]
async fn a_small_file_goes_inline_in_a_call() {
    use agentmesh_api::LineKind;
    use agentmesh_api::control::FilesQuery;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let id = active_call(&a, &b).await;

    let data = agentmesh_core::b64::encode(b"hello inline\n");
    let said = a.client.say(&id, &format!("sendfile ../../notes.txt {data}")).await.expect("sendfile");
    assert_eq!(said.line.kind, LineKind::File);
    let got = wait_for(WAIT, || async {
        let q = FilesQuery { peer: Some(a.agent_id.clone()), ..FilesQuery::default() };
        b.client.files(&q).await.ok()?.transfers.into_iter().find(|t| t.call_id.as_deref() == Some(id.as_str()))
    })
    .await
    .expect("the inline file is listed");
    assert_eq!(got.state, TransferState::Offered, "it waits for the owner, like an offer");
    b.client.accept_file(&got.transfer_id).await.expect("accept");
    let got = wait_transfer(&b, &got.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    let saved = PathBuf::from(got.path.expect("path"));
    assert_eq!(saved, b.home.join("files").join(a.agent_id.as_str()).join("notes.txt"));
    assert_eq!(std::fs::read(&saved).expect("read"), b"hello inline\n");
    let lines = b.client.transcript(&id).await.expect("transcript").lines;
    assert!(lines.iter().any(|l| l.kind == LineKind::File && l.text.as_deref() == Some("../../notes.txt")));

    let big = agentmesh_core::b64::encode(vec![7u8; 64 * 1024 + 1]);
    let e = a.client.say(&id, &format!("sendfile big.bin {big}")).await.expect_err("too big inline");
    assert!(e.to_string().contains("send-file"), "{e}");
}

#[tokio::test]
async fn regression_send_file_never_offers_the_nodes_own_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "alice").await;
    let b = node_with(dir.path(), "bob", AUTO, &[]).await;
    trust(&a, &b).await;
    let key = a.home.join("keys").join("ed25519.key");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let symlink = outside.join("notes.txt");
    std::os::unix::fs::symlink(&key, &symlink).expect("symlink");
    let hard = outside.join("backup.bin");
    std::fs::hard_link(a.home.join("control.token"), &hard).expect("hard link");
    let dotted = outside.join("../alice/keys/../keys/x25519.key");
    let home_files = [
        key.clone(),
        a.home.join("keys").join("x25519.key"),
        a.home.join("control.token"),
        a.home.join("agentmesh.db"),
        a.home.join("config.toml"),
        symlink,
        hard,
        dotted,
    ];
    for path in &home_files {
        if !path.exists() && path.ends_with("config.toml") {
            std::fs::write(path, "").expect("config");
        }
        let out = cli(&a.home, &["send-file", &b.agent_id, &path.to_string_lossy()]);
        let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error");
        assert_eq!(err["error"]["code"], "path_not_allowed", "{}: {err}", path.display());
    }
    assert!(a.client.files(&Default::default()).await.expect("files").transfers.is_empty(), "nothing offered");

    // A file offered in good faith and then swapped for a link to the key (same size and
    // modification time) is not served: the receiver never gets the key's bytes.
    let decoy = outside.join("decoy.txt");
    let key_meta = std::fs::metadata(&key).expect("key meta");
    std::fs::write(&decoy, vec![b'x'; key_meta.len() as usize]).expect("decoy");
    std::fs::File::options()
        .write(true)
        .open(&decoy)
        .expect("open")
        .set_modified(key_meta.modified().expect("mtime"))
        .expect("set mtime");
    let sent = offer(&a, &b, &decoy, None).await;
    std::fs::remove_file(&decoy).expect("rm");
    std::os::unix::fs::symlink(&key, &decoy).expect("swap in a link");
    let failed = wait_transfer(&b, &sent.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(failed.state, TransferState::Failed, "{failed:?}");
    let secret = std::fs::read(&key).expect("key");
    let received = b.home.join("files");
    if received.exists() {
        for entry in walk(&received) {
            assert_ne!(std::fs::read(&entry).expect("read"), secret, "{} holds alice's key", entry.display());
        }
    }
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry")) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Says `sendfile <name> <base64 of bytes>` in call `id`.
async fn say_file(from: &LocalNode, id: &str, name: &str, bytes: &[u8]) {
    let text = format!("sendfile {name} {}", agentmesh_core::b64::encode(bytes));
    from.client.say(id, &text).await.expect("sendfile");
}

/// A call from `a` to `b`, answered; its id.
async fn active_call(a: &LocalNode, b: &LocalNode) -> String {
    use agentmesh_api::CallState;
    use agentmesh_api::control::{AnswerArgs, CallArgs};
    let args = CallArgs { to: b.agent_id.clone(), topic: "files".into(), ring_secs: None };
    let id = a.client.call(&args).await.expect("call").call.call_id;
    wait_for(WAIT, || async { (b.client.transcript(&id).await.ok()?.call.state == CallState::Ringing).then_some(()) })
        .await
        .expect("rings");
    b.client.answer(&id, &AnswerArgs { accept: true, reason: None }).await.expect("answer");
    wait_for(WAIT, || async { (a.client.transcript(&id).await.ok()?.call.state == CallState::Active).then_some(()) })
        .await
        .expect("answered");
    id
}

#[tokio::test]
async fn regression_files_inside_a_call_wait_for_the_owner_within_the_limits_of_offers() {
    use agentmesh_api::control::FilesQuery;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "max_file_bytes = 4096\nmax_open_transfers_per_peer = 5\n";
    let (a, b) = (node(dir.path(), "alice").await, node_with(dir.path(), "bob", config, &[]).await);
    trust(&a, &b).await;
    let id = active_call(&a, &b).await;
    say_file(&a, &id, "big.bin", &[1u8; 5000]).await;
    for n in 0..7u8 {
        say_file(&a, &id, &format!("f{n}.txt"), &[n; 1000]).await;
    }
    let q = FilesQuery { peer: Some(a.agent_id.clone()), limit: Some(100), ..FilesQuery::default() };
    let listed = wait_for(WAIT, || async {
        let t = b.client.files(&q).await.ok()?.transfers;
        (t.len() == 8).then_some(t)
    })
    .await
    .expect("eight inline files listed");
    let state = |name: &str| listed.iter().find(|t| t.name == name).map(|t| (t.state, t.error.clone()));
    let (big, why) = state("big.bin").expect("big");
    assert_eq!(big, TransferState::Declined);
    assert!(why.is_some_and(|w| w.contains("4096")), "over max_file_bytes");
    let offered: Vec<_> = listed.iter().filter(|t| t.state == TransferState::Offered).collect();
    let declined = listed.iter().filter(|t| t.state == TransferState::Declined).count();
    assert_eq!((offered.len(), declined), (5, 3), "the contact's share is 5: {listed:#?}");
    // Nothing was written to disk without the owner.
    assert!(!b.home.join("files").join(a.agent_id.as_str()).exists(), "files were saved before any was accepted");
    // The owner accepts one (saved with its bytes) and declines another (its bytes dropped).
    let first = offered.iter().find(|t| t.name == "f0.txt").expect("f0 offered");
    b.client.accept_file(&first.transfer_id).await.expect("accept");
    let done = wait_transfer(&b, &first.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(done.state, TransferState::Done);
    assert_eq!(std::fs::read(done.path.expect("path")).expect("read"), vec![0u8; 1000]);
    let second = offered.iter().find(|t| t.name == "f1.txt").expect("f1 offered");
    b.client.cancel_file(&second.transfer_id, None).await.expect("decline");
    let store = agentmesh_store::Store::open(&b.home.join("agentmesh.db")).expect("db");
    assert_eq!(store.transfer_inline(&second.transfer_id).expect("read"), None, "a declined file's bytes are dropped");
    let third = offered.iter().find(|t| t.name == "f2.txt").expect("f2 offered");
    assert!(store.transfer_inline(&third.transfer_id).expect("read").is_some(), "an offered one keeps them");
    // Both transcripts list every file line.
    let lines = b.client.transcript(&id).await.expect("transcript").lines;
    assert_eq!(lines.iter().filter(|l| l.kind == agentmesh_api::LineKind::File).count(), 8);
}

/// Writes `bytes` bytes of the byte `fill` to `dir/name`; returns the path.
fn small_file(dir: &Path, name: &str, bytes: usize, fill: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![fill; bytes]).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_one_contact_cannot_fill_every_offer_place_and_offers_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "max_open_transfers = 8\nmax_open_transfers_per_peer = 5\nfile_offer_ttl_secs = 3\n";
    let alice = node_with(dir.path(), "alice", config, &[]).await;
    let (bob, carol) = (node(dir.path(), "bob").await, node(dir.path(), "carol").await);
    trust(&bob, &alice).await;
    trust(&carol, &alice).await;
    // alice's own offers to carol do not count against what she accepts.
    for n in 0..4 {
        offer(&alice, &carol, &small_file(dir.path(), &format!("out{n}"), 100, n), None).await;
    }
    let mut from_bob = Vec::new();
    for n in 0..7 {
        from_bob.push(offer(&bob, &alice, &small_file(dir.path(), &format!("bob{n}"), 100, n), None).await);
    }
    let mut states = Vec::new();
    for sent in &from_bob {
        states.push(wait_transfer(&alice, &sent.transfer_id, WAIT, |_| true).await.state);
    }
    let offered = states.iter().filter(|s| **s == TransferState::Offered).count();
    assert_eq!((offered, states.len() - offered), (5, 2), "bob's share is 5: {states:?}");
    let refused = wait_transfer(&bob, &from_bob[6].transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(refused.state, TransferState::Declined);
    assert!(refused.error.as_deref().is_some_and(|e| e.contains("limit per contact")), "{refused:?}");
    // carol still gets a place: 6 incoming of 8 (with alice's 4 outgoing, 10 would not fit).
    let from_carol = offer(&carol, &alice, &small_file(dir.path(), "carol.txt", 100, 9), None).await;
    let got = wait_transfer(&alice, &from_carol.transfer_id, WAIT, |_| true).await;
    assert_eq!(got.state, TransferState::Offered, "{got:?}");
    // Unanswered, the offers expire and free their places; each sender is told.
    let expired = wait_transfer(&alice, &from_carol.transfer_id, Duration::from_secs(20), |t| !t.state.is_open()).await;
    assert_eq!(expired.state, TransferState::Declined);
    assert!(expired.error.as_deref().is_some_and(|e| e.contains("not accepted within 3 s")), "{expired:?}");
    let told = wait_transfer(&carol, &from_carol.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(told.state, TransferState::Declined);
    for sent in &from_bob {
        let t = wait_transfer(&alice, &sent.transfer_id, Duration::from_secs(20), |t| !t.state.is_open()).await;
        assert_eq!(t.state, TransferState::Declined);
    }
    let again = offer(&bob, &alice, &small_file(dir.path(), "bob-again", 100, 1), None).await;
    assert_eq!(wait_transfer(&alice, &again.transfer_id, WAIT, |_| true).await.state, TransferState::Offered);
}

/// Opens a fetch of transfer `id` at `base` with `token` and reads only the response head;
/// returns the status and the open connection (never read again).
async fn raw_fetch(base: &str, id: &str, token: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /v1/files/{id}?from=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("read head");
        seen.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_one_contact_cannot_hold_every_serving_slot_and_a_stalled_fetch_lets_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node_with(dir.path(), "alice", "peer_write_timeout_secs = 2\n", &[]).await;
    let bob = node(dir.path(), "bob").await;
    let carol = node_with(dir.path(), "carol", AUTO, &[]).await;
    trust(&alice, &bob).await;
    trust(&alice, &carol).await;
    let big = dir.path().join("big.bin");
    make_file(&big, 24, 0);
    let to_bob = offer(&alice, &bob, &big, None).await;
    wait_transfer(&bob, &to_bob.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
    // bob's node holds the transfer key: bob, gone hostile, fetches and never reads.
    let store = agentmesh_store::Store::open(&bob.home.join("agentmesh.db")).expect("db");
    let key = store.transfer(&to_bob.transfer_id).expect("read").expect("transfer").key;
    let token = agentmesh_core::file::TransferKey::from_bytes(key).token(&to_bob.transfer_id);
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, stream) = raw_fetch(&alice.peer_url, &to_bob.transfer_id, &token).await;
        statuses.push(status);
        held.push(stream);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 4, "a receiver's share is 4: {statuses:?}");
    assert!(statuses.iter().filter(|s| **s != 200).all(|s| *s == 429), "{statuses:?}");
    // Another contact's file goes through meanwhile.
    let src = dir.path().join("for-carol.bin");
    make_file(&src, 2, 10);
    let to_carol = offer(&alice, &carol, &src, None).await;
    let got = wait_transfer(&carol, &to_carol.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    // bob's stalled fetches are let go after peer_write_timeout_secs: his slots are free again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, stream) = raw_fetch(&alice.peer_url, &to_bob.transfer_id, &token).await;
        held.push(stream);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled fetches still hold their slots");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_one_senders_stalled_downloads_leave_slots_for_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let mut bob = node(dir.path(), "bob").await;
    let carol = node(dir.path(), "carol").await;
    trust(&bob, &alice).await;
    trust(&carol, &alice).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let sent = offer(&bob, &alice, &small_file(dir.path(), &format!("b{n}"), 1000, n), None).await;
        wait_transfer(&alice, &sent.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
        ids.push(sent.transfer_id);
    }
    // bob goes away; alice accepts his five files, whose downloads cannot progress.
    assert!(bob.stop().await);
    for id in &ids {
        alice.client.accept_file(id).await.expect("accept");
    }
    let src = small_file(dir.path(), "from-carol", 5000, 7);
    let sent = offer(&carol, &alice, &src, None).await;
    wait_transfer(&alice, &sent.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
    alice.client.accept_file(&sent.transfer_id).await.expect("accept");
    let got = wait_transfer(&alice, &sent.transfer_id, WAIT, |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    // bob is back: his files arrive too.
    bob.restart().await.expect("restart");
    for id in &ids {
        let t = wait_transfer(&alice, id, Duration::from_secs(90), |t| !t.state.is_open()).await;
        assert_eq!(t.state, TransferState::Done, "{t:?}");
    }
}

/// Runs `sql` on the database of a stopped node.
fn edit_db(home: &Path, sql: &str, params: &[&str]) {
    let db = rusqlite::Connection::open(home.join("agentmesh.db")).expect("open db");
    db.execute(sql, rusqlite::params_from_iter(params)).expect("edit");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_save_cut_short_by_a_kill_is_finished_once_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node(dir.path(), "alice").await;
    let mut bob = node_with(dir.path(), "bob", AUTO, &[]).await;
    trust(&alice, &bob).await;
    let first = offer(&alice, &bob, &small_file(dir.path(), "one.txt", 3000, 1), None).await;
    let second = offer(&alice, &bob, &small_file(dir.path(), "two.txt", 4000, 2), None).await;
    let saved_one = wait_transfer(&bob, &first.transfer_id, WAIT, |t| !t.state.is_open()).await.path.expect("path");
    let saved_two = wait_transfer(&bob, &second.transfer_id, WAIT, |t| !t.state.is_open()).await.path.expect("path");
    assert!(bob.stop().await);
    // The state a kill leaves between recording the path and marking the transfer done:
    // (one) linked already, the partial name still there; (two) not linked yet.
    let partials = bob.home.join("files").join(".partial");
    std::fs::create_dir_all(&partials).expect("partial dir");
    std::fs::hard_link(&saved_one, partials.join(&first.transfer_id)).expect("link");
    std::fs::rename(&saved_two, partials.join(&second.transfer_id)).expect("unlink");
    for id in [&first.transfer_id, &second.transfer_id] {
        edit_db(&bob.home, "UPDATE transfers SET state = 'transferring' WHERE transfer_id = ?1", &[id.as_str()]);
    }
    bob.restart().await.expect("restart");
    for (id, saved, fill, size) in
        [(&first.transfer_id, &saved_one, 1u8, 3000), (&second.transfer_id, &saved_two, 2, 4000)]
    {
        let t = wait_transfer(&bob, id, WAIT, |t| !t.state.is_open()).await;
        assert_eq!(t.state, TransferState::Done, "{t:?}");
        assert_eq!(t.path.as_deref(), Some(saved.as_str()));
        assert_eq!(std::fs::read(saved).expect("read"), vec![fill; size]);
        assert!(!partials.join(id).exists(), "the partial name is gone");
    }
    let saved: Vec<_> = walk(&bob.home.join("files").join(alice.agent_id.as_str()));
    assert_eq!(saved.len(), 2, "no second copy: {saved:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_download_without_progress_gives_its_slot_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node_with(dir.path(), "alice", "download_stall_secs = 3\n", &[]).await;
    let (mut bob, mut dave, carol) =
        (node(dir.path(), "bob").await, node(dir.path(), "dave").await, node(dir.path(), "carol").await);
    for sender in [&bob, &dave, &carol] {
        trust(sender, &alice).await;
    }
    // Two senders, two files each: together they fill every download slot, then go away.
    let mut stalled = Vec::new();
    for (sender, tag) in [(&bob, 1u8), (&dave, 2)] {
        for n in 0..2u8 {
            let path = small_file(dir.path(), &format!("s{tag}{n}"), 1000, tag);
            let sent = offer(sender, &alice, &path, None).await;
            wait_transfer(&alice, &sent.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
            stalled.push(sent.transfer_id);
        }
    }
    assert!(bob.stop().await && dave.stop().await);
    for id in &stalled {
        alice.client.accept_file(id).await.expect("accept");
    }
    let sent = offer(&carol, &alice, &small_file(dir.path(), "from-carol", 1000, 3), None).await;
    wait_transfer(&alice, &sent.transfer_id, WAIT, |t| t.state == TransferState::Offered).await;
    alice.client.accept_file(&sent.transfer_id).await.expect("accept");
    // A download that made no progress for download_stall_secs gives its slot up: carol's goes.
    let got = wait_transfer(&alice, &sent.transfer_id, Duration::from_secs(30), |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    for id in &stalled {
        let t = alice.client.file(id).await.expect("transfer").transfer;
        assert_eq!(t.state, TransferState::Transferring, "a stalled download waits, it does not fail: {t:?}");
    }
    bob.restart().await.expect("restart");
    dave.restart().await.expect("restart");
    for id in &stalled {
        let t = wait_transfer(&alice, id, Duration::from_secs(60), |t| !t.state.is_open()).await;
        assert_eq!(t.state, TransferState::Done, "{t:?}");
    }
}

/// How a stalling sender's proxy answers chunk fetches.
#[derive(Clone, Copy)]
enum Stall {
    /// Takes the request and never answers.
    Silent,
    /// Answers 200, then one byte a second: never a whole chunk.
    Trickle,
}

/// A sender whose chunk fetches stall: a node advertising a proxy that passes every other request
/// on and answers fetches the way `how` says. Returns the node (its card names the proxy).
async fn stalling_sender(dir: &Path, name: &str, how: Stall) -> LocalNode {
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, Method, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_url = format!("http://{}", listener.local_addr().expect("addr"));
    let home = dir.join(name);
    local::init(&exe(), &home, name, &["chat"]).expect("init");
    // Over HTTP even when the suites run over iroh: the proxy is what stalls.
    std::fs::write(home.join("config.toml"), "[iroh]\nfirst = false\n").expect("config");
    let node =
        LocalNode::start(&exe(), &home, "127.0.0.1:0", &[("AGENTMESH_ENDPOINT", &proxy_url)]).await.expect("start");
    let (upstream, http) = (node.peer_url.clone(), agentmesh_node::net::client(&Default::default()).expect("client"));
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (upstream, http) = (upstream.clone(), http.clone());
        async move {
            if uri.path().starts_with("/v1/files/") {
                return match how {
                    Stall::Silent => std::future::pending().await,
                    Stall::Trickle => {
                        let drip = futures_util::stream::unfold((), |()| async {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            Some((Ok::<_, std::io::Error>(vec![0u8]), ()))
                        });
                        axum::response::Response::new(Body::from_stream(drip))
                    }
                };
            }
            let url = format!("{upstream}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let mut req = http.request(method, &url).body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    req = req.header(name, value);
                }
            }
            let resp = req.send().await.expect("upstream");
            let mut out = axum::response::Response::new(Body::from(resp.bytes().await.expect("body")));
            *out.status_mut() = axum::http::StatusCode::OK;
            out.headers_mut().insert("content-type", "application/json".parse().expect("header"));
            out
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    node
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_a_sender_that_stalls_mid_fetch_cannot_hold_a_download_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node_with(dir.path(), "alice", "download_stall_secs = 3\nfile_auto_accept = true\n", &[]).await;
    let silent = stalling_sender(dir.path(), "silent", Stall::Silent).await;
    let trickle = stalling_sender(dir.path(), "trickle", Stall::Trickle).await;
    let carol = node(dir.path(), "carol").await;
    for sender in [&silent, &trickle, &carol] {
        trust(sender, &alice).await;
    }
    // Four downloads that cannot progress take every slot: two never answered, two trickled.
    let mut stuck = Vec::new();
    for (sender, tag) in [(&silent, 1u8), (&silent, 2), (&trickle, 3), (&trickle, 4)] {
        let sent = offer(sender, &alice, &small_file(dir.path(), &format!("stuck{tag}"), 4000, tag), None).await;
        wait_transfer(&alice, &sent.transfer_id, WAIT, |t| t.state == TransferState::Transferring).await;
        stuck.push(sent.transfer_id);
    }
    // Each gives its slot up after download_stall_secs: carol's file goes through.
    let sent = offer(&carol, &alice, &small_file(dir.path(), "from-carol", 3000, 9), None).await;
    let got = wait_transfer(&alice, &sent.transfer_id, Duration::from_secs(30), |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    for id in &stuck {
        let t = alice.client.file(id).await.expect("transfer").transfer;
        assert_eq!(t.state, TransferState::Transferring, "a stalled download waits its turn: {t:?}");
    }
}
