//! Contact requests, incoming and outgoing.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::messages::Direction;
use crate::{Result, Store, StoreError};

/// State of a contact request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for the other side (outgoing) or for our owner (incoming).
    Pending,
    /// Approved: both sides trust each other.
    Approved,
    /// Rejected: no trust.
    Rejected,
}

impl RequestStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Rejected => "rejected",
        }
    }
}

/// A contact request row.
#[derive(Clone, Debug, Serialize)]
pub struct ContactRequest {
    /// `req_` + 32 hex.
    pub request_id: String,
    /// Incoming (they asked us) or outgoing (we asked them).
    pub direction: Direction,
    /// The other agent.
    pub peer_id: String,
    /// The other agent's display name (from the peers table).
    pub peer_name: Option<String>,
    /// The other agent's fingerprint (from the peers table).
    pub fingerprint: Option<String>,
    /// What the requester said it wants.
    pub purpose: String,
    /// Current state.
    pub status: RequestStatus,
    /// Reason given with a rejection.
    pub reason: Option<String>,
    /// Protocol the request came over.
    pub protocol: String,
    /// Created, ms.
    pub created_at: i64,
    /// Approved or rejected, ms.
    pub decided_at: Option<i64>,
}

const COLUMNS: &str = "r.request_id, r.direction, r.peer_id, p.name, p.fingerprint, r.purpose, r.status, r.reason, r.protocol, r.created_at, r.decided_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(ContactRequest, String, String)> {
    Ok((
        ContactRequest {
            request_id: row.get(0)?,
            direction: Direction::Incoming,
            peer_id: row.get(2)?,
            peer_name: row.get(3)?,
            fingerprint: row.get(4)?,
            purpose: row.get(5)?,
            status: RequestStatus::Pending,
            reason: row.get(7)?,
            protocol: row.get(8)?,
            created_at: row.get(9)?,
            decided_at: row.get(10)?,
        },
        row.get(1)?,
        row.get(6)?,
    ))
}

fn finish((mut r, direction, status): (ContactRequest, String, String)) -> Result<ContactRequest> {
    r.direction = match direction.as_str() {
        "incoming" => Direction::Incoming,
        "outgoing" => Direction::Outgoing,
        other => return Err(StoreError::Corrupt(format!("direction {other:?}"))),
    };
    r.status = match status.as_str() {
        "pending" => RequestStatus::Pending,
        "approved" => RequestStatus::Approved,
        "rejected" => RequestStatus::Rejected,
        other => return Err(StoreError::Corrupt(format!("request status {other:?}"))),
    };
    Ok(r)
}

impl Store {
    /// Records a new request; `false` if one with this id exists already.
    pub fn insert_request(&self, r: &ContactRequest) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO contact_requests (request_id, direction, peer_id, purpose, status, reason, protocol, created_at, decided_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.request_id,
                r.direction.as_str(),
                r.peer_id,
                r.purpose,
                r.status.as_str(),
                r.reason,
                r.protocol,
                r.created_at,
                r.decided_at
            ],
        )?;
        Ok(n == 1)
    }

    /// The request with this id.
    pub fn request(&self, request_id: &str) -> Result<Option<ContactRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM contact_requests r LEFT JOIN peers p ON p.agent_id = r.peer_id WHERE r.request_id = ?1"
        );
        self.conn.query_row(&sql, [request_id], from_row).optional()?.map(finish).transpose()
    }

    /// Requests, newest first, optionally of one direction.
    pub fn requests(&self, direction: Option<Direction>) -> Result<Vec<ContactRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM contact_requests r LEFT JOIN peers p ON p.agent_id = r.peer_id
             WHERE ?1 IS NULL OR r.direction = ?1 ORDER BY r.created_at DESC, r.request_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([direction.map(|d| d.as_str())], from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Moves a pending request to `status`; `false` when it is not pending (or unknown).
    pub fn decide_request(
        &self,
        request_id: &str,
        status: RequestStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE contact_requests SET status = ?2, reason = ?3, decided_at = ?4 WHERE request_id = ?1 AND status = 'pending'",
            params![request_id, status.as_str(), reason, at],
        )?;
        Ok(n == 1)
    }

    /// Number of incoming requests waiting for the owner.
    pub fn pending_incoming(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM contact_requests WHERE direction = 'incoming' AND status = 'pending'",
            )?
            .query_row([], |r| r.get(0))?)
    }

    /// Pending outgoing request ids to `peer_id`.
    pub fn pending_outgoing_to(&self, peer_id: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT request_id FROM contact_requests WHERE peer_id = ?1 AND direction = 'outgoing' AND status = 'pending'",
        )?;
        let rows = stmt.query_map([peer_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
