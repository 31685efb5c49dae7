//! Outbound HTTP clients: every one is built by [`client`] (plain HTTP and HTTPS), with its
//! timeouts set on it. Requests to peers' nodes go through [`crate::carrier`], which caps every
//! answer it reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::carrier::CarrierError;

/// Settings of an outbound HTTP client built by [`client`]. The defaults are reqwest's own
/// (no timeouts, an unbounded idle pool, idle connections closed after 90 s), our user agent
/// and no extra CA.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Timeout of each whole request, from connecting to the end of the response body,
    /// milliseconds. `None`: no timeout. Default `None`.
    pub timeout_ms: Option<u64>,
    /// Timeout of connecting (TCP, and for `https://` the TLS handshake), milliseconds.
    /// `None`: only `timeout_ms` applies. Default `None`.
    pub connect_timeout_ms: Option<u64>,
    /// Idle keep-alive connections kept per host; `0` closes each one after use.
    /// Default unbounded.
    pub pool_max_idle_per_host: usize,
    /// How long an idle keep-alive connection is kept, milliseconds. `None`: until the server
    /// closes it. Default 90,000.
    pub pool_idle_timeout_ms: Option<u64>,
    /// The `User-Agent` header. Default `agentmesh/<version>`.
    pub user_agent: String,
    /// A PEM file of CA certificates trusted for `https://`, besides the system's (the node's
    /// `tls_ca_file`). It must hold at least one certificate. Default none.
    pub extra_ca_file: Option<PathBuf>,
    /// PEM text of more CA certificates trusted for `https://`, besides the system's and
    /// `extra_ca_file`'s. It must hold at least one certificate. Default none.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Whether redirects are followed (up to 10). Default true; clients that carry a credential
    /// turn it off so it never reaches another address.
    pub follow_redirects: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout_ms: None,
            connect_timeout_ms: None,
            pool_max_idle_per_host: usize::MAX,
            pool_idle_timeout_ms: Some(90_000),
            user_agent: concat!("agentmesh/", env!("CARGO_PKG_VERSION")).to_owned(),
            extra_ca_file: None,
            extra_ca_pem: None,
            follow_redirects: true,
        }
    }
}

/// The one constructor of outbound HTTP clients: plain `http://` and `https://` (TLS 1.2 and
/// 1.3, rustls with the *ring* provider, HTTP/1.1), never through a proxy.
///
/// Every client must come from here: reqwest is built with `rustls-no-provider`, so a client
/// from a bare `reqwest::Client::builder()` panics unless a process-wide rustls provider was
/// installed, and would use reqwest's platform verifier, which fails to build on a host with
/// no CA certificates. We hand reqwest a ready rustls configuration instead and install nothing
/// process-wide.
///
/// Trusted roots: the system's CA certificates, loaded with `rustls-native-certs` (the
/// distribution's bundle, e.g. `/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set),
/// plus `extra_ca_file` and `extra_ca_pem`. We chose the system's store over a compiled-in
/// bundle (`webpki-roots`) so that CAs an operator installs on the host are honoured and
/// removals reach us with system updates rather than our releases; the crate is already in
/// the dependency tree (reqwest's verifier uses it on Linux) and needs neither the network
/// nor aws-lc. A host without CA certificates still gets a client: plain HTTP works, and
/// `https://` is refused (certificate not trusted) unless an extra CA signed the server's
/// certificate; a warning says so.
///
/// Errors: the extra CA file cannot be read, or either extra source holds no (valid) PEM
/// certificate.
pub fn client(options: &ClientOptions) -> Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "loading the system's CA certificates");
    }
    let (system, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "system CA certificates rustls cannot use");
    }
    if let Some(path) = &options.extra_ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
        add_pem_roots(&mut roots, &pem).with_context(|| format!("CA file {}", path.display()))?;
    }
    if let Some(pem) = &options.extra_ca_pem {
        add_pem_roots(&mut roots, pem).context("extra CA certificates")?;
    }
    if roots.is_empty() {
        tracing::warn!(
            "no CA certificates found on this system (none configured either): https:// peers will be refused"
        );
    } else {
        tracing::debug!(system, total = roots.len(), "trusted CA certificates");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest is built without HTTP/2.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .pool_max_idle_per_host(options.pool_max_idle_per_host)
        .pool_idle_timeout(options.pool_idle_timeout_ms.map(Duration::from_millis))
        .user_agent(options.user_agent.as_str());
    if !options.follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    if let Some(ms) = options.timeout_ms {
        builder = builder.timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = options.connect_timeout_ms {
        builder = builder.connect_timeout(Duration::from_millis(ms));
    }
    builder.build().context("building the HTTP client")
}

/// Adds every certificate of a PEM text to `roots`; fails if there is none or one is invalid.
fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<()> {
    for cert in pem_certificates(pem)? {
        roots.add(cert).map_err(|e| anyhow::anyhow!("not a usable CA certificate: {e}"))?;
    }
    Ok(())
}

/// The certificates of a PEM text (an extra CA file).
///
/// Errors: a block is not valid PEM, or there is no certificate at all.
pub(crate) fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        bail!("no PEM certificate in it");
    }
    Ok(certs)
}

/// What a reqwest error means for a request: whether it reached the peer, and what went wrong
/// (its causes, without the URL).
pub(crate) fn transport(e: reqwest::Error) -> CarrierError {
    let before_send = e.is_connect() || e.is_builder();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut message = what.to_owned();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message = format!("{what}: {s}");
        source = s.source();
    }
    CarrierError { before_send, message }
}
