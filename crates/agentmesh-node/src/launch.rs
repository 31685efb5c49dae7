//! Starting and stopping a node: [`launch`] loads the home, binds (or takes) the listeners,
//! spawns every task on one [`TaskTracker`] and returns a [`NodeHandle`]; cancelling the
//! shutdown token drains them. The binary ([`run`]) and the tests both go through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_api::ErrorCode;
use agentmesh_core::time::now_ms;
use agentmesh_store::Store;
use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::Db;
use crate::home::{Home, RuntimeInfo, write_private};
use crate::{Config, Keys, Node, control, outbox, peer_api, service};

/// Options of `agentmesh up` that override the config file.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Peer API listen address.
    pub listen: Option<SocketAddr>,
    /// Advertised endpoint.
    pub endpoint: Option<String>,
    /// Bootstrap nodes, added to `bootstrap` in config.toml.
    pub bootstrap: Vec<String>,
    /// Serve as a bootstrap node (larger gossip answers).
    pub bootstrap_mode: bool,
    /// Do not advertise on the LAN with mDNS.
    pub no_mdns: bool,
    /// Registry to stay listed in (overrides `registry` in config.toml).
    pub registry: Option<String>,
}

/// Why a node did not start. Other failures (unreadable files, a corrupt database) come as
/// plain errors with context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// Another node holds this home's lock.
    #[error("another agentmesh node is already running for {0}")]
    NodeRunning(String),
    /// The listen address is taken.
    #[error("{addr} is in use by another program; pick another with `agentmesh up --listen 127.0.0.1:<port>`")]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The endpoint peers would be told cannot reach this node; the message says how to fix it.
    #[error("{0}")]
    InvalidEndpoint(String),
}

impl LaunchError {
    /// The error code the CLI reports.
    pub fn code(&self) -> ErrorCode {
        match self {
            LaunchError::NodeRunning(_) => ErrorCode::NodeRunning,
            LaunchError::AddressInUse { .. } => ErrorCode::AddressInUse,
            LaunchError::InvalidEndpoint(_) => ErrorCode::InvalidEndpoint,
        }
    }
}

/// A running node.
pub struct NodeHandle {
    info: RuntimeInfo,
    token: String,
    node: Arc<Node>,
    home: Home,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    lock: std::fs::File,
    advertiser: Option<crate::mdns::Advertiser>,
}

impl NodeHandle {
    /// Its pid, agent id and the URLs of its two APIs.
    pub fn info(&self) -> &RuntimeInfo {
        &self.info
    }

    /// The control API's bearer token (also in `<home>/control.token`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Waits until the shutdown token is cancelled, then lets in-flight requests and deliveries
    /// finish (bounded), removes the runtime files and closes the database.
    pub async fn wait(self) -> Result<()> {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down: finishing in-flight requests");
        self.tracker.close();
        // Servers finish in-flight requests (up to 10 s), the worker its deliveries.
        let grace = Duration::from_millis(self.node.config().outbound_timeout_ms.max(10_000) + 5_000);
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!("some tasks did not finish in time");
        }
        if let Some(advertiser) = self.advertiser {
            let _ = tokio::task::spawn_blocking(move || advertiser.stop()).await;
        }
        let home = self.home.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(home.runtime_path());
            let _ = std::fs::remove_file(home.token_path());
        })
        .await;
        self.node.close_db().await?;
        drop(self.lock);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Pre-bound listeners for [`launch`]; `None` binds from the config (tests bind port 0 first).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The peer API's.
    pub peer: Option<TcpListener>,
    /// The control API's (must be on loopback).
    pub control: Option<TcpListener>,
}

/// Where the advertised endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndpointSource {
    Flag,
    Environment,
    Profile,
    Config,
    Default,
}

/// Starts a node for `home` (see [`launch_with`]), binding its listeners from the config.
pub async fn launch(home: Home, options: UpOptions, shutdown: CancellationToken) -> Result<NodeHandle> {
    launch_with(home, options, Listeners::default(), shutdown).await
}

