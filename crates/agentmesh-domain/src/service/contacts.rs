//! Contacts: asking, answering, withdrawing, blocking, unblocking, removing and repinning —
//! every change of trust goes through [`apply`], which runs the state machine of
//! [`crate::trust`] against the store and queues what it says to tell the peer.

use std::sync::Arc;

use agentmesh_api::control::{
    ContactArgs, ContactOutcome, ContactReply, PeerReply, Refusal, RejectManyArgs, RejectedReply, RequestReply,
};
use agentmesh_api::{
    ContactRequest, Direction, ErrorCode, Event, MessageStatus, MismatchDirection, RequestStatus, TrustState,
};
use agentmesh_core::endpoint::Endpoint;
use agentmesh_core::envelope::{ContactUpdateBody, new_request_id};
use agentmesh_core::time::now_ms;
use agentmesh_core::{EnvelopeKind, PeerId};
use agentmesh_store::{Closing, KeyMismatch, NewRequest, Peer, Store};

use crate::adapter::{Capability, FetchError, Outgoing};
use crate::carrier::ProbeError;
use crate::error::Error;
use crate::trust::{self, Input, Relation, Tell};
use crate::{FirstOutcome, Node, Tx};

/// Longest purpose or rejection reason, in characters.
const MAX_TEXT_CHARS: usize = 1000;
/// Longest alias, in characters.
const MAX_ALIAS_CHARS: usize = 64;
/// Longest wait for a contact request's first delivery attempt, ms.
const MAX_WAIT_MS: u64 = 60_000;
/// Default wait for it, ms.
const DEFAULT_WAIT_MS: u64 = 15_000;

/// Texts that go with an input: the purpose of a request it makes, the reason of an answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The purpose of a request the input makes.
    pub purpose: &'a str,
    /// The reason of an answer, when given.
    pub reason: Option<&'a str>,
    /// The address a peer's request came from.
    pub source: Option<crate::remote::Remote>,
}

impl<'a> Context<'a> {
    /// Just a request's purpose.
    pub fn purpose(purpose: &'a str) -> Self {
        Context { purpose, reason: None, source: None }
    }
}

/// Where contact with `peer` stands, with its open requests.
fn relation_of(store: &Store, peer: &Peer) -> Result<Relation, Error> {
    Ok(Relation {
        state: peer.trust,
        reason: peer.trust_reason.clone(),
        open_in: store.open_request(&peer.agent_id, Direction::Incoming)?.map(|r| r.request_id),
        open_out: store.open_request(&peer.agent_id, Direction::Outgoing)?.map(|r| r.request_id),
        approved_in: peer.trust_via.clone(),
        mutual_out: peer.trust_mutual.clone(),
    })
}

fn refusal_error(refusal: trust::Refusal, peer: &Peer) -> Error {
    let who = &peer.agent_id;
    match refusal {
        trust::Refusal::Blocked => Error::conflict(
            ErrorCode::Blocked,
            format!("{who} is blocked; unblock it first (`agentmesh unblock {who}`)"),
        ),
        trust::Refusal::NotBlocked => Error::conflict(ErrorCode::NotBlocked, format!("{who} is not blocked")),
        trust::Refusal::NoOpenRequest => Error::conflict(
            ErrorCode::AlreadyDecided,
            format!("there is no open contact request with {who} (trust: {})", peer.trust),
        ),
        trust::Refusal::UnknownRequest => Error::UnknownRequest { request_id: "(none open)".into() },
    }
}

