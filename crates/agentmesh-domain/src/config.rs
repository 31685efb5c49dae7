//! Node settings: safe local defaults, overridden by `<home>/config.toml`, then by environment
//! variables (`AGENTMESH_LISTEN`, `AGENTMESH_ENDPOINT`, `AGENTMESH_CA_FILE`,
//! `AGENTMESH_IROH_LISTEN`), then by command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Node configuration. Every field has a default; `config.toml` may set any subset.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the peer API binds. Default: the address of the endpoint when that is a loopback
    /// `http://` URL (so `init --endpoint http://127.0.0.1:18787` then `up` just works), else
    /// `127.0.0.1:8787`; bind a public address only on purpose. See [`Config::listen_addr`].
    pub listen: Option<SocketAddr>,
    /// Public base URL advertised in the agent card; default `http://<listen>`.
    pub endpoint: Option<String>,
    /// How far an envelope's `sent_at` may be from our clock, seconds. Default 300.
    pub freshness_window_secs: u64,
    /// How long a queued message stays deliverable, seconds. Default 86,400 (one day).
    pub message_ttl_secs: u64,
    /// After a key rotation (ours or a contact's), how long the previous key is still honoured,
    /// seconds: envelopes signed with it are accepted and bodies sealed to it are opened.
    /// Default 86,400 (one day, the default message TTL).
    pub rotation_grace_secs: u64,
    /// Delivery attempts before an outbox entry fails (attempts the peer refused because our
    /// clock is off do not count: those go on until the envelope expires). Default 60.
    pub max_attempts: u32,
    /// First retry delay, milliseconds; doubles per attempt, with jitter. Default 500.
    pub retry_base_ms: u64,
    /// Longest retry delay, milliseconds. Default 300,000 (five minutes).
    pub retry_max_ms: u64,
    /// Timeout of each outbound HTTP request, milliseconds. Default 10,000.
    pub outbound_timeout_ms: u64,
    /// A PEM file of CA certificates trusted for `https://` peers, bootstrap nodes and
    /// registries, besides the system's (e.g. a private CA). Default none; the environment
    /// variable `AGENTMESH_CA_FILE` overrides it.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Largest body accepted on single-envelope peer routes, bytes. Default 262,144 (256 KiB).
    pub max_message_bytes: usize,
    /// Largest body accepted on contact-request routes, bytes. Default 16,384.
    pub max_contact_request_bytes: usize,
    /// Largest batch body, bytes. Default 4 MiB.
    pub max_batch_bytes: usize,
    /// Most envelopes in one batch request, sent or accepted. Default 128.
    pub max_batch_envelopes: usize,
    /// Largest message text accepted from the owner, bytes. Default 196,608 (192 KiB).
    pub max_text_bytes: usize,
    /// Largest response read from a peer, bytes. Default 4 MiB.
    pub max_response_bytes: usize,
    /// Most incoming contact requests waiting for the owner; more are refused with 429 until
    /// some are approved or rejected. Default 1,000.
    pub max_pending_requests: u32,
    /// Of `max_pending_requests`, how many (at most half) only senders our owner's discovery
    /// found before they asked (a scan, the LAN) may fill, so strangers cannot starve them.
    /// Default 100.
    pub reserved_pending_requests: u32,
    /// Most pending requests from one network (/24 for IPv4, /48 for IPv6): a sender we did not
    /// know before is refused (429) while that many wait from its network. Default 100.
    pub max_pending_per_network: u32,
    /// An incoming contact request not answered within this many seconds expires: it is closed
    /// as `expired` and the requester told (as a rejection). `0` keeps them until answered.
    /// Default 604,800 (seven days).
    pub contact_request_ttl_secs: u64,
    /// Time a client has to send a request's headers, seconds; a client that trickles bytes or
    /// idles on a kept-alive connection is cut off. Default 10.
    pub header_read_timeout_secs: u64,
    /// Time a client has to send a request body, seconds (then 408). Default 10.
    pub body_read_timeout_secs: u64,
    /// Largest request head (request line and headers), bytes. Default 16,384.
    pub max_header_bytes: usize,
    /// Addresses or networks (CIDR) of reverse proxies in front of the peer API, e.g.
    /// `["127.0.0.1"]` for a TLS proxy on this host. From them only, the client is taken from
    /// `Forwarded` (RFC 7239) or `X-Forwarded-For`, so that rate limits, address shares and
    /// contact-request sources apply to each client rather than to the proxy; their connections
    /// are not held to `max_connections_per_ip`. Anyone else's forwarding headers are ignored.
    /// Default none.
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write the client into: `x-forwarded-for` (the default;
    /// nginx's `proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`, Caddy) or `forwarded`
    /// (RFC 7239). The other one is ignored: a proxy passes it on from the client as it came.
    pub forwarded_header: String,
    /// Peer API connections open at once. At the limit, the oldest idle connection (kept alive,
    /// or trickling its request head) is closed to make room; a newcomer is turned away only when
    /// none is idle. Default 1,024.
    pub max_connections: usize,
    /// Peer API connections from one client at once: an IP address (an IPv6 /64 counts as one),
    /// or the key of a carrier that names peers by key (its own oldest idle one makes room for a
    /// new one). Default 128.
    pub max_connections_per_ip: usize,
    /// Of `max_connections`, how many (at most half) only addresses our contacts sent new
    /// messages from in the last day may use. Default 128.
    pub reserved_connections: usize,
    /// Contact requests accepted per hour from one agent id, and separately from one IP address,
    /// counting every attempt. `0` disables. Default 10.
    pub contact_requests_per_hour: u32,
    /// Messages (and read receipts) accepted per minute from one trusted peer. `0` disables.
    /// Default 600.
    pub messages_per_minute: u32,
    /// Requests per minute from one IP address to the other peer routes (card, discovery,
    /// contact responses, unknown routes). `0` disables. Default 600.
    pub other_requests_per_minute: u32,
    /// Peers delivered to concurrently by the outbox worker. Default 32.
    pub delivery_concurrency: usize,
    /// Concurrent batch requests in flight to one peer. Default 4.
    pub per_peer_inflight: usize,
    /// Bootstrap nodes (base URLs) to announce our signed peer record to and learn peers from.
    /// Default none. `agentmesh up --bootstrap URL` adds more.
    pub bootstrap: Vec<String>,
    /// Serve as a bootstrap node: answer announcements with up to 1,000 records instead of 50.
    pub bootstrap_mode: bool,
    /// How often we announce ourselves again and refresh what we know, seconds. Default 600.
    pub gossip_interval_secs: u64,
    /// Validity of the peer records we sign, seconds. Default 1,800 (at most one day).
    pub peer_record_ttl_secs: u64,
    /// Newly learnt peers we announce ourselves to per round. Default 5.
    pub gossip_fanout: usize,
    /// Most agents kept in the directory; the least recently seen go first. Default 10,000.
    pub max_directory_peers: usize,
    /// Advertise the node on the LAN with mDNS (`_agentmesh._tcp.local.`) when it listens on a
    /// non-loopback address. Default true; `agentmesh up --no-mdns` turns it off.
    pub mdns: bool,
    /// A registry (base URL) to register with, heartbeat every `registry_heartbeat_secs`, and
    /// deregister from on clean shutdown. `agentmesh up --registry URL` sets it.
    pub registry: Option<String>,
    /// Hostname to claim in the registry; default `<name>-<agent id>`.
    pub registry_hostname: Option<String>,
    /// Description published in the registry.
    pub registry_description: String,
    /// `public` (listed in search, the default) or `private`.
    pub registry_visibility: String,
    /// File holding the registry's `X-Registry-Key`, if it needs one (mode 0600).
    pub registry_api_key_file: Option<std::path::PathBuf>,
    /// Heartbeat interval, seconds. Default 60 (the registry marks an agent offline after three
    /// missed ones).
    pub registry_heartbeat_secs: u64,
    /// How long the event log keeps an event, seconds. Default 604,800 (seven days).
    pub event_retention_secs: u64,
    /// Most events the event log keeps (the oldest go first). Default 100,000.
    pub max_events: u64,
    /// Most event streams (`GET /v1/events`) open at once; more are refused with 429
    /// `rate_limited`. The A2A endpoint's streams have as many places again, a quarter of them
    /// (rounded up) for one A2A client. Default 64.
    pub max_event_streams: usize,
    /// A control API client that takes no bytes for this long while we have some to send (a
    /// stalled event stream consumer) is disconnected, seconds. Default 30.
    pub control_write_timeout_secs: u64,
    /// A peer API client that takes no bytes for this long while we have some to send (a chunk
    /// fetch that stopped reading, an A2A stream) is disconnected, seconds; what it held (a
    /// fetch slot) is freed. Default 30.
    pub peer_write_timeout_secs: u64,
    /// How long a call rings before it is missed, seconds, unless the caller says otherwise.
    /// Default 120.
    pub call_ring_secs: u64,
    /// Most calls ringing or active at once; more invitations are refused with 409
    /// `too_many_calls`. Default 1,000.
    pub max_open_calls: u32,
    /// Of `max_open_calls`, most with one peer. Default 100.
    pub max_open_calls_per_peer: u32,
    /// Whether files offered by any contact are accepted without the owner (up to
    /// `max_file_bytes`). Default false: the owner runs `accept-file`.
    pub file_auto_accept: bool,
    /// Contacts (agent ids) whose files are accepted without the owner, when
    /// `file_auto_accept` is off. Default none.
    pub file_auto_accept_from: Vec<String>,
    /// Largest file accepted, bytes; a bigger offer is declined at once (the sender is told).
    /// Default 17,179,869,184 (16 GiB).
    pub max_file_bytes: u64,
    /// Most incoming transfers offered or under way at once (offers and inline files of calls;
    /// our own outgoing transfers do not count); more are declined. Default 100.
    pub max_open_transfers: u32,
    /// Of `max_open_transfers`, most from one contact, so that one contact cannot fill them.
    /// Default 20.
    pub max_open_transfers_per_peer: u32,
    /// An incoming offer the owner has not accepted within this many seconds is declined (the
    /// sender told), and an accepted one whose sender sent nothing for as long fails, freeing
    /// their places. `0` keeps them. Default 86,400 (a day).
    pub file_offer_ttl_secs: u64,
    /// A download that brings no byte for this many seconds (its sender down or stalled) gives
    /// its slot up for as long again, so that others go first; it resumes later. Default 60.
    pub download_stall_secs: u64,
    /// Most delegated tasks not yet final at once, both directions; more are refused with 409
    /// `too_many_tasks`. Default 1,000.
    pub max_open_tasks: u32,
    /// Of `max_open_tasks`, most with one peer. Default 100.
    pub max_open_tasks_per_peer: u32,
    /// Most bytes (as JSON) of all the artifacts one task keeps; an update past it is refused
    /// (409 `task_state`). Default 4 MiB.
    pub max_task_artifact_bytes: usize,
    /// An escalation still waiting for the owner is announced again (an `escalation` event with
    /// `reminder`) this often, seconds; 0 never. Default 900.
    pub escalation_remind_secs: u64,
    /// Most escalations waiting for the owner at once (of them, at most four about one call or
    /// task); more are refused with 409 `too_many_escalations`. Default 100.
    pub max_open_escalations: u32,
    /// Whether `agentmesh mcp` offers the tools that change trust (`approve_request`, `block`,
    /// `repin`, `p2p_add_peer` approving a request). Default false: the agent asks, the owner
    /// decides.
    pub mcp_allow_trust_changes: bool,
    /// Directories whose files an agent may name over MCP (`send_file`, `delegate` files):
    /// a path is allowed when it resolves (links followed) to a place inside one of them.
    /// Default none: over MCP no file is read. Whatever is listed, no file of the home (keys,
    /// control token, database) is ever offered.
    pub mcp_file_roots: Vec<std::path::PathBuf>,
    /// Push events to an OpenClaw gateway's webhooks (`[hooks]`); default none.
    pub hooks: Option<HooksConfig>,
    /// Be reachable over iroh (QUIC with hole punching and relays; `[iroh]`), besides HTTP.
    /// Default none: HTTP only. The environment variable `AGENTMESH_IROH_LISTEN` (a UDP
    /// address) turns it on, or overrides `[iroh] listen`.
    pub iroh: Option<IrohConfig>,
}

