//! The outbox (what we send), the inbox (what we received) and the accepted-envelope log.

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

/// Which way a message or request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received by us.
    Incoming,
    /// Sent by us.
    Outgoing,
}

impl Direction {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

/// Something to put in the outbox.
#[derive(Clone, Debug)]
pub struct NewOutbound {
    /// Message id (also the envelope id on the wire).
    pub id: String,
    /// `message`, `receipt`, `contact_request` or `contact_response`.
    pub kind: String,
    /// Recipient.
    pub peer_id: String,
    /// Protocol to deliver with (`agentmesh/1` or `openclaw-agent-mesh/v1`).
    pub protocol: String,
    /// What to send: the sealed, unsigned envelope JSON (native) or the unsigned V1 body JSON.
    pub payload: String,
    /// Our own plaintext, kept for listings (messages only).
    pub text: Option<String>,
    /// MIME type of the text.
    pub content_type: String,
    /// Answered message id.
    pub reply_to: Option<String>,
    /// Thread label.
    pub thread: Option<String>,
    /// Whether the body travels end-to-end encrypted.
    pub encrypted: bool,
    /// Created, ms.
    pub created_at: i64,
    /// Give up after this instant, ms.
    pub expires_at: i64,
}

/// A due outbox entry, as the delivery worker sees it.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    /// Row sequence number.
    pub seq: i64,
    /// Message id.
    pub id: String,
    /// Envelope kind.
    pub kind: String,
    /// Recipient.
    pub peer_id: String,
    /// Protocol to deliver with.
    pub protocol: String,
    /// What to send (see [`NewOutbound::payload`]).
    pub payload: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Created, ms.
    pub created_at: i64,
    /// Expiry, ms.
    pub expires_at: i64,
}

/// A received message, decrypted and verified, ready to store.
#[derive(Clone, Debug)]
pub struct IncomingMessage {
    /// Sender.
    pub peer_id: String,
    /// Message id.
    pub id: String,
    /// Protocol it came over.
    pub protocol: String,
    /// Whether it was end-to-end encrypted.
    pub encrypted: bool,
    /// MIME type.
    pub content_type: String,
    /// Body text.
    pub text: String,
    /// Answered message id.
    pub reply_to: Option<String>,
    /// Thread label.
    pub thread: Option<String>,
    /// Sender's creation time, ms.
    pub created_at: i64,
    /// When we stored it, ms.
    pub received_at: i64,
}

/// One envelope to record as accepted, with the message to store if it is one.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// Sender.
    pub peer_id: String,
    /// Envelope id.
    pub id: String,
    /// Envelope kind.
    pub kind: String,
    /// Receipt JSON we answer with.
    pub receipt: String,
    /// When accepted, ms.
    pub at: i64,
    /// Until when the acceptance is remembered for replay detection, ms.
    pub keep_until: i64,
    /// The message to put in the inbox, for `message` envelopes.
    pub message: Option<IncomingMessage>,
}

/// A message as listed to the owner, either direction.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    /// Incoming or outgoing.
    pub direction: Direction,
    /// Message id.
    pub id: String,
    /// The other agent.
    pub peer_id: String,
    /// Envelope kind (`message` in listings).
    pub kind: String,
    /// Body text (our own copy for outgoing).
    pub text: Option<String>,
    /// MIME type.
    pub content_type: String,
    /// Outgoing: `queued`, `sent`, `delivered`, `read`, `failed`. Incoming: `unread`, `read`.
    pub status: String,
    /// Whether the body travelled end-to-end encrypted (V1 messages do not).
    pub encrypted: bool,
    /// Protocol used.
    pub protocol: String,
    /// Answered message id.
    pub reply_to: Option<String>,
    /// Thread label.
    pub thread: Option<String>,
    /// Written, ms.
    pub created_at: i64,
    /// Outgoing: receipt time; incoming: when stored. ms.
    pub delivered_at: Option<i64>,
    /// When read, ms.
    pub read_at: Option<i64>,
    /// Outgoing: delivery attempts so far.
    pub attempts: Option<i64>,
    /// Outgoing: the last delivery error.
    pub last_error: Option<String>,
}