/// Starts a node for `home` on the given (or configured) listeners; it runs until `shutdown` is
/// cancelled and [`NodeHandle::wait`] drains it.
pub async fn launch_with(
    home: Home,
    options: UpOptions,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<NodeHandle> {
    let loaded = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            home.secure()?;
            let keys = home.load_keys()?;
            let profile = home.load_profile()?;
            let config = Config::load(&home.config_path())?;
            let lock = home.try_lock()?;
            Ok((keys, profile, config, lock))
        })
        .await??
    };
    let (key_state, profile, mut config, lock) = loaded;
    let Some(lock) = lock else {
        return Err(LaunchError::NodeRunning(home.root().display().to_string()).into());
    };
    if let Some(listen) = options.listen {
        config.listen = Some(listen);
    }
    for url in options.bootstrap {
        let url = url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--bootstrap {url}: give a base URL like http://10.0.0.5:8787");
        }
        if !config.bootstrap.contains(&url) {
            config.bootstrap.push(url);
        }
    }
    config.bootstrap_mode |= options.bootstrap_mode;
    if options.no_mdns {
        config.mdns = false;
    }
    if options.registry.is_some() {
        config.registry = options.registry;
    }
    let registry_api_key = match config.registry_api_key_file.clone() {
        Some(path) => Some(tokio::task::spawn_blocking(move || crate::home::read_private_text(&path)).await??),
        None => None,
    };
    // Flag, then environment, then the profile written by `init`, then config.toml.
    let environment = std::env::var("AGENTMESH_ENDPOINT").ok();
    let (chosen, source) = match (options.endpoint, environment, profile.endpoint.clone(), config.endpoint.clone()) {
        (Some(e), _, _, _) => (Some(e), EndpointSource::Flag),
        (None, Some(e), _, _) => (Some(e), EndpointSource::Environment),
        (None, None, Some(e), _) => (Some(e), EndpointSource::Profile),
        (None, None, None, Some(e)) => (Some(e), EndpointSource::Config),
        _ => (None, EndpointSource::Default),
    };
    let listen = config.listen_addr(chosen.as_deref());
    if chosen.is_none() && listen.ip().is_unspecified() {
        // Refused before anything binds: the card would advertise 0.0.0.0.
        check_endpoint(&format!("http://{listen}"), EndpointSource::Default, listen)
            .map_err(LaunchError::InvalidEndpoint)?;
    }

    let (store, checkpointer) = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || -> Result<(Store, agentmesh_store::Checkpointer)> {
            let store = Store::open(&home.db_path())?;
            let checkpointer = agentmesh_store::Checkpointer::open(&home.db_path())?;
            // SQLite creates the database, WAL and shared-memory files with the umask's mode.
            home.tighten()?;
            Ok((store, checkpointer))
        })
        .await??
    };
    let released = store.release_leases(now_ms() as i64)?;

    let peer_listener = match listeners.peer {
        Some(l) => l,
        None => bind_peer(listen).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::Error::from(LaunchError::AddressInUse { addr: listen }),
            _ => anyhow::Error::from(e).context(format!("binding {listen}")),
        })?,
    };
    let control_listener = match listeners.control {
        Some(l) => l,
        None => TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the control API")?,
    };
    let peer_addr = peer_listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;
    let peer_url = format!("http://{peer_addr}");
    let endpoint = chosen.unwrap_or_else(|| peer_url.clone());
    let warnings = check_endpoint(&endpoint, source, peer_addr).map_err(LaunchError::InvalidEndpoint)?;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }

    let card = service::keys::card_for(&key_state.identity, &profile, &endpoint);
    let client_options = crate::net::ClientOptions {
        timeout_ms: Some(config.outbound_timeout_ms),
        connect_timeout_ms: Some(config.outbound_timeout_ms.min(3_000)),
        pool_max_idle_per_host: 16,
        // Shorter than the header-read timeout servers (ours: 10 s) use to cut idle keep-alive
        // connections, so we never reuse one that is being closed.
        pool_idle_timeout_ms: Some(5_000),
        extra_ca_file: config.tls_ca_file.clone(),
        ..crate::net::ClientOptions::default()
    };
    // Reads the system's CA certificates (and the extra CA file): off the async threads.
    let http = tokio::task::spawn_blocking(move || crate::net::client(&client_options)).await??;
    // The owner asked for the hooks push: a token file that cannot be read stops the start.
    let hooks = match config.hooks.clone() {
        Some(hooks) => Some(tokio::task::spawn_blocking(move || crate::hooks::Hooks::new(hooks)).await??),
        None => None,
    };
    let keys = Keys { identity: key_state.identity, card, previous: key_state.previous };
    let db = Db::spawn(store).context("starting the database thread")?;
    let carriers = standard_carriers(&http);
    let node =
        Arc::new(Node::new(keys, config, endpoint, db, http, standard_adapters(), carriers).with_warnings(warnings));
    // Secrets the node reads from outside its home are never offered either.
    let secrets =
        node.config().hooks.iter().map(|h| h.token_file.clone()).chain(node.config().registry_api_key_file.clone());
    node.files().set_home(home.root(), secrets.collect());

    let token = hex::encode(rand::random::<[u8; 32]>());
    let info = RuntimeInfo {
        pid: std::process::id(),
        agent_id: node.id().to_string(),
        peer_url: peer_url.clone(),
        control_url: format!("http://{control_addr}"),
    };
    {
        let (home, token, info) = (home.clone(), token.clone(), info.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            write_private(&home.token_path(), token.as_bytes())?;
            write_private(&home.runtime_path(), &serde_json::to_vec_pretty(&info)?)
        })
        .await??;
    }
    tracing::info!(agent_id = %info.agent_id, peer = %peer_url, control = %info.control_url, endpoint = %node.endpoint(), resumed = released, "node started");

    // A rotation made while the node was down: tell contacts now.
    let told = service::keys::announce_card(&node).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if told > 0 {
        tracing::info!(contacts = told, "announcing rotated keys");
    }

    let tracker = TaskTracker::new();
    let peer_app = peer_api::router(Arc::clone(&node));
    let control_addr = control_listener.local_addr()?;
    let control_app =
        control::router(Arc::clone(&node), home.clone(), token.clone(), control_addr, peer_url, shutdown.clone());
    // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm meets delayed
    // ACKs and a reply can stall for ~40 ms (the HTTP carrier sets it on each peer connection).
    let control_listener = crate::stall::StallGuard::new(
        control_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        Duration::from_secs(node.config().control_write_timeout_secs.max(1)),
    );
    let accepts: Vec<Box<dyn crate::carrier::Accept>> =
        vec![Box::new(crate::carrier::http::HttpAccept::new(peer_listener))];
    for accept in accepts {
        tracing::debug!(carrier = accept.name(), "serving the peer API");
        tracker.spawn(accept.serve(peer_app.clone(), Arc::clone(&node), shutdown.clone()));
    }
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(control_listener, control_app).with_graceful_shutdown(stop.clone().cancelled_owned());
        // Streaming watchers (events) would hold a graceful shutdown open: cut them after 1 s.
        let cut = async {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::select! {
            _ = served => {}
            _ = cut => {}
        }
    });
    tracker.spawn(outbox::run(Arc::clone(&node), shutdown.clone()));
    if let Some(url) = node.config().registry.clone() {
        tracker.spawn(crate::registration::run(Arc::clone(&node), url, registry_api_key, shutdown.clone()));
    }
    tracker.spawn(crate::gossip::run(Arc::clone(&node), node.config().bootstrap.clone(), shutdown.clone()));
    tracker.spawn(prune(Arc::clone(&node), shutdown.clone()));
    tracker.spawn(missed_calls(Arc::clone(&node), shutdown.clone()));
    tracker.spawn(crate::service::files::run(Arc::clone(&node), shutdown.clone()));
    tracker.spawn(remind_escalations(Arc::clone(&node), shutdown.clone()));
    tracker.spawn(checkpoint(checkpointer, shutdown.clone()));
    if let Some(hooks) = hooks {
        tracker.spawn(hooks.run(Arc::clone(&node), shutdown.clone()));
    }
    let advertiser = if node.config().mdns { advertise(&node, peer_addr).await } else { None };
    Ok(NodeHandle { info, token, node, home, tracker, shutdown, lock, advertiser })
}

