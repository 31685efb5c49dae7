//! Request and reply bodies of the control API, route by route.
//!
//! | route | request | reply |
//! |---|---|---|
//! | `GET /control/status` | — | [`Status`](crate::Status) |
//! | `GET /control/card` | — | [`AgentCard`](agentmesh_core::AgentCard) |
//! | `POST /control/contacts` | [`ContactArgs`] | [`ContactReply`] |
//! | `GET /control/requests` | [`RequestsQuery`] | [`RequestList`] |
//! | `POST /control/requests/{id}/approve` | — | [`RequestReply`] |
//! | `POST /control/requests/{id}/reject` | [`RejectArgs`] | [`RequestReply`] |
//! | `POST /control/requests/reject` | [`RejectManyArgs`] | [`RejectedReply`] |
//! | `POST /control/requests/{id}/withdraw` | — | [`RequestReply`] |
//! | `GET /control/peers` | [`PeersQuery`] | [`PeerList`] |
//! | `GET /control/peers/{peer}` | — | [`PeerReply`] |
//! | `POST /control/peers/{peer}/block`, `…/unblock`; `DELETE /control/peers/{peer}` | — | [`PeerReply`] |
//! | `POST /control/peers/{peer}/repin` | [`RepinArgs`] | [`PeerReply`] |
//! | `GET /control/peers/{peer}/health` | — | [`HealthReply`] |
//! | `POST /control/rotate-key` | — | [`RotateReply`] |
//! | `GET /control/discover` | [`DiscoverQuery`] | [`AgentList`] |
//! | `POST /control/discovered` | [`DiscoveredArgs`] | [`DiscoveredReply`] |
//! | `POST /control/messages` | [`SendArgs`] | [`SendReply`] |
//! | `GET /control/messages` | [`MessagesQuery`] | [`MessageList`] |
//! | `POST /control/messages/{id}/read` | — | [`MessageReply`] |
//! | `POST /control/messages/{id}/retry` | — | [`MessageReply`] |
//! | `POST /control/outbox/clear-failed` | — | [`ClearedReply`] |
//! | `POST /control/calls` | [`CallArgs`] | [`CallReply`] |
//! | `GET /control/calls` | [`CallsQuery`] | [`CallList`] |
//! | `GET /control/calls/{id}` | — | [`Transcript`](crate::Transcript) |
//! | `POST /control/calls/{id}/answer` | [`AnswerArgs`] | [`CallReply`] |
//! | `POST /control/calls/{id}/say` | [`SayArgs`] | [`LineReply`] |
//! | `POST /control/calls/{id}/end` | [`EndArgs`] | [`CallReply`] |
//! | `POST /control/files` | [`SendFileArgs`] | [`TransferReply`] |
//! | `GET /control/files` | [`FilesQuery`] | [`TransferList`] |
//! | `GET /control/files/{id}` | — | [`TransferReply`] |
//! | `POST /control/files/{id}/accept` | — | [`TransferReply`] |
//! | `POST /control/files/{id}/cancel` | [`CancelFileArgs`] | [`TransferReply`] |
//! | `POST /control/tasks` | [`DelegateArgs`] | [`TaskReply`] |
//! | `GET /control/tasks` | [`TasksQuery`] | [`TaskList`] |
//! | `GET /control/tasks/{id}` | — | [`TaskDetail`](crate::TaskDetail) |
//! | `POST /control/tasks/{id}/update` | [`UpdateTaskArgs`] | [`TaskReply`] |
//! | `POST /control/tasks/{id}/message` | [`TaskMessageArgs`] | [`TaskReply`] |
//! | `POST /control/tasks/{id}/cancel` | — | [`TaskReply`] |
//! | `POST /control/escalations` | [`EscalateArgs`] | [`EscalationReply`] |
//! | `GET /control/escalations` | [`EscalationsQuery`] | [`EscalationList`] |
//! | `POST /control/escalations/{id}/resolve` | [`ResolveArgs`] | [`EscalationReply`] |
//! | `POST /control/a2a/clients` | [`A2aClientArgs`] | [`A2aClientReply`] |
//! | `GET /control/a2a/clients` | — | [`A2aClientList`] |
//! | `DELETE /control/a2a/clients/{name}` | — | [`A2aClientReply`] |
//! | `GET /control/events` | [`EventListQuery`] | [`EventList`] |
//! | `GET /v1/events` | [`EventsQuery`] or `Last-Event-ID` | Server-Sent Events: [`LoggedEvent`](crate::LoggedEvent)s, [`StreamNotice`](crate::StreamNotice)s |
//!
//! `{peer}` is an agent id, an alias, a display name, or a prefix of one of these that fits one
//! peer only. Refusals are [`ErrorBody`](crate::ErrorBody)s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{
    A2aClient, Call, CallLine, CallState, ContactRequest, Direction, Escalation, KnownAgent, LoggedEvent, Message,
    MessageStatus, Peer, RequestStatus, Task, TaskState, Transfer,
};
use agentmesh_core::{AgentId, PeerId, Protocol};

