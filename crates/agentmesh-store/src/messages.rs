//! The outbox (what we send), the inbox (what we received) and the accepted-envelope log.

use agentmesh_api::{Direction, Message, MessageStatus};
use agentmesh_core::{EnvelopeKind, PeerId, Protocol};
use rusqlite::{OptionalExtension, Row, params};

use crate::peers::parsed;
use crate::{Result, Store};

/// Something to put in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOutbound {
    /// Message id (also the envelope id on the wire).
    pub id: String,
    /// What it carries.
    pub kind: EnvelopeKind,
    /// Recipient.
    pub peer_id: PeerId,
    /// Protocol to deliver with.
    pub protocol: Protocol,
    /// What to send, as the protocol's adapter prepared it (native: the envelope's plaintext
    /// parts, `{"draft":{…}}`, sealed and signed at each delivery; V1: the unsigned body JSON).
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Row sequence number.
    pub seq: i64,
    /// Message id.
    pub id: String,
    /// What it carries.
    pub kind: EnvelopeKind,
    /// Recipient.
    pub peer_id: PeerId,
    /// Protocol to deliver with.
    pub protocol: Protocol,
    /// What to send (see [`NewOutbound::payload`]).
    pub payload: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Of those, how many the peer refused because our clock was off.
    pub clock_refusals: i64,
    /// Created, ms.
    pub created_at: i64,
    /// Expiry, ms.
    pub expires_at: i64,
}

/// A received message, decrypted and verified, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Sender.
    pub peer_id: PeerId,
    /// Message id.
    pub id: String,
    /// Protocol it came over.
    pub protocol: Protocol,
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

impl IncomingMessage {
    /// The listing view of this message just stored (unread).
    pub fn view(&self) -> Message {
        Message {
            direction: Direction::Incoming,
            id: self.id.clone(),
            peer_id: self.peer_id.clone(),
            text: Some(self.text.clone()),
            content_type: self.content_type.clone(),
            status: MessageStatus::Unread,
            encrypted: self.encrypted,
            protocol: self.protocol,
            reply_to: self.reply_to.clone(),
            thread: self.thread.clone(),
            created_at: self.created_at,
            delivered_at: Some(self.received_at),
            read_at: None,
            attempts: None,
            last_error: None,
        }
    }
}

/// A delivery attempt that did not end in a receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The entry.
    pub id: String,
    /// `queued` (the peer cannot have seen it), `sent` (it may have), or `failed` (given up).
    pub status: MessageStatus,
    /// When to try again, ms (ignored for `failed`).
    pub next_attempt_at: i64,
    /// What went wrong.
    pub error: String,
    /// A machine code for it (the peer's refusal code, `expired`, …).
    pub code: Option<String>,
    /// The peer refused our clock (`stale_timestamp`): the attempt drives the backoff but does
    /// not count towards `max_attempts`.
    pub clock_refusal: bool,
}

/// Where an outbox entry stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxState {
    /// `queued`, `sent`, `delivered`, `read` or `failed`.
    pub status: MessageStatus,
    /// Attempts so far.
    pub attempts: i64,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// Its machine code.
    pub last_error_code: Option<String>,
}

/// Filter for [`Store::messages`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only one direction.
    pub direction: Option<Direction>,
    /// Only unread incoming messages.
    pub unread: bool,
    /// Only failed outgoing messages.
    pub failed: bool,
    /// Only messages with this peer.
    pub peer: Option<PeerId>,
    /// At most this many per direction (default 100, most recent; at most 10,000).
    pub limit: Option<u32>,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Known peers (not removed).
    pub peers: i64,
    /// Trusted peers.
    pub trusted_peers: i64,
    /// Incoming contact requests waiting for the owner.
    pub pending_requests: i64,
    /// Outgoing contact requests waiting for peers.
    pub outgoing_requests: i64,
    /// Unread incoming messages.
    pub unread_messages: i64,
    /// Outbox entries not yet delivered (queued or sent).
    pub outbox_depth: i64,
    /// Messages that failed for good (other entries' failures show in their own state: a
    /// contact request as `refused` or `failed`).
    pub failed_deliveries: i64,
}