/// Five times a second, copies the WAL back into the database from a connection of its own, off the
/// database thread (whose commits would otherwise stall for each checkpoint).
async fn checkpoint(checkpointer: agentmesh_store::Checkpointer, stop: CancellationToken) {
    let checkpointer = Arc::new(std::sync::Mutex::new(checkpointer));
    let mut every = tokio::time::interval(Duration::from_millis(200));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {
                let checkpointer = Arc::clone(&checkpointer);
                let done = tokio::task::spawn_blocking(move || checkpointer.lock().unwrap_or_else(|p| p.into_inner()).run()).await;
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "checkpoint failed; the writer checkpoints past the backstop");
                }
            }
        }
    }
}

/// Every second, marks calls that rang out unanswered as missed.
async fn missed_calls(node: Arc<Node>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => match crate::service::calls::sweep(&node).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(missed = n, "calls rang out unanswered"),
                Err(e) => tracing::warn!(error = %e, "could not mark unanswered calls missed"),
            },
        }
    }
}

/// Announces open escalations again every `escalation_remind_secs` (checked a quarter of that
/// often, at least every second and at most every minute).
async fn remind_escalations(node: Arc<Node>, stop: CancellationToken) {
    let every = node.config().escalation_remind_secs;
    if every == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs((every / 4).clamp(1, 60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => match crate::service::escalations::remind(&node).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(reminders = n, "escalations still wait for the owner"),
                Err(e) => tracing::warn!(error = %e, "could not remind of open escalations"),
            },
        }
    }
}

