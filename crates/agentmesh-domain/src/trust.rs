//! The trust state machine: where contact with one peer stands, what moves it, and what the
//! other side is told. Pure: no I/O; [`crate::service::contacts`] applies its steps to the store
//! and queues what it says to tell.
//!
//! # States (ours, for one peer)
//!
//! | state | we accept from the peer ([`admit`]) | the peer, once told, sees us as |
//! |---|---|---|
//! | `discovered` | contact requests, answers, updates, key rotations (no messages: `403 untrusted_sender`) | `discovered` |
//! | `requested_out` (open request `o`) | the same; an answer must be about `o` | `requested_in` (`o`) |
//! | `requested_in` (open request `i`) | the same (a new request supersedes `i`) | `requested_out` (`i`) |
//! | `trusted` | everything | `trusted` |
//! | `rejected` (reason: who and why) | contact requests, answers, updates, key rotations | `rejected` (by the other side) |
//! | `blocked` | nothing (`403 blocked_sender`) | `rejected` (by peer: `blocked`) |
//! | `removed` (or never known) | contact requests only, pinning afresh (`403 unknown_sender`) | `rejected` (by peer: `removed`) |
//!
//! # Transitions
//!
//! Owner actions (a refused one changes nothing):
//!
//! | from → action | next | told |
//! |---|---|---|
//! | `discovered`, `rejected`, `removed` → ask | `requested_out` (new `o`) | `contact_request o` |
//! | `requested_out` → ask | unchanged (the open request is reused; duplicates collapse) | — |
//! | `requested_in` → ask | `trusted` (`i` approved: both want contact) | `contact_response i, accepted` |
//! | `trusted` → ask | unchanged | — |
//! | `blocked` → ask | refused: unblock first | — |
//! | `requested_in` → approve | `trusted` | `contact_response i, accepted` |
//! | `requested_in` → reject | `rejected` (by us: `rejected`) | `contact_response i, rejected` |
//! | `requested_out` → withdraw | `discovered` | `contact_update withdrawn o` |
//! | any → block | `blocked` (open requests closed) | `contact_update blocked`, when the peer dealt with us (`trusted`, `requested_*`, or we rejected it) |
//! | `blocked` → unblock | `discovered` (trust is not restored: ask again) | `contact_update unblocked`, if the block was told (or our node refused the peer for it since) |
//! | any → remove | `removed` (open requests closed, pin dropped) | `contact_update removed`, if the peer dealt with us (`trusted`, `requested_*`, a told block) |
//!
//! What the peer tells us (signed envelopes, admitted as in the first table):
//!
//! | from → peer says | next |
//! |---|---|
//! | `discovered`, `rejected`, `removed` → contact request `r` | `requested_in` (`r`) |
//! | `requested_in` → contact request `r` | `requested_in` (`r`; the older request is `superseded`) |
//! | `requested_out` → contact request `r` | `trusted` (both asked; `r` and `o` approved, we answer `r`) |
//! | `trusted` → contact request `r` | `trusted` (it lost its state; `r` approved, we answer `r`) |
//! | `requested_out` → `o` accepted / rejected | `trusted` / `rejected` (by peer: `rejected`) |
//! | `requested_in` → withdrawn `i` | `discovered` |
//! | any but `blocked`, `removed` → blocked / removed | `rejected` (by peer: `blocked` / `removed`), open requests closed |
//! | `rejected` (by peer: `blocked` or `blocked_sender`) → unblocked | `discovered` |
//! | `trusted` → its node refuses our envelope with `blocked_sender` | `rejected` (by peer: `blocked_sender`) |
//! | `trusted` → its node refuses our envelope with `unknown_sender` or `untrusted_sender` | `requested_out` (we ask again: it lost its state, or a change crossed ours) |
//! | `requested_out` → its node refuses `o` for good | `rejected` (by peer: its code), `o` `refused` |
//! | `requested_out` → `o` undeliverable within the retry limits | `discovered`, `o` `failed` |
//! | `requested_in` → `i` unanswered for `contact_request_ttl_secs` | `rejected` (by us: `expired`), `i` `expired`; told as a rejection |
//! | `blocked` (silently) → our node refuses its envelope with `blocked_sender` | `blocked` (told: the refusal told it) |
//!
//! Anything else the peer says about a request we never had is `unknown_request`; about one that
//! closed meanwhile, it changes nothing. Every transition that changes what the other side may do
//! is told, so the two views converge: the property test at the end drives random owner actions
//! on two simulated nodes over an in-order network and checks that, once nothing is in flight,
//! both sides agree (trusted on both or neither, each open request open on both sides, no request
//! stuck).

use agentmesh_api::{Direction, ErrorCode, RequestStatus, Side, TrustReason, TrustState};
use agentmesh_core::EnvelopeKind;
use agentmesh_core::envelope::ContactChange;

