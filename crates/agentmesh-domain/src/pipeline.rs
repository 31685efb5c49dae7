//! The inbound pipeline: the one path every received envelope takes, whatever its protocol.
//!
//! A protocol adapter (`agentmesh-node`'s `native` and `compat::agent_mesh_v1`) parses its wire
//! format and checks its shape, then hands an [`Inbound`] to [`process`], which applies, cheapest
//! first:
//!
//! 1. the sender's rate budget, when it already proved itself over it (429, no lookup);
//! 2. one database visit for the senders and any earlier acceptance of each id;
//! 3. admission by where trust with the sender stands ([`crate::trust::admit`]: 403
//!    `unknown_sender`, `untrusted_sender`, `blocked_sender`), and the key it must have signed
//!    with: the pinned key, or for card-carrying kinds the card's key when it is the pinned one,
//!    a rotation from it, or a new sender's (a key that is none of these is 403 `key_mismatch`,
//!    a key it rotated away from 403 `superseded_key`);
//!    an envelope that came over a carrier authenticating nodes by key (iroh) must come from a
//!    key the sender's card lists as its endpoint (403 `endpoint_mismatch`);
//! 4. recipient (400 `wrong_recipient`), freshness of `sent_at` (400 `stale_timestamp`, with our
//!    clock in the answer), expiry (400 `expired`);
//! 5. the signature (401 `bad_signature`), batched;
//! 6. only then replay: an id already accepted from this sender is answered with the original
//!    acknowledgement, byte for byte, and nothing is stored — a forged copy never learns whether
//!    an id was accepted;
//! 7. the sender's rate budget, charged now that the signature proves the sender (429);
//! 8. decryption (400 `undecryptable`) and the body's shape (400 `malformed_body`);
//! 9. one transaction: the acceptance record, its effect (inbox, read receipt, the trust state
//!    machine, a key rotation) and the signed acknowledgement, each envelope in its own
//!    savepoint — and only after the commit, the answer.

use std::collections::HashMap;
use std::sync::Arc;

use agentmesh_api::{ErrorCode, MismatchDirection, TrustState};
use agentmesh_core::call::CallBody;
use agentmesh_core::envelope::{ContactChange, SignatureCheck};
use agentmesh_core::file::FileBody;
use agentmesh_core::task::TaskBody;
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentId, EnvelopeKind, Identity, PeerId, Protocol};
use agentmesh_store::{IncomingMessage, KeyMismatch, Peer};
use ed25519_dalek::VerifyingKey;

use crate::adapter::Capability;
use crate::error::Error;
use crate::service::{calls, contacts, files, tasks};
use crate::trust::{self, Input};
use crate::{Keys, Node, Tx};

/// A received envelope after its protocol's adapter parsed it.
pub struct Inbound {
    /// The protocol it came over.
    pub protocol: Protocol,
    /// Who claims to have sent it.
    pub from: PeerId,
    /// The recipient it names (`None`: the format names none, as V1 contact requests).
    pub to: Option<AgentId>,
    /// Its id, unique per sender: the replay key.
    pub id: String,
    /// What it carries.
    pub kind: EnvelopeKind,
    /// When the sender signed this copy, ms.
    pub sent_at: u64,
    /// After this instant (ms) it must not be accepted; `None` when the format has no expiry
    /// (then a replay is refused as stale after the freshness window).
    pub expires_at: Option<u64>,
    /// The identity document it carries (card, V1 `from`), already verified for itself: the
    /// peer it describes and every key its rotation chain holds.
    pub presented: Option<Presented>,
    /// The bytes the signature covers.
    pub signed: Vec<u8>,
    /// The Ed25519 signature; `None` when it is not 64 bytes of base64.
    pub signature: Option<[u8; 64]>,
    /// The body.
    pub body: Body,
    /// How to acknowledge it.
    pub answer: Answer,
    /// The address it came from: counted against its network's share of pending requests, and
    /// remembered as a contact's when it brings a new message.
    pub remote: Option<crate::remote::Remote>,
}