/// Events deleted per database visit when pruning.
const EVENT_PRUNE_BATCH: usize = 5_000;

/// Every minute (more often when `contact_request_ttl_secs` is under two minutes: every half of
/// it): forget idle rate-limit keys, replay records past their horizon, expired directory
/// entries, events past `event_retention_secs` or `max_events`; expire contact requests left
/// unanswered.
async fn prune(node: Arc<Node>, stop: CancellationToken) {
    let ttl = node.config().contact_request_ttl_secs;
    let period = if ttl == 0 { 60 } else { (ttl / 2).clamp(1, 60) };
    let mut every = tokio::time::interval(Duration::from_secs(period));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {
                node.limits().prune();
                let now = now_ms() as i64;
                let (retention, keep) = (node.config().event_retention_secs, node.config().max_events);
                let before = now.saturating_sub(i64::try_from(retention.saturating_mul(1000)).unwrap_or(i64::MAX));
                let mut pruned = node.db(move |s| Ok(s.prune_accepted(now, 10_000)? + s.prune_directory(now)?)).await.unwrap_or(0);
                // Events in batches, each its own database visit, until none is left to prune:
                // the log stays within `max_events` however fast it grows.
                loop {
                    let batch = node.db(move |s| Ok(s.prune_events(before, keep, EVENT_PRUNE_BATCH)?)).await.unwrap_or(0);
                    pruned += batch;
                    if batch < EVENT_PRUNE_BATCH {
                        break;
                    }
                }
                if pruned > 0 {
                    tracing::debug!(pruned, "pruned replay records, directory entries and old events");
                }
                match crate::service::contacts::expire_requests(&node).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "contact requests expired unanswered"),
                    Err(e) => tracing::warn!(error = %e, "could not expire contact requests"),
                }
            }
        }
    }
}

