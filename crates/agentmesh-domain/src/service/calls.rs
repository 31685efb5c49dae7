//! Calls: a conversation with a contact under its own id. Each step (invite, answer, a line, the
//! end) is a `message` envelope of the call content type (`agentmesh_core::call`), queued in the
//! outbox like any message and received through the same pipeline, so calls get the same
//! signatures, encryption, receipts and retries, and survive restarts of either side.
//!
//! Both sides keep the call and every line of it (`calls`, `call_lines`): a line's id is the id of
//! the envelope that carried it and its time the speaker's, so both transcripts list the same lines
//! in the same order. Envelopes of one peer may arrive out of order (deliveries run in parallel
//! batches), so a line from the callee before its acceptance implies it.

use std::sync::Arc;

use agentmesh_api::control::{AnswerArgs, CallArgs, CallList, CallReply, CallsQuery, EndArgs, LineReply, SayArgs};
use agentmesh_api::{
    Call, CallLine, CallState, Direction, ErrorCode, Event, LineKind, MessageStatus, Side, Transcript,
};
use agentmesh_core::call::{CallBody, CallOp, MAX_CALL_NOTE_CHARS, new_call_id};
use agentmesh_core::time::now_ms;
use agentmesh_store::{CallFilter, Peer, Store};

use crate::adapter::{Capability, Outgoing};
use crate::error::Error;
use crate::service::contacts::resolve;
use crate::service::messages::not_sendable;
use crate::{Node, Tx};

/// Longest a call may ring, ms (one day).
const MAX_RING_MS: i64 = 86_400_000;

/// Most calls marked missed per sweep.
const SWEEP_BATCH: u32 = 256;

/// A received call step's line: the envelope id, when its speaker said it and when we stored it
/// (ms).
pub struct Received<'a> {
    /// The envelope's id, which the line keeps.
    pub line_id: &'a str,
    /// When its speaker said it, ms since the epoch.
    pub at: i64,
    /// When we stored it, ms since the epoch.
    pub now: i64,
}

/// Refuses (409 `too_many_calls`, with `why`) a new call with `peer` past `max_open_calls_per_peer`
/// or `max_open_calls`.
fn room(tx: &Tx<'_>, peer: &agentmesh_api::PeerId, why: &str) -> Result<(), Error> {
    let config = tx.node().config();
    if tx.open_calls(Some(peer))? >= i64::from(config.max_open_calls_per_peer)
        || tx.open_calls(None)? >= i64::from(config.max_open_calls)
    {
        return Err(Error::conflict(ErrorCode::TooManyCalls, why));
    }
    Ok(())
}

fn unknown(call_id: &str) -> Error {
    Error::conflict(ErrorCode::UnknownCall, format!("no call {call_id} with you"))
}

fn line_kind(op: &CallOp) -> LineKind {
    match op {
        CallOp::Invite { .. } => LineKind::Invite,
        CallOp::Accept => LineKind::Accept,
        CallOp::Reject { .. } => LineKind::Reject,
        CallOp::Say { .. } => LineKind::Say,
        CallOp::File { .. } => LineKind::File,
        CallOp::End { .. } => LineKind::End,
        CallOp::Escalate { .. } => LineKind::Escalate,
        CallOp::Resolved { .. } => LineKind::Resolved,
    }
}