/// Applies `input` to the relation with `peer`: runs the state machine, records the requests it
/// opens and closes, stores the new state, queues what to tell the peer (when its protocol can
/// carry it) and emits the events. Returns the peer as stored now.
pub fn apply(tx: &Tx<'_>, peer: &Peer, input: Input<'_>, context: &Context<'_>) -> Result<Peer, Error> {
    let relation = relation_of(tx, peer)?;
    let fresh = new_request_id();
    let step = trust::step(&relation, input, &fresh).map_err(|r| refusal_error(r, peer))?;
    let now = now_ms() as i64;
    // A request made again (after its first approval was voided) keeps its purpose.
    let carried = match (context.purpose, &relation.mutual_out) {
        ("", Some(o)) => tx.request(o)?.map(|r| r.purpose).unwrap_or_default(),
        _ => context.purpose.to_owned(),
    };
    for change in &step.requests {
        if change.new {
            let request = NewRequest {
                request_id: change.request_id.clone(),
                direction: change.direction,
                peer_id: peer.agent_id.clone(),
                purpose: carried.clone(),
                protocol: peer.protocol,
                created_at: now,
                source_ip: context.source.filter(|_| change.direction == Direction::Incoming).and_then(|r| r.ip()),
                source_net: context.source.filter(|_| change.direction == Direction::Incoming).map(|r| r.network()),
            };
            if !tx.insert_request(&request)? {
                return Err(Error::DuplicateRequest);
            }
        }
        if change.status != RequestStatus::Pending {
            // The owner's words go with their own answer; a peer's with its answer to ours.
            let reason = match (change.status, &input) {
                (RequestStatus::Rejected, Input::Reject | Input::PeerAnswered { .. })
                | (RequestStatus::Expired, Input::Expire) => context.reason,
                _ => None,
            };
            let closing = Closing { status: change.status, reason, code: change.code.as_deref(), at: now };
            tx.close_request(&change.request_id, &closing)?;
        }
        if let Some(request) = tx.request(&change.request_id)? {
            tx.emit(Event::ContactRequest { request: request.without_peer_text() });
        }
    }
    let next = &step.next;
    tx.set_relation(
        &peer.agent_id,
        next.state,
        next.reason.as_ref(),
        next.approved_in.as_deref(),
        next.mutual_out.as_deref(),
    )?;
    if next.state != relation.state || next.reason != relation.reason {
        tracing::info!(peer = %peer.agent_id, from = %relation.state, to = %next.state, reason = ?next.reason.as_ref().map(|r| r.to_string()), "trust changed");
        tx.emit(Event::Trust { peer_id: peer.agent_id.clone(), trust: next.state, reason: next.reason.clone() });
    }
    if let Some(tell) = step.tell {
        let what = match tell {
            Tell::Request(request_id) => Outgoing::ContactRequest { request_id, purpose: carried.clone() },
            Tell::Answer { request, accepted } => Outgoing::ContactResponse {
                request_id: request,
                accepted,
                reason: if accepted { None } else { context.reason.map(str::to_owned) },
            },
            Tell::Update { change, request } => {
                Outgoing::ContactUpdate(ContactUpdateBody { change, request_id: request })
            }
        };
        let adapter = tx.node().adapters().get(peer.protocol);
        if adapter.carries(what.kind()) {
            let outbound = adapter.prepare(tx.node(), peer, what)?;
            tx.enqueue(&outbound)?;
        }
    }
    tx.peer(&peer.agent_id)?.ok_or_else(|| Error::internal("a peer vanished mid-transaction"))
}

/// Moves a peer's pin along its verified rotation chain (the old key honoured until
/// `prev_until`, ms) and tells watchers.
pub fn rotate_pin(tx: &Tx<'_>, rotated: &Peer, prev_until: i64) -> Result<(), Error> {
    if tx.rotate_peer_key(rotated, prev_until)? {
        tracing::info!(peer = %rotated.agent_id, fingerprint = %rotated.fingerprint, "contact rotated its keys; pin updated");
        tx.emit(Event::KeyRotated { peer_id: rotated.agent_id.clone(), fingerprint: rotated.fingerprint.clone() });
    }
    Ok(())
}

/// Records that our node refused an envelope of `peer_id`, blocked without being told, with
/// `blocked_sender`: the refusal told it, so unblocking it later tells it too
/// ([`Input::BlockRefused`]).
pub async fn note_block_refused(node: &Arc<Node>, peer_id: PeerId) {
    let noted = node
        .transact(move |tx| {
            if let Some(peer) = tx.peer(&peer_id)? {
                apply(tx, &peer, Input::BlockRefused, &Context::default())?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = noted {
        tracing::warn!(error = %e, "could not record that a blocked peer was refused");
    }
}

/// Stores a key mismatch and tells watchers; the caller refuses the peer.
pub async fn record_key_mismatch(node: &Arc<Node>, mismatch: KeyMismatch) {
    tracing::warn!(
        peer = %mismatch.peer_id,
        pinned = %mismatch.pinned_fingerprint,
        presented = %mismatch.presented_fingerprint,
        direction = %mismatch.direction,
        "pinned agent presented another key; refused until `agentmesh repin`"
    );
    let stored = node
        .transact(move |tx| {
            // Told once; a repeat only counts (status shows it).
            if tx.record_key_mismatch(&mismatch)? {
                tx.emit(Event::KeyMismatch { mismatch: mismatch.view() });
            }
            Ok(())
        })
        .await;
    if let Err(e) = stored {
        tracing::warn!(error = %e, "could not record a key mismatch");
    }
}

/// The one peer `text` names: an agent id, alias or display name, or a prefix of one of these
/// that fits one peer only (removed peers only when nothing else fits).
pub fn resolve(store: &Store, text: &str) -> Result<Peer, Error> {
    let text = text.trim();
    let mut found = store.find_peers(text)?;
    if found.iter().any(|p| p.trust != TrustState::Removed) {
        found.retain(|p| p.trust != TrustState::Removed);
    }
    match found.len() {
        0 => Err(Error::not_found(format!(
            "no peer {text:?}; `agentmesh peers` lists them, `agentmesh request-contact <URL>` adds one"
        ))),
        1 => Ok(found.remove(0)),
        _ => {
            if let Some(i) = found.iter().position(|p| p.agent_id.as_str().eq_ignore_ascii_case(text)) {
                return Ok(found.remove(i));
            }
            Err(Error::AmbiguousPeer {
                query: text.to_owned(),
                candidates: found.iter().map(|p| format!("{} ({})", p.name, p.agent_id)).collect(),
            })
        }
    }
}

fn check_text(text: &str, code: ErrorCode, what: &str) -> Result<(), Error> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::invalid(code, format!("{what} is limited to {MAX_TEXT_CHARS} characters")));
    }
    Ok(())
}

