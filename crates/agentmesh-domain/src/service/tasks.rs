//! Delegated tasks with the lifecycle of A2A 1.0: the delegator creates a task at a contact, the
//! worker moves it through `working`, `input_required` / `auth_required` (asking the delegator)
//! to `completed` (with artifacts), `failed` or `rejected`; the delegator may answer and cancel.
//! Each step is a `message` envelope of the task content type (`agentmesh_core::task`), queued in
//! the outbox and received through the one pipeline; both sides keep the task and its history and
//! survive restarts of either side.
//!
//! The worker numbers its updates; the delegator applies an update only when it is newer than the
//! last one applied and the task is not final, so updates that overtake each other never move a
//! task back. Only the worker moves the state: the delegator's cancel is a request the worker's
//! node grants at once (or answers with the final state the task already had).

use std::sync::Arc;

use agentmesh_api::control::{DelegateArgs, TaskList, TaskReply, TasksQuery, UpdateTaskArgs};
use agentmesh_api::{
    Direction, ErrorCode, Event, MessageStatus, Side, Task, TaskDetail, TaskEntry, TaskEntryKind, TaskState,
};
use agentmesh_core::task::{Artifact, MAX_ARTIFACTS, MAX_PARTS, TaskBody, TaskOp, is_task_id, new_task_id};
use agentmesh_core::time::now_ms;
use agentmesh_store::{Peer, TaskFilter};

use crate::adapter::Outgoing;
use crate::error::Error;
use crate::service::calls::{Received, callable};
use crate::service::contacts::resolve;
use crate::{Node, Tx};

/// Most artifacts a task keeps; an update past it is refused (409 `task_state`).
const MAX_TASK_ARTIFACTS: usize = 256;

/// Why a delegation to us is refused past the open-task limits.
const BUSY: &str = "this agent has too many open tasks; try later";

/// Refuses (409 `too_many_tasks`, with `why`) a new task with `peer` past
/// `max_open_tasks_per_peer` or `max_open_tasks`.
fn room(tx: &Tx<'_>, peer: &agentmesh_api::PeerId, why: &str) -> Result<(), Error> {
    let config = tx.node().config();
    if tx.open_tasks(Some(peer))? >= i64::from(config.max_open_tasks_per_peer)
        || tx.open_tasks(None)? >= i64::from(config.max_open_tasks)
    {
        return Err(Error::conflict(ErrorCode::TooManyTasks, why));
    }
    Ok(())
}

fn unknown(task_id: &str) -> Error {
    Error::conflict(ErrorCode::UnknownTask, format!("no task {task_id} with you"))
}

fn wrong_state(task: &Task, wanted: &str) -> Error {
    Error::conflict(ErrorCode::TaskState, format!("{} is {}: {wanted}", task.task_id, task.state))
}

fn entry_kind(op: &TaskOp) -> TaskEntryKind {
    match op {
        TaskOp::Create { .. } => TaskEntryKind::Create,
        TaskOp::Update { .. } => TaskEntryKind::Update,
        TaskOp::Message { .. } => TaskEntryKind::Message,
        TaskOp::Cancel => TaskEntryKind::Cancel,
        TaskOp::Escalate { .. } => TaskEntryKind::Escalate,
        TaskOp::Resolved { .. } => TaskEntryKind::Resolved,
    }
}

/// The history entry `op` makes (its id, speaker, time and delivery filled in by the caller).
fn entry(task_id: &str, op: &TaskOp) -> TaskEntry {
    let (state, text, artifacts) = match op {
        TaskOp::Create { text, .. } | TaskOp::Message { text } => (None, Some(text.clone()), Vec::new()),
        TaskOp::Update { state, text, artifacts, .. } => (state.parse().ok(), text.clone(), artifacts.clone()),
        TaskOp::Cancel => (None, None, Vec::new()),
        TaskOp::Escalate { reason: note, .. } | TaskOp::Resolved { answer: note, .. } => {
            (None, Some(note.clone()), Vec::new())
        }
    };
    TaskEntry {
        entry_id: String::new(),
        task_id: task_id.to_owned(),
        speaker: Side::Us,
        kind: entry_kind(op),
        state,
        text,
        artifacts,
        at: 0,
        status: None,
        delivered_at: None,
    }
}

