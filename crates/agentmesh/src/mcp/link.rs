//! The MCP server's line to the node: a control API client re-made from `node.json` and
//! `control.token` whenever they change (so a node restart does not end an MCP session), tool
//! errors with our error codes, and waiting on the node's event log.

use std::sync::Mutex;
use std::time::Duration;

use agentmesh_api::control::EventListQuery;
use agentmesh_api::{ErrorCode, LoggedEvent};
use agentmesh_client::{Client, ClientError, StreamItem};
use agentmesh_node::Home;
use rmcp::model::CallToolResult;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

/// A failed tool call as the MCP client sees it: `isError: true` with structured content
/// `{"error":{"code","message"}}` (and the same JSON as text).
#[derive(Debug)]
pub(super) struct ToolError {
    /// Machine code: the node's (`not_trusted`, `ambiguous_peer`, …) or ours
    /// (`node_not_running`, `invalid_argument`, `trust_changes_disabled`, …).
    pub(super) code: String,
    /// One line for a person (or a model).
    pub(super) message: String,
}

impl ToolError {
    /// An error with `code` and `message`.
    pub(super) fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ToolError { code: code.into(), message: message.into() }
    }

    /// `invalid_argument`.
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        ToolError::new(ErrorCode::InvalidArgument.as_str(), message)
    }

    /// The tool result carrying it.
    pub(super) fn into_result(self) -> CallToolResult {
        CallToolResult::structured_error(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

/// A successful tool result: `value` as structured content and as text.
pub(super) fn reply<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => ToolError::new(ErrorCode::Internal.as_str(), format!("encoding the reply: {e}")).into_result(),
    }
}

/// A tool's outcome as the MCP client sees it.
pub(super) fn outcome<T: Serialize>(result: Result<T, ToolError>) -> CallToolResult {
    match result {
        Ok(value) => reply(&value),
        Err(e) => e.into_result(),
    }
}

/// How the node is reached.
pub(super) struct NodeLink {
    home: Home,
    /// The client for the `node.json` and token last read: kept while they stay the same, so
    /// its connection pool survives between calls.
    cached: Mutex<Option<(String, String, Client)>>,
}

impl NodeLink {
    /// For the node of `home`.
    pub(super) fn new(home: Home) -> Self {
        NodeLink { home, cached: Mutex::new(None) }
    }

    /// The home.
    pub(super) fn home(&self) -> &Home {
        &self.home
    }

    fn not_running(&self) -> ToolError {
        ToolError::new(
            ErrorCode::NodeNotRunning.as_str(),
            format!(
                "no node is running for {home}; its owner starts one with `agentmesh up --home {home}`",
                home = self.home.root().display()
            ),
        )
    }

    /// A client for the node running now, or `node_not_running`.
    pub(super) fn client(&self) -> Result<Client, ToolError> {
        let Some((info, token)) = self.home.runtime() else { return Err(self.not_running()) };
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((url, known, client)) = cached.as_ref()
            && *url == info.control_url
            && *known == token
        {
            return Ok(client.clone());
        }
        let client = Client::new(&info.control_url, &token).map_err(|e| self.error(e))?;
        *cached = Some((info.control_url, token, client.clone()));
        Ok(client)
    }

    /// A client error as a tool error: an unreachable control API means the node stopped.
    pub(super) fn error(&self, e: ClientError) -> ToolError {
        match e {
            ClientError::Unreachable { .. } => self.not_running(),
            // The node's message lists the candidates by name, and some may be strangers whose
            // names are their own words (see `peer_text`): the agent gets the code and a way out.
            other if other.error_code() == Some(ErrorCode::AmbiguousPeer) => ToolError::new(
                other.code(),
                "that name or prefix fits more than one peer: give the agent id (the `peers` tool lists them)",
            ),
            other => ToolError::new(other.code(), other.to_string()),
        }
    }

    /// The newest event's cursor (0 before the first).
    pub(super) async fn last_cursor(&self) -> Result<i64, ToolError> {
        let client = self.client()?;
        let page =
            client.event_list(&EventListQuery { after: None, limit: Some(1) }).await.map_err(|e| self.error(e))?;
        Ok(page.last)
    }

    /// Events after cursor `after` that `want` accepts, oldest first, as soon as there is at
    /// least one; an empty list when `deadline` passes first. Also returns the cursor to go on
    /// from (the last event looked at). Reads the log first, then follows the live stream,
    /// reconnecting (quietly, until the deadline) when the node restarts.
    pub(super) async fn wait_events(
        &self,
        mut after: i64,
        deadline: Instant,
        want: impl Fn(&LoggedEvent) -> bool,
    ) -> Result<(Vec<LoggedEvent>, i64), ToolError> {
        const PAGE: u32 = 1000;
        loop {
            let client = self.client()?;
            let page = client
                .event_list(&EventListQuery { after: Some(after), limit: Some(PAGE) })
                .await
                .map_err(|e| self.error(e))?;
            if after > page.last {
                // Another node's cursor, or one from before its database was replaced.
                return Err(ToolError::invalid(format!(
                    "cursor {after} is past this node's newest event ({}); pass a cursor this node returned",
                    page.last
                )));
            }
            let full = page.events.len() >= PAGE as usize;
            let mut found = Vec::new();
            for event in page.events {
                after = after.max(event.seq);
                if want(&event) {
                    found.push(event);
                }
            }
            if !found.is_empty() {
                return Ok((found, after));
            }
            if !full {
                break;
            }
        }
        let mut pause = Duration::from_millis(100);
        loop {
            if Instant::now() >= deadline {
                return Ok((Vec::new(), after));
            }
            let stream = match self.client() {
                Ok(client) => tokio::time::timeout_at(deadline, client.events(Some(after))).await,
                Err(_) => Ok(Err(ClientError::Unreachable { message: String::new() })),
            };
            match stream {
                Err(_) => return Ok((Vec::new(), after)),
                Ok(Ok(mut stream)) => {
                    pause = Duration::from_millis(100);
                    loop {
                        match tokio::time::timeout_at(deadline, stream.next()).await {
                            Err(_) => return Ok((Vec::new(), after)),
                            Ok(Some(Ok(StreamItem::Event(event)))) => {
                                after = after.max(event.seq);
                                if want(&event) {
                                    return Ok((vec![*event], after));
                                }
                            }
                            Ok(Some(Ok(StreamItem::Unknown { seq, .. }))) => after = after.max(seq),
                            Ok(Some(Ok(_))) => {}
                            // The node closed the stream or stopped: connect again.
                            Ok(None | Some(Err(_))) => break,
                        }
                    }
                }
                // A refusal (e.g. too many streams) or a stopped node: try again shortly.
                Ok(Err(_)) => {}
            }
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}
