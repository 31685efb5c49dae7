//! Command-line arguments (clap derive). Raw arguments only; commands resolve them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// agentmesh: identity, discovery, explicit trust and end-to-end encrypted messaging for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentmesh", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub(crate) global: Global,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Home directory holding the identity, database and node files
    /// [default: ~/.openclaw/agentmesh]
    #[arg(long, global = true, env = "AGENTMESH_HOME", value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Print exactly one JSON document on stdout (JSON lines for streams); errors as JSON on stderr.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create this agent's identity: Ed25519 and X25519 keys, agent id, profile.
    Init(InitArgs),
    /// Run the node in the foreground (peer API + control API + delivery worker).
    Up(UpArgs),
    /// Print this agent's signed agent card.
    Card,
    /// Identity, listen address, peers, pending requests, unread messages, outbox.
    Status,
    /// Ask an agent for contact: fetch and verify the card at a URL (or use a known peer's), then
    /// send a signed contact request and report how its delivery went.
    RequestContact(RequestContactArgs),
    /// Pin an agent you know by id (TOFU): fetch its card from URL, check the id matches its key,
    /// pin the key and send a contact request.
    AddPeer(AddPeerArgs),
    /// Accept the new key a pinned peer presented (see `status`), after checking its fingerprint
    /// with the peer's owner.
    Repin {
        /// The peer: agent id, alias, name or unique prefix.
        peer: String,
        /// The new fingerprint you checked (`sha256:…`, as `status` shows it).
        #[arg(long)]
        fingerprint: String,
    },
    /// Make new keys, signed over by the old ones; the agent id stays, contacts update their pins.
    RotateKey,
    /// List agents known from every source (bootstrap, gossip, scan, contacts) with source and age.
    Discover(DiscoverArgs),
    /// Search a registry by text and capability; results feed `request-contact`.
    Search(SearchArgs),
    /// Run a registry server.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Run a relay server for iroh: agents behind NATs keep a connection to it, reach each
    /// other through it and punch holes with its help. It forwards sealed bytes only.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Probe HTTP endpoints for agents (native card, then Agent Mesh V1 discovery) and record
    /// what answers as discovered (never trusted).
    Scan(ScanArgs),
    /// List contact requests (with what each requester wrote: for the owner).
    #[command(visible_alias = "requests")]
    ListRequests(ListRequestsArgs),
    /// Approve an incoming contact request: both agents then trust each other.
    ApproveRequest {
        /// The request id (`req_…`).
        request_id: String,
    },
    /// Reject an incoming contact request, or all pending ones from an address or older than
    /// an age (`--from`, `--older-than`); each requester is told.
    RejectRequest(RejectRequestArgs),
    /// Withdraw one of our pending contact requests; the peer is told.
    WithdrawRequest {
        /// The request id (`req_…`).
        request_id: String,
    },
    /// List known peers with trust state, endpoint, fingerprint and last seen.
    Peers(PeersArgs),
    /// Check that a peer answers at its endpoint with the key pinned for it.
    Check {
        /// The peer: agent id, alias, name or unique prefix.
        peer: String,
    },
    /// Block a peer: nothing from it is accepted, not even contact requests; it is told.
    Block {
        /// The peer: agent id, alias, name or unique prefix.
        peer: String,
    },
    /// Unblock a peer (it becomes merely discovered and is told it may ask again; trust is not
    /// restored).
    Unblock {
        /// The peer: agent id, alias, name or unique prefix.
        peer: String,
    },
    /// Forget a peer: revokes trust, drops its pinned key, fails what is queued for it; it is told.
    Remove {
        /// The peer: agent id, alias, name or unique prefix.
        peer: String,
    },
    /// Send a message (signed, end-to-end encrypted, durable until delivered).
    SendMessage(SendArgs),
    /// List received and sent messages with their status.
    ListMessages(ListMessagesArgs),
    /// Show a received message, mark it read and send a signed read receipt.
    Read {
        /// The message id.
        message_id: String,
    },
    /// Send a failed message again (fresh attempts and time to live).
    Retry {
        /// The message id.
        message_id: String,
    },
    /// Delete every failed outbox entry.
    ClearFailed,
    /// Ring a contact: a call is a conversation under its own id. The peer answers it, then both
    /// sides `say` lines until one `end`s it; both keep the transcript.
    Call(CallArgs),
    /// Answer a ringing call: `accept` or `reject` (with `--reason`).
    Answer(AnswerArgs),
    /// Say something in an active call (signed, end-to-end encrypted, durable until delivered);
    /// the text is read from stdin when absent.
    Say {
        /// The call id (`call_…`).
        call_id: String,
        /// What to say; read from stdin when absent.
        text: Option<String>,
    },
    /// Hang up a call, or withdraw one of ours still ringing; the peer is told.
    End {
        /// The call id (`call_…`).
        call_id: String,
        /// Told to the peer (at most 1,000 characters).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print a call's transcript: every line, who said it and when, with delivery receipts.
    Transcript {
        /// The call id (`call_…`).
        call_id: String,
        /// `md` (Markdown, the default) or `json` (what `--json` prints too).
        #[arg(long, value_enum, default_value_t = TranscriptFormat::Md)]
        format: TranscriptFormat,
    },
    /// List calls, newest first.
    Calls(CallsArgs),
    /// Offer a file to a contact: it is hashed, offered in a signed, encrypted envelope, and
    /// pulled by the peer in encrypted, authenticated chunks (resumable; any size).
    SendFile(SendFileArgs),
    /// List file transfers, both ways, newest first.
    Files(FilesArgs),
    /// Accept a file a contact offered; it is saved under <home>/files/<peer id>/.
    AcceptFile {
        /// The transfer id (`file_…`).
        transfer_id: String,
    },
    /// Decline an offered file, or stop a transfer either way; the peer is told.
    CancelFile {
        /// The transfer id (`file_…`).
        transfer_id: String,
        /// Told to the peer (at most 1,000 characters).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delegate a task to a contact (A2A task lifecycle): the peer's agent works on it and reports
    /// `working`, `input_required`, `completed` with artifacts, `failed` or `rejected`.
    Delegate(DelegateArgs),
    /// List tasks, both directions, most recently changed first.
    Tasks(TasksArgs),
    /// Show a task with its history.
    Task {
        /// The task id (`task_…`).
        task_id: String,
    },
    /// Report where a task delegated to us stands; the delegator is told.
    UpdateTask(UpdateTaskArgs),
    /// Answer a task we delegated (the input it asked for); text from stdin when absent.
    ReplyTask {
        /// The task id (`task_…`).
        task_id: String,
        /// The answer; read from stdin when absent.
        #[arg(long)]
        text: Option<String>,
    },
    /// Ask the worker to stop a task we delegated.
    CancelTask {
        /// The task id (`task_…`).
        task_id: String,
    },
    /// Ask the owner about a call or task: it waits for the answer, the peer is told.
    Escalate(EscalateArgs),
    /// List escalations (questions to the owner), newest first.
    Escalations {
        /// Only those still waiting for an answer.
        #[arg(long)]
        open: bool,
    },
    /// Answer an escalation (the owner): the answer goes back into the call or task, and to the peer.
    ResolveEscalation {
        /// The escalation id (`esc_…`).
        escalation_id: String,
        /// The answer (1 to 1,000 characters).
        #[arg(long)]
        answer: String,
    },
    /// The A2A 1.0 endpoint (`/.well-known/agent-card.json`, `/a2a/v1`): issue and revoke the
    /// bearer tokens of agents that delegate tasks to ours over A2A.
    #[command(subcommand)]
    A2a(A2aCommand),
    /// The node's event log (messages, receipts, contact requests, trust changes, peers going
    /// offline), each with its cursor; `--follow` streams new ones.
    Events(EventsArgs),
    /// Run a local demo: two agents find, trust and message each other, survive a crash.
    #[cfg(feature = "dev-tools")]
    Demo,
    /// Measure throughput and latency of the real delivery path between two local nodes.
    #[cfg(feature = "dev-tools")]
    Bench(BenchArgs),
    /// Serve this agent's node to an MCP client (OpenClaw, Claude Code, …): tools and resources
    /// on stdio, or streamable HTTP on loopback with --http.
    Mcp(McpArgs),
}

/// `init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Display name of this agent.
    #[arg(long)]
    pub(crate) name: String,
    /// Public base URL peers should use (default: the node's listen address).
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// A capability tag to advertise (repeatable).
    #[arg(long = "capability", value_name = "C")]
    pub(crate) capabilities: Vec<String>,
    /// Replace an existing identity (its keys are lost for good).
    #[arg(long)]
    pub(crate) force: bool,
}