async fn advertise(node: &Arc<Node>, peer_addr: SocketAddr) -> Option<crate::mdns::Advertiser> {
    let keys = node.keys();
    let (id, fp, protocols) =
        (node.id().to_string(), keys.identity.fingerprint().to_string(), keys.card.protocols.clone());
    match tokio::task::spawn_blocking(move || crate::mdns::Advertiser::start(peer_addr, &id, &fp, &protocols)).await {
        Ok(Ok(a)) => {
            tracing::info!(service = crate::mdns::SERVICE_TYPE, "advertising on the LAN with mDNS");
            Some(a)
        }
        Ok(Err(crate::mdns::MdnsError::LoopbackOnly(_))) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "mDNS advertisement failed; LAN peers will not find this node by mDNS");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "mDNS advertisement failed");
            None
        }
    }
}

/// Runs a node for `home` until SIGINT/SIGTERM or `shutdown` is cancelled. `ready` is called
/// once both listeners are bound and `node.json` is written.
pub async fn run(
    home: Home,
    options: UpOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(&RuntimeInfo),
) -> Result<()> {
    // Listening for SIGTERM/SIGINT before `node.json` tells anyone the node runs: a stop sent
    // right after that must shut it down cleanly, not kill it.
    let signals = signals();
    let handle = launch(home, options, shutdown.clone()).await?;
    ready(handle.info());
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = signals => shutdown.cancel(),
    }
    handle.wait().await
}

/// Checks the endpoint peers will be told against the address the node listens on. Refuses one
/// no peer could use, with the fix; returns warnings for the doubtful ones.
fn check_endpoint(endpoint: &str, source: EndpointSource, bound: SocketAddr) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let advertised = endpoint.trim_end_matches('/');
    let unspecified_host = ["0.0.0.0", "[::]"].iter().any(|h| {
        advertised.strip_prefix("http://").or_else(|| advertised.strip_prefix("https://")).is_some_and(|rest| {
            rest.starts_with(h) && rest[h.len()..].chars().next().is_none_or(|c| c == ':' || c == '/')
        })
    });
    if unspecified_host {
        let port = bound.port();
        return Err(format!(
            "the card would advertise {advertised}, which no peer can reach ({} means \"every address\" only to a \
             listener). Give the URL peers use: `agentmesh up --listen {bound} --endpoint http://<this host's address>:{port}`",
            bound.ip()
        ));
    }
    if let Some(target) = crate::config::loopback_http_addr(advertised) {
        let serves = target.port() == bound.port() && (bound.ip().is_unspecified() || bound.ip().is_loopback());
        if !serves {
            let fix = format!(
                "start it with `agentmesh up --listen {target}`, or advertise another URL with `agentmesh up --endpoint <URL>`"
            );
            let what = format!(
                "the endpoint {advertised} names this host, but the node listens on {bound}: peers would knock on the wrong door"
            );
            match source {
                // Said on purpose (a proxy in front, say): warn only.
                EndpointSource::Flag | EndpointSource::Environment => warnings.push(format!("{what}; {fix}")),
                _ => return Err(format!("{what}; {fix}")),
            }
        }
    } else if bound.ip().is_loopback() && !advertised.starts_with("https://") {
        warnings.push(format!(
            "the node listens on {bound} (this host only) but advertises {advertised}: peers elsewhere reach it only \
             through a proxy; to serve them directly, use `agentmesh up --listen 0.0.0.0:{}`",
            bound.port()
        ));
    }
    Ok(warnings)
}

/// Pending connections the kernel holds for the peer listener (capped by `net.core.somaxconn`):
/// room for a burst of thousands of connects without dropping a contact's handshake.
const PEER_BACKLOG: u32 = 4096;

