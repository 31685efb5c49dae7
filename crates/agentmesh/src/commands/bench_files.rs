//! `agentmesh bench --file-mib N`: two real nodes on loopback, one file of N MiB sent from one
//! to the other (hashed, offered, pulled in sealed chunks, checked, hashed again, written, synced,
//! verified and saved), timed, with both nodes' peak memory.

use std::io::Write;
use std::time::{Duration, Instant};

use agentmesh_api::TransferState;
use agentmesh_api::control::SendFileArgs;
use agentmesh_testkit::local::{self, LocalNode};
use anyhow::{Context, Result, bail};
use serde_json::json;

use super::Ctx;
use super::bench::{path_to, trust};
use crate::cli::BenchCarrier;
use crate::output;

pub(crate) async fn run(ctx: &Ctx, mib: u64, carrier: BenchCarrier) -> Result<()> {
    if mib == 0 {
        bail!("--file-mib needs at least 1");
    }
    let dir = tempfile::Builder::new().prefix("agentmesh-bench-files-").tempdir()?;
    let exe = std::env::current_exe()?;
    let (a_home, b_home) = (dir.path().join("sender"), dir.path().join("receiver"));
    local::init(&exe, &a_home, "sender", &[])?;
    local::init(&exe, &b_home, "receiver", &[])?;
    std::fs::write(b_home.join("config.toml"), "file_auto_accept = true\nmax_file_bytes = 1099511627776\n")
        .context("writing the receiver's config")?;
    let mut sender = LocalNode::start(&exe, &a_home, "127.0.0.1:0", carrier.env()).await?;
    let mut receiver = LocalNode::start(&exe, &b_home, "127.0.0.1:0", carrier.env()).await?;
    trust(&sender, &receiver).await?;
    let idle = (rss(&sender).1, rss(&receiver).1);

    let src = dir.path().join("bench.bin");
    write_file(&src, mib)?;
    let size = mib << 20;
    let args = SendFileArgs {
        to: receiver.agent_id.clone(),
        path: src.to_string_lossy().into_owned(),
        name: None,
        call_id: None,
    };
    let cpu = |n: &LocalNode| n.pid().and_then(local::cpu_seconds).unwrap_or(0.0);
    let cpu_before = (cpu(&sender), cpu(&receiver));
    let started = Instant::now();
    let id = sender.client.send_file(&args).await?.transfer.transfer_id;
    let offered = Instant::now();
    let (mut peak_a, mut peak_b) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(3600);
    let done = loop {
        peak_a = peak_a.max(rss(&sender).0);
        peak_b = peak_b.max(rss(&receiver).0);
        if let Ok(reply) = receiver.client.file(&id).await
            && !reply.transfer.state.is_open()
        {
            break reply.transfer;
        }
        if Instant::now() > deadline {
            bail!("the transfer did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let finished = Instant::now();
    let cpu_used = (cpu(&sender) - cpu_before.0, cpu(&receiver) - cpu_before.1);
    peak_a = peak_a.max(rss(&sender).0);
    peak_b = peak_b.max(rss(&receiver).0);
    if done.state != TransferState::Done {
        bail!("the transfer ended {}: {}", done.state, done.error.unwrap_or_default());
    }
    let saved = done.path.clone().unwrap_or_default();
    if std::fs::metadata(&saved).map(|m| m.len()).ok() != Some(size) {
        bail!("the saved file is not {size} bytes");
    }
    // The figure stands on verified work: the file saved holds the bytes sent.
    let (sent_digest, saved_digest) = (sha256_of(&src)?, sha256_of(std::path::Path::new(&saved))?);
    if saved_digest != sent_digest {
        bail!("the saved file's SHA-256 {saved_digest} is not the sent file's {sent_digest}");
    }
    if saved_digest != done.sha256 {
        bail!("the saved file's SHA-256 {saved_digest} is not the offer's {}", done.sha256);
    }
    // And the sender heard so (the receiver's signed `received`).
    let confirmed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match sender.client.file(&id).await {
                Ok(r) if r.transfer.state == TransferState::Done => return true,
                Ok(r) if !r.transfer.state.is_open() => return false,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap_or(false);
    if !confirmed {
        bail!("the sender never saw the transfer confirmed");
    }
    // The fetches go receiver → sender: that is the path the bytes took.
    let path = path_to(&receiver, &sender).await;
    let (a_ok, b_ok) = (sender.stop().await, receiver.stop().await);
    let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    let mb_s = |d: Duration| (size as f64 / 1e6 / d.as_secs_f64()).round();
    let transfer = finished - offered;
    let report = json!({
        "carrier": carrier.name(),
        "path": path,
        "file_mib": mib,
        "chunk_bytes": done.chunk_size,
        "hash_and_offer_s": secs(offered - started),
        "transfer_s": secs(transfer),
        "transfer_mb_per_s": mb_s(transfer),
        "end_to_end_s": secs(finished - started),
        "end_to_end_mb_per_s": mb_s(finished - started),
        "peak_rss_kib": {"sender": peak_a, "receiver": peak_b},
        "idle_rss_kib": {"sender": idle.0, "receiver": idle.1},
        "cpu_s": {"sender": (cpu_used.0 * 100.0).round() / 100.0, "receiver": (cpu_used.1 * 100.0).round() / 100.0},
        "sha256": saved_digest,
        "digest_verified": saved_digest == sent_digest,
        "clean_shutdown": a_ok && b_ok,
    });
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!(
            "one {mib} MiB file, encrypted in {} KiB chunks, verified, over {}",
            done.chunk_size / 1024,
            path.as_str().unwrap_or("an unknown path")
        ));
        output::line(&format!(
            "  transfer     {} s, {} MB/s (offer accepted → saved and verified)",
            report["transfer_s"], report["transfer_mb_per_s"]
        ));
        output::line(&format!(
            "  end to end   {} s, {} MB/s (with the sender's hashing)",
            report["end_to_end_s"], report["end_to_end_mb_per_s"]
        ));
        output::line(&format!("  peak RSS     sender {} KiB, receiver {} KiB", peak_a, peak_b));
    }
    Ok(())
}

/// Peak and current RSS, KiB (0 when unknown).
fn rss(node: &LocalNode) -> (u64, u64) {
    node.memory_kib().unwrap_or((0, 0))
}

/// The SHA-256 of the file at `path`, hex, read in 1 MiB pieces.
fn sha256_of(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (mut hasher, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// `mib` MiB of random-looking bytes, each MiB distinct.
fn write_file(path: &std::path::Path, mib: u64) -> Result<()> {
    let mut block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_be_bytes());
        f.write_all(&block)?;
    }
    f.flush()?;
    // On disk before the clock starts, as a file to send would be: its writeback must not
    // compete with the transfer's.
    f.get_ref().sync_all()?;
    Ok(())
}