/// `[iroh]`: the iroh carrier. Peers dial the node by its iroh endpoint id (the public half of
/// `<home>/keys/iroh.key`, listed in the signed card), directly when they can reach one of its
/// addresses or a hole can be punched, else through one of `relays`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IrohConfig {
    /// The UDP address the endpoint binds. Default `127.0.0.1:0` (loopback, any free port):
    /// bind `0.0.0.0:<port>` (or `[::]:<port>`) on purpose to be reached from other machines.
    pub listen: SocketAddr,
    /// Relay servers (http(s) URLs, at most 4; `agentmesh relay serve` runs one) the node keeps
    /// a connection to, so peers behind NATs reach it and holes get punched. Default none: only
    /// direct addresses.
    pub relays: Vec<String>,
    /// Direct UDP addresses to advertise in the card (e.g. a forwarded public port), at most 8.
    /// Default none: the addresses the endpoint finds on its own interfaces at start-up.
    pub addrs: Vec<SocketAddr>,
    /// List the iroh endpoint before the HTTP one in the card, so peers try it first. Default
    /// true (iroh goes direct whenever it can, and reaches through NATs when HTTP cannot).
    pub first: bool,
}

impl Default for IrohConfig {
    fn default() -> Self {
        IrohConfig {
            listen: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0),
            relays: Vec::new(),
            addrs: Vec::new(),
            first: true,
        }
    }
}

