//! `agentmesh relay serve`: our own relay for the iroh carrier, so that no operator depends on
//! anyone else's. It is iroh's relay server (`iroh-relay`): agents keep a connection to it over
//! HTTPS, reach each other through it when no direct path works, and coordinate hole punching
//! over it; QUIC address discovery tells an agent the public address its NAT gives it. What it
//! forwards is QUIC between two endpoints (TLS 1.3 end to end, carrying our sealed envelopes):
//! it learns which endpoint ids talk, when and how much, and nothing else.
//!
//! TLS: the certificate and key given (`--cert`, `--key`), else a self-signed certificate for
//! `--hostname` made once and kept in `<home>/relay/` (`cert.pem`, `key.pem` 0600); agents trust
//! it through `tls_ca_file` (or `AGENTMESH_CA_FILE`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use iroh_relay::server::{CertConfig, QuicConfig, RelayConfig, Server, ServerConfig, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::Ctx;
use crate::cli::RelayServeArgs;
use crate::output;

pub(crate) async fn serve(ctx: &Ctx, args: RelayServeArgs) -> Result<()> {
    let hostnames = if args.hostnames.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        args.hostnames.clone()
    };
    let (cert_path, key_path) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let home = ctx.home.clone();
            let names = hostnames.clone();
            tokio::task::spawn_blocking(move || self_signed(home.root(), &names)).await??
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no PEM certificate", cert_path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", cert_path.display());
    }
    // Refused when others may read it, like every secret the node reads.
    let key_pem = zeroize::Zeroizing::new(agentmesh_node::home::read_private_text(&key_path)?);
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .with_context(|| format!("{} holds no PEM private key", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not go together")?;

    let mut relay = RelayConfig::new(args.http);
    relay.tls = Some(TlsConfig::new(args.https, CertConfig::Manual { server_config: tls }));
    let mut config = ServerConfig::default();
    config.relay = Some(relay);
    config.quic = (!args.no_quic).then(|| QuicConfig::new(args.quic));
    let mut server = Server::spawn(config).await.context("starting the relay")?;
    let https = server.https_addr().context("the relay has no HTTPS listener")?;
    let url = format!("https://{}:{}", hostnames[0], https.port());
    if ctx.json {
        output::json(&json!({
            "event": "ready",
            "url": url,
            "https": https.to_string(),
            "http": server.http_addr().map(|a| a.to_string()),
            "quic": server.quic_addr().map(|a| a.to_string()),
            "cert": cert_path.display().to_string(),
        }));
    } else {
        output::line(&format!("agentmesh relay serving {url} (Ctrl-C to stop)"));
        output::line(&format!("  agents: [iroh] relays = [\"{url}\"]; its certificate: {}", cert_path.display()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        ended = server.join() => {
            bail!("the relay stopped: {:?}", ended);
        }
    }
    server.shutdown().await.context("stopping the relay")?;
    Ok(())
}

/// The self-signed certificate of `<home>/relay/` for `names`, made (with its key, 0600) when
/// missing; returns the paths of the certificate and the key.
fn self_signed(home: &Path, names: &[String]) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = home.join("relay");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let names_path = dir.join("names");
    let wanted = names.join("\n");
    let same = std::fs::read_to_string(&names_path).is_ok_and(|n| n == wanted);
    if same && cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(names.to_vec()).context("making a self-signed certificate")?;
    agentmesh_node::home::write_private(&key_path, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, made.cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    std::fs::write(&names_path, wanted).with_context(|| format!("writing {}", names_path.display()))?;
    Ok((cert_path, key_path))
}
