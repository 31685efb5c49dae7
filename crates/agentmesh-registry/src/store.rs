//! The storage trait every registry backend implements, and what its operations report.

use crate::model::{AgentRecord, SearchQuery};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// No connection could be taken from the pool.
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// The database's schema was written by a newer registry; upgrade before opening it.
    #[error("registry database schema version {found} is newer than this registry supports ({supported}); upgrade it")]
    TooNew {
        /// The version recorded in the database.
        found: i64,
        /// The highest version this build knows.
        supported: i64,
    },
    /// A stored value does not parse.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a registration or update did.
#[derive(Clone, Debug, PartialEq)]
pub enum Upsert {
    /// Stored; `true` when the id was new.
    Stored(bool),
    /// The hostname belongs to another agent.
    HostnameTaken,
    /// The request's timestamp is not after the last one accepted for this agent (a replay, or
    /// out of order).
    Stale,
}

/// What a heartbeat did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Recorded.
    Recorded,
    /// No such agent.
    Unknown,
    /// The agent's record has another key.
    WrongKey,
    /// The request time is not after the last accepted one.
    Stale,
}

/// A registry backend. Every method is one atomic operation; backends must be safe to share
/// between threads and, for PostgreSQL, between registry processes.
pub trait RegistryStore: Send + Sync + 'static {
    /// Creates or replaces the record `rec.id` (hostname claim and replay guard checked
    /// atomically: `rec.last_request` must be later than the stored one).
    fn upsert(&self, rec: &AgentRecord) -> Result<Upsert>;
    /// The record with this id.
    fn get(&self, id: &str) -> Result<Option<AgentRecord>>;
    /// The record holding this hostname.
    fn by_hostname(&self, hostname: &str) -> Result<Option<AgentRecord>>;
    /// Sets `last_seen` to `now` and `last_request` to `request` when the record's key is `key`
    /// and `request` is later than the stored `last_request` (one statement in the common case).
    fn heartbeat(&self, id: &str, key: &[u8; 32], request: i64, now: i64) -> Result<Heartbeat>;
    /// Deletes the record; whether it existed.
    fn delete(&self, id: &str) -> Result<bool>;
    /// Public agents seen since `online_since` matching `q`, ranked (text) or newest first, and
    /// the total number of matches.
    fn search(&self, q: &SearchQuery, online_since: i64) -> Result<(Vec<AgentRecord>, u64)>;
    /// Inserts many records at once (benchmarks and imports); existing ids are replaced.
    fn bulk_insert(&self, recs: &[AgentRecord]) -> Result<()>;
}