/// `up` arguments.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Address for the peer API [default: 127.0.0.1:8787, or `listen` in config.toml].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Public base URL to advertise (overrides the profile and config).
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// A bootstrap node to announce ourselves to and learn peers from (repeatable).
    #[arg(long, value_name = "URL")]
    pub(crate) bootstrap: Vec<String>,
    /// Serve as a bootstrap node for others (larger answers to announcements).
    #[arg(long)]
    pub(crate) bootstrap_mode: bool,
    /// Do not advertise on the LAN with mDNS (only done when listening on a non-loopback address).
    #[arg(long)]
    pub(crate) no_mdns: bool,
    /// Stay listed in this registry: register, heartbeat every 60 s, deregister on shutdown.
    #[arg(long, value_name = "URL")]
    pub(crate) registry: Option<String>,
}

/// `request-contact` arguments.
#[derive(Debug, Args)]
pub(crate) struct RequestContactArgs {
    /// The agent's base URL (e.g. http://127.0.0.1:8787), or a known peer (agent id, alias,
    /// name or unique prefix).
    pub(crate) target: String,
    /// Why you want contact; shown to the other agent's owner.
    #[arg(long, default_value = "")]
    pub(crate) purpose: String,
    /// Your name for this peer.
    #[arg(long)]
    pub(crate) alias: Option<String>,
    /// Seconds to wait for the first delivery attempt (0: do not wait).
    #[arg(long, default_value_t = 15.0)]
    pub(crate) wait: f64,
}

