//! Contact requests, incoming and outgoing.

use agentmesh_api::{ContactRequest, Direction, RequestStatus};
use agentmesh_core::{PeerId, Protocol};
use rusqlite::{OptionalExtension, Row, params};

use crate::peers::{parsed, parsed_opt};
use crate::{Result, Store};

/// A request to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// `req_` + 32 hex.
    pub request_id: String,
    /// Incoming or outgoing.
    pub direction: Direction,
    /// The other agent.
    pub peer_id: PeerId,
    /// What the requester said it wants.
    pub purpose: String,
    /// The protocol it travels over.
    pub protocol: Protocol,
    /// Created, ms.
    pub created_at: i64,
    /// Incoming: the sender's address, when it came over TCP.
    pub source_ip: Option<std::net::IpAddr>,
    /// Incoming: the network its pending share counts against (`source_net` of the address, or
    /// another carrier's key for the sender).
    pub source_net: Option<String>,
}

/// The network an address counts against: its /24 (IPv4) or /48 (IPv6).
pub fn source_net(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// How a request closed: its new status, the owner's text and a machine code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closing<'a> {
    /// The new status (anything but `pending`).
    pub status: RequestStatus,
    /// The deciding owner's text.
    pub reason: Option<&'a str>,
    /// A machine code (a peer's refusal code, `blocked`, `removed`, …).
    pub code: Option<&'a str>,
    /// When, ms.
    pub at: i64,
}

const COLUMNS: &str = "r.request_id, r.direction, r.peer_id, p.name, p.fingerprint, r.protocol, r.purpose, r.status, \
     r.reason, r.reason_code, r.created_at, r.decided_at, r.source_ip, \
     (SELECT o.agent_id FROM peers o WHERE r.direction = 'incoming' AND o.trust = 'trusted' \
        AND o.agent_id != r.peer_id AND o.name = p.name COLLATE NOCASE LIMIT 1)";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ContactRequest> {
    let direction: Direction = parsed(row, 1)?;
    let protocol: Protocol = parsed(row, 5)?;
    Ok(ContactRequest {
        unbound: direction == Direction::Incoming && protocol == Protocol::AgentMeshV1,
        request_id: row.get(0)?,
        direction,
        peer_id: parsed(row, 2)?,
        peer_name: row.get(3)?,
        fingerprint: row.get(4)?,
        protocol,
        purpose: row.get(6)?,
        status: parsed(row, 7)?,
        reason: row.get(8)?,
        reason_code: row.get(9)?,
        created_at: row.get(10)?,
        decided_at: row.get(11)?,
        source_ip: row.get(12)?,
        name_collides_with: parsed_opt(row, 13)?,
    })
}

/// An incoming request waiting for the owner, as [`Store::pending_incoming_requests`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// The request id.
    pub request_id: String,
    /// The requester.
    pub peer_id: PeerId,
    /// The address it came from, when known.
    pub source_ip: Option<std::net::IpAddr>,
    /// Received, ms since the Unix epoch.
    pub created_at: i64,
}