/// Applies a step `peer` sent about one of its calls with us, inside the pipeline's
/// transaction: the call's new state, the line in its transcript, a `call` event. Refused
/// (nothing stored): a call of another peer or none (404 `unknown_call`), an invitation under an
/// id another peer holds (409 `duplicate_call`) or past the open-call limits (409
/// `too_many_calls`), an answer to a call the peer did not receive, a line in a call we have not
/// taken (409 `call_state`).
pub fn receive(tx: &Tx<'_>, peer: &Peer, body: CallBody, line: &Received<'_>) -> Result<(), Error> {
    let CallBody { call_id, op } = body;
    let from = &peer.agent_id;
    let existing = match tx.call(&call_id)? {
        Some(call) if &call.peer_id != from => {
            if matches!(op, CallOp::Invite { .. }) {
                return Err(Error::conflict(ErrorCode::DuplicateCall, "this call id is taken; ring with a fresh one"));
            }
            return Err(unknown(&call_id));
        }
        other => other,
    };
    let mut call = match (existing, &op) {
        (None, CallOp::Invite { topic, ring_until }) => {
            room(tx, from, "this agent has too many open calls; try later")?;
            // Rings until the caller's deadline, on our clock, at most a day: an invitation that
            // arrives after it (the peer was offline) is a missed call at once.
            let until = (*ring_until).min(i64::MAX as u64) as i64;
            let until = until.min(line.now.saturating_add(MAX_RING_MS));
            let missed = until <= line.now;
            let call = Call {
                call_id: call_id.clone(),
                peer_id: from.clone(),
                direction: Direction::Incoming,
                topic: topic.clone(),
                state: if missed { CallState::Missed } else { CallState::Ringing },
                reason: None,
                ended_by: None,
                created_at: line.at,
                ring_until: until,
                answered_at: None,
                ended_at: missed.then_some(line.now),
                lines: 0,
                waiting_for_owner: None,
            };
            tx.insert_call(&call)?;
            call
        }
        (None, _) => return Err(unknown(&call_id)),
        // The same invitation again under another envelope id: nothing changes.
        (Some(_), CallOp::Invite { .. }) => return Ok(()),
        (Some(call), _) => call,
    };
    match &op {
        CallOp::Invite { .. } => {}
        CallOp::Accept | CallOp::Reject { .. } if call.direction != Direction::Outgoing => {
            return Err(Error::conflict(ErrorCode::CallState, format!("{call_id} is your call: only we answer it")));
        }
        CallOp::Accept => match call.state {
            CallState::Ringing => {
                call.state = CallState::Active;
                call.answered_at = Some(line.at);
            }
            // Answered after it rang out here: the peer is told, once. (A call we withdrew has
            // our `end` on its way; one that ended after its answer got here by another line.)
            CallState::Missed => {
                let told = tx.call_lines(&call_id)?.iter().any(|l| l.speaker == Side::Us && l.kind == LineKind::End);
                record(tx, line, &call, &op)?;
                if !told {
                    let end = queue(tx, peer, &call_id, CallOp::End { reason: Some("not answered in time".into()) })?;
                    emit(tx, &call_id, Some(end))?;
                }
                return Ok(());
            }
            CallState::Active | CallState::Rejected | CallState::Ended => {}
        },
        CallOp::Reject { reason } => {
            if matches!(call.state, CallState::Ringing | CallState::Missed) {
                call.state = CallState::Rejected;
                call.reason = reason.clone();
                call.ended_by = Some(Side::Peer);
                call.ended_at = Some(line.now);
            }
        }
        CallOp::Say { .. } | CallOp::File { .. } => {
            if call.direction == Direction::Incoming && call.answered_at.is_none() {
                return Err(Error::conflict(
                    ErrorCode::CallState,
                    format!("{call_id} has not been answered: wait for the answer before speaking"),
                ));
            }
            // The callee speaks: it took the call, even if its acceptance is still on its way.
            if call.state == CallState::Ringing {
                call.state = CallState::Active;
                call.answered_at = Some(line.at);
            }
        }
        CallOp::End { reason } => {
            if call.state.is_open() {
                call.state = CallState::Ended;
                call.reason = reason.clone();
                call.ended_by = Some(Side::Peer);
                call.ended_at = Some(line.now);
            }
        }
        // The peer waits for its owner, or its owner answered: a line, no change of state.
        CallOp::Escalate { .. } | CallOp::Resolved { .. } => {}
    }
    tx.update_call(&call)?;
    if let CallOp::File { name, data } = &op
        && tx.call_line(&call_id, line.line_id)?.is_none()
    {
        let bytes = agentmesh_core::b64::decode(data)
            .ok_or_else(|| Error::invalid(ErrorCode::MalformedBody, "data must be base64"))?;
        crate::service::files::receive_inline(tx, peer, &call_id, name, &bytes, line.now)?;
    }
    record(tx, line, &call, &op)
}

