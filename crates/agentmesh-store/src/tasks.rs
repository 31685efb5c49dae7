//! Delegated tasks and their history (`tasks`, `task_history`), and escalations.

use agentmesh_api::{Direction, Escalation, Side, Task, TaskEntry, TaskState};
use agentmesh_core::PeerId;
use rusqlite::{OptionalExtension, Row, params};

use crate::peers::{parsed, parsed_opt};
use crate::{Result, Store, StoreError};

/// What `Store::tasks` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks with this peer.
    pub peer: Option<PeerId>,
    /// Only one direction.
    pub direction: Option<Direction>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks not in a final state.
    pub open: bool,
    /// At most this many (default 100, at most 10,000), most recently changed first.
    pub limit: Option<u32>,
}

/// What `Store::escalations` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EscalationFilter {
    /// Only open ones.
    pub open: bool,
    /// At most this many (default 100, at most 10,000), newest first.
    pub limit: Option<u32>,
}

const TASK_COLUMNS: &str = "task_id, peer_id, direction, text, data, state, status_text, artifacts, \
     cancel_requested_at, created_at, updated_at, (SELECT e.escalation_id FROM escalations e \
     WHERE e.conversation_id = tasks.task_id AND e.state = 'open' ORDER BY e.created_at LIMIT 1)";

fn json_col<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let data: Option<String> = row.get(4)?;
    Ok(Task {
        task_id: row.get(0)?,
        peer_id: parsed(row, 1)?,
        direction: parsed(row, 2)?,
        text: row.get(3)?,
        data: data.and_then(|d| serde_json::from_str(&d).ok()),
        state: parsed(row, 5)?,
        status_text: row.get(6)?,
        artifacts: json_col(row, 7)?,
        cancel_requested_at: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        waiting_for_owner: row.get(11)?,
    })
}

const ENTRY_SELECT: &str = "SELECT h.task_id, h.entry_id, h.speaker, h.kind, h.state, h.text, h.artifacts, h.at, \
     h.received_at, o.status, o.delivered_at FROM task_history h LEFT JOIN outbox o ON h.speaker = 'us' AND o.id = h.entry_id";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<TaskEntry> {
    let speaker: Side = parsed(row, 2)?;
    let artifacts: Option<String> = row.get(6)?;
    let received_at: Option<i64> = row.get(8)?;
    let delivered_at: Option<i64> = row.get(10)?;
    Ok(TaskEntry {
        task_id: row.get(0)?,
        entry_id: row.get(1)?,
        speaker,
        kind: parsed(row, 3)?,
        state: parsed_opt(row, 4)?,
        text: row.get(5)?,
        artifacts: artifacts.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default(),
        at: row.get(7)?,
        status: parsed_opt(row, 9)?,
        delivered_at: if speaker == Side::Us { delivered_at } else { received_at },
    })
}

const ESCALATION_COLUMNS: &str =
    "escalation_id, conversation_id, peer_id, reason, options, state, answer, created_at, resolved_at, reminders";

