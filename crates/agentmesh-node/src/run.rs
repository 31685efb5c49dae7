//! Starting and stopping a node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, PROTOCOL_AGENT_MESH_V1, PROTOCOL_NATIVE};
use agentmesh_store::Store;
use anyhow::{Context, Result, bail};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::home::Profile;
use crate::home::{Home, RuntimeInfo, write_private};
use crate::{Config, Keys, Node, control_api, outbox, peer_api};

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

/// Runs a node for `home` until SIGINT/SIGTERM or `shutdown` is cancelled. `ready` is called
/// once both listeners are bound and `node.json` is written.
pub async fn run(
    home: Home,
    options: UpOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(&RuntimeInfo),
) -> Result<()> {
    let key_state = home.load_keys()?;
    let profile = home.load_profile()?;
    let mut config = Config::load(&home.config_path())?;
    if let Some(listen) = options.listen {
        config.listen = listen;
    }
    for url in options.bootstrap {
        let url = url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--bootstrap {url}: give a base URL like http://10.0.0.5:8787");
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
    let registry_api_key = match &config.registry_api_key_file {
        Some(path) => Some(crate::home::read_private_text(path)?),
        None => None,
    };
    let options_endpoint = options.endpoint;

    let Some(lock) = home.try_lock()? else {
        bail!("another agentmesh node is already running for {}", home.root().display());
    };

    let db_path = home.db_path();
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path)).await??;
    let released = store.release_leases(now_ms() as i64)?;

    let peer_listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let control_listener =
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the control API")?;
    let peer_addr = peer_listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;
    let peer_url = format!("http://{peer_addr}");
    // Flag, then environment, then the profile written by `init`, then config.toml.
    let endpoint = options_endpoint
        .or_else(|| std::env::var("AGENTMESH_ENDPOINT").ok())
        .or(profile.endpoint.clone())
        .or(config.endpoint.clone())
        .unwrap_or_else(|| peer_url.clone());

    let card = our_card(&key_state.identity, &profile, &endpoint);
    let http = crate::net::client(&crate::net::ClientOptions {
        timeout_ms: Some(config.outbound_timeout_ms),
        connect_timeout_ms: Some(config.outbound_timeout_ms.min(3_000)),
        pool_max_idle_per_host: 16,
        // Shorter than the header-read timeout servers (ours: 10 s) use to cut idle keep-alive
        // connections, so we never reuse one that is being closed.
        pool_idle_timeout_ms: Some(5_000),
        extra_ca_file: config.tls_ca_file.clone(),
        ..Default::default()
    })?;
    let keys = Keys { identity: key_state.identity, card, previous: key_state.previous };
    let db = Db::spawn(store).context("starting the database thread")?;
    let node = Arc::new(Node::new(keys, config, endpoint, db, http));

    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&home.token_path(), token.as_bytes())?;
    let info = RuntimeInfo {
        pid: std::process::id(),
        agent_id: node.agent_id(),
        peer_url: peer_url.clone(),
        control_url: format!("http://{control_addr}"),
    };
    write_private(&home.runtime_path(), &serde_json::to_vec_pretty(&info)?)?;

    tracing::info!(agent_id = %info.agent_id, peer = %peer_url, control = %info.control_url, resumed = released, "node started");

    let servers_stop = CancellationToken::new();
    let peer_app = peer_api::router(Arc::clone(&node));
    let control_app = control_api::router(Arc::clone(&node), home.clone(), token, peer_url);
    // A rotation made while the node was down: tell contacts now.
    let told = control_api::announce_card(&node).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if told > 0 {
        tracing::info!(contacts = told, "announcing rotated keys");
    }
    // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm meets delayed
    // ACKs and a reply can stall for ~40 ms (serve_peers sets it on each peer connection).
    let control_listener = control_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let peer_server = tokio::spawn(serve_peers(peer_listener, peer_app, Arc::clone(&node), servers_stop.clone()));
    let stop = servers_stop.clone();
    let control_server = tokio::spawn(async move {
        axum::serve(control_listener, control_app).with_graceful_shutdown(async move { stop.cancelled().await }).await
    });
    let worker_stop = CancellationToken::new();
    let worker = tokio::spawn(outbox::run(Arc::clone(&node), worker_stop.clone()));
    let registration = node.config.registry.clone().map(|url| {
        tokio::spawn(crate::registration::run(Arc::clone(&node), url, registry_api_key.clone(), worker_stop.clone()))
    });
    let advertiser = if node.config.mdns {
        let keys = node.keys();
        let (id, fp, protocols) =
            (node.agent_id(), keys.identity.fingerprint().to_string(), keys.card.protocols.clone());
        match tokio::task::spawn_blocking(move || crate::mdns::Advertiser::start(peer_addr, &id, &fp, &protocols))
            .await?
        {
            Ok(a) => {
                tracing::info!(service = crate::mdns::SERVICE_TYPE, "advertising on the LAN with mDNS");
                Some(a)
            }
            Err(crate::mdns::MdnsError::LoopbackOnly(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "mDNS advertisement failed; LAN peers will not find this node by mDNS");
                None
            }
        }
    } else {
        None
    };
    let gossip =
        tokio::spawn(crate::gossip::run(Arc::clone(&node), node.config.bootstrap.clone(), worker_stop.clone()));
    let pruner = {
        let (node, stop) = (Arc::clone(&node), worker_stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {
                        node.limits.prune();
                        // Replay records past their horizon; bounded per call.
                        let pruned = node.db(|s| s.prune_accepted(now_ms() as i64, 10_000)).await.unwrap_or(0);
                        let _ = node.db(|s| s.prune_directory(now_ms() as i64)).await;
                        if pruned > 0 {
                            tracing::debug!(pruned, "pruned replay records");
                        }
                    }
                }
            }
        })
    };

    ready(&info);

    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = wait_for_signal() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    servers_stop.cancel();
    worker_stop.cancel();
    // In-flight requests finish; streaming watchers (events) are cut after the grace period.
    let grace = Duration::from_secs(10);
    let _ = tokio::time::timeout(grace + Duration::from_secs(1), peer_server).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), control_server).await;
    let _ = tokio::time::timeout(grace, worker).await;
    let _ = pruner.await;
    let _ = tokio::time::timeout(Duration::from_secs(1), gossip).await;
    if let Some(registration) = registration {
        let _ = tokio::time::timeout(Duration::from_secs(4), registration).await;
    }
    if let Some(advertiser) = advertiser {
        let _ = tokio::task::spawn_blocking(move || advertiser.stop()).await;
    }
    let _ = std::fs::remove_file(home.runtime_path());
    let _ = std::fs::remove_file(home.token_path());
    node.db.close().await?;
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// Serves the peer API: at most `max_connections` connections at once (further clients wait in
/// the listen backlog), request heads bounded in size and in time (a client that trickles bytes,
/// or idles on a kept-alive connection, is cut off), `TCP_NODELAY`, and on shutdown the requests
/// in flight finish (up to 10 s) before connections close.
async fn serve_peers(listener: TcpListener, app: axum::Router, node: Arc<Node>, stop: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let slots = Arc::new(tokio::sync::Semaphore::new(node.config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(node.config.header_read_timeout_secs.max(1)))
        .max_buf_size(node.config.max_header_bytes.max(8192));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Our card for `identity` as `profile` and the advertised `endpoint` describe it.
pub(crate) fn our_card(identity: &agentmesh_core::Identity, profile: &Profile, endpoint: &str) -> AgentCard {
    AgentCard::new(
        identity,
        &profile.name,
        vec![endpoint.to_owned()],
        profile.capabilities.clone(),
        vec![PROTOCOL_NATIVE.into(), PROTOCOL_AGENT_MESH_V1.into()],
        profile.created_at,
    )
}
