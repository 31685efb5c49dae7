//! The agentmesh store: one SQLite database per home (WAL, numbered migrations).
//!
//! Tables: `peers`, `contact_requests`, `outbox` (everything we send, written before any network
//! I/O), `accepted` (every envelope we acknowledged and the receipt we gave, for replays) and
//! `inbox` (messages received), `key_mismatches` (pinned ids that presented another key),
//! `events` (the event log watchers resume from), `calls` and `call_lines` (calls and their
//! transcripts), `tasks` and `task_history` (delegated tasks), `escalations` (our agent's
//! questions to our owner), `a2a_clients` and `a2a_tasks` (callers of the A2A endpoint),
//! `transfers` (files sent and received) and `meta` (small node settings). All times are
//! milliseconds since the Unix epoch.
//!
//! The store is synchronous; the node calls it from its database thread. States, directions and
//! kinds are the enums of `agentmesh-api` and `agentmesh-core`, stored by name.

mod a2a;
mod calls;
mod directory;
mod events;
mod files;
mod messages;
mod migration;
mod peers;
mod requests;
mod tasks;

use std::path::Path;

pub use calls::CallFilter;
pub use directory::DirectoryEntry;
pub use files::{TransferFilter, TransferRecord};
pub use messages::{Attempt, IncomingMessage, MessageFilter, NewOutbound, OutboxItem, OutboxState, Stats};
pub use peers::{KeyMismatch, MAX_KEY_MISMATCHES, Peer};
pub use requests::{Closing, NewRequest, PendingRequest, source_net};
pub use tasks::{EscalationFilter, TaskFilter};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed (I/O, corruption, constraint).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer agentmesh; upgrade before opening it.
    #[error("database schema version {found} is newer than this agentmesh supports ({supported})")]
    TooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A stored value does not parse (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// WAL pages past which the writing connection checkpoints itself (when no [`Checkpointer`]
/// keeps up).
const WAL_BACKSTOP_PAGES: i64 = 10_000;

/// A second connection to a store's database that copies the WAL back into it
/// (`PRAGMA wal_checkpoint(PASSIVE)`), so that the connection that writes never has to. Run it
/// every second or so from a thread of its own; a passive checkpoint never waits for a lock.
pub struct Checkpointer {
    conn: rusqlite::Connection,
}

impl Checkpointer {
    /// Opens the database at `path` (made by [`Store::open`]) for checkpointing.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(1))?;
        Ok(Checkpointer { conn })
    }

    /// Checkpoints what it can without waiting; returns `(pages in the WAL, pages copied)`.
    pub fn run(&self) -> Result<(i64, i64)> {
        Ok(self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))?)
    }
}

/// An open database.
pub struct Store {
    conn: rusqlite::Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, enables WAL and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(rusqlite::Connection::open_in_memory()?)
    }

    fn init(mut conn: rusqlite::Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only a power loss
        // can roll back the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Each stored envelope runs in its own savepoint inside a group commit; their statement
        // journals stay in memory (a few pages each) instead of a temporary file written for
        // every envelope.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoints are a [`Checkpointer`]'s job, off the writing connection: SQLite's own, run
        // by whichever commit crosses the threshold, stalled that commit (and every write queued
        // behind it) for milliseconds. This threshold is only a backstop (about 40 MB of WAL).
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migration::migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// Row counts of every table, for tests and diagnostics: `(table, rows)`.
    pub fn table_counts(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut out = Vec::new();
        for table in [
            "peers",
            "contact_requests",
            "outbox",
            "accepted",
            "inbox",
            "key_mismatches",
            "directory",
            "events",
            "calls",
            "transfers",
            "call_lines",
            "tasks",
            "task_history",
            "escalations",
            "a2a_clients",
            "a2a_tasks",
        ] {
            let n: i64 = self.conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            out.push((table, n));
        }
        Ok(out)
    }

    /// A value from the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Sets a value in the `meta` table.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Checkpoints the WAL into the main file; called on clean shutdown.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}