/// Checks that an alias is 1 to [`MAX_ALIAS_CHARS`] characters, all of them visible: no control,
/// bidirectional or zero-width one that would make it show as another name (`invalid_alias`).
fn check_alias_shape(alias: &str) -> Result<(), Error> {
    if alias.is_empty()
        || alias.chars().count() > MAX_ALIAS_CHARS
        || alias.chars().any(agentmesh_core::text::is_invisible)
    {
        return Err(Error::invalid(
            ErrorCode::InvalidAlias,
            format!(
                "an alias is 1 to {MAX_ALIAS_CHARS} visible characters (no control, bidirectional or zero-width ones)"
            ),
        ));
    }
    Ok(())
}

/// Checks an alias and that no other peer has it.
fn check_alias(store: &Store, alias: &str, for_peer: &PeerId) -> Result<(), Error> {
    check_alias_shape(alias)?;
    let taken = store
        .find_peers(alias)?
        .into_iter()
        .find(|p| p.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(alias)) && p.agent_id != *for_peer);
    if let Some(other) = taken {
        return Err(Error::conflict(
            ErrorCode::InvalidAlias,
            format!("{alias:?} is already the alias of {}", other.agent_id),
        ));
    }
    Ok(())
}

/// A base URL as given, checked: `http(s)://host[:port]`, no trailing slash.
pub fn normalize_url(url: &str) -> Result<String, Error> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && url.len() <= 512 && !url.contains(char::is_whitespace) => Ok(url.to_owned()),
        _ => Err(Error::invalid(ErrorCode::InvalidUrl, "give the peer's base URL, e.g. http://127.0.0.1:8787")),
    }
}

/// Fetches the agent at `base`: its native card, or failing that its V1 discovery document.
/// Returns the peer row and every key its verified rotation chain holds.
pub async fn fetch_peer(node: &Node, base: &str) -> Result<(Peer, Vec<[u8; 32]>), Error> {
    let endpoint: Endpoint = base.parse().unwrap_or_else(|never| match never {});
    // Each protocol in turn; the first that finds its document there wins.
    let mut not_found = Vec::new();
    for adapter in node.adapters().all() {
        match adapter.fetch_peer(node, &endpoint).await {
            Ok(fetched) => return Ok(fetched),
            Err(FetchError::Invalid(e)) => return Err(e),
            Err(FetchError::Probe(ProbeError::Unreachable(why))) => {
                return Err(Error::upstream(ErrorCode::PeerUnreachable, why));
            }
            Err(FetchError::Probe(ProbeError::NotADocument(why))) => not_found.push(why),
        }
    }
    Err(Error::upstream(
        ErrorCode::NotAnAgent,
        format!("{base} is not an agentmesh or Agent Mesh V1 agent ({})", not_found.join("; ")),
    ))
}

