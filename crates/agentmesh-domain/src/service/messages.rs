//! Messages: sending (through the adapter of the peer's protocol, via the outbox), listing,
//! reading (with a signed read receipt), and retrying or clearing what failed.

use std::sync::Arc;

use agentmesh_api::control::{ClearedReply, MessageList, MessageReply, MessagesQuery, SendArgs, SendReply};
use agentmesh_api::{ErrorCode, MessageStatus, Side, TrustState};
use agentmesh_core::EnvelopeKind;
use agentmesh_core::time::now_ms;
use agentmesh_store::{MessageFilter, Peer, Store};

use crate::Node;
use crate::adapter::{Capability, Outgoing};
use crate::error::Error;
use crate::service::contacts::resolve;

/// Why `peer` cannot be messaged now, and what the owner can do; `None` when it can.
pub fn not_sendable(node: &Node, store: &Store, peer: &Peer) -> Result<Option<Error>, Error> {
    let id = &peer.agent_id;
    let open = |direction| store.open_request(id, direction).map(|r| r.map(|r| r.request_id).unwrap_or_default());
    // One-sided trust (Agent Mesh V1): once we asked, our messages wait at its door until its
    // owner approves.
    let sendable = if node.adapters().get(peer.protocol).can(Capability::MutualTrust) {
        peer.trust == TrustState::Trusted
    } else {
        matches!(peer.trust, TrustState::Trusted | TrustState::RequestedOut)
    };
    if sendable {
        return Ok(None);
    }
    let not_trusted = |message: String| Ok(Some(Error::conflict(ErrorCode::NotTrusted, message)));
    match peer.trust {
        TrustState::Blocked => Ok(Some(Error::conflict(
            ErrorCode::Blocked,
            format!("{id} is blocked; unblock it first (`agentmesh unblock {id}`)"),
        ))),
        TrustState::RequestedOut => {
            let request = open(agentmesh_api::Direction::Outgoing)?;
            not_trusted(format!(
                "{id} has not answered your contact request {request} yet; you can message it once its owner approves"
            ))
        }
        TrustState::RequestedIn => {
            let request = open(agentmesh_api::Direction::Incoming)?;
            not_trusted(format!(
                "{id} asked you for contact: approve it first with `agentmesh approve-request {request}`"
            ))
        }
        TrustState::Rejected => match &peer.trust_reason {
            Some(r) if r.by == Side::Us => not_trusted(format!(
                "you rejected {id}'s contact request; to talk after all, ask it: `agentmesh request-contact {id}`"
            )),
            Some(r) if matches!(r.code.as_str(), "blocked" | "blocked_sender") => not_trusted(format!(
                "{id} blocked you: it accepts nothing from you, not even a contact request, until its owner \
                 unblocks you (you are told when it does)"
            )),
            Some(r) => not_trusted(format!(
                "{id} declined contact ({}); you may ask again: `agentmesh request-contact {id}`",
                r.code
            )),
            None => not_trusted(format!("{id} is not a contact; ask it with `agentmesh request-contact {id}`")),
        },
        _ => not_trusted(format!("{id} is not a contact; ask it with `agentmesh request-contact {id}`")),
    }
}

