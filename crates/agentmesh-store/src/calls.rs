//! Calls and their transcripts (`calls`, `call_lines`).

use agentmesh_api::{Call, CallLine, CallState, Side};
use agentmesh_core::PeerId;
use rusqlite::{OptionalExtension, Row, params};

use crate::peers::{parsed, parsed_opt};
use crate::{Result, Store};

/// What `Store::calls` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls with this peer.
    pub peer: Option<PeerId>,
    /// Only calls in this state.
    pub state: Option<CallState>,
    /// Only ringing or active calls.
    pub open: bool,
    /// At most this many (default 100, at most 10,000), newest first.
    pub limit: Option<u32>,
}

const CALL_COLUMNS: &str = "call_id, peer_id, direction, topic, state, reason, ended_by, created_at, ring_until, \
     answered_at, ended_at, lines, (SELECT e.escalation_id FROM escalations e WHERE e.conversation_id = calls.call_id \
     AND e.state = 'open' ORDER BY e.created_at LIMIT 1)";

fn call_from_row(row: &Row<'_>) -> rusqlite::Result<Call> {
    Ok(Call {
        call_id: row.get(0)?,
        peer_id: parsed(row, 1)?,
        direction: parsed(row, 2)?,
        topic: row.get(3)?,
        state: parsed(row, 4)?,
        reason: row.get(5)?,
        ended_by: parsed_opt(row, 6)?,
        created_at: row.get(7)?,
        ring_until: row.get(8)?,
        answered_at: row.get(9)?,
        ended_at: row.get(10)?,
        lines: row.get(11)?,
        waiting_for_owner: row.get(12)?,
    })
}

/// Lines with the delivery state of ours from the outbox.
const LINE_SELECT: &str = "SELECT l.call_id, l.line_id, l.speaker, l.kind, l.text, l.at, l.received_at, o.status, \
     o.delivered_at FROM call_lines l LEFT JOIN outbox o ON l.speaker = 'us' AND o.id = l.line_id";

fn line_from_row(row: &Row<'_>) -> rusqlite::Result<CallLine> {
    let speaker: Side = parsed(row, 2)?;
    let received_at: Option<i64> = row.get(6)?;
    let delivered_at: Option<i64> = row.get(8)?;
    Ok(CallLine {
        call_id: row.get(0)?,
        line_id: row.get(1)?,
        speaker,
        kind: parsed(row, 3)?,
        text: row.get(4)?,
        at: row.get(5)?,
        status: parsed_opt(row, 7)?,
        delivered_at: if speaker == Side::Us { delivered_at } else { received_at },
    })
}