fn escalation_from_row(row: &Row<'_>) -> rusqlite::Result<Escalation> {
    Ok(Escalation {
        escalation_id: row.get(0)?,
        conversation_id: row.get(1)?,
        peer_id: parsed(row, 2)?,
        reason: row.get(3)?,
        options: json_col(row, 4)?,
        state: parsed(row, 5)?,
        answer: row.get(6)?,
        created_at: row.get(7)?,
        resolved_at: row.get(8)?,
        reminders: row.get(9)?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Stores a new task.
    pub fn insert_task(&self, task: &Task) -> Result<()> {
        let data = task.data.as_ref().map(to_json).transpose()?;
        self.conn
            .prepare_cached(
                "INSERT INTO tasks (task_id, peer_id, direction, text, data, state, status_text, artifacts,
                 cancel_requested_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                task.task_id,
                task.peer_id.as_str(),
                task.direction.as_str(),
                task.text,
                data,
                task.state.as_str(),
                task.status_text,
                to_json(&task.artifacts)?,
                task.cancel_requested_at,
                task.created_at,
                task.updated_at,
            ])?;
        Ok(())
    }

    /// Writes a task's state, status text, artifacts, cancel request and `updated_at`, and the
    /// highest worker update applied (`update_seq`).
    pub fn update_task(&self, task: &Task, update_seq: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE tasks SET state = ?2, status_text = ?3, artifacts = ?4, cancel_requested_at = ?5,
                 updated_at = ?6, update_seq = MAX(update_seq, ?7) WHERE task_id = ?1",
            )?
            .execute(params![
                task.task_id,
                task.state.as_str(),
                task.status_text,
                to_json(&task.artifacts)?,
                task.cancel_requested_at,
                task.updated_at,
                update_seq as i64,
            ])?;
        Ok(())
    }

    /// A task by id, with the highest worker update applied to it.
    pub fn task(&self, task_id: &str) -> Result<Option<(Task, u64)>> {
        let sql = format!("SELECT {TASK_COLUMNS}, update_seq FROM tasks WHERE task_id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([task_id], |row| Ok((task_from_row(row)?, row.get::<_, i64>(12)? as u64)))
            .optional()?)
    }

    /// Tasks per the filter, most recently changed first.
    pub fn tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        let limit = f.limit.unwrap_or(100).min(10_000);
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR peer_id = ?1) AND (?2 IS NULL OR direction = ?2)
             AND (?3 IS NULL OR state = ?3)
             AND (?4 = 0 OR state NOT IN ('completed', 'failed', 'canceled', 'rejected'))
             ORDER BY updated_at DESC, rowid DESC LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                f.peer.as_ref().map(PeerId::as_str),
                f.direction.map(Direction::as_str),
                f.state.map(TaskState::as_str),
                f.open,
                limit
            ],
            task_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many tasks are not final: with `peer`, or in all.
    pub fn open_tasks(&self, peer: Option<&PeerId>) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM tasks WHERE state NOT IN ('completed', 'failed', 'canceled', 'rejected')
                 AND (?1 IS NULL OR peer_id = ?1)",
            )?
            .query_row([peer.map(PeerId::as_str)], |r| r.get(0))?)
    }

    /// Adds an entry to its task's history (`received_at` for the peer's); `false` when it is
    /// there already.
    pub fn insert_task_entry(&self, entry: &TaskEntry, received_at: Option<i64>) -> Result<bool> {
        let artifacts = if entry.artifacts.is_empty() { None } else { Some(to_json(&entry.artifacts)?) };
        Ok(self
            .conn
            .prepare_cached(
                "INSERT INTO task_history (task_id, entry_id, speaker, kind, state, text, artifacts, at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                entry.task_id,
                entry.entry_id,
                entry.speaker.as_str(),
                entry.kind.as_str(),
                entry.state.map(TaskState::as_str),
                entry.text,
                artifacts,
                entry.at,
                received_at,
            ])?
            > 0)
    }

    /// A task's history in order (`at`, then `entry_id`).
    pub fn task_history(&self, task_id: &str) -> Result<Vec<TaskEntry>> {
        let sql = format!("{ENTRY_SELECT} WHERE h.task_id = ?1 ORDER BY h.at, h.entry_id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([task_id], entry_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stores a new escalation (open, reminded at its creation).
    pub fn insert_escalation(&self, e: &Escalation) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO escalations (escalation_id, conversation_id, peer_id, reason, options, state, answer,
                 created_at, resolved_at, reminded_at, reminders) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?8, 0)",
            )?
            .execute(params![
                e.escalation_id,
                e.conversation_id,
                e.peer_id.as_str(),
                e.reason,
                to_json(&e.options)?,
                e.state.as_str(),
                e.answer,
                e.created_at,
                e.resolved_at,
            ])?;
        Ok(())
    }

    /// An escalation by id.
    pub fn escalation(&self, id: &str) -> Result<Option<Escalation>> {
        let sql = format!("SELECT {ESCALATION_COLUMNS} FROM escalations WHERE escalation_id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], escalation_from_row).optional()?)
    }

    /// Marks an open escalation answered; `false` when it was not open.
    pub fn resolve_escalation(&self, id: &str, answer: &str, at: i64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE escalations SET state = 'resolved', answer = ?2, resolved_at = ?3
                 WHERE escalation_id = ?1 AND state = 'open'",
            )?
            .execute(params![id, answer, at])?
            > 0)
    }

    /// Escalations per the filter, newest first.
    pub fn escalations(&self, f: &EscalationFilter) -> Result<Vec<Escalation>> {
        let limit = f.limit.unwrap_or(100).min(10_000);
        let sql = format!(
            "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE (?1 = 0 OR state = 'open')
             ORDER BY created_at DESC, rowid DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![f.open, limit], escalation_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Open escalations last reminded at or before `before`, now counted as reminded at `now`
    /// (at most `limit`).
    pub fn remind_escalations(&self, before: i64, now: i64, limit: u32) -> Result<Vec<Escalation>> {
        let sql = format!(
            "UPDATE escalations SET reminded_at = ?2, reminders = reminders + 1 WHERE escalation_id IN
             (SELECT escalation_id FROM escalations e WHERE state = 'open' AND reminded_at <= ?1
              AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.call_id = e.conversation_id
                              AND c.state NOT IN ('ringing', 'active'))
              AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = e.conversation_id
                              AND t.state IN ('completed', 'failed', 'canceled', 'rejected'))
              ORDER BY reminded_at LIMIT ?3) RETURNING {ESCALATION_COLUMNS}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![before, now, limit], escalation_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many escalations wait for the owner: about `conversation` (a call or task id), or in
    /// all.
    pub fn open_escalations(&self, conversation: Option<&str>) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM escalations WHERE state = 'open' AND (?1 IS NULL OR conversation_id = ?1)",
            )?
            .query_row([conversation], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use agentmesh_api::{EscalationState, TaskEntryKind};
    use agentmesh_core::task::{Artifact, Part};

    use super::*;

    #[test]
    fn tasks_history_and_escalations() {
        let s = Store::open_in_memory().expect("store");
        let peer = PeerId::parse("p1").expect("id");
        let mut task = Task {
            task_id: "t1".into(),
            peer_id: peer.clone(),
            direction: Direction::Incoming,
            text: "do it".into(),
            data: Some(serde_json::json!({"n": 1})),
            state: TaskState::Submitted,
            status_text: None,
            artifacts: vec![],
            cancel_requested_at: None,
            waiting_for_owner: None,
            created_at: 1,
            updated_at: 1,
        };
        s.insert_task(&task).expect("insert");
        assert_eq!(s.open_tasks(Some(&peer)).expect("open"), 1);
        task.state = TaskState::Completed;
        task.artifacts =
            vec![Artifact { artifact_id: "a".into(), name: None, parts: vec![Part::Text { text: "x".into() }] }];
        task.updated_at = 5;
        s.update_task(&task, 3).expect("update");
        s.update_task(&task, 2).expect("an older update keeps the higher seq");
        let (stored, seq) = s.task("t1").expect("read").expect("there");
        assert_eq!(
            (stored.state, stored.artifacts.len(), seq, stored.data),
            (TaskState::Completed, 1, 3, task.data.clone())
        );
        assert_eq!(s.open_tasks(None).expect("open"), 0);
        assert_eq!(s.tasks(&TaskFilter { open: true, ..TaskFilter::default() }).expect("list").len(), 0);

        let entry = |id: &str, at: i64| TaskEntry {
            entry_id: id.into(),
            task_id: "t1".into(),
            speaker: Side::Peer,
            kind: TaskEntryKind::Create,
            state: None,
            text: Some("do it".into()),
            artifacts: vec![],
            at,
            status: None,
            delivered_at: None,
        };
        assert!(s.insert_task_entry(&entry("b", 2), Some(3)).expect("insert"));
        assert!(s.insert_task_entry(&entry("a", 2), Some(3)).expect("insert"));
        assert!(!s.insert_task_entry(&entry("a", 2), Some(3)).expect("again"));
        let ids: Vec<String> = s.task_history("t1").expect("history").into_iter().map(|e| e.entry_id).collect();
        assert_eq!(ids, ["a", "b"]);

        task.state = TaskState::Working;
        s.update_task(&task, 3).expect("going on again, for the reminders");
        let esc = Escalation {
            escalation_id: "e1".into(),
            conversation_id: "t1".into(),
            peer_id: peer,
            reason: "ok?".into(),
            options: vec!["yes".into(), "no".into()],
            state: EscalationState::Open,
            answer: None,
            created_at: 10,
            resolved_at: None,
            reminders: 0,
        };
        s.insert_escalation(&esc).expect("insert");
        assert_eq!(s.task("t1").expect("read").expect("there").0.waiting_for_owner.as_deref(), Some("e1"));
        assert!(s.remind_escalations(9, 20, 10).expect("remind").is_empty());
        let reminded = s.remind_escalations(10, 20, 10).expect("remind");
        assert_eq!(reminded[0].reminders, 1);
        assert!(s.resolve_escalation("e1", "yes", 30).expect("resolve"));
        assert!(!s.resolve_escalation("e1", "no", 31).expect("once"));
        assert_eq!(s.escalation("e1").expect("read").expect("there").answer.as_deref(), Some("yes"));
        assert_eq!(s.open_escalations(None).expect("count"), 0);
        assert_eq!(s.task("t1").expect("read").expect("there").0.waiting_for_owner, None);
    }
}
