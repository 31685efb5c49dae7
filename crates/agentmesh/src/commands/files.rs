//! `send-file`, `files`, `accept-file`, `cancel-file`.

use std::io::IsTerminal;
use std::time::Duration;

use agentmesh_api::control::{FilesQuery, SendFileArgs as SendBody};
use agentmesh_api::{Direction, ErrorCode, Transfer, TransferState};
use anyhow::Result;

use super::{Ctx, fail};
use crate::cli::{FilesArgs, SendFileArgs};
use crate::output;

/// How often `--wait` looks at the transfer.
const POLL: Duration = Duration::from_millis(200);

fn describe(t: &Transfer) -> String {
    let mut state = t.state.to_string();
    if t.state == TransferState::Transferring && t.size > 0 {
        state.push_str(&format!(" {}%", t.bytes_done.saturating_mul(100) / t.size));
    }
    if let Some(e) = &t.error {
        state.push_str(&format!(": {}", output::clean(e, false)));
    }
    state
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) async fn send(ctx: &Ctx, args: SendFileArgs) -> Result<()> {
    let path =
        std::path::absolute(&args.path).map_err(|e| fail(ErrorCode::Io, format!("{}: {e}", args.path.display())))?;
    let client = ctx.client()?;
    let body =
        SendBody { to: args.peer, path: path.to_string_lossy().into_owned(), name: args.name, call_id: args.call };
    let mut transfer = ctx.check(client.send_file(&body).await)?.transfer;
    if args.wait {
        let bar = (!ctx.json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(transfer.size);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(format!("{} → {}", transfer.name, transfer.peer_id));
            bar
        });
        while transfer.state.is_open() {
            tokio::time::sleep(POLL).await;
            transfer = ctx.check(client.file(&transfer.transfer_id).await)?.transfer;
            if let Some(bar) = &bar {
                bar.set_position(transfer.bytes_done);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
    if ctx.json {
        output::json_doc(&transfer);
    } else if transfer.state == TransferState::Done {
        output::line(&format!(
            "{} ({}) delivered to {}, digest confirmed.",
            transfer.name,
            mib(transfer.size),
            transfer.peer_id
        ));
    } else if transfer.state.is_open() {
        output::line(&format!(
            "Offered {} ({}) to {} — transfer {}. `agentmesh files` shows how it goes.",
            transfer.name,
            mib(transfer.size),
            transfer.peer_id,
            transfer.transfer_id
        ));
    } else {
        output::line(&format!("Transfer {} of {}: {}.", transfer.transfer_id, transfer.name, describe(&transfer)));
    }
    if args.wait && !transfer.state.is_open() && transfer.state != TransferState::Done {
        return Err(fail(ErrorCode::TransferState, format!("{} is {}", transfer.transfer_id, describe(&transfer))));
    }
    Ok(())
}

pub(crate) async fn list(ctx: &Ctx, args: FilesArgs) -> Result<()> {
    let client = ctx.client()?;
    let query = FilesQuery { peer: args.peer, direction: None, open: args.open, limit: Some(args.limit) };
    let reply = ctx.check(client.files(&query).await)?;
    if ctx.json {
        output::json_doc(&reply);
    } else if reply.transfers.is_empty() {
        output::line("No file transfers.");
    } else {
        let rows: Vec<Vec<String>> = reply
            .transfers
            .iter()
            .map(|t| {
                let arrow = if t.direction == Direction::Incoming { "<-" } else { "->" };
                vec![
                    output::time(t.created_at),
                    format!("{arrow} {}", t.peer_id),
                    output::clean(&t.name, false).chars().take(40).collect(),
                    mib(t.size),
                    describe(t),
                    t.transfer_id.clone(),
                ]
            })
            .collect();
        output::table(&["OFFERED (UTC)", "PEER", "NAME", "SIZE", "STATE", "ID"], &rows);
    }
    Ok(())
}

pub(crate) async fn accept(ctx: &Ctx, id: &str) -> Result<()> {
    let client = ctx.client()?;
    let t = ctx.check(client.accept_file(id).await)?.transfer;
    if ctx.json {
        output::json_doc(&t);
    } else {
        output::line(&format!(
            "Accepted {} ({}) from {}; it is saved under files/{}/ when complete.",
            output::clean(&t.name, false),
            mib(t.size),
            t.peer_id,
            t.peer_id
        ));
    }
    Ok(())
}

pub(crate) async fn cancel(ctx: &Ctx, id: &str, reason: Option<String>) -> Result<()> {
    let client = ctx.client()?;
    let t = ctx.check(client.cancel_file(id, reason.as_deref()).await)?.transfer;
    if ctx.json {
        output::json_doc(&t);
    } else {
        output::line(&format!("Transfer {} is {}.", t.transfer_id, describe(&t)));
    }
    Ok(())
}