impl Store {
    /// Records a new pending request; `false` if one with this id exists already.
    pub fn insert_request(&self, r: &NewRequest) -> Result<bool> {
        let n = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO contact_requests (request_id, direction, peer_id, purpose, status, protocol, created_at,
                                                     source_ip, source_net)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            r.request_id,
            r.direction.as_str(),
            r.peer_id.as_str(),
            r.purpose,
            r.protocol.as_str(),
            r.created_at,
            r.source_ip.map(|ip| ip.to_string()),
            r.source_net,
        ])?;
        Ok(n == 1)
    }

    /// The request with this id.
    pub fn request(&self, request_id: &str) -> Result<Option<ContactRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM contact_requests r LEFT JOIN peers p ON p.agent_id = r.peer_id WHERE r.request_id = ?1"
        );
        Ok(self.conn.prepare_cached(&sql)?.query_row([request_id], from_row).optional()?)
    }

    /// Requests, newest first, optionally of one direction and one status; at most `limit`.
    pub fn requests(
        &self,
        direction: Option<Direction>,
        status: Option<RequestStatus>,
        limit: u32,
    ) -> Result<Vec<ContactRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM contact_requests r LEFT JOIN peers p ON p.agent_id = r.peer_id
             WHERE (?1 IS NULL OR r.direction = ?1) AND (?2 IS NULL OR r.status = ?2)
             ORDER BY r.created_at DESC, r.request_id LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows =
            stmt.query_map(params![direction.map(|d| d.as_str()), status.map(|s| s.as_str()), limit], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The open (pending) request with `peer_id` in `direction`, newest first if there are
    /// several (older databases).
    pub fn open_request(&self, peer_id: &PeerId, direction: Direction) -> Result<Option<ContactRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM contact_requests r LEFT JOIN peers p ON p.agent_id = r.peer_id
             WHERE r.peer_id = ?1 AND r.direction = ?2 AND r.status = 'pending' ORDER BY r.created_at DESC LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![peer_id.as_str(), direction.as_str()], from_row)
            .optional()?)
    }

    /// Closes a pending request; `false` when it is not pending (or unknown).
    pub fn close_request(&self, request_id: &str, closing: &Closing<'_>) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE contact_requests SET status = ?2, reason = ?3, reason_code = ?4, decided_at = ?5
             WHERE request_id = ?1 AND status = 'pending'",
            )?
            .execute(params![request_id, closing.status.as_str(), closing.reason, closing.code, closing.at])?;
        Ok(n == 1)
    }

    /// Closes every pending request with `peer_id` in `direction` (both when `None`); returns the
    /// ids closed.
    pub fn close_open_requests(
        &self,
        peer_id: &PeerId,
        direction: Option<Direction>,
        closing: &Closing<'_>,
    ) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE contact_requests SET status = ?3, reason = ?4, reason_code = ?5, decided_at = ?6
             WHERE peer_id = ?1 AND (?2 IS NULL OR direction = ?2) AND status = 'pending' RETURNING request_id",
        )?;
        let rows = stmt.query_map(
            params![
                peer_id.as_str(),
                direction.map(|d| d.as_str()),
                closing.status.as_str(),
                closing.reason,
                closing.code,
                closing.at
            ],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Incoming requests still pending that were created before `before` (ms): `(request id,
    /// peer)`, oldest first, at most `limit`.
    pub fn stale_incoming(&self, before: i64, limit: u32) -> Result<Vec<(String, PeerId)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT request_id, peer_id FROM contact_requests
             WHERE direction = 'incoming' AND status = 'pending' AND created_at < ?1 ORDER BY created_at LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before, limit], |r| Ok((r.get(0)?, parsed(r, 1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of incoming requests waiting for the owner that came from network `net` (as
    /// `NewRequest::source_net` gave it).
    pub fn pending_from_net(&self, net: &str) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM contact_requests WHERE status = 'pending' AND direction = 'incoming' AND source_net = ?1",
            )?
            .query_row([net], |r| r.get(0))?)
    }

    /// Pending incoming requests, oldest first, at most `limit`.
    pub fn pending_incoming_requests(&self, limit: u32) -> Result<Vec<PendingRequest>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT request_id, peer_id, source_ip, created_at FROM contact_requests
             WHERE direction = 'incoming' AND status = 'pending' ORDER BY created_at LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(PendingRequest {
                request_id: r.get(0)?,
                peer_id: parsed(r, 1)?,
                source_ip: r.get::<_, Option<String>>(2)?.and_then(|ip| ip.parse().ok()),
                created_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, peer: &str, direction: Direction) -> NewRequest {
        NewRequest {
            request_id: id.into(),
            direction,
            peer_id: PeerId::parse(peer).expect("peer"),
            purpose: "p".into(),
            protocol: Protocol::Native,
            created_at: 1,
            source_ip: None,
            source_net: None,
        }
    }

    #[test]
    fn open_requests_close_once() {
        let s = Store::open_in_memory().expect("db");
        assert!(s.insert_request(&new("req_1", "bob", Direction::Incoming)).expect("insert"));
        assert!(!s.insert_request(&new("req_1", "bob", Direction::Incoming)).expect("again"));
        let bob = PeerId::parse("bob").expect("id");
        assert_eq!(
            s.open_request(&bob, Direction::Incoming).expect("open").map(|r| r.request_id),
            Some("req_1".into())
        );
        assert_eq!(s.open_request(&bob, Direction::Outgoing).expect("open"), None);
        let closing = Closing { status: RequestStatus::Withdrawn, reason: None, code: Some("blocked"), at: 5 };
        assert_eq!(s.close_open_requests(&bob, None, &closing).expect("close"), vec!["req_1".to_string()]);
        assert!(!s.close_request("req_1", &closing).expect("closed already"));
        let r = s.request("req_1").expect("get").expect("exists");
        assert_eq!(
            (r.status, r.reason_code.as_deref(), r.decided_at),
            (RequestStatus::Withdrawn, Some("blocked"), Some(5))
        );
        assert_eq!(s.pending_incoming().expect("count"), 0);
    }
}