/// Filter for [`Store::messages`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MessageFilter {
    /// Only one direction.
    pub direction: Option<Direction>,
    /// Only unread incoming messages.
    #[serde(default)]
    pub unread: bool,
    /// Only messages with this peer.
    pub peer: Option<String>,
    /// At most this many per direction (default 100, most recent).
    pub limit: Option<u32>,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Known peers.
    pub peers: i64,
    /// Trusted peers.
    pub trusted_peers: i64,
    /// Incoming contact requests waiting for the owner.
    pub pending_requests: i64,
    /// Unread incoming messages.
    pub unread_messages: i64,
    /// Outbox entries not yet delivered (queued or sent).
    pub outbox_depth: i64,
    /// Outbox entries that failed for good.
    pub failed_deliveries: i64,
}

impl From<&IncomingMessage> for Message {
    /// The listing view of a message just stored (unread).
    fn from(m: &IncomingMessage) -> Self {
        Message {
            direction: Direction::Incoming,
            id: m.id.clone(),
            peer_id: m.peer_id.clone(),
            kind: "message".into(),
            text: Some(m.text.clone()),
            content_type: m.content_type.clone(),
            status: "unread".into(),
            encrypted: m.encrypted,
            protocol: m.protocol.clone(),
            reply_to: m.reply_to.clone(),
            thread: m.thread.clone(),
            created_at: m.created_at,
            delivered_at: Some(m.received_at),
            read_at: None,
            attempts: None,
            last_error: None,
        }
    }
}

fn outgoing_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        direction: Direction::Outgoing,
        id: row.get(0)?,
        peer_id: row.get(1)?,
        kind: row.get(2)?,
        text: row.get(3)?,
        content_type: row.get(4)?,
        status: row.get(5)?,
        encrypted: row.get(6)?,
        protocol: row.get(7)?,
        reply_to: row.get(8)?,
        thread: row.get(9)?,
        created_at: row.get(10)?,
        delivered_at: row.get(11)?,
        read_at: row.get(12)?,
        attempts: row.get(13)?,
        last_error: row.get(14)?,
    })
}

const OUTGOING_COLUMNS: &str = "id, peer_id, kind, text, content_type, status, encrypted, protocol, reply_to, thread, created_at, delivered_at, read_at, attempts, last_error";

fn incoming_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let read_at: Option<i64> = row.get(10)?;
    Ok(Message {
        direction: Direction::Incoming,
        id: row.get(0)?,
        peer_id: row.get(1)?,
        kind: "message".into(),
        text: row.get(2)?,
        content_type: row.get(3)?,
        status: if read_at.is_some() { "read" } else { "unread" }.into(),
        encrypted: row.get(4)?,
        protocol: row.get(5)?,
        reply_to: row.get(6)?,
        thread: row.get(7)?,
        created_at: row.get(8)?,
        delivered_at: row.get(9)?,
        read_at,
        attempts: None,
        last_error: None,
    })
}

const INCOMING_COLUMNS: &str =
    "id, peer_id, text, content_type, encrypted, protocol, reply_to, thread, created_at, received_at, read_at";

