//! Starting and stopping a node. [`NodeBuilder::new`] composes one from the carriers that reach
//! it, the adapters of the protocols it speaks and its background tasks, then
//! [`NodeBuilder::spawn`] loads the home, starts the carriers, spawns every task on one
//! [`TaskTracker`] and returns a [`NodeHandle`]; cancelling the shutdown token drains them.
//! [`launch`] is the standard composition, which the binary ([`run`]) and the tests go through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_core::time::now_ms;
use agentmesh_store::Store;
use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::{Adapter, Adapters};
use crate::carrier::start::{Accept, StartCarrier, StartContext};
use crate::carrier::{Carrier, Carriers};
use crate::db::Db;
use crate::home::{Home, RuntimeInfo, write_private};
use crate::{Config, Keys, LaunchError, Node, Parts, control, outbox, peer_api, service};

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

/// Starts the standard node for `home`: HTTP (advertising `options.endpoint` when given), our
/// native protocol and Agent Mesh V1, gossip with the bootstrap nodes. It runs until `shutdown`
/// is cancelled and [`NodeHandle::wait`] drains it.
///
/// Errors: a [`LaunchError`] the owner can fix (another node runs for this home, the address is
/// in use, an endpoint no peer could reach), or what stopped the start (unreadable files, a
/// corrupt database), with context.
pub async fn launch(home: Home, options: UpOptions, shutdown: CancellationToken) -> Result<NodeHandle> {
    let endpoint = options.endpoint.clone();
    NodeBuilder::new(home)
        .options(options)
        .carrier(crate::carrier::http::HttpStart::new(endpoint))
        .carrier(crate::carrier::iroh::IrohStart)
        .adapter(crate::compat::agent_mesh_v1::V1Adapter)
        .task("gossip", |node, stop| {
            Box::pin(async move { crate::gossip::run(Arc::clone(&node), node.config().bootstrap.clone(), stop).await })
        })
        .spawn(shutdown)
        .await
}