fn outgoing_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        direction: Direction::Outgoing,
        id: row.get(0)?,
        peer_id: parsed(row, 1)?,
        text: row.get(2)?,
        content_type: row.get(3)?,
        status: parsed(row, 4)?,
        encrypted: row.get(5)?,
        protocol: parsed(row, 6)?,
        reply_to: row.get(7)?,
        thread: row.get(8)?,
        created_at: row.get(9)?,
        delivered_at: row.get(10)?,
        read_at: row.get(11)?,
        attempts: row.get(12)?,
        last_error: row.get(13)?,
    })
}

const OUTGOING_COLUMNS: &str = "id, peer_id, text, content_type, status, encrypted, protocol, reply_to, thread, \
     created_at, delivered_at, read_at, attempts, last_error";

fn incoming_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let read_at: Option<i64> = row.get(10)?;
    Ok(Message {
        direction: Direction::Incoming,
        id: row.get(0)?,
        peer_id: parsed(row, 1)?,
        text: row.get(2)?,
        content_type: row.get(3)?,
        status: if read_at.is_some() { MessageStatus::Read } else { MessageStatus::Unread },
        encrypted: row.get(4)?,
        protocol: parsed(row, 5)?,
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

fn item_from_row(r: &Row<'_>) -> rusqlite::Result<OutboxItem> {
    let kind: String = r.get(2)?;
    Ok(OutboxItem {
        seq: r.get(0)?,
        id: r.get(1)?,
        kind: EnvelopeKind::from_name(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, format!("kind {kind:?}").into())
        })?,
        peer_id: parsed(r, 3)?,
        protocol: parsed(r, 4)?,
        payload: r.get(5)?,
        attempts: r.get(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        clock_refusals: r.get(9)?,
    })
}

impl Store {
    /// Writes an entry to the outbox as `queued`, due now.
    pub fn enqueue(&self, m: &NewOutbound) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (id, kind, peer_id, protocol, payload, text, content_type, reply_to, thread, encrypted,
                                     status, attempts, next_attempt_at, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?11, ?12)",
            )?
            .execute(params![
                m.id,
                m.kind.as_str(),
                m.peer_id.as_str(),
                m.protocol.as_str(),
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

    /// Up to `limit` entries due at `now`, oldest first. A contact envelope (request, response,
    /// update) is due only when it is the oldest one still pending to its peer: they leave in
    /// order, and those waiting behind another neither take places in the list nor are polled.
    pub fn due(&self, now: i64, limit: u32) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, kind, peer_id, protocol, payload, attempts, created_at, expires_at, clock_refusals FROM outbox
             WHERE status IN ('queued', 'sent') AND next_attempt_at <= ?1
             AND NOT (kind IN ('contact_request', 'contact_response', 'contact_update') AND EXISTS (
                 SELECT 1 FROM outbox older WHERE older.peer_id = outbox.peer_id AND older.seq < outbox.seq
                 AND older.status IN ('queued', 'sent')
                 AND older.kind IN ('contact_request', 'contact_response', 'contact_update')))
             ORDER BY next_attempt_at, seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit], item_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The outbox entry with this id, whatever its state.
    pub fn outbox_item(&self, id: &str) -> Result<Option<OutboxItem>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, id, kind, peer_id, protocol, payload, attempts, created_at, expires_at, clock_refusals FROM outbox WHERE id = ?1",
            )?
            .query_row([id], item_from_row)
            .optional()?)
    }

    /// Where the outbox entry with this id stands.
    pub fn outbox_state(&self, id: &str) -> Result<Option<OutboxState>> {
        Ok(self
            .conn
            .prepare_cached("SELECT status, attempts, last_error, last_error_code FROM outbox WHERE id = ?1")?
            .query_row([id], |r| {
                Ok(OutboxState {
                    status: parsed(r, 0)?,
                    attempts: r.get(1)?,
                    last_error: r.get(2)?,
                    last_error_code: r.get(3)?,
                })
            })
            .optional()?)
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

    /// Marks entries delivered with their receipts: `(id, receipt JSON, at)`.
    pub fn mark_delivered(&self, delivered: &[(String, String, i64)]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE outbox SET status = 'delivered', receipt = ?2, delivered_at = ?3, last_error = NULL,
                 last_error_code = NULL, attempts = attempts + 1
             WHERE id = ?1 AND status IN ('queued', 'sent')",
        )?;
        for (id, receipt, at) in delivered {
            stmt.execute(params![id, receipt, at])?;
        }
        Ok(())
    }

    /// Records a delivery attempt that did not end in a receipt.
    pub fn mark_attempt(&self, a: &Attempt) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET status = ?2, attempts = attempts + 1, clock_refusals = clock_refusals + ?6,
                     next_attempt_at = ?3, last_error = ?4, last_error_code = ?5
                 WHERE id = ?1 AND status IN ('queued', 'sent')",
            )?
            .execute(params![
                a.id,
                a.status.as_str(),
                a.next_attempt_at,
                a.error,
                a.code,
                i64::from(a.clock_refusal)
            ])?;
        Ok(())
    }

    /// Fails every undelivered entry to `peer_id` except those of the kinds in `keep`; returns
    /// their ids and kinds.
    pub fn fail_outbox_to(
        &self,
        peer_id: &PeerId,
        keep: &[EnvelopeKind],
        error: &str,
        code: &str,
    ) -> Result<Vec<(String, EnvelopeKind)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, kind FROM outbox WHERE peer_id = ?1 AND status IN ('queued', 'sent')")?;
        let rows: Vec<(String, String)> =
            stmt.query_map([peer_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let mut failed = Vec::new();
        let mut update = self.conn.prepare_cached(
            "UPDATE outbox SET status = 'failed', last_error = ?2, last_error_code = ?3 WHERE id = ?1",
        )?;
        for (id, kind) in rows {
            let Some(kind) = EnvelopeKind::from_name(&kind) else { continue };
            if keep.contains(&kind) {
                continue;
            }
            update.execute(params![id, error, code])?;
            failed.push((id, kind));
        }
        Ok(failed)
    }

    /// Makes a failed outgoing message due again now, with a fresh attempt count and at least
    /// `ttl_ms` more to live; `false` when there is no failed message with this id.
    pub fn retry(&self, id: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET status = 'queued', attempts = 0, clock_refusals = 0, next_attempt_at = ?2, last_error = NULL,
                 last_error_code = NULL, expires_at = MAX(expires_at, ?2 + ?3)
             WHERE id = ?1 AND status = 'failed'",
            )?
            .execute(params![id, now, ttl_ms])?;
        Ok(n == 1)
    }

    /// Deletes every failed outbox entry; returns how many.
    pub fn clear_failed(&self) -> Result<u64> {
        Ok(self.conn.execute("DELETE FROM outbox WHERE status = 'failed'", [])? as u64)
    }

    /// Marks an outgoing message read after a read receipt from `peer_id`; `false` when no such
    /// delivered message exists.
    pub fn mark_outgoing_read(&self, peer_id: &PeerId, id: &str, at: i64) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET status = 'read', read_at = ?3, delivered_at = COALESCE(delivered_at, ?3)
             WHERE id = ?2 AND peer_id = ?1 AND kind = 'message' AND status IN ('queued', 'sent', 'delivered')",
            )?
            .execute(params![peer_id.as_str(), id, at])?;
        Ok(n == 1)
    }

    /// Peers with an undelivered outbox entry of `kind`.
    pub fn peers_awaiting(&self, kind: EnvelopeKind) -> Result<Vec<PeerId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT peer_id FROM outbox WHERE status IN ('queued', 'sent') AND kind = ?1")?;
        let rows = stmt.query_map([kind.as_str()], |r| parsed(r, 0))?;
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

    /// The answer we gave when we accepted envelope `id` from `peer_id`, if we did.
    pub fn accepted_receipt(&self, peer_id: &PeerId, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT receipt FROM accepted WHERE peer_id = ?1 AND id = ?2")?
            .query_row([peer_id.as_str(), id], |r| r.get(0))
            .optional()?)
    }

    /// Records that envelope `id` from `peer_id` was accepted with `answer`.
    ///
    /// Returns `None` when this is the first acceptance, or `Some(answer)` with the answer of an
    /// earlier acceptance of the same `(peer_id, id)` (a replay), in which case nothing changes.
    /// The record is kept until `keep_until` (ms; past the envelope's expiry plus the freshness
    /// window, when a replay would be refused anyway), then [`prune_accepted`](Self::prune_accepted)
    /// drops it.
    pub fn record_accepted(
        &self,
        peer_id: &PeerId,
        id: &str,
        kind: EnvelopeKind,
        answer: &str,
        at: i64,
        keep_until: i64,
    ) -> Result<Option<String>> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO accepted (peer_id, id, kind, receipt, accepted_at, keep_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![peer_id.as_str(), id, kind.as_str(), answer, at, keep_until])?;
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
                m.peer_id.as_str(),
                m.id,
                m.protocol.as_str(),
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

    /// Postpones entries being delivered right now until `until` (ms), so the worker does not
    /// pick them twice; a crash mid-delivery leaves them due again at `until`.
    pub fn lease(&self, ids: &[String], until: i64) -> Result<()> {
        let mut stmt = self.conn.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![id, until])?;
        }
        Ok(())
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
        let peer = f.peer.as_ref().map(PeerId::as_str);
        let mut out = Vec::new();
        if f.direction != Some(Direction::Incoming) && !f.unread {
            let sql = format!(
                "SELECT * FROM (SELECT {OUTGOING_COLUMNS}, seq FROM outbox WHERE kind = 'message'
                 AND content_type NOT LIKE 'application/vnd.agentmesh.%' AND (?1 IS NULL OR peer_id = ?1) AND (?3 = 0 OR status = 'failed')
                 ORDER BY seq DESC LIMIT ?2) ORDER BY seq"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![peer, limit, f.failed], outgoing_from_row)?;
            out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
        }
        if f.direction != Some(Direction::Outgoing) && !f.failed {
            let sql = format!(
                "SELECT * FROM (SELECT {INCOMING_COLUMNS}, seq FROM inbox WHERE (?1 IS NULL OR peer_id = ?1)
                 AND (?2 = 0 OR read_at IS NULL) ORDER BY seq DESC LIMIT ?3) ORDER BY seq"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![peer, f.unread, limit], incoming_from_row)?;
            out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
        }
        Ok(out)
    }

    /// An outgoing message by id.
    pub fn outgoing(&self, id: &str) -> Result<Option<Message>> {
        let sql = format!("SELECT {OUTGOING_COLUMNS} FROM outbox WHERE id = ?1 AND kind = 'message'");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], outgoing_from_row).optional()?)
    }

    /// Incoming messages with this id (ids are unique per sender; normally one).
    pub fn incoming(&self, id: &str) -> Result<Vec<Message>> {
        let sql = format!("SELECT {INCOMING_COLUMNS} FROM inbox WHERE id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([id], incoming_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks an incoming message read; `false` when it was read already or does not exist.
    pub fn mark_incoming_read(&self, peer_id: &PeerId, id: &str, at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE inbox SET read_at = ?3 WHERE peer_id = ?1 AND id = ?2 AND read_at IS NULL",
            params![peer_id.as_str(), id, at],
        )?;
        Ok(n == 1)
    }

    /// Counters for `status`.
    pub fn stats(&self) -> Result<Stats> {
        Ok(self.conn.query_row(
            "SELECT
               (SELECT COUNT(*) FROM peers WHERE trust != 'removed'),
               (SELECT COUNT(*) FROM peers WHERE trust = 'trusted'),
               (SELECT COUNT(*) FROM contact_requests WHERE direction = 'incoming' AND status = 'pending'),
               (SELECT COUNT(*) FROM contact_requests WHERE direction = 'outgoing' AND status = 'pending'),
               (SELECT COUNT(*) FROM inbox WHERE read_at IS NULL),
               (SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sent')),
               (SELECT COUNT(*) FROM outbox WHERE status = 'failed' AND kind = 'message')",
            [],
            |r| {
                Ok(Stats {
                    peers: r.get(0)?,
                    trusted_peers: r.get(1)?,
                    pending_requests: r.get(2)?,
                    outgoing_requests: r.get(3)?,
                    unread_messages: r.get(4)?,
                    outbox_depth: r.get(5)?,
                    failed_deliveries: r.get(6)?,
                })
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::parse("p").expect("id")
    }

    fn outbound(id: &str) -> NewOutbound {
        NewOutbound {
            id: id.into(),
            kind: EnvelopeKind::Message,
            peer_id: peer(),
            protocol: Protocol::Native,
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
        let attempt = Attempt {
            id: "m1".into(),
            status: MessageStatus::Queued,
            next_attempt_at: 50,
            error: "connection refused".into(),
            code: None,
            clock_refusal: false,
        };
        s.mark_attempt(&attempt).expect("attempt");
        assert_eq!(s.due(20, 10).expect("due").len(), 0);
        assert_eq!(s.next_due().expect("next"), Some(50));
        s.mark_delivered(&[("m1".into(), "{}".into(), 60)]).expect("delivered");
        assert_eq!(s.next_due().expect("next"), None);
        let m = s.outgoing("m1").expect("get").expect("exists");
        assert_eq!((m.status, m.attempts), (MessageStatus::Delivered, Some(2)));
        assert!(s.mark_outgoing_read(&peer(), "m1", 70).expect("read"));
        assert!(!s.mark_outgoing_read(&PeerId::parse("other").expect("id"), "m1", 70).expect("wrong peer"));
    }

    #[test]
    fn a_peers_contact_envelopes_are_due_one_at_a_time_oldest_first() {
        let s = Store::open_in_memory().expect("db");
        let contact = |id: &str, kind| NewOutbound { kind, text: None, ..outbound(id) };
        s.enqueue(&contact("c1", EnvelopeKind::ContactUpdate)).expect("enqueue");
        s.enqueue(&contact("c2", EnvelopeKind::ContactRequest)).expect("enqueue");
        s.enqueue(&outbound("m1")).expect("enqueue");
        let ids = |s: &Store, now| s.due(now, 10).expect("due").into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(&s, 10), ["c1", "m1"], "the later contact envelope waits behind the first");
        // The first waits for a retry: the second still waits (and is not listed), messages go.
        let later = Attempt {
            id: "c1".into(),
            status: MessageStatus::Queued,
            next_attempt_at: 500,
            error: "unreachable".into(),
            code: None,
            clock_refusal: false,
        };
        s.mark_attempt(&later).expect("attempt");
        assert_eq!(ids(&s, 20), ["m1"]);
        s.mark_delivered(&[("c1".into(), "{}".into(), 30)]).expect("delivered");
        assert_eq!(ids(&s, 30), ["c2", "m1"], "its turn once the first is delivered");
        // Another peer's contact envelopes are not held by these.
        s.enqueue(&NewOutbound {
            peer_id: PeerId::parse("q").expect("id"),
            ..contact("d1", EnvelopeKind::ContactUpdate)
        })
        .expect("enqueue");
        assert!(ids(&s, 30).contains(&"d1".to_owned()));
    }

    #[test]
    fn failed_entries_can_be_retried_or_cleared() {
        let s = Store::open_in_memory().expect("db");
        s.enqueue(&outbound("m1")).expect("enqueue");
        s.enqueue(&outbound("m2")).expect("enqueue");
        assert!(!s.retry("m1", 100, 1_000).expect("not failed"), "only failed entries are retried");
        let failed = s.fail_outbox_to(&peer(), &[], "peer blocked", "blocked").expect("fail");
        assert_eq!(failed.len(), 2);
        assert_eq!(s.stats().expect("stats").failed_deliveries, 2);
        assert!(s.retry("m1", 2_000, 1_000).expect("retry"));
        let item = s.outbox_item("m1").expect("get").expect("exists");
        assert_eq!((item.attempts, item.expires_at), (0, 3_000), "fresh attempts and time to live");
        assert_eq!(s.due(2_000, 10).expect("due").len(), 1);
        assert_eq!(s.clear_failed().expect("clear"), 1);
        assert!(s.outbox_item("m2").expect("get").is_none());
    }

    #[test]
    fn accept_is_idempotent_and_replay_state_is_bounded() {
        let s = Store::open_in_memory().expect("db");
        let p = peer();
        assert_eq!(s.record_accepted(&p, "m1", EnvelopeKind::Message, "r1", 2, 100).expect("first"), None);
        assert_eq!(
            s.record_accepted(&p, "m1", EnvelopeKind::Message, "r2", 3, 100).expect("replay").as_deref(),
            Some("r1")
        );
        assert_eq!(s.prune_accepted(100, 10).expect("prune"), 0);
        assert_eq!(s.accepted_receipt(&p, "m1").expect("get").as_deref(), Some("r1"));
        assert_eq!(s.prune_accepted(101, 10).expect("prune"), 1);
        assert_eq!(s.accepted_receipt(&p, "m1").expect("get"), None);
    }
}