/// Compares a fetched peer with its pin and stores it: the same key; a key its verified rotation
/// chain leads to (the pin moves, the old key kept for `grace_ms`); a key it rotated away from
/// (`superseded_key`); or a mismatch (recorded, `key_mismatch`). A removed peer pins afresh.
fn pin_fetched(tx: &Tx<'_>, fetched: &Peer, history: &[[u8; 32]], grace_ms: i64) -> Result<(), Error> {
    let now = now_ms() as i64;
    if let Some(pinned) = tx.peer(&fetched.agent_id)?.filter(|p| p.trust != TrustState::Removed)
        && pinned.ed25519 != fetched.ed25519
    {
        if pinned.prev_ed25519 == Some(fetched.ed25519) {
            return Err(Error::SupersededKey {
                peer: fetched.agent_id.clone(),
                direction: MismatchDirection::Outbound,
            });
        }
        if follows_rotations(tx, &pinned) && history.contains(&pinned.ed25519) {
            rotate_pin(tx, fetched, now.saturating_add(grace_ms))?;
        } else {
            // Recorded by the caller, in a transaction of its own (see `outbound_mismatch`).
            return Err(Error::KeyMismatch { peer: fetched.agent_id.clone(), direction: MismatchDirection::Outbound });
        }
    }
    if !tx.upsert_peer(fetched)? {
        return Err(Error::KeyMismatch { peer: fetched.agent_id.clone(), direction: MismatchDirection::Outbound });
    }
    Ok(())
}

/// Whether `peer`'s protocol moves a pin along a verified rotation chain.
fn follows_rotations(tx: &Tx<'_>, peer: &Peer) -> bool {
    tx.node().adapters().get(peer.protocol).can(Capability::KeyRotation)
}

/// The mismatch `pin_fetched` would refuse `fetched` for: a pinned (not removed) peer whose key
/// is neither `fetched`'s nor one its rotation chain (`history`) leads from, nor its previous key.
fn outbound_mismatch(tx: &Tx<'_>, fetched: &Peer, history: &[[u8; 32]]) -> Result<Option<KeyMismatch>, Error> {
    let Some(pinned) = tx.peer(&fetched.agent_id)?.filter(|p| p.trust != TrustState::Removed) else {
        return Ok(None);
    };
    let rotated = follows_rotations(tx, &pinned) && history.contains(&pinned.ed25519);
    if pinned.ed25519 == fetched.ed25519 || pinned.prev_ed25519 == Some(fetched.ed25519) || rotated {
        return Ok(None);
    }
    let now = now_ms() as i64;
    Ok(Some(KeyMismatch {
        peer_id: fetched.agent_id.clone(),
        pinned_fingerprint: pinned.fingerprint,
        presented_fingerprint: fetched.fingerprint.clone(),
        presented_ed25519: fetched.ed25519,
        presented_x25519: fetched.x25519,
        presented_card: fetched.card.clone(),
        direction: MismatchDirection::Outbound,
        count: 1,
        first_at: now,
        last_at: now,
        resolved_at: None,
    }))
}

