//! A2A clients and the tasks they created (`a2a_clients`, `a2a_tasks`).

use agentmesh_api::A2aClient;
use rusqlite::{OptionalExtension, params};

use crate::Result;
use crate::Store;

impl Store {
    /// Stores a client with the SHA-256 of its token (a revoked client's name is issued anew);
    /// `false` when an active client has the name.
    pub fn insert_a2a_client(&self, name: &str, token_hash: &[u8; 32], at: i64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "INSERT INTO a2a_clients (name, token_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at,
                 revoked_at = NULL WHERE a2a_clients.revoked_at IS NOT NULL",
            )?
            .execute(params![name, token_hash.as_slice(), at])?
            > 0)
    }

    /// The client a token (by its SHA-256) belongs to, unless revoked.
    pub fn a2a_client_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT name FROM a2a_clients WHERE token_hash = ?1 AND revoked_at IS NULL")?
            .query_row([token_hash.as_slice()], |r| r.get(0))
            .optional()?)
    }

    /// Every client, oldest first.
    pub fn a2a_clients(&self) -> Result<Vec<A2aClient>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT name, created_at, revoked_at FROM a2a_clients ORDER BY created_at")?;
        let rows =
            stmt.query_map([], |r| Ok(A2aClient { name: r.get(0)?, created_at: r.get(1)?, revoked_at: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Revokes a client's token; `false` when there is no such client or it was revoked already.
    pub fn revoke_a2a_client(&self, name: &str, at: i64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("UPDATE a2a_clients SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL")?
            .execute(params![name, at])?
            > 0)
    }

    /// Records that `client` created task `task_id` in context `context_id`.
    pub fn insert_a2a_task(&self, task_id: &str, client: &str, context_id: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO a2a_tasks (task_id, client, context_id) VALUES (?1, ?2, ?3)")?
            .execute(params![task_id, client, context_id])?;
        Ok(())
    }

    /// The task `client` created with the message `message_id` (its create entry's id).
    pub fn a2a_task_by_message(&self, client: &str, message_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT a.task_id FROM a2a_tasks a JOIN task_history h ON h.task_id = a.task_id
                 WHERE a.client = ?1 AND h.entry_id = ?2 AND h.kind = 'create' LIMIT 1",
            )?
            .query_row([client, message_id], |r| r.get(0))
            .optional()?)
    }

    /// Forgets a client (its token file could not be written).
    pub fn delete_a2a_client(&self, name: &str) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM a2a_clients WHERE name = ?1")?.execute([name])?;
        Ok(())
    }

    /// The client and context of an A2A task.
    pub fn a2a_task(&self, task_id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT client, context_id FROM a2a_tasks WHERE task_id = ?1")?
            .query_row([task_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// A page of `client`'s tasks (ids and contexts), most recently changed first, optionally in
    /// one context and one state; with the total that match.
    pub fn a2a_tasks(
        &self,
        client: &str,
        context_id: Option<&str>,
        state: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<(String, String)>, i64)> {
        let filter = "FROM a2a_tasks a JOIN tasks t ON t.task_id = a.task_id WHERE a.client = ?1
             AND (?2 IS NULL OR a.context_id = ?2) AND (?3 IS NULL OR t.state = ?3)";
        let total: i64 = self
            .conn
            .prepare_cached(&format!("SELECT COUNT(*) {filter}"))?
            .query_row(params![client, context_id, state], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT a.task_id, a.context_id {filter} ORDER BY t.updated_at DESC, t.rowid DESC LIMIT ?4 OFFSET ?5"
        ))?;
        let rows = stmt.query_map(params![client, context_id, state, limit, offset], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((rows.collect::<rusqlite::Result<Vec<_>>>()?, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_tokens_and_revocation() {
        let s = Store::open_in_memory().expect("store");
        let hash = [7u8; 32];
        assert!(s.insert_a2a_client("ci", &hash, 1).expect("insert"));
        assert!(!s.insert_a2a_client("ci", &[8u8; 32], 2).expect("a name is taken once"));
        assert_eq!(s.a2a_client_by_token(&hash).expect("lookup").as_deref(), Some("ci"));
        assert!(s.revoke_a2a_client("ci", 3).expect("revoke"));
        assert_eq!(s.a2a_client_by_token(&hash).expect("lookup"), None);
        assert_eq!(s.a2a_clients().expect("list")[0].revoked_at, Some(3));
        assert!(s.insert_a2a_client("ci", &[9u8; 32], 4).expect("a revoked name is issued anew"));
        assert_eq!(s.a2a_client_by_token(&[9u8; 32]).expect("lookup").as_deref(), Some("ci"));
        assert_eq!(s.a2a_client_by_token(&hash).expect("lookup"), None, "the old token stays dead");
        s.insert_a2a_task("t1", "ci", "ctx").expect("task");
        assert_eq!(s.a2a_task("t1").expect("read"), Some(("ci".into(), "ctx".into())));
    }
}