/// Stores a received line and emits the call's event.
fn record(tx: &Tx<'_>, line: &Received<'_>, call: &Call, op: &CallOp) -> Result<(), Error> {
    let view = CallLine {
        line_id: line.line_id.to_owned(),
        call_id: call.call_id.clone(),
        speaker: Side::Peer,
        kind: line_kind(op),
        text: op.text().map(str::to_owned),
        at: line.at,
        status: None,
        delivered_at: Some(line.now),
    };
    if tx.insert_call_line(&view, Some(line.now))? {
        emit(tx, &call.call_id, Some(view))?;
    }
    Ok(())
}

/// Emits the call's `call` event as it stands now, with the line that changed it; returns it.
pub fn emit(tx: &Tx<'_>, call_id: &str, line: Option<CallLine>) -> Result<Call, Error> {
    let call = tx.call(call_id)?.ok_or_else(|| Error::internal("a call vanished"))?;
    tx.emit(Event::Call { call: call.clone(), line });
    Ok(call)
}

/// Queues `op` to `peer` and adds it to the transcript as our line.
pub fn queue(tx: &Tx<'_>, peer: &Peer, call_id: &str, op: CallOp) -> Result<CallLine, Error> {
    let kind = line_kind(&op);
    let text = op.text().map(str::to_owned);
    let what = Outgoing::Call(CallBody { call_id: call_id.to_owned(), op });
    let outbound = tx.node().adapters().get(peer.protocol).prepare(tx.node(), peer, what)?;
    tx.enqueue(&outbound)?;
    let line = CallLine {
        line_id: outbound.id,
        call_id: call_id.to_owned(),
        speaker: Side::Us,
        kind,
        text,
        at: outbound.created_at,
        status: Some(MessageStatus::Queued),
        delivered_at: None,
    };
    tx.insert_call_line(&line, None)?;
    Ok(line)
}

/// The peer, when we may call it (or delegate to it) now: a contact over our own protocol.
pub fn callable(node: &Node, store: &Store, peer: &Peer) -> Result<(), Error> {
    if let Some(error) = not_sendable(node, store, peer)? {
        return Err(error);
    }
    if !node.adapters().get(peer.protocol).can(Capability::Calls) {
        return Err(Error::conflict(
            ErrorCode::UnsupportedByPeer,
            format!(
                "{} speaks {}, which has no calls or tasks; send it a message instead",
                peer.agent_id, peer.protocol
            ),
        ));
    }
    Ok(())
}

/// Refuses (400 `invalid_argument`, naming `what`) a note over [`MAX_CALL_NOTE_CHARS`] characters.
pub fn check_note(what: &str, note: Option<&str>) -> Result<(), Error> {
    if note.is_some_and(|n| n.chars().count() > MAX_CALL_NOTE_CHARS) {
        return Err(Error::invalid(ErrorCode::InvalidArgument, format!("{what} is limited to 1000 characters")));
    }
    Ok(())
}

/// Our call `call_id` and its peer, for a step of ours; a ringing call past its time is marked
/// missed first.
fn ours(tx: &Tx<'_>, call_id: &str, now: i64) -> Result<(Call, Peer), Error> {
    let mut call =
        tx.call(call_id)?.ok_or_else(|| Error::conflict(ErrorCode::UnknownCall, format!("no call {call_id}")))?;
    if call.state == CallState::Ringing && call.ring_until <= now {
        call.state = CallState::Missed;
        call.ended_at = Some(now);
        tx.update_call(&call)?;
        call = emit(tx, call_id, None)?;
    }
    let peer = tx.peer(&call.peer_id)?.ok_or_else(|| Error::internal("a call's peer is missing"))?;
    Ok((call, peer))
}

fn wrong_state(call: &Call, wanted: &str) -> Error {
    let why = match &call.reason {
        Some(r) => format!(" ({r})"),
        None => String::new(),
    };
    Error::conflict(ErrorCode::CallState, format!("{} is {}{why}: {wanted}", call.call_id, call.state))
}

