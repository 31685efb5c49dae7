//! Escalations: our agent asks our owner about a call or a task with a peer. The conversation is
//! marked as waiting for the owner (`waiting_for_owner` on the call or task), the peer is told (a
//! line in its transcript or history), and our owner is notified (an `escalation` event, which the
//! hooks push and the OpenClaw plugin take to the owner's session, never a peer's). The owner's
//! answer goes back into the conversation, to our agent and to the peer. An escalation open longer
//! than `escalation_remind_secs` is announced again, as a reminder, each time that passes, while
//! its call or task goes on.

use std::sync::Arc;

use agentmesh_api::PeerId;
use agentmesh_api::control::{EscalateArgs, EscalationList, EscalationReply, EscalationsQuery};
use agentmesh_api::{ErrorCode, Escalation, EscalationState, Event};
use agentmesh_core::call::CallOp;
use agentmesh_core::task::TaskOp;
use agentmesh_core::time::now_ms;
use agentmesh_store::{EscalationFilter, Peer};

use crate::adapter::Capability;
use crate::error::Error;
use crate::service::{calls, messages, tasks};
use crate::{Node, Tx};

/// Most options an escalation offers, and the longest one in characters.
const MAX_OPTIONS: usize = 16;
const MAX_OPTION_CHARS: usize = 100;

/// Most escalations open about one call or task.
const MAX_OPEN_PER_CONVERSATION: i64 = 4;

/// Most reminders announced per sweep.
const REMIND_BATCH: u32 = 256;

/// A fresh escalation id: `esc_` + 32 lowercase hex.
fn new_escalation_id() -> String {
    agentmesh_core::ids::random_id("esc")
}

/// The peer of a call or task, when we may still tell it something.
fn reachable(tx: &Tx<'_>, peer: &Peer) -> Result<bool, Error> {
    let can = |what| tx.node().adapters().get(peer.protocol).can(what);
    Ok(messages::not_sendable(tx.node(), tx, peer)?.is_none() && can(Capability::Calls) && can(Capability::Tasks))
}

/// Tells the peer of conversation `id` about an escalation (our line in the call or entry in the
/// task) and emits the conversation's event; nothing is queued to a peer we may no longer write to.
fn tell(tx: &Tx<'_>, id: &str, peer_id: &PeerId, escalate: (String, String), resolved: bool) -> Result<(), Error> {
    let (escalation_id, note) = escalate;
    if id.starts_with("call_") {
        let peer = tx.peer(peer_id)?.ok_or_else(|| Error::internal("a call's peer is missing"))?;
        let line = if reachable(tx, &peer)? {
            let op = if resolved {
                CallOp::Resolved { escalation_id, answer: note }
            } else {
                CallOp::Escalate { escalation_id, reason: note }
            };
            Some(calls::queue(tx, &peer, id, op)?)
        } else {
            None
        };
        calls::emit(tx, id, line)?;
    } else {
        let with = tasks::counterpart(tx, id, peer_id)?;
        let send = match &with {
            tasks::Counterpart::Peer(peer) => reachable(tx, peer)?,
            tasks::Counterpart::A2a => true,
        };
        let entry = if send {
            let op = if resolved {
                TaskOp::Resolved { escalation_id, answer: note }
            } else {
                TaskOp::Escalate { escalation_id, reason: note }
            };
            Some(tasks::record(tx, &with, id, op)?)
        } else {
            None
        };
        tasks::emit(tx, id, entry)?;
    }
    Ok(())
}

