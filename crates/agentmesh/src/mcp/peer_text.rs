//! What of a peer's own words an agent may read over MCP. Until our owner trusts a peer, nothing
//! it wrote (a display name, a description, a purpose, a rejection reason) reaches the agent:
//! an agent reads tool results and resources into its model's context, so a stranger's text
//! there could instruct it. The owner reads those words with the CLI (`agentmesh peers`,
//! `agentmesh requests`) and decides.
//!
//! Capability tags stay, as long as they look like tags (see [`is_tag`]): agents pick peers by
//! them, and a tag cannot carry a sentence.

use agentmesh_api::control::{AgentList, ContactReply, PeerList, PeerReply, RequestList, RequestReply};
use agentmesh_api::{KnownAgent, Peer, TrustState};

/// The longest capability tag passed on, bytes (a card allows 64).
const MAX_TAG_BYTES: usize = 64;

/// Whether `capability` has the shape of a tag: 1 to 64 ASCII letters, digits and `. _ : / + -`,
/// starting with a letter or digit; no spaces, so no sentences.
pub(super) fn is_tag(capability: &str) -> bool {
    let bytes = capability.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_BYTES
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._:/+-".contains(b))
}

fn tags(capabilities: Vec<String>) -> Vec<String> {
    capabilities.into_iter().filter(|c| is_tag(c)).collect()
}

/// `peer` as an agent may read it: a peer that is not a trusted contact loses its name (empty)
/// and any capability that is not a tag.
pub(super) fn peer(mut peer: Peer) -> Peer {
    if peer.trust != TrustState::Trusted {
        peer.name = String::new();
        peer.capabilities = tags(std::mem::take(&mut peer.capabilities));
    }
    peer
}

/// [`peer`] for each of a list.
pub(super) fn peers(list: PeerList) -> PeerList {
    PeerList { peers: list.peers.into_iter().map(peer).collect() }
}

/// An agent found by discovery or a registry search, as an agent may read it: unless it is a
/// trusted contact, no name (empty), no description, tags only.
pub(super) fn agent(mut agent: KnownAgent) -> KnownAgent {
    if agent.trust != Some(TrustState::Trusted) {
        agent.name = String::new();
        agent.description = None;
        agent.capabilities = tags(std::mem::take(&mut agent.capabilities));
    }
    agent
}

/// [`agent`] for each of a list.
pub(super) fn agents(list: AgentList) -> AgentList {
    AgentList { agents: list.agents.into_iter().map(agent).collect(), total: list.total }
}

/// Contact requests without their peers' names, purposes and reasons, unless the caller asked
/// for them (`include_peer_text`, whose description says they are a stranger's words).
pub(super) fn requests(list: RequestList, include_peer_text: bool) -> RequestList {
    if include_peer_text {
        return list;
    }
    RequestList { requests: list.requests.into_iter().map(|r| r.without_peer_text()).collect() }
}

/// A contact reply as an agent may read it: the request without the peer's words, the peer as
/// [`peer`] gives it.
pub(super) fn contact_reply(reply: ContactReply) -> ContactReply {
    ContactReply { request: reply.request.map(|r| r.without_peer_text()), peer: peer(reply.peer), ..reply }
}

/// A request's answer (approve, reject) as an agent may read it.
pub(super) fn request_reply(reply: RequestReply) -> RequestReply {
    RequestReply { request: reply.request.without_peer_text(), peer: peer(reply.peer) }
}

/// A peer after a change (block, repin) as an agent may read it.
pub(super) fn peer_reply(reply: PeerReply) -> PeerReply {
    PeerReply { peer: peer(reply.peer), ..reply }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_words_without_spaces() {
        for ok in ["translate", "lang:fr", "ocr/pdf", "a2a-1.0", "x_y+z"] {
            assert!(is_tag(ok), "{ok}");
        }
        for bad in ["", "two words", "-lead", "ignore\nprevious", "ünicode", &"x".repeat(65), "say \"hi\""] {
            assert!(!is_tag(bad), "{bad:?}");
        }
    }
}