/// Where contact with one peer stands: its state and the open request each way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// Where trust stands.
    pub state: TrustState,
    /// Why, for the states that say (rejected, blocked: by whom and how).
    pub reason: Option<TrustReason>,
    /// The pending request the peer sent us.
    pub open_in: Option<String>,
    /// The pending request we sent the peer.
    pub open_out: Option<String>,
    /// While trusted: the peer's request whose approval made us contacts. If the peer withdraws
    /// it (the withdrawal crossed our approval), the trust it gave is void.
    pub approved_in: Option<String>,
    /// While trusted through `approved_in`: our own request, approved with it because both sides
    /// asked. It opens again if `approved_in` is withdrawn.
    pub mutual_out: Option<String>,
}

impl Relation {
    /// A peer we only know of.
    #[cfg(test)]
    pub fn discovered() -> Self {
        Relation::at(TrustState::Discovered, None)
    }

    /// A relation in `state` with nothing open.
    pub fn at(state: TrustState, reason: Option<TrustReason>) -> Self {
        Relation { state, reason, open_in: None, open_out: None, approved_in: None, mutual_out: None }
    }

    /// Trusted through the approval of the peer's request `approved_in`.
    fn trusted_via(approved_in: Option<String>, mutual_out: Option<String>) -> Self {
        Relation { approved_in, mutual_out, ..Relation::at(TrustState::Trusted, None) }
    }
}

/// What moves a relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Our owner asks for contact.
    Ask,
    /// Our owner approves the open incoming request.
    Approve,
    /// Our owner rejects the open incoming request.
    Reject,
    /// Our owner withdraws the open outgoing request.
    Withdraw,
    /// Our owner blocks the peer.
    Block,
    /// Our owner unblocks the peer.
    Unblock,
    /// Our owner removes the peer.
    Remove,
    /// The peer sent contact request `request`.
    PeerAsked {
        /// The request's id.
        request: &'a str,
    },
    /// The peer answered our request `request`.
    PeerAnswered {
        /// Our request's id.
        request: &'a str,
        /// Whether it approved.
        accepted: bool,
    },
    /// The peer told us of a change.
    PeerChanged {
        /// What changed.
        change: ContactChange,
        /// The request it concerns, when one.
        request: Option<&'a str>,
    },
    /// The peer's node refused our envelope for good with `code`; `request` when it was our
    /// contact request.
    Refused {
        /// The peer's error code.
        code: &'a str,
        /// Our contact request's id, when the refused envelope was one.
        request: Option<&'a str>,
    },
    /// Our contact request `request` could not be delivered within the retry limits.
    Undeliverable {
        /// Our request's id.
        request: &'a str,
    },
    /// The peer's open request was not answered in time.
    Expire,
    /// We refused an envelope of the blocked peer (`blocked_sender`): it knows of the block now,
    /// so an unblock must be told to it.
    BlockRefused,
}

/// What to tell the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tell {
    /// A `contact_request` with this id.
    Request(String),
    /// A `contact_response` to this request.
    Answer {
        /// The peer's request's id.
        request: String,
        /// Whether we approved.
        accepted: bool,
    },
    /// A `contact_update`.
    Update {
        /// What changed.
        change: ContactChange,
        /// The request it concerns, when one.
        request: Option<String>,
    },
}

/// A contact request that changes: recorded anew, or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestChange {
    /// The request's id.
    pub request_id: String,
    /// Whether we sent it (outgoing) or the peer did (incoming).
    pub direction: Direction,
    /// Recorded now (it was not stored before).
    pub new: bool,
    /// Its state after the step.
    pub status: RequestStatus,
    /// How it closed, for closed ones (a machine code: `approved`, `blocked`, the peer's
    /// refusal code, …).
    pub code: Option<String>,
}

/// The result of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The relation after the input.
    pub next: Relation,
    /// What to tell the peer, if anything.
    pub tell: Option<Tell>,
    /// The contact requests recorded or closed by it.
    pub requests: Vec<RequestChange>,
}

/// Why an owner action or a peer's answer was refused; nothing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Approve, reject or withdraw without an open request that way.
    NoOpenRequest,
    /// Ask while the peer is blocked.
    Blocked,
    /// Unblock a peer that is not blocked.
    NotBlocked,
    /// An answer to a request we never sent.
    UnknownRequest,
}

fn reason(by: Side, code: &str) -> Option<TrustReason> {
    Some(TrustReason { by, code: code.to_owned() })
}

fn close(request_id: &str, direction: Direction, status: RequestStatus, code: &str) -> RequestChange {
    RequestChange { request_id: request_id.to_owned(), direction, new: false, status, code: Some(code.to_owned()) }
}