/// `POST /control/calls`: rings a contact.
pub async fn place(node: &Arc<Node>, args: CallArgs) -> Result<CallReply, Error> {
    check_note("the topic", Some(&args.topic))?;
    let ring_ms = args.ring_secs.unwrap_or(node.config().call_ring_secs).clamp(1, 86_400).saturating_mul(1000) as i64;
    node.transact(move |tx| {
        let peer = resolve(tx, &args.to)?;
        callable(tx.node(), tx, &peer)?;
        room(tx, &peer.agent_id, "too many open calls (`max_open_calls`, `max_open_calls_per_peer`): end some first")?;
        let now = now_ms() as i64;
        let call = Call {
            call_id: new_call_id(),
            peer_id: peer.agent_id.clone(),
            direction: Direction::Outgoing,
            topic: args.topic.clone(),
            state: CallState::Ringing,
            reason: None,
            ended_by: None,
            created_at: now,
            ring_until: now.saturating_add(ring_ms),
            answered_at: None,
            ended_at: None,
            lines: 0,
            waiting_for_owner: None,
        };
        tx.insert_call(&call)?;
        let invite = CallOp::Invite { topic: args.topic, ring_until: call.ring_until as u64 };
        let line = queue(tx, &peer, &call.call_id, invite)?;
        Ok(CallReply { call: emit(tx, &call.call_id, Some(line))? })
    })
    .await
}

/// `POST /control/calls/{id}/answer`: takes or declines a ringing incoming call.
pub async fn answer(node: &Arc<Node>, call_id: String, args: AnswerArgs) -> Result<CallReply, Error> {
    check_note("the reason", args.reason.as_deref())?;
    node.transact(move |tx| {
        let now = now_ms() as i64;
        let (mut call, peer) = ours(tx, &call_id, now)?;
        if call.direction != Direction::Incoming {
            return Err(Error::conflict(ErrorCode::CallState, format!("{call_id} is our call: the peer answers it")));
        }
        if call.state != CallState::Ringing {
            return Err(wrong_state(&call, "only a ringing call can be answered"));
        }
        callable(tx.node(), tx, &peer)?;
        let op = if args.accept {
            call.state = CallState::Active;
            call.answered_at = Some(now);
            CallOp::Accept
        } else {
            call.state = CallState::Rejected;
            call.reason = args.reason.clone();
            call.ended_by = Some(Side::Us);
            call.ended_at = Some(now);
            CallOp::Reject { reason: args.reason }
        };
        tx.update_call(&call)?;
        let line = queue(tx, &peer, &call_id, op)?;
        Ok(CallReply { call: emit(tx, &call_id, Some(line))? })
    })
    .await
}

/// A line `sendfile <name> <base64>` (p2p-comm's way to pass a small file in a call) as a file
/// step; `None` for any other line. Errors: the name or data out of shape, the file over
/// [`MAX_INLINE_FILE_BYTES`](agentmesh_core::call::MAX_INLINE_FILE_BYTES) (send it with
/// `send-file` instead).
fn inline_file(text: &str) -> Result<Option<CallOp>, Error> {
    let Some(rest) = text.strip_prefix("sendfile ") else { return Ok(None) };
    let mut parts = rest.trim().splitn(2, ' ');
    let (name, data) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default().trim());
    let op = CallOp::File { name: name.to_owned(), data: data.to_owned() };
    op.check().map_err(|e| {
        let hint = if e.contains("64 KiB") {
            "; send it with `agentmesh send-file <peer> <path> --call <call id>`"
        } else {
            ""
        };
        Error::invalid(ErrorCode::InvalidArgument, format!("sendfile <name> <base64>: {e}{hint}"))
    })?;
    Ok(Some(op))
}