/// `peers` arguments.
#[derive(Debug, Args)]
pub(crate) struct PeersArgs {
    /// Also list removed peers.
    #[arg(long)]
    pub(crate) all: bool,
}

/// `add-peer` arguments.
#[derive(Debug, Args)]
pub(crate) struct AddPeerArgs {
    /// The agent id you expect (16 hex).
    pub(crate) agent_id: String,
    /// The agent's base URL, e.g. http://127.0.0.1:8787.
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint: String,
    /// Your name for this peer.
    #[arg(long)]
    pub(crate) alias: Option<String>,
    /// Why you want contact; shown to the other agent's owner.
    #[arg(long, default_value = "")]
    pub(crate) purpose: String,
}

/// `search` arguments.
#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// Words to look for in names, descriptions and capabilities.
    pub(crate) text: Option<String>,
    /// Required capability (repeatable: all are required).
    #[arg(long = "capability", value_name = "C")]
    pub(crate) capabilities: Vec<String>,
    /// At most this many results (1 to 50).
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
    /// Results to skip.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// The registry [default: `registry` in config.toml].
    #[arg(long, value_name = "URL")]
    pub(crate) registry: Option<String>,
}

/// `registry` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Serve the registry API in the foreground.
    Serve(RegistryServeArgs),
    /// Measure search latency and heartbeat ingest with many agents.
    #[cfg(feature = "dev-tools")]
    Bench(RegistryBenchArgs),
}

/// `relay` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RelayCommand {
    /// Serve the relay in the foreground: HTTPS (the relay protocol), plain HTTP (captive-portal
    /// probes) and QUIC address discovery.
    Serve(RelayServeArgs),
}