/// Adds `new` artifacts to `task`'s: one with the id of an earlier one replaces it, unless
/// `keep_newer` (they come from an older update than one applied: the task's copy is newer).
/// Refused (409 `task_state`) past 256 artifacts or `max_task_artifact_bytes` in all.
fn merge(tx: &Tx<'_>, task: &mut Task, new: &[Artifact], keep_newer: bool) -> Result<bool, Error> {
    let mut changed = false;
    for artifact in new {
        match task.artifacts.iter_mut().find(|a| a.artifact_id == artifact.artifact_id) {
            Some(_) if keep_newer => {}
            Some(old) => {
                changed |= old != artifact;
                *old = artifact.clone();
            }
            None => {
                task.artifacts.push(artifact.clone());
                changed = true;
            }
        }
    }
    if task.artifacts.len() > MAX_TASK_ARTIFACTS {
        return Err(Error::conflict(ErrorCode::TaskState, "a task keeps at most 256 artifacts"));
    }
    let limit = tx.node().config().max_task_artifact_bytes;
    if changed && serde_json::to_vec(&task.artifacts).map_or(usize::MAX, |v| v.len()) > limit {
        return Err(Error::conflict(
            ErrorCode::TaskState,
            format!("a task's artifacts are limited to {limit} bytes (max_task_artifact_bytes)"),
        ));
    }
    Ok(changed)
}

/// The task as its `task` event carries it: without artifacts (the entry carries those it
/// added), and with its text and data only on its creation (elsewhere the text cut to 1,000
/// characters): a small step never logs a large task again.
fn summary(task: &Task, entry: Option<&TaskEntry>) -> Task {
    let mut t = task.clone();
    t.artifacts = Vec::new();
    if entry.map(|e| e.kind) != Some(TaskEntryKind::Create) {
        t.data = None;
        if t.text.chars().count() > 1000 {
            t.text = t.text.chars().take(1000).collect();
        }
    }
    t
}

/// Emits the task's `task` event as it stands now, with the entry that changed it; returns it.
pub fn emit(tx: &Tx<'_>, task_id: &str, entry: Option<TaskEntry>) -> Result<Task, Error> {
    let (task, _) = tx.task(task_id)?.ok_or_else(|| Error::internal("a task vanished"))?;
    tx.emit(Event::Task { task: summary(&task, entry.as_ref()), entry });
    Ok(task)
}

/// Queues `op` to `peer` and adds it to the history as our entry.
pub fn queue(tx: &Tx<'_>, peer: &Peer, task_id: &str, op: TaskOp) -> Result<TaskEntry, Error> {
    let mut line = entry(task_id, &op);
    let what = Outgoing::Task(TaskBody { task_id: task_id.to_owned(), op });
    let outbound = tx.node().adapters().get(peer.protocol).prepare(tx.node(), peer, what)?;
    tx.enqueue(&outbound)?;
    line.entry_id = outbound.id;
    line.at = outbound.created_at;
    line.status = Some(MessageStatus::Queued);
    tx.insert_task_entry(&line, None)?;
    Ok(line)
}

/// Who a task is with: a contact, whose steps travel as envelopes, or a client of our A2A
/// endpoint, which reads them from the endpoint (they are only recorded).
pub enum Counterpart {
    /// A contact.
    Peer(Box<Peer>),
    /// An A2A client, by name.
    A2a,
}

impl Counterpart {
    /// Checks that we may write to it now (an A2A client always may).
    fn writable(&self, tx: &Tx<'_>) -> Result<(), Error> {
        match self {
            Counterpart::Peer(peer) => callable(tx.node(), tx, peer),
            Counterpart::A2a => Ok(()),
        }
    }
}

/// Tells `to` about `op`: queued to a contact, or only recorded for an A2A client; our history
/// entry either way.
pub fn record(tx: &Tx<'_>, to: &Counterpart, task_id: &str, op: TaskOp) -> Result<TaskEntry, Error> {
    match to {
        Counterpart::Peer(peer) => queue(tx, peer, task_id, op),
        Counterpart::A2a => {
            let mut line = entry(task_id, &op);
            line.entry_id = uuid::Uuid::now_v7().to_string();
            line.at = now_ms() as i64;
            tx.insert_task_entry(&line, None)?;
            Ok(line)
        }
    }
}

/// The counterpart of task `task_id` with peer `peer_id`.
pub fn counterpart(tx: &Tx<'_>, task_id: &str, peer_id: &agentmesh_api::PeerId) -> Result<Counterpart, Error> {
    if tx.a2a_task(task_id)?.is_some() {
        return Ok(Counterpart::A2a);
    }
    let peer = tx.peer(peer_id)?.ok_or_else(|| Error::internal("a task's peer is missing"))?;
    Ok(Counterpart::Peer(Box::new(peer)))
}