/// `POST /control/messages`.
pub async fn send(node: &Arc<Node>, args: SendArgs) -> Result<SendReply, Error> {
    if args.text.is_empty() {
        return Err(Error::invalid(ErrorCode::EmptyMessage, "the message text is empty"));
    }
    let limit = node.config().max_text_bytes;
    if args.text.len() > limit {
        return Err(Error::TooLarge { what: "message text", limit });
    }
    // Sealing (HPKE) runs here, on the request's task, not in the database thread that every
    // write of the node waits for. The recipient as last resolved from `to` is sealed to at once;
    // the one transaction that queues the entry resolves `to` again and checks that it is the
    // same peer with the same keys, still sendable. Otherwise (first send, a rotation, an alias
    // moved) the peer is read and the message sealed again.
    let mut cached = node.send_peer(&args.to);
    for _ in 0..3 {
        let peer = match cached.take() {
            Some(peer) => peer,
            None => {
                let (to, n) = (args.to.clone(), Arc::clone(node));
                let peer = node
                    .db(move |s| {
                        let peer = resolve(s, &to)?;
                        match not_sendable(&n, s, &peer)? {
                            Some(error) => Err(error),
                            None => Ok(peer),
                        }
                    })
                    .await?;
                node.remember_send_peer(&args.to, peer.clone());
                peer
            }
        };
        let what =
            Outgoing::Message { text: args.text.clone(), reply_to: args.reply_to.clone(), thread: args.thread.clone() };
        let outbound = node.adapters().get(peer.protocol).prepare(node, &peer, what)?;
        let to = args.to.clone();
        let queued = node
            .transact(move |tx| {
                let current = resolve(tx, &to)?;
                let same = current.agent_id == peer.agent_id
                    && (current.protocol, current.ed25519, current.x25519) == (peer.protocol, peer.ed25519, peer.x25519);
                if !same {
                    return Ok(None);
                }
                if let Some(error) = not_sendable(tx.node(), tx, &current)? {
                    return Err(error);
                }
                tracing::debug!(id = %outbound.id, to = %outbound.peer_id, encrypted = outbound.encrypted, "queueing message");
                tx.enqueue(&outbound)?;
                Ok(Some(SendReply {
                    message_id: outbound.id,
                    to: outbound.peer_id,
                    status: MessageStatus::Queued,
                    encrypted: outbound.encrypted,
                    protocol: outbound.protocol,
                }))
            })
            .await?;
        if let Some(reply) = queued {
            return Ok(reply);
        }
    }
    Err(Error::conflict(
        ErrorCode::KeyMismatch,
        "the peer's key kept changing while the message was sealed; send it again",
    ))
}

/// `GET /control/messages`.
pub async fn list(node: &Arc<Node>, query: MessagesQuery) -> Result<MessageList, Error> {
    node.db(move |s| {
        let peer = match &query.peer {
            Some(text) => Some(resolve(s, text)?.agent_id),
            None => None,
        };
        let filter = MessageFilter {
            direction: query.direction,
            unread: query.unread,
            failed: query.failed,
            peer,
            limit: query.limit,
        };
        Ok(MessageList { messages: s.messages(&filter)? })
    })
    .await
}

/// `POST /control/messages/{id}/read`: marks an incoming message read and, for a contact whose
/// protocol carries them, queues a signed read receipt.
pub async fn read(node: &Arc<Node>, id: String) -> Result<MessageReply, Error> {
    node.transact(move |tx| {
        let message = tx
            .incoming(&id)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found(format!("no incoming message {id}")))?;
        let now = now_ms();
        if tx.mark_incoming_read(&message.peer_id, &message.id, now as i64)?
            && let Some(peer) = tx.peer(&message.peer_id)?
            && peer.trust == TrustState::Trusted
        {
            let adapter = tx.node().adapters().get(peer.protocol);
            if adapter.carries(EnvelopeKind::Receipt) {
                let what = Outgoing::Read { message_id: message.id.clone(), at: now };
                let outbound = adapter.prepare(tx.node(), &peer, what)?;
                tx.enqueue(&outbound)?;
            }
        }
        let message = tx
            .incoming(&message.id)?
            .into_iter()
            .find(|m| m.peer_id == message.peer_id)
            .ok_or_else(|| Error::internal("a message vanished"))?;
        Ok(MessageReply { message })
    })
    .await
}

/// `POST /control/messages/{id}/retry`: a failed outgoing message is due again, with fresh
/// attempts and time to live.
pub async fn retry(node: &Arc<Node>, id: String) -> Result<MessageReply, Error> {
    let ttl_ms = node.config().message_ttl_secs.saturating_mul(1000) as i64;
    let n = Arc::clone(node);
    let message = node
        .db(move |s| {
            let message = s.outgoing(&id)?.ok_or_else(|| Error::not_found(format!("no outgoing message {id}")))?;
            if message.status != MessageStatus::Failed {
                return Err(Error::conflict(ErrorCode::NotFailed, format!("{id} is {}, not failed", message.status)));
            }
            if let Some(peer) = s.peer(&message.peer_id)?
                && let Some(error) = not_sendable(&n, s, &peer)?
            {
                return Err(error);
            }
            s.retry(&id, now_ms() as i64, ttl_ms)?;
            s.outgoing(&id)?.ok_or_else(|| Error::internal("a message vanished"))
        })
        .await?;
    node.wake_outbox();
    Ok(MessageReply { message })
}

/// `POST /control/outbox/clear-failed`: deletes every failed outbox entry.
pub async fn clear_failed(node: &Arc<Node>) -> Result<ClearedReply, Error> {
    let cleared = node.db(|s| Ok(s.clear_failed()?)).await?;
    Ok(ClearedReply { cleared })
}
