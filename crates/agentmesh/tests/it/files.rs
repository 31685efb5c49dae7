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
        peak_b = peak_b.max(b.memory_kib().map_or(0, |m| m.0));
        peak_a = peak_a.max(a.memory_kib().map_or(0, |m| m.0));
        b.kill();
        b.restart().await.expect("restart");
        let t = b.client.file(&sent.transfer_id).await.expect("file").transfer;
        assert!(t.bytes_done >= at, "kill {kill}: resumes from its committed progress, not from 0: {t:?}");
        resumed_from.push(t.bytes_done);
    }
    let got = wait_transfer(&b, &sent.transfer_id, Duration::from_secs(180), |t| !t.state.is_open()).await;
    assert_eq!(got.state, TransferState::Done, "{got:?}");
    peak_b = peak_b.max(b.memory_kib().map_or(0, |m| m.0));
    peak_a = peak_a.max(a.memory_kib().map_or(0, |m| m.0));
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
    let a = node_with(dir.path(), "alice", "", &[("AGENTMESH_ENDPOINT", &proxy)]).await;
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

/// p2p-comm's `sendfile <name> <base64>` in a call: saved like a received file, listed with the
/// call's id, a `file` line in both transcripts; over 64 KiB it is refused with a pointer to
/// `send-file`.
#[tokio::test]
async fn a_small_file_goes_inline_in_a_call() {
    use agentmesh_api::control::{AnswerArgs, CallArgs, FilesQuery};
    use agentmesh_api::{CallState, LineKind};
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let args = CallArgs { to: b.agent_id.clone(), topic: "files".into(), ring_secs: None };
    let id = a.client.call(&args).await.expect("call").call.call_id;
    wait_for(WAIT, || async { (b.client.transcript(&id).await.ok()?.call.state == CallState::Ringing).then_some(()) })
        .await
        .expect("rings");
    b.client.answer(&id, &AnswerArgs { accept: true, reason: None }).await.expect("answer");
    wait_for(WAIT, || async { (a.client.transcript(&id).await.ok()?.call.state == CallState::Active).then_some(()) })
        .await
        .expect("answered");

    let data = agentmesh_core::b64::encode(b"hello inline\n");
    let said = a.client.say(&id, &format!("sendfile ../../notes.txt {data}")).await.expect("sendfile");
    assert_eq!(said.line.kind, LineKind::File);
    let got = wait_for(WAIT, || async {
        let q = FilesQuery { peer: Some(a.agent_id.clone()), ..FilesQuery::default() };
        b.client.files(&q).await.ok()?.transfers.into_iter().find(|t| t.call_id.as_deref() == Some(id.as_str()))
    })
    .await
    .expect("the inline file is listed");
    assert_eq!(got.state, TransferState::Done);
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
