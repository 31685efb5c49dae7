//! LAN discovery with mDNS / DNS-SD (RFC 6762, RFC 6763) through the `mdns-sd` crate.
//!
//! A node advertises the service type `_agentmesh._tcp.local.`: instance name = agent id, SRV =
//! its peer API address and port, TXT records `id` (agent id), `fp` (the first 16 hex digits of its
//! fingerprint) and `proto` (comma-separated protocols). It advertises only on the interface of
//! the address it listens on, or on every non-loopback interface when it listens on `0.0.0.0`; a
//! node bound to loopback (the default) does not advertise at all, since nobody on the LAN could
//! reach it. A browser resolves the services it hears and then fetches and verifies each card over
//! HTTP: the TXT records are hints, never trusted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_agentmesh._tcp.local.";

/// A running advertisement; withdrawn by [`Advertiser::stop`] (or on drop of the daemon).
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Why mDNS is not advertised.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The node listens on loopback only: LAN peers could not reach it anyway.
    #[error("the peer API listens on loopback ({0}) only; LAN peers could not reach it")]
    LoopbackOnly(IpAddr),
    /// The mDNS daemon failed (no multicast, socket error, …).
    #[error("mDNS: {0}")]
    Daemon(String),
}

fn daemon_error(e: mdns_sd::Error) -> MdnsError {
    MdnsError::Daemon(e.to_string())
}

impl Advertiser {
    /// Advertises `agent_id` at `listen` with its `fingerprint` and `protocols`.
    pub fn start(
        listen: SocketAddr,
        agent_id: &str,
        fingerprint: &str,
        protocols: &[String],
    ) -> Result<Self, MdnsError> {
        let ip = listen.ip();
        if ip.is_loopback() {
            return Err(MdnsError::LoopbackOnly(ip));
        }
        let daemon = ServiceDaemon::new().map_err(daemon_error)?;
        // Only the interface we serve on (or all but loopback for a wildcard address).
        daemon.disable_interface(IfKind::All).map_err(daemon_error)?;
        if ip.is_unspecified() {
            daemon.enable_interface(if ip.is_ipv4() { IfKind::IPv4 } else { IfKind::IPv6 }).map_err(daemon_error)?;
            let _ = daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6]);
        } else {
            daemon.enable_interface(IfKind::Addr(ip)).map_err(daemon_error)?;
        }
        let fp = fingerprint.trim_start_matches("sha256:").chars().take(16).collect::<String>();
        let properties = [("id", agent_id.to_owned()), ("fp", fp), ("proto", protocols.join(","))];
        let host = format!("{agent_id}.local.");
        let info = if ip.is_unspecified() {
            ServiceInfo::new(SERVICE_TYPE, agent_id, &host, (), listen.port(), &properties[..])
                .map(ServiceInfo::enable_addr_auto)
        } else {
            ServiceInfo::new(SERVICE_TYPE, agent_id, &host, ip, listen.port(), &properties[..])
        }
        .map_err(daemon_error)?;
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(daemon_error)?;
        Ok(Advertiser { daemon, fullname })
    }

    /// Withdraws the advertisement (goodbye packets) and stops the daemon.
    pub fn stop(self) {
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = status.recv_timeout(Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// A service heard on the LAN: the base URL to fetch its card from and what its TXT claimed.
#[derive(Clone, Debug)]
pub struct Heard {
    /// `http://<address>:<port>`.
    pub base_url: String,
    /// The `id` TXT value (a hint until the card is verified).
    pub agent_id: Option<String>,
}

/// Browses for `timeout` and returns each resolved service once (IPv4 addresses first).
/// Blocking: run it off the async threads.
pub fn browse(timeout: Duration) -> Result<Vec<Heard>, MdnsError> {
    let daemon = ServiceDaemon::new().map_err(daemon_error)?;
    let events = daemon.browse(SERVICE_TYPE).map_err(daemon_error)?;
    let deadline = Instant::now() + timeout;
    let mut heard: HashMap<String, Heard> = HashMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else { break };
        if let ServiceEvent::ServiceResolved(service) = event {
            let mut addresses: Vec<IpAddr> = service.get_addresses_v4().into_iter().map(IpAddr::V4).collect();
            addresses.sort();
            let Some(ip) = addresses.first() else { continue };
            let base_url = format!("http://{}", SocketAddr::new(*ip, service.get_port()));
            let agent_id = service.get_property_val_str("id").map(str::to_owned);
            heard.insert(service.get_fullname().to_owned(), Heard { base_url, agent_id });
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    let mut out: Vec<Heard> = heard.into_values().collect();
    out.sort_by(|a, b| a.base_url.cmp(&b.base_url));
    Ok(out)
}