impl IrohConfig {
    /// Checks `relays` (http(s) URLs, at most 4) and `addrs` (dialable, at most 8).
    ///
    /// Errors: what is wrong, naming the key.
    pub fn check(&self) -> Result<(), String> {
        use agentmesh_core::endpoint::{Endpoint, MAX_IROH_ADDRS, MAX_IROH_RELAYS};
        if self.relays.len() > MAX_IROH_RELAYS {
            return Err(format!("iroh.relays: at most {MAX_IROH_RELAYS} relays"));
        }
        if let Some(bad) = self.relays.iter().find(|r| !matches!(r.parse(), Ok(Endpoint::Http(_)))) {
            return Err(format!("iroh.relays: {bad:?} is not an http(s) URL"));
        }
        if self.addrs.len() > MAX_IROH_ADDRS {
            return Err(format!("iroh.addrs: at most {MAX_IROH_ADDRS} addresses"));
        }
        if let Some(bad) = self.addrs.iter().find(|a| a.ip().is_unspecified() || a.ip().is_multicast() || a.port() == 0)
        {
            return Err(format!("iroh.addrs: {bad} cannot be dialled (unspecified, multicast or port 0)"));
        }
        Ok(())
    }
}

/// `[hooks]`: events pushed to an OpenClaw gateway's webhook endpoint, from the event log (a
/// gateway that is down gets every event once it is back, each once).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// The gateway's hooks base URL, e.g. `http://127.0.0.1:18789/hooks`: messages go to
    /// `<url>/agent`, everything else to `<url>/wake`.
    pub url: String,
    /// File holding the gateway's hooks token (sent as `Authorization: Bearer`, to `url` only).
    pub token_file: std::path::PathBuf,
    /// Which events to push, by kind. Default: `message` (incoming), `contact_request` (incoming,
    /// pending), `key_mismatch`, `status` (failed deliveries only).
    #[serde(default = "HooksConfig::default_events")]
    pub events: Vec<String>,
    /// The OpenClaw agent that gets the turns (`agentId`); default the gateway's default agent.
    #[serde(default)]
    pub agent_id: Option<String>,
}

