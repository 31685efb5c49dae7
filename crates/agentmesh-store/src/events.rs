//! The event log: every [`Event`] the node emits, in commit order, numbered by a cursor (`seq`)
//! that only grows. Watchers resume from a cursor after a disconnect or a restart; the hooks
//! push works through it; old entries are pruned by age and count.
//!
//! A received message's event is logged without its text, which the inbox holds already: reading
//! the log puts it back (so a message is stored once, however long its event is kept).

use agentmesh_api::{Direction, Event, LoggedEvent};
use rusqlite::{OptionalExtension, params};

use crate::{Result, Store, StoreError};

impl Store {
    /// Appends `event`, logged at `at` (ms), and returns it with its cursor.
    pub fn append_event(&self, at: i64, event: Event) -> Result<LoggedEvent> {
        let body = match &event {
            Event::Message { message } if message.direction == Direction::Incoming => {
                let mut stored = message.clone();
                stored.text = None;
                serde_json::to_string(&Event::Message { message: stored })
            }
            _ => serde_json::to_string(&event),
        }
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.prepare_cached("INSERT INTO events (at, kind, body) VALUES (?1, ?2, ?3)")?.execute(params![
            at,
            event.kind(),
            body
        ])?;
        Ok(LoggedEvent { seq: self.conn.last_insert_rowid(), at, event })
    }

    /// Up to `limit` events after cursor `after`, oldest first.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<LoggedEvent>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT seq, at, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, body) = row?;
            let mut event =
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
            if let Event::Message { message } = &mut event
                && message.direction == Direction::Incoming
                && message.text.is_none()
            {
                message.text = self
                    .conn
                    .prepare_cached("SELECT text FROM inbox WHERE peer_id = ?1 AND id = ?2")?
                    .query_row(params![message.peer_id.as_str(), message.id], |r| r.get(0))
                    .optional()?;
            }
            out.push(LoggedEvent { seq, at, event });
        }
        Ok(out)
    }

    /// The newest `limit` events, oldest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<LoggedEvent>> {
        let last = self.last_event_seq()?;
        let mut events = self.events_after(last.saturating_sub(limit as i64), limit)?;
        // Cursors are dense unless pruned; when some are missing, the page is still the newest.
        events.truncate(limit);
        Ok(events)
    }

    /// The cursor of the newest event ever logged (0 before the first), pruned or not.
    pub fn last_event_seq(&self) -> Result<i64> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0))
            .optional()?;
        Ok(seq.unwrap_or(0))
    }

    /// The cursor of the oldest event still kept, if any.
    pub fn first_event_seq(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?)
    }

    /// Deletes events logged before `before` (ms) and all but the newest `keep` (at most
    /// `batch` rows per call, so one call never holds the database long). Returns how many.
    pub fn prune_events(&self, before: i64, keep: u64, batch: usize) -> Result<usize> {
        let last = self.last_event_seq()?;
        let floor = last.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
        Ok(self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < ?1 OR seq <= ?2 ORDER BY seq LIMIT ?3)",
            params![before, floor, batch as i64],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use agentmesh_api::{Event, TrustState};
    use agentmesh_core::PeerId;

    use crate::Store;

    fn event(n: u8) -> Event {
        Event::PeerOnline { peer_id: PeerId::parse(&format!("peer{n}")).expect("id") }
    }

    #[test]
    fn cursors_grow_and_survive_pruning() {
        let store = Store::open_in_memory().expect("store");
        assert_eq!(store.last_event_seq().expect("last"), 0);
        for n in 0..5 {
            let logged = store.append_event(1_000 + i64::from(n), event(n)).expect("append");
            assert_eq!(logged.seq, i64::from(n) + 1);
        }
        let after = store.events_after(2, 10).expect("after");
        assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(after[0].event, event(2));
        // By age: the two oldest; by count: keep the newest two.
        assert_eq!(store.prune_events(1_002, u64::MAX, 100).expect("prune"), 2);
        assert_eq!(store.prune_events(0, 2, 100).expect("prune"), 1);
        assert_eq!(store.first_event_seq().expect("first"), Some(4));
        assert_eq!(store.prune_events(i64::MAX, 0, 100).expect("prune"), 2);
        assert_eq!(store.first_event_seq().expect("first"), None);
        // A new event never reuses a pruned cursor.
        let logged = store
            .append_event(
                2_000,
                Event::Trust { peer_id: PeerId::parse("p").expect("id"), trust: TrustState::Trusted, reason: None },
            )
            .expect("append");
        assert_eq!(logged.seq, 6);
        assert_eq!(store.last_event_seq().expect("last"), 6);
    }

    #[test]
    fn a_received_message_is_stored_once_and_its_event_reads_whole() {
        use agentmesh_core::Protocol;

        use crate::IncomingMessage;

        let store = Store::open_in_memory().expect("store");
        let message = IncomingMessage {
            peer_id: PeerId::parse("peer1").expect("id"),
            id: "m1".into(),
            protocol: Protocol::Native,
            encrypted: true,
            content_type: "text/plain".into(),
            text: "hello there".into(),
            reply_to: None,
            thread: None,
            created_at: 1,
            received_at: 2,
        };
        store.insert_incoming(&message).expect("inbox");
        let logged = store.append_event(2, Event::Message { message: message.view() }).expect("append");
        let body: String = store.conn.query_row("SELECT body FROM events", [], |r| r.get(0)).expect("row");
        assert!(!body.contains("hello there"), "the text is in the inbox only: {body}");
        let read = store.events_after(0, 10).expect("read");
        assert_eq!(read, vec![logged], "read back with its text");
    }
}