/// `POST /control/contacts`: ask an agent for contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactArgs {
    /// The agent's base URL (its card is fetched and verified), or a known peer (id, alias, name
    /// or unique prefix; its stored card is used).
    pub to: String,
    /// Why we want contact (at most 1,000 characters); shown to its owner.
    #[serde(default)]
    pub purpose: String,
    /// The agent id expected at `to` (`add-peer`): another agent there is refused, nothing pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// A name for the peer (1 to 64 characters, not another peer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// How long to wait for the first delivery attempt, ms (default 15,000; 0: do not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Refuse (409 `trust_changes_disabled`) rather than approve when the agent asked us first:
    /// asking back would approve its request. The MCP server sets it unless the owner set
    /// `mcp_allow_trust_changes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_approving: bool,
}

/// How a contact request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactOutcome {
    /// Delivered: the peer's owner decides (V1 peers never answer; their approval shows when
    /// our messages go through).
    Delivered,
    /// Not delivered yet (the peer is unreachable or slow); the outbox keeps trying.
    Queued,
    /// The peer's node refused it: see `refusal`.
    Refused,
    /// The two agents are contacts: already, or now (the peer had asked us, so asking back
    /// approved its request).
    Trusted,
}

/// A peer node's refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Its error code (`blocked_sender`, `too_many_pending_requests`, …).
    pub code: String,
    /// Its message.
    pub message: String,
}

/// Reply of `POST /control/contacts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactReply {
    /// How it went.
    pub outcome: ContactOutcome,
    /// The request (none when the two were contacts already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ContactRequest>,
    /// The peer as stored now.
    pub peer: Peer,
    /// Why the peer refused, for `refused`; the last delivery error, for `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

/// `GET /control/requests` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestsQuery {
    /// Only one direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only requests in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RequestStatus>,
}

/// Reply of `GET /control/requests`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestList {
    /// The requests.
    pub requests: Vec<ContactRequest>,
}

/// `POST /control/requests/{id}/reject` body (optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectArgs {
    /// Told to the requester (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /control/requests/reject`: reject every pending incoming request that matches all the
/// given filters (at least one is required; `older_than_secs: 0` matches every request). At most
/// 1,000 are rejected per call; call again while `more` is true.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectManyArgs {
    /// The address or network the requests came from: an IP address (`203.0.113.7`) or a CIDR
    /// network (`203.0.113.0/24`, `2001:db8::/32`). Requests of unknown origin never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only requests received at least this many seconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_secs: Option<u64>,
    /// Told to each requester (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Reply of `POST /control/requests/reject`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedReply {
    /// Ids of the requests rejected by this call, oldest first.
    pub rejected: Vec<String>,
    /// More pending requests may match: call again.
    pub more: bool,
}

/// Reply of the routes that answer or withdraw a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestReply {
    /// The request as stored now.
    pub request: ContactRequest,
    /// The peer as stored now.
    pub peer: Peer,
}

/// `GET /control/peers` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersQuery {
    /// Also removed peers.
    #[serde(default)]
    pub all: bool,
}

/// Reply of `GET /control/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The peers.
    pub peers: Vec<Peer>,
}

/// Reply of the routes about one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReply {
    /// The peer as stored now.
    pub peer: Peer,
    /// Whether the peer is being told of the change (a signed `contact_update`).
    #[serde(default)]
    pub told: bool,
    /// What the owner can do next, when something is left to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `POST /control/peers/{peer}/repin` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepinArgs {
    /// The fingerprint the owner checked with the peer's owner (`sha256:…`).
    pub fingerprint: String,
}

/// Reply of `POST /control/rotate-key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateReply {
    /// Our agent id (unchanged).
    pub agent_id: AgentId,
    /// Fingerprint of the key rotated away from.
    pub old_fingerprint: String,
    /// Fingerprint of the new key.
    pub fingerprint: String,
    /// Rotations so far.
    pub key_rotations: usize,
    /// The old key is honoured until then, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key_until: Option<i64>,
    /// Contacts sent the new card.
    pub contacts_told: usize,
}