impl HooksConfig {
    fn default_events() -> Vec<String> {
        ["message", "contact_request", "key_mismatch", "status", "escalation"].map(String::from).to_vec()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: None,
            endpoint: None,
            freshness_window_secs: 300,
            message_ttl_secs: 86_400,
            rotation_grace_secs: 86_400,
            max_attempts: 60,
            retry_base_ms: 500,
            retry_max_ms: 300_000,
            outbound_timeout_ms: 10_000,
            tls_ca_file: None,
            max_message_bytes: 256 * 1024,
            max_contact_request_bytes: 16 * 1024,
            max_batch_bytes: 4 * 1024 * 1024,
            max_batch_envelopes: 128,
            max_text_bytes: 192 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
            max_pending_requests: 1_000,
            contact_request_ttl_secs: 7 * 86_400,
            reserved_pending_requests: 100,
            max_pending_per_network: 100,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
            max_connections: 1_024,
            max_connections_per_ip: 128,
            reserved_connections: 128,
            contact_requests_per_hour: 10,
            messages_per_minute: 600,
            other_requests_per_minute: 600,
            delivery_concurrency: 32,
            per_peer_inflight: 4,
            bootstrap: Vec::new(),
            bootstrap_mode: false,
            gossip_interval_secs: 600,
            peer_record_ttl_secs: 1_800,
            gossip_fanout: 5,
            max_directory_peers: 10_000,
            mdns: true,
            registry: None,
            registry_hostname: None,
            file_auto_accept: false,
            file_auto_accept_from: Vec::new(),
            max_file_bytes: 16 << 30,
            max_open_transfers: 100,
            max_open_transfers_per_peer: 20,
            file_offer_ttl_secs: 86_400,
            download_stall_secs: 60,
            registry_description: String::new(),
            registry_visibility: "public".into(),
            registry_api_key_file: None,
            registry_heartbeat_secs: 60,
            event_retention_secs: 7 * 86_400,
            max_events: 100_000,
            max_event_streams: 64,
            control_write_timeout_secs: 30,
            peer_write_timeout_secs: 30,
            call_ring_secs: 120,
            max_open_calls: 1_000,
            max_open_calls_per_peer: 100,
            max_open_tasks: 1_000,
            max_open_tasks_per_peer: 100,
            max_task_artifact_bytes: 4 * 1024 * 1024,
            escalation_remind_secs: 900,
            max_open_escalations: 100,
            mcp_allow_trust_changes: false,
            mcp_file_roots: Vec::new(),
            hooks: None,
            iroh: None,
        }
    }
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// The peer API's address when nothing else decides it.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8787);