/// `relay serve` arguments.
#[derive(Debug, Args)]
pub(crate) struct RelayServeArgs {
    /// Address of the HTTPS listener agents connect to (`[iroh] relays = ["https://<host>:<port>"]`).
    #[arg(long, default_value = "127.0.0.1:3443")]
    pub(crate) https: SocketAddr,
    /// Address of the plain HTTP listener (captive-portal probes; nothing relayed).
    #[arg(long, default_value = "127.0.0.1:3340")]
    pub(crate) http: SocketAddr,
    /// UDP address of QUIC address discovery (agents learn their public address from it; they
    /// look for it on port 7842 of the relay's host).
    #[arg(long, default_value = "127.0.0.1:7842")]
    pub(crate) quic: SocketAddr,
    /// Serve no QUIC address discovery.
    #[arg(long)]
    pub(crate) no_quic: bool,
    /// PEM certificate chain for HTTPS (with `--key`) [default: a self-signed certificate for
    /// `--hostname`, kept in <home>/relay/].
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// PEM private key of `--cert` (mode 0600).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Names (DNS names or IP addresses) the self-signed certificate is for; repeatable
    /// [default: localhost and 127.0.0.1].
    #[arg(long = "hostname", value_name = "NAME")]
    pub(crate) hostnames: Vec<String>,
}

/// `registry serve` arguments.
#[derive(Debug, Args)]
pub(crate) struct RegistryServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub(crate) listen: SocketAddr,
    /// `postgres://user@host/db`, or a SQLite file [default: <home>/registry.db].
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// File holding the API key clients must send in `X-Registry-Key` (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// Heartbeat interval agents use, seconds (offline after three missed).
    #[arg(long, default_value_t = 60)]
    pub(crate) heartbeat_secs: u64,
    /// Signed writes per agent per minute (0: no limit).
    #[arg(long, default_value_t = 60)]
    pub(crate) per_key_per_minute: u32,
    /// Requests per source IP per minute (0: no limit).
    #[arg(long, default_value_t = 1200)]
    pub(crate) per_ip_per_minute: u32,
}

/// `registry bench` arguments.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Args)]
pub(crate) struct RegistryBenchArgs {
    /// Agents to load.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) agents: usize,
    /// `postgres://…` to measure PostgreSQL [default: a SQLite file in a temporary directory].
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// Searches per query kind.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) searches: usize,
    /// Heartbeats to send.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) heartbeats: usize,
}

/// `discover` arguments.
#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    /// Browse the LAN with mDNS instead, verify each agent's card over HTTP and record it.
    #[arg(long)]
    pub(crate) lan: bool,
    /// How long to listen on the LAN, seconds (with --lan).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) timeout: f64,
    /// Only agents whose name, id or a capability contains this text.
    #[arg(long)]
    pub(crate) query: Option<String>,
    /// Only agents with this capability (repeatable: all are required).
    #[arg(long = "capability", value_name = "C")]
    pub(crate) capabilities: Vec<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

/// `scan` arguments.
#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Base URLs (`http://127.0.0.1:8787`) or URLs with a port range (`http://127.0.0.1:8700-8799`).
    pub(crate) targets: Vec<String>,
    /// Also probe every host of this CIDR block (e.g. 192.168.1.0/24) at `--port`.
    #[arg(long, value_name = "CIDR")]
    pub(crate) cidr: Option<String>,
    /// Port probed on `--cidr` hosts.
    #[arg(long, default_value_t = 8787)]
    pub(crate) port: u16,
    /// Probes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Per-probe timeout, seconds.
    #[arg(long, default_value_t = 1.5)]
    pub(crate) timeout: f64,
}

/// `list-requests` arguments.
#[derive(Debug, Args)]
pub(crate) struct ListRequestsArgs {
    /// Only requests other agents sent us.
    #[arg(long, conflicts_with = "outgoing")]
    pub(crate) incoming: bool,
    /// Only requests we sent.
    #[arg(long)]
    pub(crate) outgoing: bool,
    /// Only open (pending) requests.
    #[arg(long)]
    pub(crate) open: bool,
    /// Keep running and print each new request or change of one as it happens (reconnects when
    /// the node restarts).
    #[arg(long)]
    pub(crate) follow: bool,
}