/// A background task: runs with the node until the token is cancelled.
pub(crate) type Task = Box<dyn FnOnce(Arc<Node>, CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// Composes a node: `NodeBuilder::new(home).carrier(http).adapter(v1).task(..).spawn(shutdown)`.
///
/// Every node speaks our native protocol and runs the domain's own tasks (the outbox, pruning,
/// unanswered calls, file transfers, escalation reminders, WAL checkpoints, and the registry
/// listing and the hooks push when configured); the builder adds carriers (at least one), the
/// other protocols' adapters and more tasks. The card names the protocols of the adapters added
/// and the peer API serves their routes; the gossip and A2A routes are always served.
pub(crate) struct NodeBuilder {
    home: Home,
    options: UpOptions,
    carriers: Vec<Box<dyn StartCarrier>>,
    adapters: Vec<Arc<dyn Adapter>>,
    tasks: Vec<(&'static str, Task)>,
}

impl NodeBuilder {
    /// A builder for the node of `home`.
    pub(crate) fn new(home: Home) -> NodeBuilder {
        NodeBuilder {
            home,
            options: UpOptions::default(),
            carriers: Vec::new(),
            adapters: vec![Arc::new(crate::native::NativeAdapter)],
            tasks: Vec::new(),
        }
    }
}

impl NodeBuilder {
    /// Applies `agentmesh up`'s flags over the config file (the endpoint flag is the HTTP
    /// carrier's: [`crate::carrier::http::HttpStart::new`]).
    pub(crate) fn options(mut self, options: UpOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a carrier; the first added is preferred where several reach an endpoint, and the
    /// card lists their endpoints in the order added.
    pub(crate) fn carrier(mut self, carrier: impl StartCarrier + 'static) -> Self {
        self.carriers.push(Box::new(carrier));
        self
    }

    /// Adds the adapter of another protocol, tried after those added before it.
    pub(crate) fn adapter(mut self, adapter: impl Adapter + 'static) -> Self {
        self.adapters.push(Arc::new(adapter));
        self
    }

    /// Adds a background task, named in logs.
    pub(crate) fn task<F>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(Arc<Node>, CancellationToken) -> BoxFuture<'static, ()> + Send + 'static,
    {
        self.tasks.push((name, Box::new(task)));
        self
    }

    /// Starts the node: loads and locks the home, applies the flags, starts the carriers (before
    /// anything is written), opens the database, signs the card with every carrier's endpoints,
    /// writes `node.json` and the control token, tells contacts of a rotation made while the node
    /// was down, and spawns the servers and tasks. It runs until `shutdown` is cancelled and
    /// [`NodeHandle::wait`] drains it.
    ///
    /// Errors: as [`launch`]'s; no carrier added is an error too.
    pub(crate) async fn spawn(self, shutdown: CancellationToken) -> Result<NodeHandle> {
        let NodeBuilder { home, options, carriers: to_start, adapters, tasks } = self;
        anyhow::ensure!(!to_start.is_empty(), "a node needs at least one carrier to be reached on");
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
        let (key_state, profile, config, lock) = loaded;
        let Some(lock) = lock else {
            return Err(LaunchError::NodeRunning(home.root().display().to_string()).into());
        };
        let config = apply(config, options)?;
        let registry_api_key = match config.registry_api_key_file.clone() {
            Some(path) => Some(tokio::task::spawn_blocking(move || crate::home::read_private_text(&path)).await??),
            None => None,
        };
        let http = outbound_client(&config).await?;
        // The owner asked for the hooks push: a token file that cannot be read stops the start.
        let hooks = match config.hooks.clone() {
            Some(hooks) => Some(tokio::task::spawn_blocking(move || crate::hooks::Hooks::new(hooks)).await??),
            None => None,
        };

        let cx = StartContext {
            home: &home,
            config: &config,
            profile: &profile,
            identity: &key_state.identity,
            http: &http,
        };
        let mut outbound: Vec<Arc<dyn Carrier>> = Vec::new();
        let mut accepts: Vec<Box<dyn Accept>> = Vec::new();
        let (mut endpoints, mut warnings, mut local_urls, mut lan) = (Vec::new(), Vec::new(), Vec::new(), None);
        let mut preferred = 0;
        for carrier in to_start {
            let name = carrier.name();
            // What the owner can fix is said as it is; anything else names the carrier.
            let started = carrier.start(&cx).await.map_err(|e| match e.downcast::<LaunchError>() {
                Ok(owner) => anyhow::Error::from(owner),
                Err(e) => e.context(format!("starting the {name} carrier")),
            })?;
            let Some(started) = started else { continue };
            outbound.push(started.carrier);
            accepts.extend(started.accept);
            let new: Vec<String> = started.endpoints.into_iter().filter(|e| !endpoints.contains(e)).collect();
            if started.preferred {
                preferred += new.len();
                endpoints.splice(preferred - new.len()..preferred - new.len(), new);
            } else {
                endpoints.extend(new);
            }
            warnings.extend(started.warnings);
            local_urls.extend(started.local_url);
            lan = lan.or(started.lan);
        }
        anyhow::ensure!(!outbound.is_empty(), "no carrier was started: the settings turn every one off");
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        // A card over the limits would be refused by every peer: refused here, nothing written.
        use agentmesh_core::card::{MAX_ENDPOINT_BYTES, MAX_ENDPOINTS};
        if endpoints.len() > MAX_ENDPOINTS || endpoints.iter().any(|e: &String| e.len() > MAX_ENDPOINT_BYTES) {
            return Err(LaunchError::InvalidEndpoint(format!(
                "the carriers would list {} endpoints ({}); a card holds at most {MAX_ENDPOINTS}, each at most \
                 {MAX_ENDPOINT_BYTES} bytes",
                endpoints.len(),
                endpoints.join(", ")
            ))
            .into());
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

        let adapters = Adapters::new(adapters);
        let card = service::keys::card_for(&key_state.identity, &profile, &endpoints, &adapters);
        let keys = Keys { identity: key_state.identity, card, previous: key_state.previous };
        let db = Db::spawn(store).context("starting the database thread")?;
        let node = Arc::new(Node::assemble(Parts {
            keys,
            config,
            endpoints,
            db,
            adapters,
            carriers: Carriers::new(outbound),
            warnings,
        }));
        // Secrets the node reads from outside its home are never offered either.
        let secrets =
            node.config().hooks.iter().map(|h| h.token_file.clone()).chain(node.config().registry_api_key_file.clone());
        node.files().set_home(home.root(), secrets.collect());

        let control_listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the control API")?;
        let control_addr = control_listener.local_addr()?;
        let peer_url = local_urls.first().cloned().unwrap_or_default();
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
        tracing::info!(agent_id = %info.agent_id, peer = %peer_url, control = %info.control_url, endpoints = ?node.endpoints(), resumed = released, "node started");

        // A rotation made while the node was down: tell contacts now.
        let told = service::keys::announce_card(&node).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if told > 0 {
            tracing::info!(contacts = told, "announcing rotated keys");
        }

        let tracker = TaskTracker::new();
        let peer_app = peer_api::router(Arc::clone(&node));
        for accept in accepts {
            tracing::debug!(carrier = accept.name(), "serving the peer API");
            tracker.spawn(accept.serve(peer_app.clone(), Arc::clone(&node), shutdown.clone()));
        }
        let control_app =
            control::router(Arc::clone(&node), home.clone(), token.clone(), control_addr, peer_url, shutdown.clone());
        let write_timeout = Duration::from_secs(node.config().control_write_timeout_secs.max(1));
        tracker.spawn(serve_control(control_listener, control_app, write_timeout, shutdown.clone()));
        tracker.spawn(outbox::run(Arc::clone(&node), shutdown.clone()));
        if let Some(url) = node.config().registry.clone() {
            tracker.spawn(crate::registration::run(Arc::clone(&node), http, url, registry_api_key, shutdown.clone()));
        }
        tracker.spawn(prune(Arc::clone(&node), shutdown.clone()));
        tracker.spawn(missed_calls(Arc::clone(&node), shutdown.clone()));
        tracker.spawn(crate::service::files::run(Arc::clone(&node), shutdown.clone()));
        tracker.spawn(remind_escalations(Arc::clone(&node), shutdown.clone()));
        tracker.spawn(checkpoint(checkpointer, shutdown.clone()));
        if let Some(hooks) = hooks {
            tracker.spawn(hooks.run(Arc::clone(&node), shutdown.clone()));
        }
        for (name, task) in tasks {
            tracing::debug!(task = name, "starting");
            tracker.spawn(task(Arc::clone(&node), shutdown.clone()));
        }
        let advertiser = match lan {
            Some(addr) if node.config().mdns => advertise(&node, addr).await,
            _ => None,
        };
        Ok(NodeHandle { info, token, node, home, tracker, shutdown, lock, advertiser })
    }
}

/// `config` with `agentmesh up`'s flags applied (all but the endpoint, which is the HTTP
/// carrier's).
///
/// Errors: a `--bootstrap` that is not an http(s) base URL.
fn apply(mut config: Config, options: UpOptions) -> Result<Config> {
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
    Ok(config)
}

/// The node's one outbound HTTP client, built from the config off the async threads (it reads
/// the system's CA certificates and the extra CA file).
async fn outbound_client(config: &Config) -> Result<reqwest::Client> {
    let options = crate::net::ClientOptions {
        timeout_ms: Some(config.outbound_timeout_ms),
        connect_timeout_ms: Some(config.outbound_timeout_ms.min(3_000)),
        pool_max_idle_per_host: 16,
        // Shorter than the header-read timeout servers (ours: 10 s) use to cut idle keep-alive
        // connections, so we never reuse one that is being closed.
        pool_idle_timeout_ms: Some(5_000),
        extra_ca_file: config.tls_ca_file.clone(),
        ..crate::net::ClientOptions::default()
    };
    tokio::task::spawn_blocking(move || crate::net::client(&options)).await?
}

/// Serves the control API on `listener` (loopback) until `stop`; streaming watchers (events)
/// would hold a graceful shutdown open, so they are cut 1 s after it.
async fn serve_control(listener: TcpListener, app: axum::Router, write_timeout: Duration, stop: CancellationToken) {
    // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm meets delayed
    // ACKs and a reply can stall for ~40 ms (the HTTP carrier sets it on each peer connection).
    let listener = crate::stall::StallGuard::new(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        write_timeout,
    );
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let cut = async {
        stop.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        _ = served => {}
        _ = cut => {}
    }
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

/// The adapters of [`launch`]'s node (our native protocol, then Agent Mesh V1): what a scan
/// without a node verifies finds with, and what tests assemble nodes with.
pub(crate) fn standard_adapters() -> Adapters {
    Adapters::new(vec![Arc::new(crate::native::NativeAdapter), Arc::new(crate::compat::agent_mesh_v1::V1Adapter)])
}

/// The outbound carriers of [`launch`]'s node (HTTP over `http`), for nodes assembled
/// in-process by tests.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn standard_carriers(http: &reqwest::Client) -> Carriers {
    Carriers::new(vec![Arc::new(crate::carrier::http::HttpCarrier::new(http.clone()))])
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

    /// A carrier that never starts.
    struct Refusing;

    impl StartCarrier for Refusing {
        fn name(&self) -> &'static str {
            "refusing"
        }

        fn start<'a>(
            self: Box<Self>,
            _: &'a StartContext<'a>,
        ) -> BoxFuture<'a, Result<Option<crate::carrier::start::Started>>> {
            Box::pin(async { Err(LaunchError::InvalidEndpoint("no peer could reach it".into()).into()) })
        }
    }

    fn new_home(dir: &tempfile::TempDir) -> Home {
        let home = Home::new(dir.path().join("home"));
        let profile = crate::Profile { name: "built".into(), endpoint: None, capabilities: vec![], created_at: 0 };
        home.init(&profile, false).expect("init");
        home
    }

    fn quiet() -> UpOptions {
        UpOptions { no_mdns: true, ..UpOptions::default() }
    }

    #[tokio::test]
    async fn a_node_built_in_process_serves_its_card_runs_its_tasks_and_stops_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = new_home(&dir);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (ran, mut ran_with) = tokio::sync::mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let handle = NodeBuilder::new(home.clone())
            .options(quiet())
            .carrier(crate::carrier::http::HttpStart::new(None).listener(listener))
            .task("probe", move |node, _stop| {
                Box::pin(async move {
                    let _ = ran.send(node.id().to_string()).await;
                })
            })
            .spawn(shutdown.clone())
            .await
            .expect("the node starts");
        assert_eq!(handle.info().peer_url, base, "node.json names the listener given");
        let id = tokio::time::timeout(Duration::from_secs(5), ran_with.recv()).await.expect("the task ran");
        assert_eq!(id.as_deref(), Some(handle.info().agent_id.as_str()));

        let client = crate::net::client(&crate::net::ClientOptions::default()).expect("client");
        let card: agentmesh_core::AgentCard =
            client.get(format!("{base}/v1/card")).send().await.expect("card").json().await.expect("json");
        card.verify().expect("the card is signed");
        assert_eq!(card.endpoints, std::slice::from_ref(&base), "the card lists the carrier's endpoint");
        assert_eq!(card.protocols, [agentmesh_core::PROTOCOL_NATIVE], "built without Agent Mesh V1");
        let v1 = client.get(format!("{base}/agent-mesh/discovery")).send().await.expect("answered");
        assert_eq!(v1.status().as_u16(), 404, "nor are its routes served");
        assert_eq!(card.agent_id.to_string(), handle.info().agent_id);

        let again = NodeBuilder::new(home.clone())
            .options(quiet())
            .carrier(crate::carrier::http::HttpStart::new(None))
            .spawn(CancellationToken::new())
            .await
            .err()
            .expect("one node per home");
        assert!(matches!(again.downcast_ref(), Some(LaunchError::NodeRunning(_))), "{again:#}");

        shutdown.cancel();
        handle.wait().await.expect("drains");
        assert!(!home.runtime_path().exists() && !home.token_path().exists(), "runtime files removed");
        assert!(client.get(format!("{base}/v1/card")).send().await.is_err(), "the listener is closed");
    }

    #[tokio::test]
    async fn a_carrier_that_cannot_start_stops_the_start_with_nothing_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = new_home(&dir);
        let none = NodeBuilder::new(home.clone()).options(quiet()).spawn(CancellationToken::new()).await;
        assert!(format!("{:#}", none.err().expect("no carrier")).contains("at least one carrier"));

        let refused = NodeBuilder::new(home.clone())
            .options(quiet())
            .carrier(Refusing)
            .spawn(CancellationToken::new())
            .await
            .err()
            .expect("refused");
        assert!(matches!(refused.downcast_ref(), Some(LaunchError::InvalidEndpoint(_))), "{refused:#}");
        assert_eq!(format!("{refused:#}"), "no peer could reach it", "what the owner can fix is said as it is");
        assert!(!home.db_path().exists() && !home.runtime_path().exists(), "nothing was written");

        // The lock was let go: the home starts once a carrier does.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let shutdown = CancellationToken::new();
        let handle = NodeBuilder::new(home)
            .options(quiet())
            .carrier(crate::carrier::http::HttpStart::new(None).listener(listener))
            .spawn(shutdown.clone())
            .await
            .expect("starts");
        shutdown.cancel();
        handle.wait().await.expect("drains");
    }

    /// A carrier that advertises an endpoint over the card's limit.
    struct Oversized;

    impl StartCarrier for Oversized {
        fn name(&self) -> &'static str {
            "oversized"
        }

        fn start<'a>(
            self: Box<Self>,
            cx: &'a StartContext<'a>,
        ) -> BoxFuture<'a, Result<Option<crate::carrier::start::Started>>> {
            Box::pin(async move {
                Ok(Some(crate::carrier::start::Started {
                    carrier: Arc::new(crate::carrier::http::HttpCarrier::new(cx.http.clone())),
                    accept: None,
                    endpoints: vec![format!("http://{}.example", "a".repeat(600))],
                    preferred: false,
                    local_url: None,
                    lan: None,
                    warnings: Vec::new(),
                }))
            })
        }
    }

    #[tokio::test]
    async fn an_endpoint_peers_could_not_use_stops_the_start_with_nothing_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = new_home(&dir);
        for endpoint in ["agent.example:8787", "http://agent.example:8787/?x=1"] {
            let refused = NodeBuilder::new(home.clone())
                .options(quiet())
                .carrier(crate::carrier::http::HttpStart::new(Some(endpoint.into())))
                .spawn(CancellationToken::new())
                .await
                .err()
                .expect("refused");
            assert!(matches!(refused.downcast_ref(), Some(LaunchError::InvalidEndpoint(_))), "{refused:#}");
            assert!(format!("{refused:#}").contains("--endpoint http://"), "says the fix: {refused:#}");
        }
        let refused =
            NodeBuilder::new(home.clone()).options(quiet()).carrier(Oversized).spawn(CancellationToken::new()).await;
        let refused = refused.err().expect("a card peers would refuse");
        assert!(matches!(refused.downcast_ref(), Some(LaunchError::InvalidEndpoint(_))), "{refused:#}");
        assert!(!home.db_path().exists() && !home.runtime_path().exists(), "nothing was written");
    }
}