impl Store {
    /// Writes an entry to the outbox as `queued`, due now.
    pub fn enqueue(&self, m: &NewOutbound) -> Result<()> {
        self.conn.prepare_cached(
            "INSERT INTO outbox (id, kind, peer_id, protocol, payload, text, content_type, reply_to, thread, encrypted,
                                 status, attempts, next_attempt_at, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?11, ?12)",
        )?
        .execute(params![
                m.id,
                m.kind,
                m.peer_id,
                m.protocol,
                m.payload,
                m.text,
                m.content_type,
                m.reply_to,
                m.thread,
                m.encrypted,
                m.created_at,
                m.expires_at
            ])?;
        Ok(())
    }

    /// Up to `limit` entries due at `now`, oldest first.
    pub fn due(&self, now: i64, limit: u32) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, kind, peer_id, protocol, payload, attempts, created_at, expires_at FROM outbox
             WHERE status IN ('queued', 'sent') AND next_attempt_at <= ?1 ORDER BY next_attempt_at, seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit], |r| {
            Ok(OutboxItem {
                seq: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                peer_id: r.get(3)?,
                protocol: r.get(4)?,
                payload: r.get(5)?,
                attempts: r.get(6)?,
                created_at: r.get(7)?,
                expires_at: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next undelivered entry is due, ms; `None` when nothing is pending.
    pub fn next_due(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE status IN ('queued', 'sent')")?
            .query_row([], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Marks entries delivered with their receipts, in one transaction: `(id, receipt JSON, at)`.
    pub fn mark_delivered(&self, delivered: &[(String, String, i64)]) -> Result<()> {
        self.atomic(|s| {
            let mut stmt = s.conn.prepare_cached(
                "UPDATE outbox SET status = 'delivered', receipt = ?2, delivered_at = ?3, last_error = NULL, attempts = attempts + 1
                 WHERE id = ?1 AND status IN ('queued', 'sent')",
            )?;
            for (id, receipt, at) in delivered {
                stmt.execute(params![id, receipt, at])?;
            }
            Ok(())
        })
    }

    /// Records a failed attempt: new status (`queued`, `sent` or `failed`), next attempt time and
    /// error text.
    pub fn mark_attempt(&self, id: &str, status: &str, next_attempt_at: i64, error: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET status = ?2, attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4
                 WHERE id = ?1 AND status IN ('queued', 'sent')",
            )?
            .execute(params![id, status, next_attempt_at, error])?;
        Ok(())
    }

    /// Marks an outgoing message read after a read receipt from `peer_id`; `false` when no such
    /// delivered message exists.
    pub fn mark_outgoing_read(&self, peer_id: &str, id: &str, at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE outbox SET status = 'read', read_at = ?3, delivered_at = COALESCE(delivered_at, ?3)
             WHERE id = ?2 AND peer_id = ?1 AND kind = 'message' AND status IN ('queued', 'sent', 'delivered')",
            params![peer_id, id, at],
        )?;
        Ok(n == 1)
    }

    /// Peers with an undelivered outbox entry of `kind`.
    pub fn peers_awaiting(&self, kind: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT peer_id FROM outbox WHERE status IN ('queued', 'sent') AND kind = ?1")?;
        let rows = stmt.query_map([kind], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets acceptances whose `keep_until` has passed (at most `limit` per call, so one call
    /// never holds the database long); returns how many were dropped.
    pub fn prune_accepted(&self, now: i64, limit: usize) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM accepted WHERE (peer_id, id) IN
                 (SELECT peer_id, id FROM accepted WHERE keep_until < ?1 LIMIT ?2)",
            )?
            .execute(params![now, limit as i64])?)
    }

    /// The receipt we gave when we accepted envelope `id` from `peer_id`, if we did.
    pub fn accepted_receipt(&self, peer_id: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT receipt FROM accepted WHERE peer_id = ?1 AND id = ?2")?
            .query_row([peer_id, id], |r| r.get(0))
            .optional()?)
    }

    /// Records that envelope `id` from `peer_id` was accepted with `receipt`.
    ///
    /// Returns `None` when this is the first acceptance, or `Some(receipt)` with the receipt of
    /// an earlier acceptance of the same `(peer_id, id)` (a replay), in which case nothing changes.
    /// The record is kept until `keep_until` (ms; past the envelope's expiry plus the freshness
    /// window, when a replay would be refused anyway), then [`prune_accepted`](Self::prune_accepted)
    /// drops it.
    pub fn record_accepted(
        &self,
        peer_id: &str,
        id: &str,
        kind: &str,
        receipt: &str,
        at: i64,
        keep_until: i64,
    ) -> Result<Option<String>> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO accepted (peer_id, id, kind, receipt, accepted_at, keep_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![peer_id, id, kind, receipt, at, keep_until])?;
        if inserted == 1 { Ok(None) } else { Ok(Some(self.accepted_receipt(peer_id, id)?.unwrap_or_default())) }
    }

    /// Stores a received message in the inbox.
    pub fn insert_incoming(&self, m: &IncomingMessage) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO inbox (peer_id, id, protocol, encrypted, content_type, text, reply_to, thread, created_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                m.peer_id,
                m.id,
                m.protocol,
                m.encrypted,
                m.content_type,
                m.text,
                m.reply_to,
                m.thread,
                m.created_at,
                m.received_at
            ])?;
        Ok(())
    }

    /// Records accepted envelopes (and stores their messages) in one transaction.
    ///
    /// Returns, per entry, the receipt in force: the new one, or the one stored by an earlier
    /// acceptance of the same `(peer_id, id)`, in which case nothing new is stored.
    pub fn accept(&self, batch: &[Accepted]) -> Result<Vec<String>> {
        self.atomic(|s| {
            let mut out = Vec::with_capacity(batch.len());
            for a in batch {
                if let Some(earlier) = s.record_accepted(&a.peer_id, &a.id, &a.kind, &a.receipt, a.at, a.keep_until)? {
                    out.push(earlier);
                    continue;
                }
                if let Some(m) = &a.message {
                    s.insert_incoming(m)?;
                }
                out.push(a.receipt.clone());
            }
            Ok(out)
        })
    }

    /// Postpones entries being delivered right now until `until` (ms), so the worker does not
    /// pick them twice; a crash mid-delivery leaves them due again at `until`.
    pub fn lease(&self, ids: &[String], until: i64) -> Result<()> {
        self.atomic(|s| {
            let mut stmt = s.conn.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![id, until])?;
            }
            Ok(())
        })
    }

    /// Makes every undelivered entry due now; called at start-up so a restart retries at once.
    pub fn release_leases(&self, now: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE outbox SET next_attempt_at = ?1 WHERE status IN ('queued', 'sent') AND next_attempt_at > ?1",
            [now],
        )?)
    }

    /// Lists messages per the filter: outgoing then incoming, each oldest first.
    pub fn messages(&self, f: &MessageFilter) -> Result<Vec<Message>> {
        let limit = f.limit.unwrap_or(100).min(10_000);
        let mut out = Vec::new();
        if f.direction != Some(Direction::Incoming) && !f.unread {
            let sql = format!(
                "SELECT * FROM (SELECT {OUTGOING_COLUMNS}, seq FROM outbox WHERE kind = 'message' AND (?1 IS NULL OR peer_id = ?1)
                 ORDER BY seq DESC LIMIT ?2) ORDER BY seq"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![f.peer, limit], outgoing_from_row)?;
            out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
        }
        if f.direction != Some(Direction::Outgoing) {
            let sql = format!(
                "SELECT * FROM (SELECT {INCOMING_COLUMNS}, seq FROM inbox WHERE (?1 IS NULL OR peer_id = ?1)
                 AND (?2 = 0 OR read_at IS NULL) ORDER BY seq DESC LIMIT ?3) ORDER BY seq"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![f.peer, f.unread, limit], incoming_from_row)?;
            out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
        }
        Ok(out)
    }

    /// An outgoing message by id.
    pub fn outgoing(&self, id: &str) -> Result<Option<Message>> {
        let sql = format!("SELECT {OUTGOING_COLUMNS} FROM outbox WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id], outgoing_from_row).optional()?)
    }

    /// Incoming messages with this id (ids are unique per sender; normally one).
    pub fn incoming(&self, id: &str) -> Result<Vec<Message>> {
        let sql = format!("SELECT {INCOMING_COLUMNS} FROM inbox WHERE id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([id], incoming_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks an incoming message read; `false` when it was read already or does not exist.
    pub fn mark_incoming_read(&self, peer_id: &str, id: &str, at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE inbox SET read_at = ?3 WHERE peer_id = ?1 AND id = ?2 AND read_at IS NULL",
            params![peer_id, id, at],
        )?;
        Ok(n == 1)
    }

    /// Counters for `status`.
    pub fn stats(&self) -> Result<Stats> {
        Ok(self.conn.query_row(
            "SELECT
               (SELECT COUNT(*) FROM peers),
               (SELECT COUNT(*) FROM peers WHERE trust = 'trusted'),
               (SELECT COUNT(*) FROM contact_requests WHERE direction = 'incoming' AND status = 'pending'),
               (SELECT COUNT(*) FROM inbox WHERE read_at IS NULL),
               (SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sent')),
               (SELECT COUNT(*) FROM outbox WHERE status = 'failed')",
            [],
            |r| {
                Ok(Stats {
                    peers: r.get(0)?,
                    trusted_peers: r.get(1)?,
                    pending_requests: r.get(2)?,
                    unread_messages: r.get(3)?,
                    outbox_depth: r.get(4)?,
                    failed_deliveries: r.get(5)?,
                })
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(id: &str) -> NewOutbound {
        NewOutbound {
            id: id.into(),
            kind: "message".into(),
            peer_id: "p".into(),
            protocol: "agentmesh/1".into(),
            payload: "{}".into(),
            text: Some("hi".into()),
            content_type: "text/plain".into(),
            reply_to: None,
            thread: None,
            encrypted: true,
            created_at: 10,
            expires_at: 1_000,
        }
    }

    #[test]
    fn outbox_lifecycle() {
        let s = Store::open_in_memory().expect("db");
        s.enqueue(&outbound("m1")).expect("enqueue");
        assert_eq!(s.due(5, 10).expect("due").len(), 0, "not due before created_at");
        assert_eq!(s.due(10, 10).expect("due").len(), 1);
        s.mark_attempt("m1", "queued", 50, "connection refused").expect("attempt");
        assert_eq!(s.due(20, 10).expect("due").len(), 0);
        assert_eq!(s.next_due().expect("next"), Some(50));
        s.mark_delivered(&[("m1".into(), "{}".into(), 60)]).expect("delivered");
        assert_eq!(s.next_due().expect("next"), None);
        let m = s.outgoing("m1").expect("get").expect("exists");
        assert_eq!((m.status.as_str(), m.attempts), ("delivered", Some(2)));
        assert!(s.mark_outgoing_read("p", "m1", 70).expect("read"));
        assert!(!s.mark_outgoing_read("other", "m1", 70).expect("wrong peer"));
    }

    #[test]
    fn accept_is_idempotent() {
        let s = Store::open_in_memory().expect("db");
        let msg = IncomingMessage {
            peer_id: "p".into(),
            id: "m1".into(),
            protocol: "agentmesh/1".into(),
            encrypted: true,
            content_type: "text/plain".into(),
            text: "hi".into(),
            reply_to: None,
            thread: None,
            created_at: 1,
            received_at: 2,
        };
        let a = |receipt: &str| Accepted {
            peer_id: "p".into(),
            id: "m1".into(),
            kind: "message".into(),
            receipt: receipt.into(),
            at: 2,
            keep_until: 100,
            message: Some(msg.clone()),
        };
        assert_eq!(s.accept(&[a("r1")]).expect("first"), vec!["r1".to_string()]);
        assert_eq!(s.accept(&[a("r2")]).expect("replay"), vec!["r1".to_string()]);
        assert_eq!(s.messages(&MessageFilter::default()).expect("list").len(), 1);
        assert_eq!(s.stats().expect("stats").unread_messages, 1);
        assert!(s.mark_incoming_read("p", "m1", 3).expect("read"));
        assert!(!s.mark_incoming_read("p", "m1", 4).expect("again"));

        // Replay state is bounded: kept until keep_until, then pruned; the inbox stays.
        assert_eq!(s.prune_accepted(100, 10).expect("prune"), 0);
        assert_eq!(s.accepted_receipt("p", "m1").expect("get").as_deref(), Some("r1"));
        assert_eq!(s.prune_accepted(101, 10).expect("prune"), 1);
        assert_eq!(s.accepted_receipt("p", "m1").expect("get"), None);
        assert_eq!(s.messages(&MessageFilter::default()).expect("list").len(), 1);
    }
}