/// Whether the peer has dealt with us, so that it must hear of a block or removal.
fn peer_involved(r: &Relation) -> bool {
    match r.state {
        TrustState::Trusted | TrustState::RequestedIn | TrustState::RequestedOut => true,
        TrustState::Rejected => r.reason.as_ref().is_some_and(|reason| reason.by == Side::Us),
        TrustState::Blocked => r.reason.as_ref().is_some_and(|reason| reason.code == BLOCKED_TOLD),
        TrustState::Discovered | TrustState::Removed => false,
    }
}

/// Whether the peer blocks us, as far as we know: it told us (`blocked`), or its node refused
/// an envelope of ours for it (`blocked_sender`). Its `unblocked` undoes either.
pub fn blocked_by_peer(r: &Relation) -> bool {
    r.reason
        .as_ref()
        .is_some_and(|reason| reason.by == Side::Peer && matches!(reason.code.as_str(), "blocked" | "blocked_sender"))
}

/// When the peer closes contact, a request of ours it has not answered may still be on its way
/// (it crossed the peer's change): withdraw it, so that it cannot open there later.
fn withdraw_in_flight(current: &Relation) -> Option<Tell> {
    let unanswered = current.open_out.clone().or_else(|| current.mutual_out.clone())?;
    Some(Tell::Update { change: ContactChange::Withdrawn, request: Some(unanswered) })
}

/// The reason code of a block the peer was told of.
const BLOCKED_TOLD: &str = "blocked";
/// The reason code of a block the peer was not told of (it never dealt with us).
pub const BLOCKED_SILENTLY: &str = "blocked_silently";