impl Config {
    /// The networks of `trusted_proxies` (each an address, `127.0.0.1` or `::1`, or a CIDR
    /// network, `10.0.0.0/8`) and whether `forwarded_header` names `Forwarded` (RFC 7239; any
    /// case) rather than `X-Forwarded-For`.
    ///
    /// Errors: the first entry that is neither, or another header; the message names the key.
    pub fn trusted_proxies(&self) -> Result<(Vec<IpNet>, bool), String> {
        let rfc7239 = match self.forwarded_header.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => false,
            "forwarded" => true,
            other => {
                return Err(format!("forwarded_header: {other:?} is neither \"x-forwarded-for\" nor \"forwarded\""));
            }
        };
        let nets = self
            .trusted_proxies
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("trusted_proxies: {e:?} is not an address or a network (CIDR)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((nets, rfc7239))
    }

    /// The address the peer API binds: `listen` when set, else the address of `endpoint` when it
    /// is an `http://` URL on a loopback IP (nothing else could serve it), else 127.0.0.1:8787.
    pub fn listen_addr(&self, endpoint: Option<&str>) -> SocketAddr {
        self.listen.or_else(|| endpoint.and_then(loopback_http_addr)).unwrap_or(DEFAULT_LISTEN)
    }

    /// Defaults, then `config_path` if it exists, then the environment.
    ///
    /// Errors: the file cannot be read; [`ConfigError`] when it (or `AGENTMESH_LISTEN`) does not
    /// parse.
    pub fn load(config_path: &Path) -> Result<Self> {
        let mut config = if config_path.exists() {
            let text =
                std::fs::read_to_string(config_path).with_context(|| format!("reading {}", config_path.display()))?;
            toml::from_str(&text)
                .map_err(|e| ConfigError(format!("{}: {}", config_path.display(), e.message().trim())))?
        } else {
            Config::default()
        };
        if let Ok(listen) = std::env::var("AGENTMESH_LISTEN") {
            config.listen = Some(
                listen.parse().map_err(|_| ConfigError(format!("AGENTMESH_LISTEN={listen:?} is not an address")))?,
            );
        }
        if let Ok(endpoint) = std::env::var("AGENTMESH_ENDPOINT") {
            config.endpoint = Some(endpoint);
        }
        if let Some(ca_file) = std::env::var_os("AGENTMESH_CA_FILE") {
            config.tls_ca_file = Some(ca_file.into());
        }
        if let Ok(listen) = std::env::var("AGENTMESH_IROH_LISTEN") {
            let listen = listen
                .parse()
                .map_err(|_| ConfigError(format!("AGENTMESH_IROH_LISTEN={listen:?} is not a UDP address")))?;
            config.iroh.get_or_insert_with(IrohConfig::default).listen = listen;
        }
        config.trusted_proxies().map_err(|e| ConfigError(format!("{}: {e}", config_path.display())))?;
        if let Some(iroh) = &config.iroh {
            iroh.check().map_err(|e| ConfigError(format!("{}: {e}", config_path.display())))?;
        }
        Ok(config)
    }
}