/// Applies a task step `peer` sent, inside the pipeline's transaction: the task's new state, the
/// entry in its history, a `task` event. Refused (nothing stored): a task of another peer or none
/// (404 `unknown_task`), a new task under an id another peer holds (409 `duplicate_task`) or past
/// the open-task limits (409 `too_many_tasks`), a step the sender's side does not take, or an
/// answer to a final task (409 `task_state`).
pub fn receive(tx: &Tx<'_>, peer: &Peer, body: TaskBody, step: &Received<'_>) -> Result<(), Error> {
    let TaskBody { task_id, op } = body;
    let from = &peer.agent_id;
    let existing = match tx.task(&task_id)? {
        Some((task, _)) if &task.peer_id != from => {
            if matches!(op, TaskOp::Create { .. }) {
                return Err(Error::conflict(ErrorCode::DuplicateTask, "this task id is taken; use a fresh one"));
            }
            return Err(unknown(&task_id));
        }
        other => other,
    };
    // A contact cannot reach tasks of our A2A clients, whatever ids it names.
    if existing.is_some() && tx.a2a_task(&task_id)?.is_some() {
        return Err(unknown(&task_id));
    }
    let (mut task, seq) = match (existing, &op) {
        (None, TaskOp::Create { text, data }) => {
            room(tx, from, BUSY)?;
            let task = Task {
                task_id: task_id.clone(),
                peer_id: from.clone(),
                direction: Direction::Incoming,
                text: text.clone(),
                data: data.clone(),
                state: TaskState::Submitted,
                status_text: None,
                artifacts: Vec::new(),
                cancel_requested_at: None,
                waiting_for_owner: None,
                created_at: step.at,
                updated_at: step.now,
            };
            tx.insert_task(&task)?;
            (task, 0)
        }
        (None, _) => return Err(unknown(&task_id)),
        // The same request again under another envelope id: nothing changes.
        (Some(_), TaskOp::Create { .. }) => return Ok(()),
        (Some(found), _) => found,
    };
    let mut reply = None;
    match &op {
        TaskOp::Create { .. } | TaskOp::Escalate { .. } | TaskOp::Resolved { .. } => {}
        TaskOp::Update { .. } | TaskOp::Message { .. } | TaskOp::Cancel
            if (task.direction == Direction::Outgoing) != matches!(op, TaskOp::Update { .. }) =>
        {
            return Err(Error::conflict(
                ErrorCode::TaskState,
                format!(
                    "{task_id}: that step is not yours to take (only the worker updates, only the delegator answers or cancels)"
                ),
            ));
        }
        TaskOp::Update { seq: n, state, text, artifacts } => {
            let state: TaskState =
                state.parse().map_err(|_| Error::invalid(ErrorCode::MalformedBody, "unknown task state"))?;
            if *n > seq && !task.state.is_final() {
                task.state = state;
                task.status_text = text.clone();
                merge(tx, &mut task, artifacts, false)?;
                task.updated_at = step.now;
                tx.update_task(&task, *n)?;
            } else if merge(tx, &mut task, artifacts, true)? {
                // Older than an update applied (they overtook each other on the wire), or after
                // a final state: its state is history, its new artifacts are kept.
                task.updated_at = step.now;
                tx.update_task(&task, seq)?;
            }
        }
        TaskOp::Message { .. } => {
            if task.state.is_final() {
                return Err(wrong_state(&task, "it takes no more input"));
            }
            // The answer the worker waited for: it goes on.
            if matches!(task.state, TaskState::InputRequired | TaskState::AuthRequired) {
                task.state = TaskState::Working;
                task.status_text = None;
                task.updated_at = step.now;
                tx.update_task(&task, seq + 1)?;
                reply = Some(TaskOp::Update {
                    seq: seq + 1,
                    state: TaskState::Working.to_string(),
                    text: None,
                    artifacts: vec![],
                });
            }
        }
        TaskOp::Cancel => {
            // Granted at once; the delegator learns the state the task ends in either way.
            if !task.state.is_final() {
                task.state = TaskState::Canceled;
                task.cancel_requested_at = Some(step.at);
                task.updated_at = step.now;
            }
            tx.update_task(&task, seq + 1)?;
            reply = Some(TaskOp::Update {
                seq: seq + 1,
                state: task.state.to_string(),
                text: task.status_text.clone(),
                artifacts: vec![],
            });
        }
    }
    let mut line = entry(&task_id, &op);
    line.entry_id = step.line_id.to_owned();
    line.speaker = Side::Peer;
    line.at = step.at;
    line.delivered_at = Some(step.now);
    if tx.insert_task_entry(&line, Some(step.now))? {
        emit(tx, &task_id, Some(line))?;
    }
    if let Some(op) = reply {
        let ours = queue(tx, peer, &task_id, op)?;
        emit(tx, &task_id, Some(ours))?;
    }
    Ok(())
}

