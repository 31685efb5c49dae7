//! One module per command group; [`run`] dispatches.

mod bench;
mod bench_gossip;
mod contacts;
mod demo;
mod flood;
mod init;
mod keys;
mod messages;
mod node;
mod peers;
mod registry;
mod scan;

use std::path::PathBuf;

use agentmesh_client::{Client, ClientError};
use agentmesh_node::Home;
use anyhow::Result;

use crate::cli::{Cli, Command};

/// Resolved settings shared by every command.
pub struct Ctx {
    /// The home directory.
    pub home: Home,
    /// `--json`.
    pub json: bool,
}

/// The node for this home is not running (no `node.json`, or it does not answer).
#[derive(Debug, thiserror::Error)]
#[error("no node is running for {home}; start one with `agentmesh up --home {home}`")]
pub struct NodeNotRunning {
    home: String,
}

/// An error as shown to the user: a machine code and a one-line message.
pub struct CliError {
    /// Machine code, e.g. `node_not_running`, `not_trusted`.
    pub code: String,
    /// One line for a person.
    pub message: String,
}

impl CliError {
    /// Classifies an error from a command.
    pub fn from_anyhow(error: &anyhow::Error) -> Self {
        if let Some(e) = error.downcast_ref::<NodeNotRunning>() {
            return CliError { code: "node_not_running".into(), message: e.to_string() };
        }
        if let Some(e) = error.downcast_ref::<ClientError>() {
            return CliError { code: e.code().into(), message: format!("{error:#}") };
        }
        CliError { code: "error".into(), message: format!("{error:#}") }
    }
}

impl Ctx {
    /// A client for the running node, or [`NodeNotRunning`].
    pub fn client(&self) -> Result<Client> {
        let Some((info, token)) = self.home.runtime() else {
            return Err(NodeNotRunning { home: self.home.root().display().to_string() }.into());
        };
        Ok(Client::new(&info.control_url, &token)?)
    }

    /// Maps an unreachable node to [`NodeNotRunning`] (stale `node.json` after a crash).
    pub fn check<T>(&self, result: Result<T, ClientError>) -> Result<T> {
        match result {
            Err(ClientError::Unreachable { .. }) => {
                Err(NodeNotRunning { home: self.home.root().display().to_string() }.into())
            }
            other => Ok(other?),
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let root: PathBuf = cli.global.home.clone().unwrap_or_else(agentmesh_node::home::default_home);
    let ctx = Ctx { home: Home::new(root), json: cli.global.json };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Up(args) => node::up(&ctx, args).await,
        Command::Card => node::card(&ctx).await,
        Command::Status => node::status(&ctx).await,
        Command::RequestContact(args) => contacts::request(&ctx, args).await,
        Command::AddPeer(args) => contacts::add_peer(&ctx, args).await,
        Command::Repin { agent_id, fingerprint } => keys::repin(&ctx, &agent_id, &fingerprint).await,
        Command::RotateKey => keys::rotate(&ctx).await,
        Command::Scan(args) => scan::run(&ctx, args).await,
        Command::Search(args) => registry::search(&ctx, args).await,
        Command::Registry(crate::cli::RegistryCommand::Serve(args)) => registry::serve(&ctx, args).await,
        Command::Registry(crate::cli::RegistryCommand::Bench(args)) => registry::bench(&ctx, args).await,
        Command::Discover(args) => scan::discover(&ctx, args).await,
        Command::ListRequests(args) => contacts::list(&ctx, args).await,
        Command::ApproveRequest { request_id } => contacts::decide(&ctx, &request_id, true, None).await,
        Command::RejectRequest { request_id, reason } => contacts::decide(&ctx, &request_id, false, reason).await,
        Command::Peers => peers::list(&ctx).await,
        Command::Block { agent_id } => peers::change(&ctx, &agent_id, peers::Change::Block).await,
        Command::Unblock { agent_id } => peers::change(&ctx, &agent_id, peers::Change::Unblock).await,
        Command::Remove { agent_id } => peers::change(&ctx, &agent_id, peers::Change::Remove).await,
        Command::SendMessage(args) => messages::send(&ctx, args).await,
        Command::ListMessages(args) => messages::list(&ctx, args).await,
        Command::Read { message_id } => messages::read(&ctx, &message_id).await,
        Command::Demo => demo::run(&ctx).await,
        Command::Bench(args) => bench::run(&ctx, args).await,
    }
}