/// `POST /control/contacts`: asks an agent for contact (see [`ContactArgs`]), and waits up to
/// `wait_ms` for the request's first delivery attempt.
pub async fn request_contact(node: &Arc<Node>, args: ContactArgs) -> Result<ContactReply, Error> {
    check_text(&args.purpose, ErrorCode::InvalidPurpose, "purpose")?;
    let alias = args.alias.as_deref().map(str::trim).map(str::to_owned);
    if let Some(alias) = &alias {
        check_alias_shape(alias)?;
    }
    let target = args.to.trim().to_owned();
    // An iroh endpoint (`iroh:<id>?addr=…`, from a card passed out of band) is dialled as given.
    let by_key = match target.parse::<Endpoint>() {
        Ok(endpoint @ Endpoint::Iroh(_)) if target.len() <= agentmesh_core::card::MAX_ENDPOINT_BYTES => Some(endpoint),
        _ => None,
    };
    let fetched = if target.starts_with("http://") || target.starts_with("https://") || by_key.is_some() {
        let base = match &by_key {
            Some(endpoint) => endpoint.to_string(),
            None => normalize_url(&target)?,
        };
        let (peer, history) = fetch_peer(node, &base).await?;
        // The card of a node dialled by key must list that key: else the key is not the agent's.
        if let Some(key) = by_key.as_ref().and_then(Endpoint::transport_key) {
            let listed =
                agentmesh_core::endpoint::parse_all(&peer.endpoints).iter().any(|e| e.transport_key() == Some(key));
            if !listed {
                return Err(Error::upstream(
                    ErrorCode::InvalidCard,
                    format!("{base} serves the card of {}, which does not list that endpoint", peer.agent_id),
                ));
            }
        }
        if let Some(expected) = &args.agent_id
            && !expected.eq_ignore_ascii_case(peer.agent_id.as_str())
        {
            return Err(Error::upstream(
                ErrorCode::AgentIdMismatch,
                format!("{base} serves agent {}, not {expected}; nothing was pinned or sent", peer.agent_id),
            ));
        }
        if peer.agent_id == node.id() {
            return Err(Error::invalid(ErrorCode::SelfContact, format!("{base} is this agent itself")));
        }
        Some((peer, history))
    } else {
        if args.agent_id.is_some() {
            return Err(Error::invalid(
                ErrorCode::InvalidUrl,
                "with an expected agent id, give the URL to fetch its card from",
            ));
        }
        None
    };
    let grace_ms = node.config().rotation_grace_secs.saturating_mul(1000) as i64;
    if let Some((peer, history)) = &fetched {
        // A mismatch is kept for the owner although the request fails: in its own transaction.
        let (peer, history) = (peer.clone(), history.clone());
        let mismatched = node
            .transact(move |tx| {
                let Some(mismatch) = outbound_mismatch(tx, &peer, &history)? else { return Ok(None) };
                tracing::warn!(peer = %mismatch.peer_id, presented = %mismatch.presented_fingerprint, "pinned agent serves another key");
                if tx.record_key_mismatch(&mismatch)? {
                    tx.emit(Event::KeyMismatch { mismatch: mismatch.view() });
                }
                Ok(Some(mismatch.peer_id))
            })
            .await?;
        if let Some(peer) = mismatched {
            return Err(Error::KeyMismatch { peer, direction: MismatchDirection::Outbound });
        }
    }
    let purpose = args.purpose.clone();
    let without_approving = args.without_approving;
    let me = node.peer_id();
    let (peer, open_out, approved) = node
        .transact(move |tx| {
            let peer = match fetched {
                Some((peer, history)) => {
                    pin_fetched(tx, &peer, &history, grace_ms)?;
                    tx.peer(&peer.agent_id)?.ok_or_else(|| Error::internal("a peer just stored is missing"))?
                }
                None => resolve(tx, &target)?,
            };
            if peer.agent_id == me {
                return Err(Error::invalid(ErrorCode::SelfContact, "that is this agent itself"));
            }
            if let Some(alias) = &alias {
                check_alias(tx, alias, &peer.agent_id)?;
                tx.set_alias(&peer.agent_id, Some(alias))?;
            }
            if without_approving && peer.trust == TrustState::RequestedIn {
                return Err(Error::conflict(
                    ErrorCode::TrustChangesDisabled,
                    format!(
                        "{} asked us for contact, so asking back would approve its request; only the owner may \
                         (`agentmesh approve-request`, or `mcp_allow_trust_changes = true` in config.toml)",
                        peer.agent_id
                    ),
                ));
            }
            let open_in = tx.open_request(&peer.agent_id, Direction::Incoming)?;
            let peer = apply(tx, &peer, Input::Ask, &Context::purpose(&purpose))?;
            // One-sided trust: the request goes out even to a peer that asked us.
            if !tx.node().adapters().get(peer.protocol).can(Capability::MutualTrust) {
                ask_v1(tx, &peer, &purpose)?;
            }
            let open_out = tx.open_request(&peer.agent_id, Direction::Outgoing)?;
            // Asking back approved their request.
            let approved = match (peer.trust, open_in) {
                (TrustState::Trusted, Some(r)) => tx.request(&r.request_id)?,
                _ => None,
            };
            Ok((peer, open_out, approved))
        })
        .await?;
    let Some(request) = open_out else {
        return Ok(ContactReply {
            outcome: ContactOutcome::Trusted,
            request: approved,
            peer: peer.view(),
            refusal: None,
        });
    };
    let wait_ms = args.wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS);
    let (outcome, refusal) = first_delivery(node, &request.request_id, wait_ms).await?;
    let (request, peer) = {
        let (id, peer_id) = (request.request_id.clone(), peer.agent_id.clone());
        node.db(move |s| Ok((s.request(&id)?, s.peer(&peer_id)?))).await?
    };
    let peer = peer.ok_or_else(|| Error::internal("a peer vanished"))?;
    Ok(ContactReply { outcome, request, peer: peer.view(), refusal })
}

