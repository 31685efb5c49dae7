//! The `agentmesh` command.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use crate::cli::Cli;
use crate::commands::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_mode = cli.global.json;
    let default_filter = if matches!(cli.command, cli::Command::Up(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("AGENTMESH_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentmesh: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let e = CliError::from_anyhow(&error);
            if json_mode {
                eprintln!("{}", json!({"error": {"code": e.code, "message": e.message}}));
            } else {
                eprintln!("agentmesh: {}", e.message);
            }
            ExitCode::FAILURE
        }
    }
}
