//! A peer driven from the bench process itself: an identity of our own that a receiver node
//! trusts like any contact, sealing and signing envelopes for it and posting them to its peer
//! API over real HTTP on 127.0.0.1. The flood and event-latency benches use it where a node
//! would hide the timing they measure.

use agentmesh_core::envelope::{APPLICATION_JSON, ContactRequestBody, Draft, TEXT_PLAIN};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, AgentId, Envelope, EnvelopeKind, Identity, PROTOCOL_NATIVE};
use agentmesh_testkit::local::LocalNode;
use anyhow::{Result, anyhow, bail};

/// An in-process identity the receiver trusts.
pub(super) struct DrivenPeer {
    identity: Identity,
    card: AgentCard,
    receiver: AgentId,
    receiver_x25519: [u8; 32],
    /// The receiver's peer API base URL.
    pub(super) url: String,
    /// The HTTP client it posts with (connections kept alive).
    pub(super) http: reqwest::Client,
}

impl DrivenPeer {
    /// A new identity named `name` that asks `receiver` for contact, approved by its owner.
    pub(super) async fn trusted_by(receiver: &LocalNode, name: &str) -> Result<Self> {
        let http = agentmesh_node::net::client(&agentmesh_node::net::ClientOptions {
            pool_max_idle_per_host: 256,
            ..Default::default()
        })?;
        let theirs: AgentCard = http.get(format!("{}/v1/card", receiver.peer_url)).send().await?.json().await?;
        let keys = theirs.verify().map_err(|e| anyhow!("receiver card: {e}"))?;
        let identity = Identity::generate();
        // An endpoint nothing listens on: the receiver's answers to it are not part of a bench.
        let card = AgentCard::new(
            &identity,
            name,
            vec!["http://127.0.0.1:9".into()],
            vec![],
            vec![PROTOCOL_NATIVE.into()],
            now_ms(),
        );
        let peer = DrivenPeer {
            identity,
            card,
            receiver: theirs.agent_id,
            receiver_x25519: keys.x25519,
            url: receiver.peer_url.clone(),
            http,
        };
        let ask = ContactRequestBody { request_id: format!("req_{}", hex_id()), purpose: "bench".into() };
        let request = peer.seal(EnvelopeKind::ContactRequest, serde_json::to_vec(&ask)?, APPLICATION_JSON, true)?;
        let r = peer.http.post(format!("{}/v1/contact-request", peer.url)).json(&request).send().await?;
        if !r.status().is_success() {
            bail!("{name}'s contact request was refused: {}", r.text().await?);
        }
        receiver.client.approve(&ask.request_id).await?;
        Ok(peer)
    }

    /// A sealed, signed envelope to the receiver (with our card when `with_card`).
    pub(super) fn seal(
        &self,
        kind: EnvelopeKind,
        body: Vec<u8>,
        content_type: &str,
        with_card: bool,
    ) -> Result<Envelope> {
        let mut draft =
            Draft::new(kind, self.identity.agent_id(), self.receiver, now_ms(), 3_600_000, content_type, body);
        if with_card {
            draft.card = Some(self.card.clone());
        }
        Ok(draft.seal(&self.receiver_x25519)?.sign(&self.identity, now_ms()))
    }

    /// A text message, as the JSON body of `POST /v1/message`.
    pub(super) fn message(&self, text: &str) -> Result<(String, Vec<u8>)> {
        let envelope = self.seal(EnvelopeKind::Message, text.as_bytes().to_vec(), TEXT_PLAIN, false)?;
        Ok((envelope.id.clone(), serde_json::to_vec(&envelope)?))
    }
}

/// 32 random hex digits.
fn hex_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
