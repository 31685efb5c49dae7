//! One module per command group; [`run`] dispatches.

#[cfg(feature = "dev-tools")]
mod bench;
#[cfg(feature = "dev-tools")]
mod bench_calls;
#[cfg(feature = "dev-tools")]
mod bench_events;
#[cfg(feature = "dev-tools")]
mod bench_files;
#[cfg(feature = "dev-tools")]
mod bench_gossip;
#[cfg(feature = "dev-tools")]
mod bench_mcp;
#[cfg(feature = "dev-tools")]
mod bench_peer;
#[cfg(feature = "dev-tools")]
mod bench_registry;
#[cfg(feature = "dev-tools")]
mod bench_sockets;
#[cfg(feature = "dev-tools")]
mod bench_tasks;
mod calls;
mod contacts;
#[cfg(feature = "dev-tools")]
mod demo;
mod events;
mod files;
#[cfg(feature = "dev-tools")]
mod flood;
mod init;
mod keys;
mod messages;
mod node;
mod peers;
pub(crate) mod registry;
pub(crate) mod relay;
mod scan;
pub(crate) mod tasks;

use std::path::PathBuf;

use agentmesh_api::ErrorCode;
use agentmesh_client::{Client, ClientError};
use agentmesh_node::Home;
use anyhow::Result;
use serde_json::json;

use crate::cli::{Cli, Command};

/// Resolved settings shared by every command.
pub(crate) struct Ctx {
    /// The home directory.
    pub(crate) home: Home,
    /// `--json`.
    pub(crate) json: bool,
}

/// The node for this home is not running (no `node.json`, or it does not answer).
#[derive(Debug, thiserror::Error)]
#[error("no node is running for {home}; start one with `agentmesh up --home {home}`")]
pub(crate) struct NodeNotRunning {
    home: String,
}

impl NodeNotRunning {
    /// For `ctx`'s home.
    pub(crate) fn for_home(ctx: &Ctx) -> Self {
        NodeNotRunning { home: ctx.home.root().display().to_string() }
    }
}

/// A failure a command found itself, with its code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Fail {
    /// The code.
    pub(crate) code: ErrorCode,
    /// One line for a person.
    pub(crate) message: String,
}

/// A [`Fail`] as an error.
pub(crate) fn fail(code: ErrorCode, message: impl Into<String>) -> anyhow::Error {
    Fail { code, message: message.into() }.into()
}

/// An error as shown to the user: a machine code and a one-line message.
pub(crate) struct CliError {
    /// Machine code, e.g. `node_not_running`, `not_trusted`.
    pub(crate) code: ErrorCode,
    /// One line for a person.
    pub(crate) message: String,
}

impl CliError {
    /// Classifies an error from a command: the code of the first typed error in its chain.
    pub(crate) fn from_anyhow(error: &anyhow::Error) -> Self {
        let message = format!("{error:#}");
        for cause in error.chain() {
            let code = if cause.is::<NodeNotRunning>() {
                Some(ErrorCode::NodeNotRunning)
            } else if let Some(e) = cause.downcast_ref::<Fail>() {
                Some(e.code)
            } else if let Some(e) = cause.downcast_ref::<ClientError>() {
                // A code this build does not know is shown in the message.
                Some(e.error_code().unwrap_or(ErrorCode::BadResponse))
            } else if let Some(e) = cause.downcast_ref::<agentmesh_node::LaunchError>() {
                Some(e.code())
            } else if let Some(e) = cause.downcast_ref::<agentmesh_node::home::HomeError>() {
                Some(e.code())
            } else if let Some(e) = cause.downcast_ref::<agentmesh_registry::client::RegistryError>() {
                Some(match e.status {
                    401 | 403 => ErrorCode::RegistryUnauthorized,
                    0 => ErrorCode::PeerUnreachable,
                    _ => ErrorCode::RegistryError,
                })
            } else if cause.is::<agentmesh_node::config::ConfigError>() {
                Some(ErrorCode::InvalidConfig)
            } else if cause.is::<std::io::Error>() {
                Some(ErrorCode::Io)
            } else {
                None
            };
            if let Some(code) = code {
                return CliError { code, message };
            }
        }
        CliError { code: ErrorCode::Internal, message }
    }

    /// Prints it on stderr: `{"error":{"code","message"}}` with `--json`, one line otherwise.
    pub(crate) fn print(&self, json_mode: bool) {
        if json_mode {
            eprintln!("{}", json!({"error": {"code": self.code.as_str(), "message": self.message}}));
        } else {
            eprintln!("agentmesh: {}", self.message);
        }
    }
}

impl Ctx {
    /// A client for the running node, or [`NodeNotRunning`].
    pub(crate) fn client(&self) -> Result<Client> {
        let Some((info, token)) = self.home.runtime() else {
            return Err(NodeNotRunning { home: self.home.root().display().to_string() }.into());
        };
        Ok(Client::new(&info.control_url, &token)?)
    }