/// A peer as the identity document of an envelope describes it.
pub struct Presented {
    /// The peer row it would make (trust `discovered`).
    pub peer: Peer,
    /// Every key its verified rotation chain holds (genesis first); just the key without one.
    pub history: Vec<[u8; 32]>,
}

/// An envelope's body: readable already, or sealed to us.
pub enum Body {
    /// Plain (the format does not encrypt).
    Open(Payload),
    /// Sealed to our key: opened after the signature is checked.
    Sealed(Box<dyn Sealed>),
}

/// A body sealed to our keys.
pub trait Sealed: Send {
    /// Opens it with our current keys, or our previous ones during a rotation's grace period;
    /// returns the payload and whether the previous keys opened it.
    fn open(&self, keys: &Keys, now: u64) -> Result<(Payload, bool), Error>;
}

/// What an envelope says, in our own terms.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// A message for our agent.
    Message {
        /// The text (UTF-8).
        text: String,
        /// Its MIME type (`text/plain`, or the JSON of another content type).
        content_type: String,
        /// The id of the message it answers.
        reply_to: Option<String>,
        /// The conversation it belongs to.
        thread: Option<String>,
        /// When the sender wrote it, ms since the epoch.
        created_at: u64,
    },
    /// The peer read our message.
    Read {
        /// Our message's id.
        message_id: String,
        /// When it was read, ms since the epoch.
        at: u64,
    },
    /// The peer asks for contact.
    ContactRequest {
        /// The request's id (`req_` and 32 hex digits).
        request_id: String,
        /// Why it asks, in its words (never shown to a model before its owner trusts it).
        purpose: String,
    },
    /// The peer answers our request.
    ContactResponse {
        /// Our request's id.
        request_id: String,
        /// Whether it approved.
        accepted: bool,
        /// Its reason, when it gave one.
        reason: Option<String>,
    },
    /// The peer changed what we may do.
    ContactUpdate {
        /// What changed.
        change: ContactChange,
        /// The request it concerns, when one.
        request_id: Option<String>,
    },
    /// The peer rotated its keys (its new card is `presented`).
    KeyRotation,
    /// A step of a file transfer.
    File {
        /// The step.
        body: FileBody,
    },
    /// A step of a call.
    Call {
        /// The step.
        body: CallBody,
        /// When the sender sent it, ms since the epoch.
        created_at: u64,
    },
    /// A step of a task.
    Task {
        /// The step.
        body: TaskBody,
        /// When the sender sent it, ms since the epoch.
        created_at: u64,
    },
}

/// What an acknowledgement is built from.
pub struct AnswerContext<'a> {
    /// The key the sender pins for us (our previous one during a rotation's grace period).
    pub signer: &'a Identity,
    /// The envelope's id.
    pub id: &'a str,
    /// Its sender.
    pub from: &'a PeerId,
    /// Now, ms.
    pub now: u64,
}