/// `events` arguments.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Start after this cursor (`seq`; 0: the whole log kept). Default: the newest `--limit`
    /// events, or with `--follow` new events only.
    #[arg(long, value_name = "SEQ")]
    pub(crate) after: Option<i64>,
    /// At most this many events listed (without `--follow`, or before following).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,
    /// Keep running and print events as they happen; resumes after the last one seen when the
    /// node restarts.
    #[arg(long)]
    pub(crate) follow: bool,
}

/// `reject-request` arguments.
#[derive(Debug, Args)]
pub(crate) struct RejectRequestArgs {
    /// The request id (`req_…`); or give `--from` and/or `--older-than` instead.
    #[arg(required_unless_present_any = ["from", "older_than"], conflicts_with_all = ["from", "older_than"])]
    pub(crate) request_id: Option<String>,
    /// Every pending request that came from this IP address or CIDR network (`203.0.113.0/24`).
    #[arg(long, visible_alias = "all-from-ip", value_name = "IP|CIDR")]
    pub(crate) from: Option<String>,
    /// Every pending request received at least this long ago (`30m`, `12h`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// Reason sent to the requester(s).
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

/// `send-message` arguments.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Recipient: agent id, alias, name or unique prefix.
    #[arg(long)]
    pub(crate) to: String,
    /// Message text; read from stdin when absent.
    #[arg(long)]
    pub(crate) text: Option<String>,
    /// Id of the message this answers.
    #[arg(long, value_name = "MESSAGE_ID")]
    pub(crate) reply_to: Option<String>,
    /// Thread label.
    #[arg(long)]
    pub(crate) thread: Option<String>,
}

/// `list-messages` arguments.
#[derive(Debug, Args)]
pub(crate) struct ListMessagesArgs {
    /// Only received messages.
    #[arg(long, conflicts_with = "outgoing")]
    pub(crate) incoming: bool,
    /// Only sent messages.
    #[arg(long)]
    pub(crate) outgoing: bool,
    /// Only unread received messages.
    #[arg(long)]
    pub(crate) unread: bool,
    /// Only sent messages that failed (`retry` or `clear-failed` them).
    #[arg(long, conflicts_with_all = ["incoming", "unread"])]
    pub(crate) failed: bool,
    /// Only messages with this peer (agent id, alias, name or unique prefix).
    #[arg(long, value_name = "PEER")]
    pub(crate) peer: Option<String>,
    /// At most this many per direction (most recent).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
    /// Keep running and print new messages and status changes as they happen (reconnects when
    /// the node restarts).
    #[arg(long)]
    pub(crate) follow: bool,
}

/// `mcp` arguments.
#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (a loopback address, e.g.
    /// 127.0.0.1:8790; clients send `Authorization: Bearer` with the token in <home>/mcp.token).
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<std::net::SocketAddr>,
}