    /// Maps an unreachable node to [`NodeNotRunning`] (stale `node.json` after a crash).
    pub(crate) fn check<T>(&self, result: Result<T, ClientError>) -> Result<T> {
        match result {
            Err(ClientError::Unreachable { .. }) => {
                Err(NodeNotRunning { home: self.home.root().display().to_string() }.into())
            }
            other => Ok(other?),
        }
    }

    /// Whether a node answers for this home.
    pub(crate) async fn node_running(&self) -> bool {
        match self.client() {
            Ok(client) => client.status().await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let root: PathBuf = cli.global.home.clone().unwrap_or_else(agentmesh_node::home::default_home);
    let ctx = Ctx { home: Home::new(root), json: cli.global.json };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Up(args) => node::up(&ctx, args).await,
        Command::Card => node::card(&ctx).await,
        Command::Status => node::status(&ctx).await,
        Command::RequestContact(args) => contacts::request(&ctx, args).await,
        Command::AddPeer(args) => contacts::add_peer(&ctx, args).await,
        Command::Repin { peer, fingerprint } => keys::repin(&ctx, &peer, &fingerprint).await,
        Command::RotateKey => keys::rotate(&ctx).await,
        Command::Scan(args) => scan::run(&ctx, args).await,
        Command::Search(args) => registry::search(&ctx, args).await,
        Command::Registry(crate::cli::RegistryCommand::Serve(args)) => registry::serve(&ctx, args).await,
        Command::Relay(crate::cli::RelayCommand::Serve(args)) => relay::serve(&ctx, args).await,
        #[cfg(feature = "dev-tools")]
        Command::Registry(crate::cli::RegistryCommand::Bench(args)) => bench_registry::bench(&ctx, args).await,
        Command::Discover(args) => scan::discover(&ctx, args).await,
        Command::ListRequests(args) => contacts::list(&ctx, args).await,
        Command::ApproveRequest { request_id } => {
            contacts::decide(&ctx, &request_id, contacts::Decision::Approve).await
        }
        Command::RejectRequest(args) => contacts::reject(&ctx, args).await,
        Command::WithdrawRequest { request_id } => {
            contacts::decide(&ctx, &request_id, contacts::Decision::Withdraw).await
        }
        Command::Peers(args) => peers::list(&ctx, args).await,
        Command::Check { peer } => peers::check(&ctx, &peer).await,
        Command::Block { peer } => peers::change(&ctx, &peer, peers::Change::Block).await,
        Command::Unblock { peer } => peers::change(&ctx, &peer, peers::Change::Unblock).await,
        Command::Remove { peer } => peers::change(&ctx, &peer, peers::Change::Remove).await,
        Command::SendMessage(args) => messages::send(&ctx, args).await,
        Command::ListMessages(args) => messages::list(&ctx, args).await,
        Command::Read { message_id } => messages::read(&ctx, &message_id).await,
        Command::Retry { message_id } => messages::retry(&ctx, &message_id).await,
        Command::ClearFailed => messages::clear_failed(&ctx).await,
        Command::Call(args) => calls::call(&ctx, args).await,
        Command::Answer(args) => calls::answer(&ctx, args).await,
        Command::Say { call_id, text } => calls::say(&ctx, &call_id, text).await,
        Command::End { call_id, reason } => calls::end(&ctx, &call_id, reason).await,
        Command::Transcript { call_id, format } => calls::transcript(&ctx, &call_id, format).await,
        Command::SendFile(args) => files::send(&ctx, args).await,
        Command::Files(args) => files::list(&ctx, args).await,
        Command::AcceptFile { transfer_id } => files::accept(&ctx, &transfer_id).await,
        Command::CancelFile { transfer_id, reason } => files::cancel(&ctx, &transfer_id, reason).await,
        Command::Calls(args) => calls::list(&ctx, args).await,
        Command::Delegate(args) => tasks::delegate(&ctx, args).await,
        Command::Tasks(args) => tasks::list(&ctx, args).await,
        Command::Task { task_id } => tasks::show(&ctx, &task_id).await,
        Command::UpdateTask(args) => tasks::update(&ctx, args).await,
        Command::ReplyTask { task_id, text } => tasks::reply(&ctx, &task_id, text).await,
        Command::CancelTask { task_id } => tasks::cancel(&ctx, &task_id).await,
        Command::Escalate(args) => tasks::escalate(&ctx, args).await,
        Command::Escalations { open } => tasks::escalations(&ctx, open).await,
        Command::ResolveEscalation { escalation_id, answer } => tasks::resolve(&ctx, &escalation_id, &answer).await,
        Command::A2a(command) => tasks::a2a(&ctx, command).await,
        Command::Events(args) => events::events(&ctx, args).await,
        #[cfg(feature = "dev-tools")]
        Command::Demo => demo::run(&ctx).await,
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => bench::run(&ctx, args).await,
        Command::Mcp(args) => crate::mcp::run(&ctx, args).await,
    }
}