/// Our task `task_id` and who it is with, with the worker's last update number.
fn ours(tx: &Tx<'_>, task_id: &str) -> Result<(Task, u64, Counterpart), Error> {
    let (task, seq) =
        tx.task(task_id)?.ok_or_else(|| Error::conflict(ErrorCode::UnknownTask, format!("no task {task_id}")))?;
    let with = counterpart(tx, task_id, &task.peer_id)?;
    Ok((task, seq, with))
}

fn check_text(node: &Node, what: &'static str, text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Err(Error::invalid(ErrorCode::EmptyMessage, format!("{what} is empty")));
    }
    let limit = node.config().max_text_bytes;
    if text.len() > limit {
        return Err(Error::TooLarge { what: "message text", limit });
    }
    Ok(())
}

/// `POST /control/tasks`: delegates a task to a contact.
pub async fn delegate(node: &Arc<Node>, args: DelegateArgs) -> Result<TaskReply, Error> {
    check_text(node, "the task text", &args.text)?;
    if let Some(data) = &args.data
        && serde_json::to_vec(data).map_or(0, |v| v.len()) > node.config().max_text_bytes
    {
        return Err(Error::TooLarge { what: "task data", limit: node.config().max_text_bytes });
    }
    if args.task_id.as_deref().is_some_and(|id| !is_task_id(id)) {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "task_id must be task_ followed by 32 lowercase hex"));
    }
    node.transact(move |tx| {
        let peer = resolve(tx, &args.to)?;
        let task_id = args.task_id.clone().unwrap_or_else(new_task_id);
        if let Some((task, _)) = tx.task(&task_id)? {
            // A retry of the same delegation gets the task it made.
            if task.direction == Direction::Outgoing
                && task.peer_id == peer.agent_id
                && task.text == args.text
                && task.data == args.data
            {
                return Ok(TaskReply { task });
            }
            return Err(Error::conflict(ErrorCode::DuplicateTask, format!("{task_id} is in use for another task")));
        }
        callable(tx.node(), tx, &peer)?;
        room(
            tx,
            &peer.agent_id,
            "too many open tasks (`max_open_tasks`, `max_open_tasks_per_peer`): wait for some to finish",
        )?;
        let now = now_ms() as i64;
        let task = Task {
            task_id: task_id.clone(),
            peer_id: peer.agent_id.clone(),
            direction: Direction::Outgoing,
            text: args.text.clone(),
            data: args.data.clone(),
            state: TaskState::Submitted,
            status_text: None,
            artifacts: Vec::new(),
            cancel_requested_at: None,
            waiting_for_owner: None,
            created_at: now,
            updated_at: now,
        };
        tx.insert_task(&task)?;
        let line = queue(tx, &peer, &task_id, TaskOp::Create { text: args.text, data: args.data })?;
        Ok(TaskReply { task: emit(tx, &task_id, Some(line))? })
    })
    .await
}

/// `POST /control/tasks/{id}/update`: the worker (us) reports where a task delegated to us stands.
pub async fn update(node: &Arc<Node>, task_id: String, args: UpdateTaskArgs) -> Result<TaskReply, Error> {
    if let Some(text) = &args.text {
        check_text(node, "the status text", text)?;
    }
    if args.state == TaskState::Submitted {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "a task cannot go back to submitted"));
    }
    if args.artifacts.len() > MAX_ARTIFACTS
        || args.artifacts.iter().any(|a| a.parts.is_empty() || a.parts.len() > MAX_PARTS)
    {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "at most 64 artifacts, each with 1 to 64 parts"));
    }
    node.transact(move |tx| {
        let (mut task, seq, peer) = ours(tx, &task_id)?;
        if task.direction != Direction::Incoming {
            return Err(Error::conflict(ErrorCode::TaskState, format!("{task_id} is ours: the peer works on it")));
        }
        if task.state.is_final() {
            return Err(wrong_state(&task, "it is final"));
        }
        peer.writable(tx)?;
        task.state = args.state;
        task.status_text = args.text.clone();
        merge(tx, &mut task, &args.artifacts, false)?;
        task.updated_at = now_ms() as i64;
        tx.update_task(&task, seq + 1)?;
        let op =
            TaskOp::Update { seq: seq + 1, state: args.state.to_string(), text: args.text, artifacts: args.artifacts };
        let line = record(tx, &peer, &task_id, op)?;
        Ok(TaskReply { task: emit(tx, &task_id, Some(line))? })
    })
    .await
}

