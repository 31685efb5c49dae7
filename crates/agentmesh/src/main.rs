//! The `agentmesh` command.

mod cli;
mod commands;
mod mcp;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::commands::CliError;

fn main() -> ExitCode {
    // Everything agentmesh creates is its owner's alone, whatever the caller's umask (SQLite's
    // database and WAL hold decrypted messages).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // A node serves up to `max_connections` sockets besides its files: use the open-file limit
    // the system allows, not the often smaller soft default.
    if let Ok((soft, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    let json_mode = cli.global.json;
    let default_filter = if matches!(cli.command, cli::Command::Up(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only for a person at a terminal: a log file gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("AGENTMESH_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let error = CliError {
                code: agentmesh_api::ErrorCode::Internal,
                message: format!("cannot start the async runtime: {e}"),
            };
            error.print(json_mode);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            CliError::from_anyhow(&error).print(json_mode);
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refused: with `--json` anywhere on it, the error as JSON on stderr (exit
/// 2), else clap's own text. Help and version requests are not errors.
fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let json_mode = std::env::args_os().skip(1).any(|a| a == "--json");
    if !json_mode {
        let _ = e.print();
        return ExitCode::from(2);
    }
    // clap's text, rendered without styling, first paragraph only (the usage follows).
    let text = e.render().to_string();
    let message = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message).to_owned();
    CliError { code: agentmesh_api::ErrorCode::InvalidArgument, message }.print(true);
    ExitCode::from(2)
}
