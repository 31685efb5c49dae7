//! The iroh carrier between real nodes on loopback: a conversation over a direct QUIC path, a
//! contact asked by iroh endpoint alone, the binding of an iroh endpoint to the agent whose card
//! lists it, and falling back to HTTP where iroh does not reach.

use agentmesh_api::{MessageStatus, TrustState};
use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, EnvelopeKind, Identity, PROTOCOL_NATIVE};
use agentmesh_testkit::iroh_peer::IrohPeer;
use serde_json::Value;

use crate::support::*;

/// A node's iroh endpoint, as its card lists it.
async fn iroh_endpoint(node: &LocalNode) -> String {
    let card = node.client.card().await.expect("card");
    card.endpoints.iter().find(|e| e.starts_with("iroh:")).cloned().expect("the card lists an iroh endpoint")
}

#[tokio::test]
async fn two_agents_converse_over_a_direct_iroh_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node_with(dir.path(), "alice", "[iroh]\n", &[]).await;
    let bob = node_with(dir.path(), "bob", "[iroh]\n", &[]).await;
    let card = bob.client.card().await.expect("card");
    assert!(card.endpoints[0].starts_with("iroh:"), "iroh is listed first: {:?}", card.endpoints);

    trust(&alice, &bob).await;
    let there = send(&alice, &bob.agent_id, "over QUIC").await;
    wait_status(&alice, &there, MessageStatus::Delivered).await;
    let back = send(&bob, &alice.agent_id, "and back").await;
    wait_status(&bob, &back, MessageStatus::Delivered).await;
    assert!(inbox(&bob).await.iter().any(|m| m.text.as_deref() == Some("over QUIC")));
    assert!(inbox(&alice).await.iter().any(|m| m.text.as_deref() == Some("and back")));

    for (from, to) in [(&alice, &bob), (&bob, &alice)] {
        let health = from.client.health(&to.agent_id).await.expect("health");
        assert!(health.reachable, "{health:?}");
        let path = health.peer.path.expect("a path in use");
        assert_eq!((path.carrier.as_str(), path.kind.as_str()), ("iroh", "direct"), "{path:?}");
        assert!(path.endpoint.starts_with("iroh:"), "{path:?}");
        assert!(path.via.as_deref().is_some_and(|v| v.starts_with("127.0.0.1:")), "{path:?}");
        assert!(path.rtt_us.is_some(), "{path:?}");
    }
    // `peers --json` shows it too.
    let peers = ok(&alice.home, &["peers"]);
    assert_eq!(peers["peers"][0]["path"]["carrier"], "iroh", "{peers}");
}

#[tokio::test]
async fn a_contact_asked_by_iroh_endpoint_alone_is_reached_over_iroh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node_with(dir.path(), "alice", "[iroh]\n", &[]).await;
    // Bob's card names an HTTP endpoint nothing listens on: iroh is his only working path.
    let bob = node_with(dir.path(), "bob", "[iroh]\n", &[("AGENTMESH_ENDPOINT", "http://127.0.0.1:9")]).await;
    let reply = ask(&alice, &iroh_endpoint(&bob).await).await;
    let id = reply.request.expect("a request").request_id;
    incoming(&bob, &id).await;
    bob.client.approve(&id).await.expect("approve");
    wait_trust(&alice, &bob.agent_id, TrustState::Trusted).await;
    let sent = send(&alice, &bob.agent_id, "found by key").await;
    wait_status(&alice, &sent, MessageStatus::Delivered).await;
    let path = alice.client.health(&bob.agent_id).await.expect("health").peer.path.expect("path");
    assert_eq!(path.carrier, "iroh", "{path:?}");

    // Bob's address under another key: the handshake proves the node there is not that key.
    let other = IrohPeer::bind().await.expect("bind");
    let mut forged = iroh_endpoint(&bob).await;
    forged.replace_range(5..69, &hex::encode(other.id()));
    let before = counts(&alice.home);
    let refused = fails(&alice.home, &["request-contact", &forged, "--purpose", "x"]);
    assert_eq!(refused["error"]["code"], "peer_unreachable", "{refused}");
    assert_eq!(counts(&alice.home), before, "nothing stored for an endpoint that is not the agent's");
}