/// `POST /control/tasks/{id}/message`: the delegator (us) answers a task it delegated.
pub async fn message(node: &Arc<Node>, task_id: String, text: String) -> Result<TaskReply, Error> {
    check_text(node, "the answer", &text)?;
    node.transact(move |tx| {
        let (task, _, peer) = ours(tx, &task_id)?;
        if task.direction != Direction::Outgoing {
            return Err(Error::conflict(
                ErrorCode::TaskState,
                format!("{task_id} was delegated to us: report with update-task"),
            ));
        }
        if task.state.is_final() {
            return Err(wrong_state(&task, "it takes no more input"));
        }
        peer.writable(tx)?;
        let line = record(tx, &peer, &task_id, TaskOp::Message { text })?;
        Ok(TaskReply { task: emit(tx, &task_id, Some(line))? })
    })
    .await
}

/// `POST /control/tasks/{id}/cancel`: asks the worker to stop a task we delegated.
pub async fn cancel(node: &Arc<Node>, task_id: String) -> Result<TaskReply, Error> {
    node.transact(move |tx| {
        let (mut task, seq, peer) = ours(tx, &task_id)?;
        if task.direction != Direction::Outgoing {
            return Err(Error::conflict(
                ErrorCode::TaskState,
                format!("{task_id} was delegated to us: to stop, update it to failed or rejected"),
            ));
        }
        if task.state.is_final() {
            return Err(wrong_state(&task, "it is over already"));
        }
        peer.writable(tx)?;
        let now = now_ms() as i64;
        task.cancel_requested_at = Some(now);
        task.updated_at = now;
        tx.update_task(&task, seq)?;
        let line = record(tx, &peer, &task_id, TaskOp::Cancel)?;
        Ok(TaskReply { task: emit(tx, &task_id, Some(line))? })
    })
    .await
}

/// `GET /control/tasks`.
pub async fn list(node: &Arc<Node>, query: TasksQuery) -> Result<TaskList, Error> {
    node.db(move |s| {
        let peer = match &query.peer {
            Some(text) => Some(resolve(s, text)?.agent_id),
            None => None,
        };
        let filter = TaskFilter {
            peer,
            direction: query.direction,
            state: query.state,
            open: query.open,
            limit: Some(query.limit.unwrap_or(100).min(1000)),
        };
        Ok(TaskList { tasks: s.tasks(&filter)? })
    })
    .await
}

/// `GET /control/tasks/{id}`: the task and its history.
pub async fn detail(node: &Arc<Node>, task_id: String) -> Result<TaskDetail, Error> {
    node.db(move |s| {
        let (task, _) =
            s.task(&task_id)?.ok_or_else(|| Error::conflict(ErrorCode::UnknownTask, format!("no task {task_id}")))?;
        Ok(TaskDetail { history: s.task_history(&task_id)?, task })
    })
    .await
}

/// The peer id an A2A client's tasks carry.
pub fn a2a_peer_id(client: &str) -> Result<agentmesh_api::PeerId, Error> {
    agentmesh_api::PeerId::parse(&format!("a2a.{client}")).map_err(Error::internal)
}

/// Records a step an A2A client took on its task (the client is the delegator): our history
/// entry as the peer's, the task's new state, a `task` event.
fn a2a_step(tx: &Tx<'_>, task: &mut Task, seq: u64, entry_id: &str, op: TaskOp) -> Result<Task, Error> {
    // The same A2A message again (a retry): the step was taken already, nothing changes.
    if tx.task_history(&task.task_id)?.iter().any(|e| e.entry_id == entry_id) {
        return Ok(task.clone());
    }
    let now = now_ms() as i64;
    match &op {
        TaskOp::Message { .. } if matches!(task.state, TaskState::InputRequired | TaskState::AuthRequired) => {
            task.state = TaskState::Working;
            task.status_text = None;
        }
        TaskOp::Cancel => {
            task.state = TaskState::Canceled;
            task.cancel_requested_at = Some(now);
        }
        _ => {}
    }
    task.updated_at = now;
    tx.update_task(task, seq + 1)?;
    let mut line = entry(&task.task_id, &op);
    line.entry_id = entry_id.to_owned();
    line.speaker = Side::Peer;
    line.at = now;
    line.delivered_at = Some(now);
    tx.insert_task_entry(&line, Some(now))?;
    emit(tx, &task.task_id, Some(line))
}