/// Agent Mesh V1 trust is one-sided and V1 never answers: our trusting a V1 peer (or its asking
/// us) does not make it accept our messages, so a V1 peer we ask always gets a request of ours,
/// unless one is open already. It stays pending (delivered): its owner's approval shows only as
/// our messages going through.
fn ask_v1(tx: &Tx<'_>, peer: &Peer, purpose: &str) -> Result<(), Error> {
    if tx.open_request(&peer.agent_id, Direction::Outgoing)?.is_some() {
        return Ok(());
    }
    let request_id = new_request_id();
    let request = NewRequest {
        request_id: request_id.clone(),
        direction: Direction::Outgoing,
        peer_id: peer.agent_id.clone(),
        purpose: purpose.to_owned(),
        protocol: peer.protocol,
        created_at: now_ms() as i64,
        source_ip: None,
        source_net: None,
    };
    tx.insert_request(&request)?;
    let what = Outgoing::ContactRequest { request_id, purpose: purpose.to_owned() };
    let outbound = tx.node().adapters().get(peer.protocol).prepare(tx.node(), peer, what)?;
    tx.enqueue(&outbound)
}

/// Waits up to `wait_ms` for the first delivery outcome of outbox entry `id`.
async fn first_delivery(node: &Arc<Node>, id: &str, wait_ms: u64) -> Result<(ContactOutcome, Option<Refusal>), Error> {
    let waiter = node.watch_delivery(id);
    // It may have gone out already (or failed) before we started to watch.
    let item_id = id.to_owned();
    let done = node.db(move |s| Ok((s.request(&item_id)?, s.outbox_state(&item_id)?))).await?;
    match done {
        (Some(r), _) if matches!(r.status, RequestStatus::Refused | RequestStatus::Failed) => {
            let code = r.reason_code.unwrap_or_else(|| "undeliverable".into());
            let message = format!("the contact request was {}: {code}", r.status);
            return Ok((ContactOutcome::Refused, Some(Refusal { code, message })));
        }
        (Some(r), _) if r.status == RequestStatus::Approved => return Ok((ContactOutcome::Trusted, None)),
        (_, Some(state)) if matches!(state.status, MessageStatus::Delivered | MessageStatus::Read) => {
            return Ok((ContactOutcome::Delivered, None));
        }
        _ => {}
    }
    let Some(waiter) = waiter.filter(|_| wait_ms > 0) else { return Ok((ContactOutcome::Queued, None)) };
    match tokio::time::timeout(std::time::Duration::from_millis(wait_ms), waiter).await {
        Ok(Ok(FirstOutcome::Delivered)) => Ok((ContactOutcome::Delivered, None)),
        Ok(Ok(FirstOutcome::Failed { code, message })) => Ok((
            ContactOutcome::Refused,
            Some(Refusal { code: code.unwrap_or_else(|| "undeliverable".into()), message }),
        )),
        Ok(Ok(FirstOutcome::Retrying { code, message })) => Ok((
            ContactOutcome::Queued,
            Some(Refusal { code: code.unwrap_or_else(|| ErrorCode::PeerUnreachable.as_str().into()), message }),
        )),
        Ok(Err(_)) | Err(_) => Ok((ContactOutcome::Queued, None)),
    }
}

/// Approves or rejects an incoming request.
pub async fn decide(
    node: &Arc<Node>,
    request_id: String,
    approve: bool,
    reason: Option<String>,
) -> Result<RequestReply, Error> {
    if let Some(reason) = &reason {
        check_text(reason, ErrorCode::InvalidReason, "reason")?;
    }
    node.transact(move |tx| {
        let (request, peer) = request_and_peer(tx, &request_id)?;
        if request.direction == Direction::Outgoing {
            return Err(Error::conflict(
                ErrorCode::OutgoingRequest,
                format!("{request_id} is ours: the peer answers it (withdraw it with `agentmesh withdraw-request {request_id}`)"),
            ));
        }
        check_open(&request)?;
        let input = if approve { Input::Approve } else { Input::Reject };
        let peer = apply(tx, &peer, input, &Context { purpose: "", reason: reason.as_deref(), source: None })?;
        let request = tx.request(&request_id)?.ok_or_else(|| Error::internal("a request vanished"))?;
        Ok(RequestReply { request, peer: peer.view() })
    })
    .await
}

/// Most requests [`reject_many`] rejects per call.
const MAX_BULK_REJECT: usize = 1000;