/// A contact request from a fresh identity whose card lists `iroh`, sealed to `target`.
fn contact_request(target: &AgentCard, iroh: &str) -> String {
    let id = Identity::generate();
    let card = AgentCard::new(
        &id,
        "mallory",
        vec![iroh.to_owned(), "http://127.0.0.1:9".into()],
        vec![],
        vec![PROTOCOL_NATIVE.into()],
        now_ms(),
    );
    let body = ContactRequestBody {
        request_id: format!("req_{}", hex::encode(rand::random::<[u8; 16]>())),
        purpose: "hi".into(),
    };
    let mut draft = Draft::new(
        EnvelopeKind::ContactRequest,
        id.agent_id(),
        target.agent_id,
        now_ms(),
        3_600_000,
        APPLICATION_JSON,
        serde_json::to_vec(&body).expect("json"),
    );
    draft.card = Some(card);
    let x25519 = agentmesh_core::b64::decode_array::<32>(&target.x25519).expect("x25519");
    serde_json::to_string(&draft.seal(&x25519).expect("seal").sign(&id, now_ms())).expect("json")
}

#[tokio::test]
async fn an_envelope_over_an_iroh_endpoint_its_card_does_not_list_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bob = node_with(dir.path(), "bob", "[iroh]\n", &[]).await;
    let card = bob.client.card().await.expect("card");
    let target = iroh_endpoint(&bob).await;
    let mallory = IrohPeer::bind().await.expect("bind");

    // The card names another node's iroh key: the connection's key is not the sender's.
    let elsewhere = IrohPeer::bind().await.expect("bind");
    let before = counts(&bob.home);
    let envelope = contact_request(&card, &elsewhere.card_endpoint());
    let (status, body) = mallory
        .request(&target, "POST", "/v1/contact-request", Some((envelope.into_bytes(), "application/json")))
        .await
        .expect("answered");
    let body: Value = serde_json::from_str(&body).expect("json error");
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("endpoint_mismatch")), "{body}");
    assert_eq!(counts(&bob.home), before, "nothing stored");

    // The same request from the key its card lists is taken.
    let envelope = contact_request(&card, &mallory.card_endpoint());
    let (status, body) = mallory
        .request(&target, "POST", "/v1/contact-request", Some((envelope.into_bytes(), "application/json")))
        .await
        .expect("answered");
    assert!((200..300).contains(&status), "{status} {body}");
    assert_eq!(incoming_count(&bob).await, 1);
}

async fn incoming_count(node: &LocalNode) -> usize {
    use agentmesh_api::Direction;
    use agentmesh_api::control::RequestsQuery;
    let q = RequestsQuery { direction: Some(Direction::Incoming), ..RequestsQuery::default() };
    node.client.requests(&q).await.expect("requests").requests.len()
}

#[tokio::test]
async fn where_iroh_does_not_reach_http_carries_and_an_http_only_agent_still_reaches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = node_with(dir.path(), "alice", "outbound_timeout_ms = 2000\n[iroh]\n", &[]).await;
    // Bob's card sends dialers to a UDP port where nothing answers.
    let bob = node_with(dir.path(), "bob", "[iroh]\naddrs = [\"127.0.0.1:9\"]\n", &[]).await;
    // Carol has no iroh, whatever carrier the suites run over.
    let carol = node_with(dir.path(), "carol", "", &[("AGENTMESH_IROH_LISTEN", "")]).await;
    assert!(bob.client.card().await.expect("card").endpoints[0].ends_with("addr=127.0.0.1%3A9"));

    trust(&alice, &bob).await;
    let sent = send(&alice, &bob.agent_id, "the long way").await;
    wait_status(&alice, &sent, MessageStatus::Delivered).await;
    let path = alice.client.health(&bob.agent_id).await.expect("health").peer.path.expect("path");
    assert_eq!((path.carrier.as_str(), path.kind.as_str()), ("http", "http"), "{path:?}");

    // Carol has no iroh: she skips Bob's iroh endpoint and goes straight to HTTP.
    trust(&carol, &bob).await;
    let sent = send(&carol, &bob.agent_id, "plain HTTP").await;
    wait_status(&carol, &sent, MessageStatus::Delivered).await;
    let path = carol.client.health(&bob.agent_id).await.expect("health").peer.path.expect("path");
    assert_eq!(path.carrier, "http", "{path:?}");
}
