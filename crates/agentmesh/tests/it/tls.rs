//! Outbound HTTPS: a node that trusts a private CA reaches a peer behind a TLS-terminating
//! proxy (contact request, approval, message, receipt); a node that does not is refused.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A throwaway CA (PEM) and a server configuration whose certificate it signed, valid for
/// `localhost` and `127.0.0.1`.
fn test_pki(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf certificate");

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    (ca.pem(), Arc::new(server))
}

/// Terminates TLS on `listener` and forwards the plaintext bytes to `upstream`, both ways.
/// Handshakes that fail (an untrusting client hangs up) just drop the connection.
fn tls_proxy(listener: TcpListener, server: Arc<rustls::ServerConfig>, upstream: SocketAddr) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

async fn start(dir: &Path, name: &str, env: &[(&str, &str)]) -> LocalNode {
    let home = dir.join(name);
    local::init(&exe(), &home, name, &["chat"]).expect("init");
    LocalNode::start(&exe(), &home, "127.0.0.1:0", env).await.expect("start node")
}

#[tokio::test(flavor = "multi_thread")]
async fn contact_and_message_over_https_through_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, server) = test_pki("agentmesh test CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write CA");

    // Bob listens on plain HTTP behind the proxy and advertises the proxy's https:// URL.
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let https_url = format!("https://localhost:{}", proxy.local_addr().expect("proxy addr").port());
    let bob = start(dir.path(), "bob", &[("AGENTMESH_ENDPOINT", https_url.as_str())]).await;
    let upstream: SocketAddr = bob.peer_url.trim_start_matches("http://").parse().expect("bob's address");
    tls_proxy(proxy, server, upstream);

    // Carol trusts only the system's CAs: the certificate is refused, and nothing reaches bob.
    let carol = node(dir.path(), "carol").await;
    let err = fails(&carol.home, &["request-contact", &https_url, "--purpose", "no tls trust"]);
    assert_eq!(err["error"]["code"], "peer_unreachable", "{err}");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(message.contains("certificate") && message.contains(&https_url), "{message}");

    // Alice trusts the test CA through AGENTMESH_CA_FILE, which beats config.toml's (missing) file.
    let alice_home = dir.path().join("alice");
    local::init(&exe(), &alice_home, "alice", &["chat"]).expect("init");
    std::fs::write(alice_home.join("config.toml"), "tls_ca_file = \"/nonexistent/ca.pem\"\n").expect("config");
    let ca_env = ca_file.to_str().expect("utf-8 path");
    let alice = LocalNode::start(&exe(), &alice_home, "127.0.0.1:0", &[("AGENTMESH_CA_FILE", ca_env)])
        .await
        .expect("start alice");

    let sent = ok(&alice.home, &["request-contact", &https_url, "--purpose", "over tls"]);
    assert_eq!(sent["outcome"], "delivered");
    assert_eq!(sent["peer"]["agent_id"], bob.agent_id.as_str());
    assert_eq!(sent["peer"]["endpoint"], https_url.as_str());
    let request_id = sent["request"]["request_id"].as_str().expect("request id").to_owned();
    incoming(&bob, &request_id).await;
    let all = bob.client.requests(&Default::default()).await.expect("requests");
    assert_eq!(all.requests.len(), 1, "only alice's request: {all:?}");
    bob.client.approve(&request_id).await.expect("approve");
    wait_trust(&alice, &bob.agent_id, agentmesh_api::TrustState::Trusted).await;

    // Bob's only advertised endpoint is the https:// one, so the message goes through the proxy.
    let m = ok(&alice.home, &["send-message", "--to", &bob.agent_id, "--text", "hello over https"]);
    let id = m["message_id"].as_str().expect("message id").to_owned();
    wait_status(&alice, &id, agentmesh_api::MessageStatus::Delivered).await;
    let unread = ok(&bob.home, &["list-messages", "--incoming", "--unread"]);
    assert_eq!(unread["messages"][0]["text"], "hello over https");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_an_unreadable_ca_file_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("dave");
    local::init(&exe(), &home, "dave", &["chat"]).expect("init");
    let mut child = std::process::Command::new(exe())
        .arg("--home")
        .arg(&home)
        .args(["--json", "up", "--listen", "127.0.0.1:0", "--no-mdns"])
        .env("AGENTMESH_CA_FILE", dir.path().join("missing.pem"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn agentmesh up");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started without its CA file");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