/// Rejects every pending incoming request that matches all of `args`' filters; each requester
/// is told. Errors: `invalid_argument` (no filter, or `from` is neither an IP address nor a CIDR
/// network), `invalid_reason`.
pub async fn reject_many(node: &Arc<Node>, args: RejectManyArgs) -> Result<RejectedReply, Error> {
    if args.from.is_none() && args.older_than_secs.is_none() {
        return Err(Error::invalid(
            ErrorCode::InvalidArgument,
            "give `from` (an IP address or CIDR network), `older_than_secs`, or both",
        ));
    }
    let from = args.from.as_deref().map(parse_net).transpose()?;
    if let Some(reason) = &args.reason {
        check_text(reason, ErrorCode::InvalidReason, "reason")?;
    }
    let before = args
        .older_than_secs
        .map(|secs| (now_ms() as i64).saturating_sub(secs.saturating_mul(1000).min(i64::MAX as u64) as i64));
    node.transact(move |tx| {
        let pending = tx.pending_incoming_requests(u32::MAX)?;
        let mut matching = pending.into_iter().filter(|r| {
            from.is_none_or(|net| r.source_ip.is_some_and(|ip| net.contains(&ip)))
                && before.is_none_or(|before| r.created_at <= before)
        });
        let mut rejected = Vec::new();
        let context = Context { purpose: "", reason: args.reason.as_deref(), source: None };
        for request in matching.by_ref().take(MAX_BULK_REJECT) {
            let Some(peer) = tx.peer(&request.peer_id)? else { continue };
            // One that cannot be rejected (a state the request no longer matches) is skipped,
            // not a reason to reject none.
            match tx.atomic(|tx| apply(tx, &peer, Input::Reject, &context)) {
                Ok(_) => rejected.push(request.request_id),
                Err(e) => {
                    tracing::warn!(request = %request.request_id, error = %e, "could not reject a contact request")
                }
            }
        }
        let more = matching.next().is_some();
        tracing::info!(rejected = rejected.len(), more, "owner rejected contact requests in bulk");
        Ok(RejectedReply { rejected, more })
    })
    .await
}

/// Parses `203.0.113.7` (one address) or `203.0.113.0/24` (a network).
fn parse_net(text: &str) -> Result<ipnet::IpNet, Error> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
        Error::invalid(
            ErrorCode::InvalidArgument,
            format!("`from` must be an IP address or a CIDR network such as 203.0.113.0/24, not {text:?}"),
        )
    })
}

/// Withdraws an outgoing request; the peer is told.
pub async fn withdraw(node: &Arc<Node>, request_id: String) -> Result<RequestReply, Error> {
    node.transact(move |tx| {
        let (request, peer) = request_and_peer(tx, &request_id)?;
        if request.direction == Direction::Incoming {
            return Err(Error::conflict(
                ErrorCode::IncomingRequest,
                format!("{request_id} is {}'s request to us: approve or reject it", request.peer_id),
            ));
        }
        check_open(&request)?;
        let peer = apply(tx, &peer, Input::Withdraw, &Context::default())?;
        let request = tx.request(&request_id)?.ok_or_else(|| Error::internal("a request vanished"))?;
        Ok(RequestReply { request, peer: peer.view() })
    })
    .await
}

/// `GET /control/requests/{id}`: one request as stored, with the text its peer wrote (for the
/// owner: events leave that text out), and the peer.
pub async fn request_detail(node: &Arc<Node>, request_id: String) -> Result<RequestReply, Error> {
    node.db(move |s| {
        let (request, peer) = request_and_peer(s, &request_id)?;
        Ok(RequestReply { request, peer: peer.view() })
    })
    .await
}

fn request_and_peer(store: &Store, request_id: &str) -> Result<(ContactRequest, Peer), Error> {
    let request =
        store.request(request_id)?.ok_or_else(|| Error::not_found(format!("no contact request {request_id}")))?;
    let peer = store
        .peer(&request.peer_id)?
        .ok_or_else(|| Error::not_found(format!("no peer {} for {request_id}", request.peer_id)))?;
    Ok((request, peer))
}

fn check_open(request: &ContactRequest) -> Result<(), Error> {
    if request.status.is_open() {
        return Ok(());
    }
    let how = request.reason_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
    Err(Error::conflict(
        ErrorCode::AlreadyDecided,
        format!("{} is already {}{how}", request.request_id, request.status),
    ))
}

/// An owner's change of a peer: block, unblock or remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Block it (it is told).
    Block,
    /// Unblock it.
    Unblock,
    /// Forget it.
    Remove,
}