/// A2A `SendMessage` without a task id: a new task delegated to us by A2A client `client`, in
/// context `context_id`; `message_id` is the client's id for the message.
pub async fn a2a_create(
    node: &Arc<Node>,
    client: String,
    context_id: String,
    message_id: String,
    text: String,
    data: Option<serde_json::Value>,
) -> Result<Task, Error> {
    check_text(node, "the task text", &text)?;
    node.transact(move |tx| {
        // The same A2A message again (a retry of SendMessage): the task it made.
        if let Some(task_id) = tx.a2a_task_by_message(&client, &message_id)? {
            let (task, _) = tx.task(&task_id)?.ok_or_else(|| Error::internal("an A2A task vanished"))?;
            return Ok(task);
        }
        let peer_id = a2a_peer_id(&client)?;
        room(tx, &peer_id, BUSY)?;
        let now = now_ms() as i64;
        let task = Task {
            task_id: new_task_id(),
            peer_id,
            direction: Direction::Incoming,
            text: text.clone(),
            data: data.clone(),
            state: TaskState::Submitted,
            status_text: None,
            artifacts: Vec::new(),
            cancel_requested_at: None,
            waiting_for_owner: None,
            created_at: now,
            updated_at: now,
        };
        tx.insert_task(&task)?;
        tx.insert_a2a_task(&task.task_id, &client, &context_id)?;
        let mut line = entry(&task.task_id, &TaskOp::Create { text, data });
        line.entry_id = message_id;
        line.speaker = Side::Peer;
        line.at = now;
        line.delivered_at = Some(now);
        tx.insert_task_entry(&line, Some(now))?;
        emit(tx, &task.task_id, Some(line))
    })
    .await
}

/// The task `task_id` of A2A client `client` (none for another client's).
fn a2a_own(tx: &Tx<'_>, client: &str, task_id: &str) -> Result<(Task, u64), Error> {
    match (tx.a2a_task(task_id)?, tx.task(task_id)?) {
        (Some((owner, _)), Some(found)) if owner == client => Ok(found),
        _ => Err(unknown(task_id)),
    }
}

/// A2A `SendMessage` naming a task: the client answers it (an input-required task goes on).
pub async fn a2a_message(
    node: &Arc<Node>,
    client: String,
    task_id: String,
    message_id: String,
    text: String,
) -> Result<Task, Error> {
    check_text(node, "the message", &text)?;
    node.transact(move |tx| {
        let (mut task, seq) = a2a_own(tx, &client, &task_id)?;
        if task.state.is_final() {
            return Err(wrong_state(&task, "it takes no more input"));
        }
        a2a_step(tx, &mut task, seq, &message_id, TaskOp::Message { text })
    })
    .await
}

/// A2A `CancelTask`: the client cancels its task (409 `task_state` when it is final already).
pub async fn a2a_cancel(node: &Arc<Node>, client: String, task_id: String) -> Result<Task, Error> {
    node.transact(move |tx| {
        let (mut task, seq) = a2a_own(tx, &client, &task_id)?;
        if task.state.is_final() {
            return Err(wrong_state(&task, "it cannot be canceled"));
        }
        let id = uuid::Uuid::now_v7().to_string();
        a2a_step(tx, &mut task, seq, &id, TaskOp::Cancel)
    })
    .await
}

/// An A2A client's task with its history and context.
pub async fn a2a_detail(node: &Arc<Node>, client: String, task_id: String) -> Result<(TaskDetail, String), Error> {
    node.db(move |s| {
        let (owner, context) = s.a2a_task(&task_id)?.ok_or_else(|| unknown(&task_id))?;
        if owner != client {
            return Err(unknown(&task_id));
        }
        let (task, _) = s.task(&task_id)?.ok_or_else(|| unknown(&task_id))?;
        Ok((TaskDetail { history: s.task_history(&task_id)?, task }, context))
    })
    .await
}