/// `POST /control/calls/{id}/say`: says something in an active call; `sendfile <name> <base64>`
/// sends a small file inline instead.
pub async fn say(node: &Arc<Node>, call_id: String, args: SayArgs) -> Result<LineReply, Error> {
    if args.text.is_empty() {
        return Err(Error::invalid(ErrorCode::EmptyMessage, "there is nothing to say: the text is empty"));
    }
    let limit = node.config().max_text_bytes;
    if args.text.len() > limit {
        return Err(Error::TooLarge { what: "message text", limit });
    }
    let op = inline_file(&args.text)?.unwrap_or(CallOp::Say { text: args.text });
    node.transact(move |tx| {
        let (call, peer) = ours(tx, &call_id, now_ms() as i64)?;
        if call.state != CallState::Active {
            let wanted = match (call.state, call.direction) {
                (CallState::Ringing, Direction::Incoming) => "answer it first (`agentmesh answer <call id> accept`)",
                (CallState::Ringing, _) => "wait until the peer answers",
                _ => "it is over; call again to go on",
            };
            return Err(wrong_state(&call, wanted));
        }
        callable(tx.node(), tx, &peer)?;
        let line = queue(tx, &peer, &call_id, op)?;
        let call = emit(tx, &call_id, Some(line.clone()))?;
        Ok(LineReply { call, line })
    })
    .await
}

/// `POST /control/calls/{id}/end`: hangs up an active call, or withdraws our ringing one.
pub async fn end(node: &Arc<Node>, call_id: String, args: EndArgs) -> Result<CallReply, Error> {
    check_note("the reason", args.reason.as_deref())?;
    node.transact(move |tx| {
        let now = now_ms() as i64;
        let (mut call, peer) = ours(tx, &call_id, now)?;
        match (call.state, call.direction) {
            (CallState::Active, _) | (CallState::Ringing, Direction::Outgoing) => {}
            (CallState::Ringing, _) => {
                return Err(wrong_state(&call, "decline it instead (`agentmesh answer <call id> reject`)"));
            }
            _ => return Err(wrong_state(&call, "it is over already")),
        }
        callable(tx.node(), tx, &peer)?;
        call.state = CallState::Ended;
        call.reason = args.reason.clone();
        call.ended_by = Some(Side::Us);
        call.ended_at = Some(now);
        tx.update_call(&call)?;
        let line = queue(tx, &peer, &call_id, CallOp::End { reason: args.reason })?;
        Ok(CallReply { call: emit(tx, &call_id, Some(line))? })
    })
    .await
}

/// `GET /control/calls`.
pub async fn list(node: &Arc<Node>, query: CallsQuery) -> Result<CallList, Error> {
    node.db(move |s| {
        let peer = match &query.peer {
            Some(text) => Some(resolve(s, text)?.agent_id),
            None => None,
        };
        let filter = CallFilter {
            peer,
            state: query.state,
            open: query.open,
            limit: Some(query.limit.unwrap_or(100).min(1000)),
        };
        Ok(CallList { calls: s.calls(&filter)? })
    })
    .await
}

/// `GET /control/calls/{id}`: the call and its transcript.
pub async fn transcript(node: &Arc<Node>, call_id: String) -> Result<Transcript, Error> {
    node.db(move |s| {
        let call =
            s.call(&call_id)?.ok_or_else(|| Error::conflict(ErrorCode::UnknownCall, format!("no call {call_id}")))?;
        Ok(Transcript { lines: s.call_lines(&call_id)?, call })
    })
    .await
}

/// Marks ringing calls whose time is up as missed, each with a `call` event; returns how many.
pub async fn sweep(node: &Arc<Node>) -> Result<usize, Error> {
    let now = now_ms() as i64;
    let due = node.db(move |s| Ok(s.next_ring_deadline()?.is_some_and(|t| t <= now))).await?;
    if !due {
        return Ok(0);
    }
    node.transact(move |tx| {
        let calls = tx.unanswered_calls(now, SWEEP_BATCH)?;
        for mut call in calls.iter().cloned() {
            call.state = CallState::Missed;
            call.ended_at = Some(now);
            tx.update_call(&call)?;
            emit(tx, &call.call_id, None)?;
        }
        Ok(calls.len())
    })
    .await
}