/// `bench` arguments.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) messages: usize,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub(crate) size: usize,
    /// Instead: measure a well-behaved sender's latency alone and while another trusted sender
    /// floods the receiver (ignoring Retry-After).
    #[arg(long)]
    pub(crate) flood: bool,
    /// Connections the flooder keeps busy (with --flood).
    #[arg(long, default_value_t = 64)]
    pub(crate) flood_connections: usize,
    /// Instead: measure how fast a contact and a new peer connect while one address holds this
    /// many sockets open (idle, trickling heads, trickling bodies).
    #[arg(long, value_name = "SOCKETS", conflicts_with_all = ["flood", "gossip"])]
    pub(crate) hold_sockets: Option<usize>,
    /// Instead: start this many nodes (one bootstrap) and time until each knows every other.
    #[arg(long, value_name = "NODES")]
    pub(crate) gossip: Option<usize>,
    /// Instead: send this many messages one at a time and time each until the receiver's event
    /// stream (SSE) delivers it to a consumer.
    #[arg(long, value_name = "MESSAGES", conflicts_with_all = ["flood", "gossip", "hold_sockets"])]
    pub(crate) events: Option<usize>,
    /// Instead: time `--messages` MCP `send_message` calls with `wait_for_delivery` through an
    /// `agentmesh mcp` child process on stdio, each until its delivered reply (e.g. `--messages 500`).
    #[arg(long, conflicts_with_all = ["flood", "gossip", "hold_sockets", "events"])]
    pub(crate) mcp: bool,
    /// Instead: one call between two nodes and this many ping-pong round trips in it, one at a
    /// time: a line said on one side, answered by the other side's consumer as soon as its event
    /// stream delivers it, timed until the answer's event arrives back.
    #[arg(long, value_name = "ROUNDS", conflicts_with_all = ["flood", "gossip", "hold_sockets", "events", "mcp"])]
    pub(crate) calls: Option<usize>,
    /// Instead: this many task round trips, one at a time: a task delegated to the other node,
    /// completed with an artifact by a consumer of that node's event stream as soon as it
    /// arrives, timed until the `completed` update's event reaches the delegator.
    #[arg(long, value_name = "ROUNDS", conflicts_with_all = ["flood", "gossip", "hold_sockets", "events", "mcp", "calls"])]
    pub(crate) tasks: Option<usize>,
    /// Instead: send a file of this many MiB (random bytes) between two nodes, encrypted and
    /// verified, and report the throughput and both nodes' peak memory.
    #[arg(long, value_name = "MIB", conflicts_with_all = ["flood", "gossip", "hold_sockets", "events", "mcp", "calls", "tasks"])]
    pub(crate) file_mib: Option<u64>,
    /// What carries the messages (or the file) between the two nodes: `http`, or `iroh` (QUIC
    /// on loopback; both nodes also keep HTTP, the card lists iroh first).
    #[arg(long, value_enum, default_value_t = BenchCarrier::Http)]
    pub(crate) carrier: BenchCarrier,
}

/// A carrier `bench` can measure.
#[cfg(feature = "dev-tools")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchCarrier {
    /// HTTP/1.1 over TCP.
    Http,
    /// iroh: QUIC on loopback, direct.
    Iroh,
}

#[cfg(feature = "dev-tools")]
impl BenchCarrier {
    /// The environment that gives a bench node this carrier.
    pub(crate) fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            BenchCarrier::Http => &[("AGENTMESH_IROH_LISTEN", "")],
            BenchCarrier::Iroh => &[("AGENTMESH_IROH_LISTEN", "127.0.0.1:0")],
        }
    }

    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BenchCarrier::Http => "http",
            BenchCarrier::Iroh => "iroh",
        }
    }
}

/// `send-file` arguments.
#[derive(Debug, Args)]
pub(crate) struct SendFileArgs {
    /// The contact: agent id, alias, name or unique prefix.
    pub(crate) peer: String,
    /// The file (a regular file the node can read).
    pub(crate) path: std::path::PathBuf,
    /// Offer it under this name [default: the file's own name].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The call (with the same contact) the file belongs to.
    #[arg(long, value_name = "CALL_ID")]
    pub(crate) call: Option<String>,
    /// Wait until the peer has it (or the transfer ends otherwise), with a progress bar on a
    /// terminal.
    #[arg(long)]
    pub(crate) wait: bool,
}

/// `files` arguments.
#[derive(Debug, Args)]
pub(crate) struct FilesArgs {
    /// Only transfers with this peer (agent id, alias, name or unique prefix).
    #[arg(long)]
    pub(crate) peer: Option<String>,
    /// Only transfers still offered or under way.
    #[arg(long)]
    pub(crate) open: bool,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
}

/// `call` arguments.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The contact: agent id, alias, name or unique prefix.
    pub(crate) peer: String,
    /// What the call is about (at most 1,000 characters).
    #[arg(long, default_value = "")]
    pub(crate) topic: String,
    /// How long to ring before the call counts as missed, seconds [default: `call_ring_secs`].
    #[arg(long, value_name = "SECS")]
    pub(crate) ring_secs: Option<u64>,
    /// Wait until the peer answers (or the call is missed) and print the call then.
    #[arg(long)]
    pub(crate) wait: bool,
}

/// How `answer` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Decision {
    /// Take the call.
    Accept,
    /// Decline it.
    Reject,
}

