//! `agentmesh bench --hold-sockets N`: can peers still connect while one address holds N sockets?
//!
//! A receiver node with its default connection limits and a contact of it (a sender node that has
//! delivered a message, so its address counts as a contact's). An attacker in this process holds
//! N sockets from 127.0.0.2 — a third idle, a third trickling a request head, a third trickling a
//! body — and opens a new one a second after each is closed. Measured before and during: the
//! latency of a fresh connection's `GET /v1/card` from the contact's address (127.0.0.1) and from
//! a new peer's (127.0.0.3), and the contact's send→receipt latency. Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentmesh_testkit::local::{self, LocalNode};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::output;

/// Fresh-connection probes per address and phase.
const PROBES: usize = 100;
/// Messages the contact sends per phase.
const MESSAGES: usize = 100;
/// Time between two probes (so a phase spans the attacker's reconnection waves).
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait for one probe's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const CONTACT: [u8; 4] = [127, 0, 0, 1];
const NEWCOMER: [u8; 4] = [127, 0, 0, 3];

pub(crate) async fn run(ctx: &Ctx, sockets: usize) -> Result<()> {
    if sockets == 0 {
        bail!("--hold-sockets must be at least 1");
    }
    let dir = tempfile::Builder::new().prefix("agentmesh-sockets-").tempdir()?;
    let exe = std::env::current_exe()?;
    let (s_home, r_home) = (dir.path().join("sender"), dir.path().join("receiver"));
    local::init(&exe, &s_home, "sender", &[])?;
    local::init(&exe, &r_home, "receiver", &[])?;
    // Default connection limits; the probes' card fetches are not what is measured against the
    // per-address request budget.
    std::fs::write(r_home.join("config.toml"), "other_requests_per_minute = 0\n").context("writing config")?;
    let mut sender = LocalNode::start(&exe, &s_home, "127.0.0.1:0", &[]).await?;
    let mut receiver = LocalNode::start(&exe, &r_home, "127.0.0.1:0", &[]).await?;
    super::bench::trust(&sender, &receiver).await?;
    let addr: SocketAddr = receiver.listen_addr().parse().context("receiver address")?;
    messages(&sender, &receiver.agent_id, 10).await?; // warm-up; the contact's address is now known

    progress(ctx, "measuring without the attacker");
    let before = phase(&sender, &receiver.agent_id, addr).await?;

    progress(ctx, &format!("opening {sockets} sockets from 127.0.0.2"));
    let stop = CancellationToken::new();
    let stats = Arc::new(AttackStats::default());
    let mut holders = Vec::with_capacity(sockets);
    for n in 0..sockets {
        holders.push(tokio::spawn(hold(addr, n % 3, Arc::clone(&stats), stop.clone())));
    }
    // Every socket has been opened at least once, and the admission grace has passed.
    let opened = local::wait_for(Duration::from_secs(60), || async {
        (stats.connects.load(Ordering::Relaxed) >= sockets).then_some(())
    })
    .await;
    if opened.is_none() {
        bail!("could not open {sockets} sockets within 60 s");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    progress(ctx, "measuring while they are held");
    let (started, connects_before) = (Instant::now(), stats.connects.load(Ordering::Relaxed));
    let during = phase(&sender, &receiver.agent_id, addr).await?;
    let attack_secs = started.elapsed().as_secs_f64();
    let connects_during = stats.connects.load(Ordering::Relaxed) - connects_before;
    stop.cancel();
    for h in holders {
        let _ = h.await;
    }
    let (s_ok, r_ok) = (sender.stop().await, receiver.stop().await);

    let connects = stats.connects.load(Ordering::Relaxed);
    let report = json!({
        "attacker": {
            "address": "127.0.0.2",
            "sockets": sockets,
            "connects": connects,
            "closed_by_receiver": stats.closed.load(Ordering::Relaxed),
            "connects_per_s_while_measuring": (connects_during as f64 / attack_secs.max(0.001)).round(),
            "measuring_s": (attack_secs * 10.0).round() / 10.0,
        },
        "before": before,
        "during": during,
        "clean_shutdown": s_ok && r_ok,
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!("one address holding {sockets} sockets (idle, trickled heads, trickled bodies):"));
        for (name, p) in [("before", &report["before"]), ("during", &report["during"])] {
            for (who, key) in
                [("contact's new connection", "contact_connect"), ("new peer's connection", "newcomer_connect")]
            {
                let m = &p[key];
                output::line(&format!(
                    "  {name:<6} {who:<26} p50 {} ms, p99 {} ms, max {} ms, unanswered {}",
                    m["p50_ms"], m["p99_ms"], m["max_ms"], m["unanswered"]
                ));
            }
            let m = &p["contact_message"];
            output::line(&format!(
                "  {name:<6} {:<26} p50 {} ms, p99 {} ms, max {} ms",
                "contact's send→receipt", m["p50_ms"], m["p99_ms"], m["max_ms"]
            ));
        }
    }
    Ok(())
}

#[derive(Default)]
struct AttackStats {
    connects: AtomicUsize,
    closed: AtomicUsize,
}

/// Keeps one socket from the attacker's address open: `kind` 0 idles, 1 trickles a request
/// head, 2 sends a head and trickles a body; reopens it a second after the receiver closes it.
async fn hold(addr: SocketAddr, kind: usize, stats: Arc<AttackStats>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Ok(mut stream) = connect_from(ATTACKER, addr).await {
            stats.connects.fetch_add(1, Ordering::Relaxed);
            let opening = match kind {
                1 => "GET /v1/card HTTP/1.1\r\n".to_owned(),
                2 => format!(
                    "POST /v1/message HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                     content-length: 100000\r\n\r\n{{"
                ),
                _ => String::new(),
            };
            let mut alive = stream.write_all(opening.as_bytes()).await.is_ok();
            let mut buf = [0u8; 1024];
            while alive {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    read = stream.read(&mut buf) => alive = matches!(read, Ok(n) if n > 0),
                    _ = tokio::time::sleep(Duration::from_millis(500)), if kind != 0 => {
                        alive = stream.write_all(if kind == 1 { b"x" } else { b" " }).await.is_ok();
                    }
                }
            }
            stats.closed.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One measuring phase: fresh-connection probes from the contact's and a new peer's address,
/// and the contact's messages.
async fn phase(sender: &LocalNode, receiver: &str, addr: SocketAddr) -> Result<Value> {
    let contact = probes(CONTACT, addr).await;
    let newcomer = probes(NEWCOMER, addr).await;
    let message = messages(sender, receiver, MESSAGES).await?;
    Ok(json!({
        "contact_connect": summary(contact.0, contact.1),
        "newcomer_connect": summary(newcomer.0, newcomer.1),
        "contact_message": summary(message, 0),
    }))
}

/// [`PROBES`] sequential `GET /v1/card`s, each on a fresh connection from `from`: the latencies
/// of the answered ones (connect to end of response) and how many were not answered.
async fn probes(from: [u8; 4], addr: SocketAddr) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(PROBES);
    let mut unanswered = 0;
    let mut every = tokio::time::interval(PROBE_INTERVAL);
    for _ in 0..PROBES {
        every.tick().await;
        let started = Instant::now();
        match tokio::time::timeout(PROBE_TIMEOUT, card(from, addr)).await {
            Ok(Ok(true)) => latencies.push(started.elapsed()),
            _ => unanswered += 1,
        }
    }
    (latencies, unanswered)
}

async fn card(from: [u8; 4], addr: SocketAddr) -> Result<bool> {
    let mut stream = connect_from(from, addr).await?;
    stream.write_all(format!("GET /v1/card HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply.starts_with(b"HTTP/1.1 200"))
}

async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// `count` messages of 1 KiB from `sender`, one at a time: each one's send→receipt latency.
async fn messages(sender: &LocalNode, to: &str, count: usize) -> Result<Vec<Duration>> {
    let (_, latencies) = super::bench::blast(sender, to, &"x".repeat(1024), count, 1).await?;
    Ok(latencies)
}

fn summary(mut latencies: Vec<Duration>, unanswered: usize) -> Value {
    latencies.sort_unstable();
    let pct = |p: f64| {
        let d = latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
        (d.unwrap_or_default().as_secs_f64() * 100_000.0).round() / 100.0
    };
    json!({"answered": latencies.len(), "unanswered": unanswered, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
}

fn progress(ctx: &Ctx, what: &str) {
    if !ctx.json {
        eprintln!("… {what}");
    }
}