/// Builds a protocol's acknowledgement (stored, and replayed byte for byte for the same id).
pub type Answer = fn(&AnswerContext<'_>) -> Result<String, Error>;

/// What the checks before the signature found out about a sender.
struct Sender {
    /// The stored peer, when known.
    peer: Option<Peer>,
    /// The key the envelope must be signed with.
    key: VerifyingKey,
    /// The sender's previous key, still accepted during its rotation grace period.
    previous: Option<VerifyingKey>,
    /// The presented card's key history leads from the pinned key to a new one.
    rotates_pin: bool,
    /// Pinned to another key, and the card does not lead there: refused once the signature
    /// shows the sender holds the presented key, and recorded.
    mismatch: Option<KeyMismatch>,
}

/// An envelope that passed every check but storage.
struct Verified {
    index: usize,
    inbound: Inbound,
    sender: Sender,
    payload: Payload,
    answer: String,
}

/// Runs the pipeline on envelopes; one result per envelope, in order: the acknowledgement to
/// answer with, or why it was refused.
pub async fn process(node: &Arc<Node>, envelopes: Vec<Inbound>) -> Vec<Result<String, Error>> {
    let n = envelopes.len();
    let mut results: Vec<Option<Result<String, Error>>> = (0..n).map(|_| None).collect();

    // Senders proven over their budget: refused before any lookup.
    for (i, env) in envelopes.iter().enumerate() {
        if matches!(env.kind, EnvelopeKind::Message | EnvelopeKind::Receipt)
            && let Err(e) = node.limits().throttled(env.from.as_str())
        {
            results[i] = Some(Err(e));
        }
    }

    // One database visit for every sender and replay lookup.
    let keys: Vec<(usize, PeerId, String)> = envelopes
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_none())
        .map(|(i, e)| (i, e.from.clone(), e.id.clone()))
        .collect();
    let lookups = node
        .db(move |s| {
            let mut peers: HashMap<PeerId, Option<Peer>> = HashMap::new();
            let mut out = Vec::with_capacity(keys.len());
            for (i, from, id) in keys {
                if !peers.contains_key(&from) {
                    let peer = s.peer(&from)?;
                    peers.insert(from.clone(), peer);
                }
                out.push((i, s.accepted_receipt(&from, &id)?));
            }
            Ok((peers, out))
        })
        .await;
    let (peers, replays) = match lookups {
        Ok(v) => v,
        Err(e) => return (0..n).map(|_| Err(e.clone())).collect(),
    };

    let now = now_ms();
    let window = node.config().freshness_window_secs.saturating_mul(1000);
    let me = node.id();
    let mut key_cache: HashMap<[u8; 32], VerifyingKey> = HashMap::new();
    let mut slots: Vec<Option<Inbound>> = envelopes.into_iter().map(Some).collect();
    let mut to_verify: Vec<(usize, Inbound, Sender, Option<String>)> = Vec::new();
    let mut told_blocks: Vec<PeerId> = Vec::new();
    for (i, replay) in replays {
        let Some(env) = slots[i].take() else { continue };
        let peer = peers.get(&env.from).cloned().flatten();
        // A peer blocked without being told learns of it from our refusal: noted once, so that
        // an unblock is told to it too. Only for an envelope its pinned key signed: a forgery in
        // its name changes nothing.
        if peer.as_ref().is_some_and(|p| {
            p.trust == TrustState::Blocked
                && p.trust_reason.as_ref().is_some_and(|r| r.code == trust::BLOCKED_SILENTLY)
                && signed_by(&env, &p.ed25519)
        }) && !told_blocks.contains(&env.from)
        {
            told_blocks.push(env.from.clone());
        }
        let rotations = node.adapters().get(env.protocol).can(Capability::KeyRotation);
        let checked = sender(&env, peer, rotations, &mut key_cache, now as i64).and_then(|sender| {
            if let Some(crate::remote::Remote::Key(key)) = env.remote
                && !endpoint_bound(&env, &sender, key)
            {
                return Err(Error::Refused {
                    code: ErrorCode::EndpointMismatch,
                    message: format!(
                        "this connection's key {} is not an endpoint of {}'s card",
                        hex::encode(key),
                        env.from
                    ),
                });
            }
            if let Some(to) = env.to
                && to != me
            {
                return Err(Error::WrongRecipient { me: me.to_string(), to: to.to_string() });
            }
            if env.sent_at.abs_diff(now) > window {
                return Err(Error::StaleTimestamp {
                    skew_ms: now as i64 - env.sent_at as i64,
                    window_secs: window / 1000,
                    now,
                });
            }
            if env.expires_at.is_some_and(|t| t <= now) {
                return Err(Error::Expired);
            }
            Ok(sender)
        });
        match checked {
            Err(e) => results[i] = Some(Err(e)),
            Ok(sender) => to_verify.push((i, env, sender, replay)),
        }
    }

    for peer_id in told_blocks {
        contacts::note_block_refused(node, peer_id).await;
    }

    // Signatures (batched), then replays, budgets, decryption and acknowledgements: CPU work,
    // off the async threads for more than a few.
    let keys = node.keys();
    let node2 = Arc::clone(node);
    let count = to_verify.len();
    let checked = node
        .crypto(count, move || {
            let entries: Vec<SignatureCheck<'_>> =
                to_verify.iter().map(|(_, env, s, _)| (env.signed.as_slice(), env.signature.as_ref(), s.key)).collect();
            let verdicts: Vec<bool> =
                agentmesh_core::envelope::verify_signatures(&entries).into_iter().map(|v| v.is_ok()).collect();
            to_verify
                .into_iter()
                .zip(verdicts)
                .map(|((i, env, sender, replay), verdict)| {
                    // In flight from before the sender's rotation: signed with its previous key.
                    let verified = verdict
                        || sender.previous.is_some_and(|old| {
                            env.signature.is_some_and(|sig| {
                                old.verify_strict(&env.signed, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
                            })
                        });
                    if let Some(mismatch) = sender.mismatch {
                        // Refused either way; recorded for the owner only when the signature
                        // proves the sender holds the presented key.
                        let error =
                            Error::KeyMismatch { peer: env.from.clone(), direction: MismatchDirection::Inbound };
                        return (i, Err(error), verified.then_some(mismatch));
                    }
                    if !verified {
                        return (i, Err(Error::BadSignature("the signature does not verify".into())), None);
                    }
                    if let Some(answer) = replay {
                        return (i, Ok(Checked::Replay(answer)), None);
                    }
                    // Charged only for envelopes that prove their sender: forgeries cannot drain
                    // a real peer's budget.
                    let budget = match env.kind {
                        EnvelopeKind::Message | EnvelopeKind::Receipt => node2.limits().message_from(env.from.as_str()),
                        EnvelopeKind::ContactRequest => node2.limits().contact_from_agent(env.from.as_str()),
                        _ => Ok(()),
                    };
                    if let Err(e) = budget {
                        return (i, Err(e), None);
                    }
                    (i, open(&keys, env, sender, now).map(|v| Checked::New(Box::new(Verified { index: i, ..v }))), None)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();

    let mut accepted = Vec::new();
    for (i, outcome, mismatch) in checked {
        match outcome {
            Ok(Checked::Replay(answer)) => results[i] = Some(Ok(answer)),
            Ok(Checked::New(v)) => accepted.push(*v),
            Err(e) => results[i] = Some(Err(e)),
        }
        if let Some(mismatch) = mismatch {
            contacts::record_key_mismatch(node, mismatch).await;
        }
    }

    if !accepted.is_empty() {
        let config = node.config();
        let settings = Settings {
            now: now as i64,
            max_pending: config.max_pending_requests,
            reserved_pending: config.reserved_pending_requests.min(config.max_pending_requests / 2),
            max_pending_per_network: config.max_pending_per_network,
            keep_for: window as i64,
            grace_ms: node.config().rotation_grace_secs.saturating_mul(1000) as i64,
        };
        match node.transact(move |tx| Ok(store(tx, accepted, &settings))).await {
            Ok(outcomes) => {
                for (i, outcome) in outcomes {
                    results[i] = Some(outcome);
                }
            }
            Err(e) => {
                for slot in results.iter_mut().filter(|r| r.is_none()) {
                    *slot = Some(Err(e.clone()));
                }
            }
        }
    }
    let results: Vec<Result<String, Error>> =
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::internal("envelope left unprocessed")))).collect();
    tracing::debug!(received = n, refused = results.iter().filter(|r| r.is_err()).count(), "processed envelopes");
    results
}

/// Whether the transport key `key` (32 bytes) a carrier authenticated the sender of `env` by is
/// one of the sender's endpoints: listed by the card it presents, or by the one we pinned. A
/// card is signed by the agent's key (checked later, with the envelope's signature), so a node
/// cannot speak over another agent's endpoint.
fn endpoint_bound(env: &Inbound, sender: &Sender, key: [u8; 32]) -> bool {
    let presented = env.presented.as_ref().map(|p| &p.peer);
    presented.into_iter().chain(sender.peer.as_ref()).any(|peer| {
        std::iter::once(&peer.endpoint)
            .chain(&peer.endpoints)
            .filter_map(|e| e.parse::<agentmesh_core::endpoint::Endpoint>().ok())
            .any(|e| e.transport_key() == Some(key))
    })
}

/// Whether `env`'s signature verifies under the key `key` (32 bytes).
fn signed_by(env: &Inbound, key: &[u8; 32]) -> bool {
    let (Ok(key), Some(sig)) = (VerifyingKey::from_bytes(key), env.signature) else { return false };
    key.verify_strict(&env.signed, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
}

/// [`trust::admit`] as the refusal the sender is answered with.
fn admit(state: Option<TrustState>, kind: EnvelopeKind, from: &PeerId) -> Result<(), Error> {
    trust::admit(state, kind).map_err(|code| {
        let message = match code {
            ErrorCode::BlockedSender => format!("{from} is blocked"),
            ErrorCode::UnknownSender => format!("{from} is not a contact of this agent; send a contact request first"),
            _ => format!("{from} has not been approved as a contact"),
        };
        Error::refused(code, message)
    })
}

enum Checked {
    Replay(String),
    New(Box<Verified>),
}

/// Admission and the key the envelope must be signed with.
/// `rotations`: whether the envelope's protocol lets a pin follow a verified rotation chain.
fn sender(
    env: &Inbound,
    peer: Option<Peer>,
    rotations: bool,
    cache: &mut HashMap<[u8; 32], VerifyingKey>,
    now: i64,
) -> Result<Sender, Error> {
    let mut decompress = |bytes: &[u8; 32]| -> Result<VerifyingKey, Error> {
        if let Some(key) = cache.get(bytes) {
            return Ok(*key);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| Error::internal("a stored peer key is invalid"))?;
        cache.insert(*bytes, key);
        Ok(key)
    };
    admit(peer.as_ref().map(|p| p.trust), env.kind, &env.from)?;
    // A removed peer's pin was dropped: it is a stranger again.
    let pinned = peer.as_ref().filter(|p| p.trust != TrustState::Removed);
    if let Some(p) = pinned
        && p.protocol != env.protocol
        && matches!(env.kind, EnvelopeKind::Message | EnvelopeKind::Receipt)
    {
        return Err(Error::refused(
            ErrorCode::UntrustedSender,
            format!("{} is a contact over {}, not {}", env.from, p.protocol, env.protocol),
        ));
    }
    let Some(presented) = &env.presented else {
        // No identity document: the pinned key it is (admission saw to a known sender).
        let p =
            pinned.ok_or_else(|| Error::refused(ErrorCode::UnknownSender, "this agent does not know the sender"))?;
        return Ok(Sender {
            key: decompress(&p.ed25519)?,
            previous: p.previous_key(now).map(|k| decompress(&k)).transpose()?,
            rotates_pin: false,
            mismatch: None,
            peer,
        });
    };
    let shown = presented.peer.ed25519;
    let key = VerifyingKey::from_bytes(&shown).map_err(|_| Error::invalid(ErrorCode::InvalidCard, "invalid key"))?;
    let mut sender = Sender { key, previous: None, rotates_pin: false, mismatch: None, peer: None };
    if let Some(p) = pinned
        && p.ed25519 != shown
    {
        if p.prev_ed25519 == Some(shown) {
            return Err(Error::SupersededKey { peer: env.from.clone(), direction: MismatchDirection::Inbound });
        }
        if rotations && presented.history.contains(&p.ed25519) {
            sender.rotates_pin = true;
        } else {
            sender.mismatch = Some(KeyMismatch {
                peer_id: p.agent_id.clone(),
                pinned_fingerprint: p.fingerprint.clone(),
                presented_fingerprint: presented.peer.fingerprint.clone(),
                presented_ed25519: shown,
                presented_x25519: presented.peer.x25519,
                presented_card: presented.peer.card.clone(),
                direction: MismatchDirection::Inbound,
                count: 1,
                first_at: now,
                last_at: now,
                resolved_at: None,
            });
        }
    }
    sender.peer = peer;
    Ok(sender)
}

/// Opens the body and signs the acknowledgement.
fn open(keys: &Keys, env: Inbound, sender: Sender, now: u64) -> Result<Verified, Error> {
    let (payload, previous) = match &env.body {
        Body::Open(p) => (p.clone(), false),
        Body::Sealed(sealed) => sealed.open(keys, now)?,
    };
    // Bodies sealed to our previous key (sent before the peer learnt of our rotation) get an
    // acknowledgement signed with the key the peer still pins.
    let signer = if previous { keys.previous(now).unwrap_or(&keys.identity) } else { &keys.identity };
    let answer = (env.answer)(&AnswerContext { signer, id: &env.id, from: &env.from, now })?;
    Ok(Verified { index: 0, inbound: env, sender, payload, answer })
}

struct Settings {
    now: i64,
    max_pending: u32,
    /// Of `max_pending`, the share kept for senders we knew before they asked.
    reserved_pending: u32,
    /// Most pending requests from one network (/24, /48) of senders we did not know.
    max_pending_per_network: u32,
    /// Replay records are kept this long (ms) past an envelope's expiry.
    keep_for: i64,
    /// A rotated peer's previous key is honoured this long (ms).
    grace_ms: i64,
}

/// Stores accepted envelopes and their effects, each in its own savepoint.
fn store(tx: &Tx<'_>, accepted: Vec<Verified>, settings: &Settings) -> Vec<(usize, Result<String, Error>)> {
    let mut outcomes = Vec::with_capacity(accepted.len());
    let mut touched: Vec<PeerId> = Vec::new();
    for v in accepted {
        let index = v.index;
        let from = v.inbound.from.clone();
        let outcome = tx.atomic(|tx| store_one(tx, v, settings));
        if outcome.is_ok() && !touched.contains(&from) {
            touched.push(from);
        }
        outcomes.push((index, outcome));
    }
    for peer in touched {
        if let Err(e) = tx.touch_peer(&peer, settings.now) {
            tracing::warn!(error = %e, "could not record when a peer was last seen");
        }
    }
    outcomes
}

fn store_one(tx: &Tx<'_>, v: Verified, settings: &Settings) -> Result<String, Error> {
    let Verified { inbound, mut sender, payload, answer, .. } = v;
    let from = &inbound.from;
    // Trust may have moved since the checks ran (our owner blocked or removed the sender in
    // between, or an earlier envelope of this batch changed it): the stored row is read again in
    // the transaction that stores, and admitted again.
    sender.peer = tx.peer(from)?;
    admit(sender.peer.as_ref().map(|p| p.trust), inbound.kind, from)?;
    // Known before it wrote: found by our owner's discovery (a scan, the LAN) and not refused
    // since; never a row the peer's own requests made (whatever state it moves that row back to)
    // nor a gossip record, which anyone can mint. Such senders may use the share of pending
    // requests strangers cannot fill, and are not held to their network's share.
    let known_before = inbound.kind == EnvelopeKind::ContactRequest
        && sender.peer.as_ref().is_some_and(|p| p.trust == TrustState::Discovered)
        && tx.found_by_owner(from)?;
    let keep_until =
        inbound.expires_at.map_or(settings.now, |t| t as i64).max(settings.now).saturating_add(settings.keep_for);
    // The sender as its envelope presents it, pinned (a rotation along its verified chain moves
    // the pin first); the stored row when it presents nothing.
    let mut peer = match (&inbound.presented, sender.peer) {
        (Some(presented), known) => {
            let mut fresh = presented.peer.clone();
            if sender.rotates_pin {
                contacts::rotate_pin(tx, &fresh, settings.now.saturating_add(settings.grace_ms))?;
            }
            if let Some(known) = &known {
                fresh.trust = known.trust;
            }
            if !tx.upsert_peer(&fresh)? {
                return Err(Error::KeyMismatch { peer: from.clone(), direction: MismatchDirection::Inbound });
            }
            tx.peer(from)?.ok_or_else(|| Error::internal("a peer just stored is missing"))?
        }
        (None, Some(known)) => known,
        (None, None) => return Err(Error::refused(ErrorCode::UnknownSender, "this agent does not know the sender")),
    };
    if let Some(earlier) = tx.record_accepted(from, &inbound.id, inbound.kind, &answer, settings.now, keep_until)? {
        return Ok(earlier);
    }
    match payload {
        Payload::Message { text, content_type, reply_to, thread, created_at } => {
            let message = IncomingMessage {
                peer_id: from.clone(),
                id: inbound.id.clone(),
                protocol: inbound.protocol,
                encrypted: tx.node().adapters().get(inbound.protocol).can(Capability::Encrypted),
                content_type,
                text,
                reply_to,
                thread,
                created_at: created_at as i64,
                received_at: settings.now,
            };
            tx.insert_incoming(&message)?;
            tx.emit(agentmesh_api::Event::Message { message: message.view() });
            // A new message from a contact (never a replay, which returned above): the remote
            // it came from may use the share of connections kept for contacts.
            if let Some(remote) = inbound.remote {
                tx.node().admission().note_contact(remote);
            }
        }
        Payload::Read { message_id, at } => {
            if tx.mark_outgoing_read(from, &message_id, at as i64)? {
                tx.emit(agentmesh_api::Event::Status {
                    id: message_id,
                    peer_id: from.clone(),
                    kind: EnvelopeKind::Message,
                    status: agentmesh_api::MessageStatus::Read,
                    error: None,
                    code: None,
                });
            }
        }
        Payload::ContactRequest { request_id, purpose } => {
            if tx.request(&request_id)?.is_some() {
                return Err(Error::DuplicateRequest);
            }
            let opens = !matches!(peer.trust, TrustState::Trusted | TrustState::RequestedOut);
            if opens {
                let pending = tx.pending_incoming()?;
                let room =
                    if known_before { settings.max_pending } else { settings.max_pending - settings.reserved_pending };
                if pending >= i64::from(room) {
                    return Err(Error::TooManyPending { limit: room, scope: "" });
                }
                if let Some(remote) = inbound.remote
                    && !known_before
                    && tx.pending_from_net(&remote.network())? >= i64::from(settings.max_pending_per_network)
                {
                    return Err(Error::TooManyPending {
                        limit: settings.max_pending_per_network,
                        scope: " from your network",
                    });
                }
            }
            let context = contacts::Context { purpose: &purpose, reason: None, source: inbound.remote };
            peer = contacts::apply(tx, &peer, Input::PeerAsked { request: &request_id }, &context)?;
        }
        Payload::ContactResponse { request_id, accepted, reason } => {
            let known = tx.request(&request_id)?.filter(|r| {
                r.direction == agentmesh_api::Direction::Outgoing
                    && r.peer_id.as_str().eq_ignore_ascii_case(from.as_str())
            });
            let Some(request) = known else {
                return Err(Error::UnknownRequest { request_id });
            };
            if request.status.is_open() {
                let context = contacts::Context { reason: reason.as_deref(), ..contacts::Context::default() };
                peer = contacts::apply(tx, &peer, Input::PeerAnswered { request: &request_id, accepted }, &context)?;
            }
            tx.emit(agentmesh_api::Event::ContactResponse { request_id, peer_id: from.clone(), accepted });
        }
        Payload::ContactUpdate { change, request_id } => {
            let input = Input::PeerChanged { change, request: request_id.as_deref() };
            peer = contacts::apply(tx, &peer, input, &contacts::Context::default())?;
        }
        Payload::KeyRotation => {}
        Payload::Call { body, created_at } => {
            let line = calls::Received { line_id: &inbound.id, at: created_at as i64, now: settings.now };
            calls::receive(tx, &peer, body, &line)?;
        }
        Payload::Task { body, created_at } => {
            let step = calls::Received { line_id: &inbound.id, at: created_at as i64, now: settings.now };
            tasks::receive(tx, &peer, body, &step)?;
        }
        Payload::File { body } => files::receive(tx, &peer, body, settings.now)?,
    }
    tracing::debug!(peer = %peer.agent_id, kind = %inbound.kind, "accepted");
    Ok(answer)
}