/// The socket address of an `http://` URL whose host is a loopback IP (`localhost` too).
pub fn loopback_http_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.trim().strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().ok()?),
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().ok()?
    };
    ip.is_loopback().then_some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:9000\"\nmax_attempts = 3\n").expect("parse");
        assert_eq!(c.listen.map(|l| l.port()), Some(9000));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.freshness_window_secs, 300);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn trusted_proxies_out_of_shape_are_a_config_error_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "trusted_proxies = [\"proxy.example\"]\n").expect("write");
        let refused = Config::load(&path).expect_err("refused");
        assert!(refused.downcast_ref::<ConfigError>().is_some(), "{refused:#}");
        assert!(format!("{refused:#}").contains("trusted_proxies: \"proxy.example\""), "{refused:#}");
        std::fs::write(&path, "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nforwarded_header = \"Forwarded\"\n")
            .expect("write");
        let (nets, rfc7239) = Config::load(&path).expect("loads").trusted_proxies().expect("parses");
        assert_eq!((nets.len(), rfc7239), (2, true));
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn regression_init_endpoint_on_loopback_decides_where_up_listens() {
        let c = Config::default();
        assert_eq!(c.listen_addr(Some("http://127.0.0.1:18787")), "127.0.0.1:18787".parse().expect("addr"));
        assert_eq!(c.listen_addr(Some("http://localhost:18788/")), "127.0.0.1:18788".parse().expect("addr"));
        assert_eq!(c.listen_addr(Some("http://10.0.0.5:8787")), DEFAULT_LISTEN, "not ours to bind");
        assert_eq!(c.listen_addr(Some("https://127.0.0.1:443")), DEFAULT_LISTEN, "TLS is a proxy's job");
        assert_eq!(c.listen_addr(None), DEFAULT_LISTEN);
        let explicit = Config { listen: Some("127.0.0.1:9000".parse().expect("addr")), ..Config::default() };
        assert_eq!(explicit.listen_addr(Some("http://127.0.0.1:18787")).port(), 9000);
    }
}