/// `POST /control/escalations`: our agent asks our owner about a call or task.
pub async fn escalate(node: &Arc<Node>, args: EscalateArgs) -> Result<EscalationReply, Error> {
    let reason = args.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "the reason must be 1 to 1000 characters"));
    }
    if args.options.len() > MAX_OPTIONS
        || args.options.iter().any(|o| o.trim().is_empty() || o.chars().count() > MAX_OPTION_CHARS)
    {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "at most 16 options, each 1 to 100 characters"));
    }
    node.transact(move |tx| {
        let id = args.conversation_id.trim().to_owned();
        let peer_id = if id.starts_with("call_") {
            tx.call(&id)?.map(|c| c.peer_id)
        } else if id.starts_with("task_") {
            tx.task(&id)?.map(|(t, _)| t.peer_id)
        } else {
            None
        };
        let peer_id = peer_id.ok_or_else(|| Error::not_found(format!("no call or task {id}")))?;
        // The owner is one person: an agent cannot bury them in questions.
        let limit = i64::from(tx.node().config().max_open_escalations);
        if tx.open_escalations(Some(&id))? >= MAX_OPEN_PER_CONVERSATION || tx.open_escalations(None)? >= limit {
            return Err(Error::conflict(
                ErrorCode::TooManyEscalations,
                format!(
                    "the owner has {MAX_OPEN_PER_CONVERSATION} questions open about {id}, or {limit} in all: wait \
                     for answers (agentmesh escalations lists them)"
                ),
            ));
        }
        let now = now_ms() as i64;
        let escalation = Escalation {
            escalation_id: new_escalation_id(),
            conversation_id: id.clone(),
            peer_id: peer_id.clone(),
            reason: reason.clone(),
            options: args.options.iter().map(|o| o.trim().to_owned()).collect(),
            state: EscalationState::Open,
            answer: None,
            created_at: now,
            resolved_at: None,
            reminders: 0,
        };
        tx.insert_escalation(&escalation)?;
        tx.emit(Event::Escalation { escalation: escalation.clone(), reminder: false });
        tell(tx, &id, &peer_id, (escalation.escalation_id.clone(), reason), false)?;
        Ok(EscalationReply { escalation })
    })
    .await
}

/// `POST /control/escalations/{id}/resolve`: the owner answers.
pub async fn resolve(node: &Arc<Node>, escalation_id: String, answer: String) -> Result<EscalationReply, Error> {
    let answer = answer.trim().to_owned();
    if answer.is_empty() || answer.chars().count() > 1000 {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "the answer must be 1 to 1000 characters"));
    }
    node.transact(move |tx| {
        let found =
            tx.escalation(&escalation_id)?.ok_or_else(|| Error::not_found(format!("no escalation {escalation_id}")))?;
        if !tx.resolve_escalation(&escalation_id, &answer, now_ms() as i64)? {
            return Err(Error::conflict(
                ErrorCode::AlreadyDecided,
                format!("{escalation_id} was answered already: {}", found.answer.unwrap_or_default()),
            ));
        }
        let escalation = tx.escalation(&escalation_id)?.ok_or_else(|| Error::internal("an escalation vanished"))?;
        tx.emit(Event::Escalation { escalation: escalation.clone(), reminder: false });
        tell(tx, &escalation.conversation_id, &escalation.peer_id, (escalation_id, answer), true)?;
        Ok(EscalationReply { escalation })
    })
    .await
}

/// `GET /control/escalations`.
pub async fn list(node: &Arc<Node>, query: EscalationsQuery) -> Result<EscalationList, Error> {
    node.db(move |s| {
        let filter = EscalationFilter { open: query.open, limit: Some(query.limit.unwrap_or(100).min(1000)) };
        Ok(EscalationList { escalations: s.escalations(&filter)? })
    })
    .await
}

/// Announces again, as reminders, the escalations open for `escalation_remind_secs` since they
/// were raised or last announced; returns how many.
pub async fn remind(node: &Arc<Node>) -> Result<usize, Error> {
    let every = node.config().escalation_remind_secs;
    if every == 0 {
        return Ok(0);
    }
    let now = now_ms() as i64;
    let before = now.saturating_sub(i64::try_from(every.saturating_mul(1000)).unwrap_or(i64::MAX));
    node.transact(move |tx| {
        let due = tx.remind_escalations(before, now, REMIND_BATCH)?;
        for escalation in &due {
            tx.emit(Event::Escalation { escalation: escalation.clone(), reminder: true });
        }
        Ok(due.len())
    })
    .await
}