/// `answer` arguments.
#[derive(Debug, Args)]
pub(crate) struct AnswerArgs {
    /// The call id (`call_…`).
    pub(crate) call_id: String,
    /// `accept` or `reject`.
    #[arg(value_enum)]
    pub(crate) decision: Decision,
    /// Told to the caller with a rejection (at most 1,000 characters).
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

/// `transcript --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TranscriptFormat {
    /// Markdown, for a person or a model.
    Md,
    /// The call and its lines as JSON.
    Json,
}

/// `calls` arguments.
#[derive(Debug, Args)]
pub(crate) struct CallsArgs {
    /// Only calls with this peer: agent id, alias, name or unique prefix.
    #[arg(long)]
    pub(crate) peer: Option<String>,
    /// Only calls still ringing or active.
    #[arg(long)]
    pub(crate) open: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
}

/// `delegate` arguments.
#[derive(Debug, Args)]
pub(crate) struct DelegateArgs {
    /// The contact: agent id, alias, name or unique prefix.
    pub(crate) peer: String,
    /// What to do; read from stdin when absent.
    #[arg(long)]
    pub(crate) text: Option<String>,
    /// Structured input, as JSON.
    #[arg(long, value_name = "JSON")]
    pub(crate) data: Option<String>,
    /// A file to send with it (repeatable): offered to the same peer like `send-file`, and listed
    /// in the task's data as `files: [{transfer_id, name, size, sha256}]`.
    #[arg(long = "file", value_name = "PATH")]
    pub(crate) files: Vec<std::path::PathBuf>,
    /// The task id to use (`task_` + 32 hex): running the command again with the same id, peer and
    /// text returns the task made the first time.
    #[arg(long, value_name = "TASK_ID")]
    pub(crate) id: Option<String>,
    /// Wait until the task is final or asks for input, and print it then.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: the longest wait, seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
}

/// `tasks` arguments.
#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// Only tasks with this peer: agent id, alias, name or unique prefix.
    #[arg(long)]
    pub(crate) peer: Option<String>,
    /// Only tasks delegated to us.
    #[arg(long, conflicts_with = "outgoing")]
    pub(crate) incoming: bool,
    /// Only tasks we delegated.
    #[arg(long)]
    pub(crate) outgoing: bool,
    /// Only tasks not final.
    #[arg(long)]
    pub(crate) open: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
}

/// `update-task` arguments.
#[derive(Debug, Args)]
pub(crate) struct UpdateTaskArgs {
    /// The task id (`task_…`).
    pub(crate) task_id: String,
    /// The new state: working, input_required, auth_required, completed, failed, canceled, rejected.
    #[arg(long)]
    pub(crate) state: String,
    /// What to tell the delegator (a question with input_required, an error with failed).
    #[arg(long)]
    pub(crate) text: Option<String>,
    /// A text result (repeatable; each becomes an artifact).
    #[arg(long = "artifact", value_name = "TEXT")]
    pub(crate) artifacts: Vec<String>,
    /// A structured result, as JSON (an artifact with one data part).
    #[arg(long = "artifact-data", value_name = "JSON")]
    pub(crate) artifact_data: Option<String>,
}

/// `escalate` arguments.
#[derive(Debug, Args)]
pub(crate) struct EscalateArgs {
    /// The call (`call_…`) or task (`task_…`) it is about.
    pub(crate) conversation_id: String,
    /// What the owner is asked (1 to 1,000 characters); the peer is told too.
    #[arg(long)]
    pub(crate) reason: String,
    /// Answers to offer, comma-separated (e.g. "yes,no").
    #[arg(long, value_delimiter = ',')]
    pub(crate) options: Vec<String>,
}

/// `a2a` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum A2aCommand {
    /// Issue a bearer token for an A2A client: the node writes it to `<home>/a2a/<name>.token`
    /// (mode 0600) for you to hand over; it is never printed.
    AddClient {
        /// A name for the client (1 to 64 characters of [A-Za-z0-9_-]).
        name: String,
    },
    /// List A2A clients (never their tokens).
    Clients,
    /// Revoke an A2A client's token: its calls are refused from now on (its tasks stay).
    Revoke {
        /// The client's name.
        name: String,
    },
}