/// Blocks, unblocks or removes the peer `text` names; the peer is told when the state machine
/// says so. What is still queued for a blocked or removed peer fails (but the news itself).
pub async fn change(node: &Arc<Node>, text: String, change: Change) -> Result<PeerReply, Error> {
    let me = node.peer_id();
    node.transact(move |tx| {
        let peer = resolve(tx, &text)?;
        if peer.agent_id == me {
            return Err(Error::invalid(ErrorCode::SelfContact, "that is this agent itself"));
        }
        let input = match change {
            Change::Block => Input::Block,
            Change::Unblock => Input::Unblock,
            Change::Remove => Input::Remove,
        };
        let queued_before = tx.queued.get();
        let after = apply(tx, &peer, input, &Context::default())?;
        let told = tx.queued.get() > queued_before;
        let (error, code) = match change {
            Change::Block => ("peer blocked", "blocked"),
            Change::Remove => ("peer removed", "removed"),
            Change::Unblock => ("", ""),
        };
        if change != Change::Unblock {
            let failed = tx.fail_outbox_to(&peer.agent_id, &[EnvelopeKind::ContactUpdate], error, code)?;
            if !failed.is_empty() {
                tracing::info!(peer = %peer.agent_id, entries = failed.len(), "dropped what was queued for the peer");
            }
        }
        let hint = match (change, after.trust) {
            (Change::Unblock, _) => Some(format!(
                "{} is not a contact: ask again with `agentmesh request-contact {}`",
                after.agent_id, after.agent_id
            )),
            (Change::Remove, _) => {
                Some("its key is forgotten: `agentmesh request-contact <URL>` to start afresh".to_owned())
            }
            _ => None,
        };
        Ok(PeerReply { peer: after.view(), told, hint })
    })
    .await
}

/// Pins the key a peer presented in an open key mismatch, once the owner has checked its
/// fingerprint out of band. Only through here does a mismatched peer become reachable again.
pub async fn repin(node: &Arc<Node>, text: String, fingerprint: String) -> Result<PeerReply, Error> {
    node.transact(move |tx| {
        let agent_id = match resolve(tx, &text) {
            Ok(p) => p.agent_id,
            Err(e) => PeerId::parse(text.trim()).map_err(|_| e)?,
        };
        let open: Vec<String> = tx
            .key_mismatches(true)?
            .into_iter()
            .filter(|m| m.peer_id == agent_id)
            .map(|m| m.presented_fingerprint)
            .collect();
        let Some(peer) = tx.repin(&agent_id, &fingerprint, now_ms() as i64)? else {
            return Err(if open.is_empty() {
                Error::not_found(format!("{agent_id} has no open key mismatch"))
            } else {
                Error::conflict(
                    ErrorCode::FingerprintMismatch,
                    format!("{agent_id} presented {}, not {fingerprint}; nothing was changed", open.join(", ")),
                )
            });
        };
        tracing::info!(peer = %peer.agent_id, fingerprint = %peer.fingerprint, "owner repinned peer key");
        Ok(PeerReply { peer: peer.view(), told: false, hint: None })
    })
    .await
}

/// Closes incoming requests left unanswered for `contact_request_ttl_secs` (at most 100 per
/// call); their requesters are told. Returns how many expired.
pub async fn expire_requests(node: &Arc<Node>) -> Result<usize, Error> {
    let ttl_ms = node.config().contact_request_ttl_secs.saturating_mul(1000) as i64;
    if ttl_ms == 0 {
        return Ok(0);
    }
    let before = now_ms() as i64 - ttl_ms;
    node.transact(move |tx| {
        let stale = tx.stale_incoming(before, 100)?;
        let mut expired = 0;
        for (request_id, peer_id) in stale {
            let Some(peer) = tx.peer(&peer_id)? else { continue };
            let context = Context { purpose: "", reason: Some("expired: not answered in time"), source: None };
            let result = tx.atomic(|tx| apply(tx, &peer, Input::Expire, &context));
            match result {
                Ok(_) => expired += 1,
                Err(e) => tracing::warn!(request = %request_id, error = %e, "could not expire a contact request"),
            }
        }
        Ok(expired)
    })
    .await
}

/// Follows a delivery that failed for good: a contact request the peer refused (or that could
/// not be delivered), or an envelope its node refused because it does not count us as a contact.
pub fn delivery_failed(
    tx: &Tx<'_>,
    peer_id: &PeerId,
    kind: EnvelopeKind,
    id: &str,
    code: Option<&str>,
) -> Result<(), Error> {
    let Some(peer) = tx.peer(peer_id)? else { return Ok(()) };
    let input = match (kind, code) {
        (EnvelopeKind::ContactRequest, Some(code)) => Input::Refused { code, request: Some(id) },
        (EnvelopeKind::ContactRequest, None) => Input::Undeliverable { request: id },
        (_, Some(code)) if trust::is_trust_refusal(code) => Input::Refused { code, request: None },
        _ => return Ok(()),
    };
    let purpose = format!("(sent again by our node: yours refused our envelope with {})", code.unwrap_or(""));
    apply(tx, &peer, input, &Context::purpose(&purpose))?;
    Ok(())
}