/// `GET /control/discover` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverQuery {
    /// Text to find in names, ids and capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Required capabilities, comma-separated (all must match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// At most this many (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Reply of `GET /control/discover` (and of `agentmesh search`): newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    /// The agents.
    pub agents: Vec<KnownAgent>,
    /// Registry searches: how many matched in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// One agent a scan found: the document it served, verified again by the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoundDocument {
    /// Its protocol.
    pub protocol: Protocol,
    /// The base URL it answered at.
    pub endpoint: String,
    /// The agent card or V1 agent document as served.
    pub document: Value,
}

/// `POST /control/discovered` body (at most 4,096 finds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveredArgs {
    /// What was found.
    pub found: Vec<FoundDocument>,
}

/// What recording a find did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// A new peer, stored as `discovered`.
    New,
    /// A known peer with the same key: only its last-seen time changed.
    Refreshed,
    /// Not stored: the document does not verify, the id is pinned to another key, or it is us.
    Refused,
}

/// One find's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFind {
    /// The id the document claims (empty when it has none).
    pub agent_id: String,
    /// What happened.
    pub outcome: Recorded,
}

/// Reply of `POST /control/discovered`, in the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredReply {
    /// One per find.
    pub recorded: Vec<RecordedFind>,
}

/// `GET /v1/events` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsQuery {
    /// Start after this cursor (0: the whole log kept); absent: new events only. A
    /// `Last-Event-ID` header takes precedence (an SSE client resuming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
}

/// `GET /control/events` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventListQuery {
    /// Events after this cursor, oldest first; absent: the newest ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply of `GET /control/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    /// The events, oldest first.
    pub events: Vec<LoggedEvent>,
    /// The newest event's cursor (0 before the first): `?after=` this sees only new ones.
    pub last: i64,
}

/// `POST /control/messages` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    /// The recipient: agent id, alias, name or unique prefix.
    pub to: String,
    /// The text (1 byte to `max_text_bytes`).
    pub text: String,
    /// Id of the message this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Thread label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// Reply of `POST /control/messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReply {
    /// The new message's id.
    pub message_id: String,
    /// The recipient.
    pub to: PeerId,
    /// `queued`.
    pub status: MessageStatus,
    /// Whether it travels end-to-end encrypted.
    pub encrypted: bool,
    /// Protocol used.
    pub protocol: Protocol,
}

/// `GET /control/messages` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesQuery {
    /// Only one direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only unread incoming messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unread: bool,
    /// Only failed outgoing messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    /// Only messages with this peer (agent id, alias, name or unique prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// At most this many per direction, most recent (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply of `GET /control/messages`: outgoing then incoming, each oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageList {
    /// The messages.
    pub messages: Vec<Message>,
}

/// Reply of the routes about one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReply {
    /// The message as stored now.
    pub message: Message,
}

/// Reply of `POST /control/outbox/clear-failed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearedReply {
    /// Failed entries deleted.
    pub cleared: u64,
}

/// Reply of `GET /control/peers/{peer}/health`: whether the peer answers at its endpoint with
/// the key we pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    /// The peer.
    pub peer: Peer,
    /// Whether it answered with the pinned key.
    pub reachable: bool,
    /// Round trip of the check, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /control/calls`: ring a contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallArgs {
    /// The contact: agent id, alias, name or unique prefix.
    pub to: String,
    /// What the call is about (at most 1,000 characters).
    #[serde(default)]
    pub topic: String,
    /// How long to ring before the call is missed, seconds (default `call_ring_secs`; at most
    /// one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_secs: Option<u64>,
}

/// Reply of the call routes that change a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReply {
    /// The call as it stands now.
    pub call: Call,
}

/// `GET /control/calls` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsQuery {
    /// Only calls with this peer (agent id, alias, name or unique prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Only calls in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CallState>,
    /// Only calls still ringing or active.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// At most this many, newest first (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply of `GET /control/calls`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallList {
    /// The calls.
    pub calls: Vec<Call>,
}

/// `POST /control/calls/{id}/answer` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerArgs {
    /// `true` takes the call, `false` declines it.
    pub accept: bool,
    /// Told to the caller with a rejection (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /control/calls/{id}/say` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SayArgs {
    /// What to say (1 byte to `max_text_bytes`).
    pub text: String,
}