/// Applies `input` to `current`; `fresh` is the id a request made by this step gets.
pub fn step(current: &Relation, input: Input<'_>, fresh: &str) -> Result<Step, Refusal> {
    use TrustState::*;
    let same = || Ok(Step { next: current.clone(), tell: None, requests: Vec::new() });
    let mut next = current.clone();
    let mut requests = Vec::new();
    let mut tell = None;
    // Closes whatever is open, with `incoming`/`outgoing` as their new states.
    let close_open = |next: &mut Relation,
                      requests: &mut Vec<RequestChange>,
                      incoming: RequestStatus,
                      outgoing: RequestStatus,
                      code| {
        if let Some(i) = next.open_in.take() {
            requests.push(close(&i, Direction::Incoming, incoming, code));
        }
        if let Some(o) = next.open_out.take() {
            requests.push(close(&o, Direction::Outgoing, outgoing, code));
        }
    };
    match input {
        Input::Ask => match current.state {
            Blocked => return Err(Refusal::Blocked),
            Trusted | RequestedOut => return same(),
            RequestedIn => {
                // Both want contact: approve theirs, and keep ours (approved with it) in case
                // theirs turns out to be withdrawn.
                let i = current.open_in.clone().unwrap_or_default();
                requests.push(close(&i, Direction::Incoming, RequestStatus::Approved, "mutual"));
                requests.push(RequestChange {
                    request_id: fresh.to_owned(),
                    direction: Direction::Outgoing,
                    new: true,
                    status: RequestStatus::Approved,
                    code: Some("mutual".to_owned()),
                });
                next = Relation::trusted_via(Some(i.clone()), Some(fresh.to_owned()));
                tell = Some(Tell::Answer { request: i, accepted: true });
            }
            Discovered | Rejected | Removed => {
                requests.push(RequestChange {
                    request_id: fresh.to_owned(),
                    direction: Direction::Outgoing,
                    new: true,
                    status: RequestStatus::Pending,
                    code: None,
                });
                next = Relation { open_out: Some(fresh.to_owned()), ..Relation::at(RequestedOut, None) };
                tell = Some(Tell::Request(fresh.to_owned()));
            }
        },
        Input::Expire => {
            let (RequestedIn, Some(i)) = (current.state, current.open_in.clone()) else { return same() };
            requests.push(close(&i, Direction::Incoming, RequestStatus::Expired, "expired"));
            next = Relation::at(Rejected, reason(Side::Us, "expired"));
            tell = Some(Tell::Answer { request: i, accepted: false });
        }
        Input::Approve | Input::Reject => {
            let (RequestedIn, Some(i)) = (current.state, current.open_in.clone()) else {
                return Err(Refusal::NoOpenRequest);
            };
            let accepted = input == Input::Approve;
            let status = if accepted { RequestStatus::Approved } else { RequestStatus::Rejected };
            requests.push(close(&i, Direction::Incoming, status, if accepted { "approved" } else { "rejected" }));
            next = if accepted {
                Relation::trusted_via(Some(i.clone()), None)
            } else {
                Relation::at(Rejected, reason(Side::Us, "rejected"))
            };
            tell = Some(Tell::Answer { request: i, accepted });
        }
        Input::Withdraw => {
            let (RequestedOut, Some(o)) = (current.state, current.open_out.clone()) else {
                return Err(Refusal::NoOpenRequest);
            };
            requests.push(close(&o, Direction::Outgoing, RequestStatus::Withdrawn, "withdrawn"));
            next = Relation::at(Discovered, None);
            tell = Some(Tell::Update { change: ContactChange::Withdrawn, request: Some(o) });
        }
        Input::Block => {
            if current.state == Blocked {
                return same();
            }
            let told = peer_involved(current);
            close_open(&mut next, &mut requests, RequestStatus::Rejected, RequestStatus::Withdrawn, "blocked");
            next = Relation::at(Blocked, reason(Side::Us, if told { BLOCKED_TOLD } else { BLOCKED_SILENTLY }));
            if told {
                tell = Some(Tell::Update { change: ContactChange::Blocked, request: None });
            }
        }
        Input::BlockRefused => {
            let silent = current.reason.as_ref().is_some_and(|r| r.code == BLOCKED_SILENTLY);
            if current.state != Blocked || !silent {
                return same();
            }
            next = Relation::at(Blocked, reason(Side::Us, BLOCKED_TOLD));
        }
        Input::Unblock => {
            if current.state != Blocked {
                return Err(Refusal::NotBlocked);
            }
            if peer_involved(current) {
                tell = Some(Tell::Update { change: ContactChange::Unblocked, request: None });
            }
            next = Relation::at(Discovered, None);
        }
        Input::Remove => {
            if current.state == Removed {
                return same();
            }
            if peer_involved(current) {
                tell = Some(Tell::Update { change: ContactChange::Removed, request: None });
            }
            close_open(&mut next, &mut requests, RequestStatus::Rejected, RequestStatus::Withdrawn, "removed");
            next = Relation::at(Removed, reason(Side::Us, "removed"));
        }
        Input::PeerAsked { request } => {
            let new_in = |status, code: Option<&str>| RequestChange {
                request_id: request.to_owned(),
                direction: Direction::Incoming,
                new: true,
                status,
                code: code.map(str::to_owned),
            };
            match current.state {
                // Admission refuses them, in the transaction that stores (the pipeline admits again).
                Blocked => return same(),
                Trusted | RequestedOut => {
                    // Both want contact (or it lost its side of an existing one): approve.
                    requests.push(new_in(RequestStatus::Approved, Some("mutual")));
                    let open = next.open_out.take();
                    if let Some(o) = &open {
                        requests.push(close(o, Direction::Outgoing, RequestStatus::Approved, "mutual"));
                    }
                    // Our own wish for contact outlives a withdrawal of theirs.
                    let mutual = open.or_else(|| current.mutual_out.clone());
                    next = Relation::trusted_via(Some(request.to_owned()), mutual);
                    tell = Some(Tell::Answer { request: request.to_owned(), accepted: true });
                }
                RequestedIn => {
                    if current.open_in.as_deref() == Some(request) {
                        return same();
                    }
                    if let Some(i) = next.open_in.take() {
                        requests.push(close(&i, Direction::Incoming, RequestStatus::Superseded, "duplicate"));
                    }
                    requests.push(new_in(RequestStatus::Pending, None));
                    next.open_in = Some(request.to_owned());
                }
                Discovered | Rejected | Removed => {
                    requests.push(new_in(RequestStatus::Pending, None));
                    next = Relation { open_in: Some(request.to_owned()), ..Relation::at(RequestedIn, None) };
                }
            }
        }
        Input::PeerAnswered { request, accepted } => match (current.state, current.open_out.as_deref()) {
            (RequestedOut, Some(o)) if o == request => {
                let status = if accepted { RequestStatus::Approved } else { RequestStatus::Rejected };
                requests.push(close(o, Direction::Outgoing, status, if accepted { "approved" } else { "rejected" }));
                next = if accepted {
                    Relation::trusted_via(None, None)
                } else {
                    Relation::at(Rejected, reason(Side::Peer, "rejected"))
                };
            }
            _ => return Err(Refusal::UnknownRequest),
        },
        Input::PeerChanged { change, request } => match change {
            ContactChange::Withdrawn => match current.state {
                RequestedIn if current.open_in.as_deref() == request.or(current.open_in.as_deref()) => {
                    close_open(
                        &mut next,
                        &mut requests,
                        RequestStatus::Withdrawn,
                        RequestStatus::Withdrawn,
                        "withdrawn",
                    );
                    next = Relation::at(Discovered, None);
                }
                // The withdrawal crossed our approval of that very request: the trust it gave is
                // void. Our own request, if we had asked too, is open again (and sent again).
                Trusted if request.is_some() && current.approved_in.as_deref() == request => {
                    let r = request.unwrap_or_default();
                    requests.push(close(r, Direction::Incoming, RequestStatus::Withdrawn, "withdrawn"));
                    match &current.mutual_out {
                        Some(o) => {
                            // Asked again under a fresh id: answers to the old one may still be
                            // on their way.
                            requests.push(close(
                                o,
                                Direction::Outgoing,
                                RequestStatus::Superseded,
                                "withdrawn_crossed",
                            ));
                            requests.push(RequestChange {
                                request_id: fresh.to_owned(),
                                direction: Direction::Outgoing,
                                new: true,
                                status: RequestStatus::Pending,
                                code: None,
                            });
                            next = Relation { open_out: Some(fresh.to_owned()), ..Relation::at(RequestedOut, None) };
                            tell = Some(Tell::Request(fresh.to_owned()));
                        }
                        None => next = Relation::at(Discovered, None),
                    }
                }
                _ => return same(),
            },
            ContactChange::Blocked | ContactChange::Removed => {
                if matches!(current.state, Blocked | Removed) {
                    return same();
                }
                let code = if change == ContactChange::Blocked { "blocked" } else { "removed" };
                tell = withdraw_in_flight(current);
                close_open(&mut next, &mut requests, RequestStatus::Withdrawn, RequestStatus::Refused, code);
                next = Relation::at(Rejected, reason(Side::Peer, code));
            }
            ContactChange::Unblocked => {
                if current.state != Rejected || !blocked_by_peer(current) {
                    return same();
                }
                next = Relation::at(Discovered, None);
            }
        },
        Input::Refused { code, request } => match request {
            Some(r) => {
                if current.state != RequestedOut || current.open_out.as_deref() != Some(r) {
                    return same();
                }
                requests.push(close(r, Direction::Outgoing, RequestStatus::Refused, code));
                next = Relation::at(Rejected, reason(Side::Peer, code));
            }
            None => {
                if current.state != Trusted {
                    return same();
                }
                if code == ErrorCode::BlockedSender.as_str() {
                    tell = withdraw_in_flight(current);
                    next = Relation::at(Rejected, reason(Side::Peer, code));
                } else {
                    // It no longer counts us as a contact (it lost its state, or a change of its
                    // crossed ours): ask again. A peer that still trusts us approves at once; one
                    // that does not puts it before its owner.
                    requests.push(RequestChange {
                        request_id: fresh.to_owned(),
                        direction: Direction::Outgoing,
                        new: true,
                        status: RequestStatus::Pending,
                        code: None,
                    });
                    next = Relation { open_out: Some(fresh.to_owned()), ..Relation::at(RequestedOut, None) };
                    tell = Some(Tell::Request(fresh.to_owned()));
                }
            }
        },
        Input::Undeliverable { request } => {
            if current.state != RequestedOut || current.open_out.as_deref() != Some(request) {
                return same();
            }
            requests.push(close(request, Direction::Outgoing, RequestStatus::Failed, "undeliverable"));
            next = Relation::at(Discovered, None);
        }
    }
    Ok(Step { next, tell, requests })
}