impl Store {
    /// Stores a new call (its `lines` count starts at 0, whatever `call.lines` says).
    pub fn insert_call(&self, call: &Call) -> Result<()> {
        self.conn.prepare_cached(
            "INSERT INTO calls (call_id, peer_id, direction, topic, state, reason, ended_by, created_at, ring_until,
             answered_at, ended_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            call.call_id,
            call.peer_id.as_str(),
            call.direction.as_str(),
            call.topic,
            call.state.as_str(),
            call.reason,
            call.ended_by.map(Side::as_str),
            call.created_at,
            call.ring_until,
            call.answered_at,
            call.ended_at,
        ])?;
        Ok(())
    }

    /// Writes a call's state, reason, `ended_by`, `answered_at` and `ended_at`.
    pub fn update_call(&self, call: &Call) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE calls SET state = ?2, reason = ?3, ended_by = ?4, answered_at = ?5, ended_at = ?6
                 WHERE call_id = ?1",
            )?
            .execute(params![
                call.call_id,
                call.state.as_str(),
                call.reason,
                call.ended_by.map(Side::as_str),
                call.answered_at,
                call.ended_at,
            ])?;
        Ok(())
    }

    /// A call by id.
    pub fn call(&self, call_id: &str) -> Result<Option<Call>> {
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([call_id], call_from_row).optional()?)
    }

    /// Calls per the filter, newest first.
    pub fn calls(&self, f: &CallFilter) -> Result<Vec<Call>> {
        let limit = f.limit.unwrap_or(100).min(10_000);
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE (?1 IS NULL OR peer_id = ?1) AND (?2 IS NULL OR state = ?2)
             AND (?3 = 0 OR state IN ('ringing', 'active')) ORDER BY rowid DESC LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![f.peer.as_ref().map(PeerId::as_str), f.state.map(CallState::as_str), f.open, limit],
            call_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many calls are ringing or active: with `peer`, or in all.
    pub fn open_calls(&self, peer: Option<&PeerId>) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM calls WHERE state IN ('ringing', 'active') AND (?1 IS NULL OR peer_id = ?1)",
            )?
            .query_row([peer.map(PeerId::as_str)], |r| r.get(0))?)
    }

    /// Ringing calls whose `ring_until` has passed at `now` (at most `limit`).
    pub fn unanswered_calls(&self, now: i64, limit: u32) -> Result<Vec<Call>> {
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE state = 'ringing' AND ring_until <= ?1 ORDER BY ring_until LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now, limit], call_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The earliest `ring_until` of a ringing call.
    pub fn next_ring_deadline(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT MIN(ring_until) FROM calls WHERE state = 'ringing'")?
            .query_row([], |r| r.get(0))?)
    }

    /// Adds a line to its call's transcript; `received_at` for the peer's lines. A `say` line
    /// counts in the call's `lines`. Returns `false` (and changes nothing) when the line is
    /// there already.
    pub fn insert_call_line(&self, line: &CallLine, received_at: Option<i64>) -> Result<bool> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO call_lines (call_id, line_id, speaker, kind, text, at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                line.call_id,
                line.line_id,
                line.speaker.as_str(),
                line.kind.as_str(),
                line.text,
                line.at,
                received_at,
            ])?
            > 0;
        if inserted && line.kind == agentmesh_api::LineKind::Say {
            self.conn
                .prepare_cached("UPDATE calls SET lines = lines + 1 WHERE call_id = ?1")?
                .execute([&line.call_id])?;
        }
        Ok(inserted)
    }

    /// One line of a call, with its delivery state.
    pub fn call_line(&self, call_id: &str, line_id: &str) -> Result<Option<CallLine>> {
        let sql = format!("{LINE_SELECT} WHERE l.call_id = ?1 AND l.line_id = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row([call_id, line_id], line_from_row).optional()?)
    }

    /// A call's lines in transcript order (`at`, then `line_id`).
    pub fn call_lines(&self, call_id: &str) -> Result<Vec<CallLine>> {
        let sql = format!("{LINE_SELECT} WHERE l.call_id = ?1 ORDER BY l.at, l.line_id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([call_id], line_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use agentmesh_api::{Direction, LineKind};

    use super::*;

    fn call(id: &str, state: CallState) -> Call {
        Call {
            call_id: id.into(),
            peer_id: PeerId::parse("p1").expect("id"),
            direction: Direction::Outgoing,
            topic: "t".into(),
            state,
            reason: None,
            ended_by: None,
            created_at: 1,
            ring_until: 100,
            answered_at: None,
            ended_at: None,
            lines: 0,
            waiting_for_owner: None,
        }
    }

    fn line(id: &str, at: i64, speaker: Side) -> CallLine {
        CallLine {
            line_id: id.into(),
            call_id: "c1".into(),
            speaker,
            kind: LineKind::Say,
            text: Some(id.into()),
            at,
            status: None,
            delivered_at: None,
        }
    }

    #[test]
    fn calls_lines_and_deadlines() {
        let s = Store::open_in_memory().expect("ok");
        s.insert_call(&call("c1", CallState::Ringing)).expect("ok");
        s.insert_call(&call("c2", CallState::Ended)).expect("ok");
        assert_eq!(s.open_calls(None).expect("ok"), 1);
        assert_eq!(s.next_ring_deadline().expect("ok"), Some(100));
        assert!(s.unanswered_calls(99, 10).expect("ok").is_empty());
        assert_eq!(s.unanswered_calls(100, 10).expect("ok")[0].call_id, "c1");

        let mut c = s.call("c1").expect("ok").expect("ok");
        c.state = CallState::Active;
        c.answered_at = Some(5);
        s.update_call(&c).expect("ok");
        assert!(s.insert_call_line(&line("b", 20, Side::Peer), Some(21)).expect("ok"));
        assert!(s.insert_call_line(&line("a", 20, Side::Us), None).expect("ok"));
        assert!(s.insert_call_line(&line("z", 10, Side::Us), None).expect("ok"));
        assert!(!s.insert_call_line(&line("z", 10, Side::Us), None).expect("ok"), "a line is stored once");
        let lines = s.call_lines("c1").expect("ok");
        assert_eq!(lines.iter().map(|l| l.line_id.as_str()).collect::<Vec<_>>(), ["z", "a", "b"]);
        assert_eq!(lines[2].delivered_at, Some(21));
        let c = s.call("c1").expect("ok").expect("ok");
        assert_eq!((c.state, c.lines, c.answered_at), (CallState::Active, 3, Some(5)));
        let open = s.calls(&CallFilter { open: true, ..CallFilter::default() }).expect("ok");
        assert_eq!(open.len(), 1);
        assert_eq!(s.calls(&CallFilter::default()).expect("ok")[0].call_id, "c2", "newest first");
    }
}