/// Reply of `POST /control/calls/{id}/say`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineReply {
    /// The call.
    pub call: Call,
    /// The line, `queued`.
    pub line: CallLine,
}

/// `POST /control/calls/{id}/end` body (optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndArgs {
    /// Told to the peer (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /control/files`: offer a file to a contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendFileArgs {
    /// The contact: agent id, alias, name or unique prefix.
    pub to: String,
    /// The file to send: an absolute path on the node's machine, a regular file it can read.
    pub path: String,
    /// The name to offer it under (default: the file's own name; the receiver sanitises it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A call with the same contact the file belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// Reply of the file routes about one transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReply {
    /// The transfer as it stands now.
    pub transfer: Transfer,
}

/// `GET /control/files` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesQuery {
    /// Only transfers with this peer (agent id, alias, name or unique prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Only this direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only transfers still offered or under way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// At most this many, newest first (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply of `GET /control/files`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferList {
    /// The transfers.
    pub transfers: Vec<Transfer>,
}

/// `POST /control/files/{id}/cancel` body (optional): stops a transfer either way, or declines
/// an incoming offer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelFileArgs {
    /// Told to the peer (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /control/tasks`: delegate a task to a contact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateArgs {
    /// The contact: agent id, alias, name or unique prefix.
    pub to: String,
    /// What to do (1 byte to `max_text_bytes`).
    pub text: String,
    /// Structured input (any JSON), sent with the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The task id to use (`task_` + 32 hex): a retry with the same id, peer and text returns
    /// the task made the first time instead of a second one. Default: a fresh id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// Reply of the task routes that change a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReply {
    /// The task as it stands now.
    pub task: Task,
}

/// `GET /control/tasks` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasksQuery {
    /// Only tasks with this peer (agent id, alias, name or unique prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// `outgoing`: only tasks we delegated; `incoming`: only tasks delegated to us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only tasks in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// Only tasks not in a final state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// At most this many, most recently changed first (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply of `GET /control/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskList {
    /// The tasks, most recently changed first.
    pub tasks: Vec<Task>,
}

/// `POST /control/tasks/{id}/update`: the worker reports where a task delegated to us stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskArgs {
    /// The new state (not `submitted`).
    pub state: TaskState,
    /// What to tell the delegator with it (a question with `input_required`, an error with
    /// `failed`; at most `max_text_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Results to add to the task (at most 64, each with 1 to 64 parts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<agentmesh_core::task::Artifact>,
}

/// `POST /control/tasks/{id}/message`: the delegator answers a task that asked for input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskMessageArgs {
    /// The answer (1 byte to `max_text_bytes`).
    pub text: String,
}

/// `POST /control/escalations`: our agent asks our owner about a call or task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateArgs {
    /// The call (`call_…`) or task (`task_…`) it is about.
    pub conversation_id: String,
    /// What the owner is asked (1 to 1,000 characters); the peer is told too.
    pub reason: String,
    /// Answers to offer the owner (at most 16, each at most 100 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Reply of the escalation routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationReply {
    /// The escalation as it stands now.
    pub escalation: Escalation,
}

/// `GET /control/escalations` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationsQuery {
    /// Only escalations still waiting for the owner.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// At most this many, newest first (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Reply of `GET /control/escalations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationList {
    /// The escalations, newest first.
    pub escalations: Vec<Escalation>,
}

/// `POST /control/escalations/{id}/resolve`: the owner answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveArgs {
    /// The answer (1 to 1,000 characters); it goes back into the conversation and to the peer.
    pub answer: String,
}

/// `POST /control/a2a/clients`: issue a bearer token for a caller of our A2A endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct A2aClientArgs {
    /// A name for the client: 1 to 64 characters of `[A-Za-z0-9_-]`, not taken.
    pub name: String,
}

/// Reply of `POST` and `DELETE /control/a2a/clients…`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct A2aClientReply {
    /// The client.
    pub client: A2aClient,
    /// Issuing: the file (mode 0600) the node wrote the token to, for the owner to hand over.
    /// The token itself is never in a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// The URL of our A2A agent card.
    pub card_url: String,
}

/// Reply of `GET /control/a2a/clients`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct A2aClientList {
    /// Every client, oldest first.
    pub clients: Vec<A2aClient>,
}