/// Whether a peer in `state` may send us an envelope of `kind`; the refusal code otherwise.
/// `None` for `state` is a sender we do not know.
pub fn admit(state: Option<TrustState>, kind: EnvelopeKind) -> Result<(), ErrorCode> {
    use TrustState::*;
    match (state, kind) {
        (Some(Blocked), _) => Err(ErrorCode::BlockedSender),
        (None | Some(Removed), EnvelopeKind::ContactRequest) => Ok(()),
        (None | Some(Removed), _) => Err(ErrorCode::UnknownSender),
        (Some(Trusted), _) => Ok(()),
        (Some(_), EnvelopeKind::Message | EnvelopeKind::Receipt) => Err(ErrorCode::UntrustedSender),
        (Some(_), _) => Ok(()),
    }
}

/// Whether a final refusal of our envelope with `code` means the peer does not accept us, so the
/// relation must follow ([`Input::Refused`]).
pub fn is_trust_refusal(code: &str) -> bool {
    matches!(code, "unknown_sender" | "untrusted_sender" | "blocked_sender")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn regression_unblock_after_block_tells_the_peer_and_restores_nothing() {
        let trusted = Relation::at(TrustState::Trusted, None);
        let blocked = step(&trusted, Input::Block, "req_n").expect("block");
        assert_eq!(blocked.tell, Some(Tell::Update { change: ContactChange::Blocked, request: None }));
        let unblocked = step(&blocked.next, Input::Unblock, "req_n").expect("unblock");
        assert_eq!(unblocked.next.state, TrustState::Discovered, "unblocking does not restore trust");
        assert_eq!(unblocked.tell, Some(Tell::Update { change: ContactChange::Unblocked, request: None }));
        // The peer's side follows both messages.
        let theirs =
            step(&trusted, Input::PeerChanged { change: ContactChange::Blocked, request: None }, "req_n").expect("b");
        assert_eq!(theirs.next.state, TrustState::Rejected);
        let theirs =
            step(&theirs.next, Input::PeerChanged { change: ContactChange::Unblocked, request: None }, "req_n")
                .expect("u");
        assert_eq!(theirs.next.state, TrustState::Discovered, "it may ask again");
    }

    #[test]
    fn regression_an_unblock_reaches_a_peer_whose_request_the_block_refused() {
        // Bob blocks alice (told); alice asks again and bob's node refuses it (blocked_sender).
        let trusted = Relation::at(TrustState::Trusted, None);
        let bob = step(&trusted, Input::Block, "req_b").expect("block").next;
        let alice = step(&trusted, Input::PeerChanged { change: ContactChange::Blocked, request: None }, "req_a")
            .expect("told")
            .next;
        let alice = step(&alice, Input::Ask, "req_a2").expect("ask").next;
        let alice = step(&alice, Input::Refused { code: "blocked_sender", request: Some("req_a2") }, "req_a3")
            .expect("ref")
            .next;
        assert_eq!(alice.state, TrustState::Rejected);
        // Bob unblocks: alice hears it and may ask again, as bob sees it.
        let unblocked = step(&bob, Input::Unblock, "req_b2").expect("unblock");
        assert_eq!(unblocked.tell, Some(Tell::Update { change: ContactChange::Unblocked, request: None }));
        let alice =
            step(&alice, Input::PeerChanged { change: ContactChange::Unblocked, request: None }, "req_a4").expect("u");
        assert_eq!((alice.next.state, unblocked.next.state), (TrustState::Discovered, TrustState::Discovered));
    }

    #[test]
    fn asking_twice_collapses_and_asking_back_approves() {
        let asked = step(&Relation::discovered(), Input::Ask, "req_a").expect("ask");
        assert_eq!(asked.tell, Some(Tell::Request("req_a".into())));
        let again = step(&asked.next, Input::Ask, "req_b").expect("again");
        assert_eq!((again.tell, again.next.open_out.as_deref()), (None, Some("req_a")));
        let they_asked = step(&Relation::discovered(), Input::PeerAsked { request: "req_x" }, "req_n").expect("in");
        let back = step(&they_asked.next, Input::Ask, "req_y").expect("ask back");
        assert_eq!(back.next.state, TrustState::Trusted);
        assert_eq!(back.tell, Some(Tell::Answer { request: "req_x".into(), accepted: true }));
    }

    #[test]
    fn blocked_peers_cannot_be_asked_and_their_open_requests_close() {
        let asked = step(&Relation::discovered(), Input::PeerAsked { request: "req_x" }, "req_n").expect("in");
        let blocked = step(&asked.next, Input::Block, "req_n").expect("block");
        assert_eq!(blocked.requests, vec![close("req_x", Direction::Incoming, RequestStatus::Rejected, "blocked")]);
        assert_eq!(step(&blocked.next, Input::Ask, "req_y"), Err(Refusal::Blocked));
        assert_eq!(admit(Some(TrustState::Blocked), EnvelopeKind::ContactRequest), Err(ErrorCode::BlockedSender));
    }

    // The simulation: two nodes, each with its relation to the other, joined by an in-order
    // network in each direction that may hold envelopes for a while.

    #[derive(Clone, Copy, Debug)]
    enum Action {
        Ask,
        Approve,
        Reject,
        Withdraw,
        Block,
        Unblock,
        Remove,
        /// The peer's open request expires unanswered.
        Expire,
        /// The trusted side sends a message.
        Message,
        /// One envelope in flight arrives.
        Deliver,
        /// The envelope at the head of the wire is lost for good: the sender's outbox gives up
        /// on it after its retries (a contact request is then undeliverable).
        Lose,
    }

    /// An envelope in flight, and the refusals coming back.
    #[derive(Clone, Debug)]
    enum Wire {
        Envelope(Tell),
        Message,
        Refusal { code: String, request: Option<String> },
    }

    struct Node {
        name: char,
        relation: Relation,
        /// Request ids handed out, to keep them unique.
        next_id: u32,
        /// Outgoing requests we ever had, for answers about closed ones.
        had_out: Vec<String>,
    }

    impl Node {
        fn fresh(&mut self) -> String {
            self.next_id += 1;
            format!("req_{}{}", self.name, self.next_id)
        }

        fn apply(&mut self, input: Input<'_>) -> Result<Step, Refusal> {
            let fresh = self.fresh();
            let step = step(&self.relation, input, &fresh)?;
            self.had_out.extend(
                step.requests
                    .iter()
                    .filter(|r| r.new && r.direction == Direction::Outgoing)
                    .map(|r| r.request_id.clone()),
            );
            self.relation = step.next.clone();
            Ok(step)
        }
    }

    fn owner(node: &mut Node, action: Action) -> Option<Tell> {
        let input = match action {
            Action::Ask => Input::Ask,
            Action::Approve => Input::Approve,
            Action::Reject => Input::Reject,
            Action::Withdraw => Input::Withdraw,
            Action::Block => Input::Block,
            Action::Unblock => Input::Unblock,
            Action::Remove => Input::Remove,
            Action::Expire => Input::Expire,
            Action::Message | Action::Deliver | Action::Lose => return None,
        };
        node.apply(input).ok()?.tell
    }

    /// The receiving node takes one envelope; returns what it answers and any refusal.
    fn receive(node: &mut Node, wire: Wire) -> (Option<Tell>, Option<Wire>) {
        let kind = match &wire {
            Wire::Envelope(Tell::Request(_)) => EnvelopeKind::ContactRequest,
            Wire::Envelope(Tell::Answer { .. }) => EnvelopeKind::ContactResponse,
            Wire::Envelope(Tell::Update { .. }) => EnvelopeKind::ContactUpdate,
            Wire::Message => EnvelopeKind::Message,
            Wire::Refusal { code, request } => {
                let input = Input::Refused { code, request: request.as_deref() };
                let tell = node.apply(input).ok().and_then(|s| s.tell);
                return (tell, None);
            }
        };
        let known = Some(node.relation.state).filter(|s| *s != TrustState::Removed);
        if let Err(code) = admit(known, kind) {
            if code == ErrorCode::BlockedSender {
                let _ = node.apply(Input::BlockRefused);
            }
            let request = match &wire {
                Wire::Envelope(Tell::Request(r)) => Some(r.clone()),
                _ => None,
            };
            let refusal = Wire::Refusal { code: code.as_str().to_owned(), request };
            // Only trust refusals move the sender (others would be retried or fail alone).
            return (None, Some(refusal));
        }
        let input = match &wire {
            Wire::Envelope(Tell::Request(r)) => Input::PeerAsked { request: r },
            Wire::Envelope(Tell::Answer { request, accepted }) => {
                if node.relation.open_out.as_deref() != Some(request) {
                    // An answer about a request that closed meanwhile changes nothing (one never
                    // sent would be 400 unknown_request).
                    assert!(node.had_out.contains(request), "answer to a request never sent: {request}");
                    return (None, None);
                }
                Input::PeerAnswered { request, accepted: *accepted }
            }
            Wire::Envelope(Tell::Update { change, request }) => {
                Input::PeerChanged { change: *change, request: request.as_deref() }
            }
            Wire::Message | Wire::Refusal { .. } => return (None, None),
        };
        (node.apply(input).ok().and_then(|s| s.tell), None)
    }

    fn action() -> impl Strategy<Value = (bool, Action)> {
        let a = prop_oneof![
            3 => Just(Action::Ask),
            2 => Just(Action::Approve),
            1 => Just(Action::Reject),
            1 => Just(Action::Withdraw),
            1 => Just(Action::Block),
            1 => Just(Action::Unblock),
            1 => Just(Action::Remove),
            1 => Just(Action::Expire),
            1 => Just(Action::Message),
            6 => Just(Action::Deliver),
            1 => Just(Action::Lose),
        ];
        (any::<bool>(), a)
    }

    fn deliver_one(nodes: &mut [Node; 2], wires: &mut [VecDeque<Wire>; 2], from: usize) {
        let to = 1 - from;
        let Some(wire) = wires[from].pop_front() else { return };
        let (answer, refusal) = receive(&mut nodes[to], wire);
        if let Some(tell) = answer {
            wires[to].push_back(Wire::Envelope(tell));
        }
        if let Some(refusal) = refusal {
            let trust =
                matches!(&refusal, Wire::Refusal { code, request } if request.is_some() || is_trust_refusal(code));
            if trust {
                wires[to].push_back(refusal);
            }
        }
    }

    /// The envelope at the head of `wires[from]` is lost for good; returns whether one was (a
    /// refusal travels in the answer to an attempt, so it is never lost on its own: the attempt
    /// is retried and refused again).
    fn lose_one(nodes: &mut [Node; 2], wires: &mut [VecDeque<Wire>; 2], from: usize) -> bool {
        let Some(wire) = wires[from].front() else { return false };
        if matches!(wire, Wire::Refusal { .. }) {
            return false;
        }
        let Some(wire) = wires[from].pop_front() else { return false };
        if let Wire::Envelope(Tell::Request(request)) = wire {
            let tell = nodes[from].apply(Input::Undeliverable { request: &request }).ok().and_then(|s| s.tell);
            if let Some(tell) = tell {
                wires[from].push_back(Wire::Envelope(tell));
            }
        }
        true
    }

    /// Delivers everything in flight, answers and refusals included; whether the network went
    /// quiet.
    fn quiesce(nodes: &mut [Node; 2], wires: &mut [VecDeque<Wire>; 2]) -> bool {
        for _ in 0..1_000 {
            if wires[0].is_empty() && wires[1].is_empty() {
                return true;
            }
            deliver_one(nodes, wires, 0);
            deliver_one(nodes, wires, 1);
        }
        wires[0].is_empty() && wires[1].is_empty()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

        /// Random owner actions on both sides, envelopes delivered in order (the outbox sends a
        /// peer's contact envelopes one at a time, oldest first) or lost for good. Duplicates
        /// and replays never reach the machine (the replay log answers them), and a restart
        /// loses nothing (the outbox and the relation are stored), so neither is modelled here;
        /// `tests/it/trust.rs` runs real nodes through restarts and outages.
        ///
        /// Once the network is quiet: without loss, both views agree exactly (trust, open
        /// requests, a block one side believes in); with loss, once each trusted side has sent a
        /// message (the way a lost change comes to light), trust is two-sided or absent.
        #[test]
        fn two_views_converge_and_no_request_is_stuck(
            start in prop_oneof![Just(TrustState::Discovered), Just(TrustState::Removed)],
            actions in proptest::collection::vec(action(), 0..60),
        ) {
            let fresh = Relation::at(start, None);
            let mut nodes = [
                Node { name: 'a', relation: fresh.clone(), next_id: 0, had_out: Vec::new() },
                Node { name: 'b', relation: fresh, next_id: 0, had_out: Vec::new() },
            ];
            let mut wires: [VecDeque<Wire>; 2] = [VecDeque::new(), VecDeque::new()];
            let mut lost = false;
            for (first, action) in actions {
                let side = usize::from(!first);
                match action {
                    Action::Deliver => deliver_one(&mut nodes, &mut wires, side),
                    Action::Lose => lost |= lose_one(&mut nodes, &mut wires, side),
                    Action::Message => {
                        if nodes[side].relation.state == TrustState::Trusted {
                            wires[side].push_back(Wire::Message);
                        }
                    }
                    _ => {
                        if let Some(tell) = owner(&mut nodes[side], action) {
                            wires[side].push_back(Wire::Envelope(tell));
                        }
                    }
                }
            }
            prop_assert!(quiesce(&mut nodes, &mut wires), "the network never went quiet");
            let trusted = |r: &Relation| r.state == TrustState::Trusted;
            if lost {
                // A change lost for good shows when a message is refused: each trusted side
                // sends one, until nothing moves.
                for _ in 0..8 {
                    let mut sent = false;
                    for side in 0..2 {
                        if trusted(&nodes[side].relation) && !trusted(&nodes[1 - side].relation) {
                            wires[side].push_back(Wire::Message);
                            sent = true;
                        }
                    }
                    prop_assert!(quiesce(&mut nodes, &mut wires), "the network never went quiet");
                    if !sent {
                        break;
                    }
                }
                let (a, b) = (&nodes[0].relation, &nodes[1].relation);
                prop_assert_eq!(trusted(a), trusted(b), "one-sided trust after loss: {:?} / {:?}", a, b);
                for me in [a, b] {
                    prop_assert_eq!(me.open_in.is_some(), me.state == TrustState::RequestedIn);
                    prop_assert_eq!(me.open_out.is_some(), me.state == TrustState::RequestedOut);
                }
                return Ok(());
            }
            let (a, b) = (&nodes[0].relation, &nodes[1].relation);
            prop_assert_eq!(trusted(a), trusted(b), "one-sided trust: {:?} / {:?}", a, b);
            prop_assert_eq!(&a.open_out, &b.open_in, "a's open request is not open at b: {:?} / {:?}", a, b);
            prop_assert_eq!(&b.open_out, &a.open_in, "b's open request is not open at a: {:?} / {:?}", a, b);
            for (me, them) in [(a, b), (b, a)] {
                if me.state == TrustState::RequestedOut {
                    prop_assert_eq!(them.state, TrustState::RequestedIn, "stuck request: {:?} / {:?}", me, them);
                }
                if me.state == TrustState::Blocked {
                    prop_assert!(them.state != TrustState::Trusted && them.open_out.is_none());
                }
                // Believing oneself blocked is true: an unblock always reaches the blocked side.
                if me.state == TrustState::Rejected && blocked_by_peer(me) {
                    prop_assert_eq!(them.state, TrustState::Blocked, "a block the other side lifted: {:?} / {:?}", me, them);
                }
                prop_assert_eq!(me.open_in.is_some(), me.state == TrustState::RequestedIn);
                prop_assert_eq!(me.open_out.is_some(), me.state == TrustState::RequestedOut);
            }
        }
    }
}