/// Binds the peer listener with [`PEER_BACKLOG`] (`SO_REUSEADDR` as `TcpListener::bind` sets it).
fn bind_peer(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(PEER_BACKLOG)
}

/// Registers for SIGTERM and SIGINT now; the future resolves on the first of them.
fn signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            return std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// The protocols a node speaks: our native envelopes first (tried first on a new URL), then
/// Agent Mesh V1.
pub(crate) fn standard_adapters() -> crate::adapter::Adapters {
    crate::adapter::Adapters::new(vec![
        Arc::new(crate::native::NativeAdapter),
        Arc::new(crate::compat::agent_mesh_v1::V1Adapter),
    ])
}

/// The ways a node reaches peers' nodes: HTTP, with the node's outbound client.
pub(crate) fn standard_carriers(http: &reqwest::Client) -> crate::carrier::Carriers {
    crate::carrier::Carriers::new(vec![Arc::new(crate::carrier::http::HttpCarrier::new(http.clone()))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_says_what_it_can_do() {
        use crate::adapter::Capability::*;
        use agentmesh_core::Protocol;
        let adapters = standard_adapters();
        let all = [Calls, Tasks, Files, KeyRotation, Encrypted, MutualTrust, DerivedIds];
        let native = adapters.get(Protocol::Native);
        assert!(all.iter().all(|c| native.can(*c)), "our own protocol does everything");
        let v1 = adapters.get(Protocol::AgentMeshV1);
        assert_eq!(v1.protocol(), Protocol::AgentMeshV1);
        assert!(all.iter().all(|c| !v1.can(*c)), "Agent Mesh V1: signed messages and one-sided trust only");
        assert!(
            v1.carries(agentmesh_core::EnvelopeKind::Message) && !v1.carries(agentmesh_core::EnvelopeKind::KeyRotation)
        );
        assert_eq!(adapters.all().map(|t| t.protocol()).collect::<Vec<_>>(), [Protocol::Native, Protocol::AgentMeshV1]);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn regression_listening_on_every_address_never_advertises_it() {
        let bound = addr("0.0.0.0:8787");
        let refused = check_endpoint("http://0.0.0.0:8787", EndpointSource::Default, bound).expect_err("refused");
        assert!(refused.contains("--endpoint http://<this host's address>:8787"), "{refused}");
        assert!(check_endpoint("http://[::]:8787", EndpointSource::Flag, addr("[::]:8787")).is_err());
        assert_eq!(check_endpoint("http://10.0.0.5:8787", EndpointSource::Flag, bound), Ok(vec![]));
    }

    #[test]
    fn regression_init_endpoint_port_that_up_does_not_listen_on_is_refused_with_the_fix() {
        let refused =
            check_endpoint("http://127.0.0.1:18787", EndpointSource::Profile, addr("127.0.0.1:8787")).expect_err("no");
        assert!(refused.contains("agentmesh up --listen 127.0.0.1:18787"), "{refused}");
        // Said on purpose (a proxy in front): a warning only.
        let warned = check_endpoint("http://127.0.0.1:18787", EndpointSource::Flag, addr("127.0.0.1:8787"));
        assert_eq!(warned.map(|w| w.len()), Ok(1));
        assert_eq!(
            check_endpoint("http://127.0.0.1:8787", EndpointSource::Default, addr("127.0.0.1:8787")),
            Ok(vec![])
        );
        assert_eq!(
            check_endpoint("https://localhost:8443", EndpointSource::Environment, addr("127.0.0.1:8787")),
            Ok(vec![])
        );
        let lan = check_endpoint("http://10.0.0.5:8787", EndpointSource::Profile, addr("127.0.0.1:8787"));
        assert_eq!(lan.map(|w| w.len()), Ok(1), "loopback listener advertising a LAN address is warned about");
    }
}
