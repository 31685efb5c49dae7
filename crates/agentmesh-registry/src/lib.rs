//! The agentmesh registry: where agents are found by what they can do.
//!
//! * [`server`]: the HTTP API (the Agent Registry REST of `../shared/PROTOCOLS.md` §4, with
//!   signed writes, TTL, visibility, rate limits and an optional API key);
//! * [`store`]: the [`RegistryStore`] trait, with two backends: [`sqlite::SqliteStore`] (FTS5,
//!   embedded, the default) and [`postgres::PostgresStore`] (several registry processes in front
//!   of one database); `conformance` (the tests and the `conformance` feature) is the suite
//!   both must pass;
//! * [`client`]: a signing client, used by `agentmesh up --registry` and `agentmesh search`.
//!
//! The server, its stores and the suite are the `server` feature (on by default); a node
//! depends only on [`model`] and [`client`].

pub mod client;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod model;
#[cfg(feature = "server")]
pub mod postgres;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod sqlite;
#[cfg(feature = "server")]
pub mod store;

pub use model::{AgentRecord, Registration, SearchQuery, Visibility};
#[cfg(feature = "server")]
pub use server::{Options, Registry};
#[cfg(feature = "server")]
pub use store::{RegistryStore, StoreError, Upsert};

/// Opens the backend a `--database` value names: `postgres://…`/`postgresql://…`, or a SQLite
/// file (`sqlite://PATH` or a plain path).
#[cfg(feature = "server")]
pub fn open_store(database: &str) -> anyhow::Result<std::sync::Arc<dyn RegistryStore>> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(postgres::PostgresStore::connect(database, 16)?));
    }
    let path = database.strip_prefix("sqlite://").unwrap_or(database);
    Ok(std::sync::Arc::new(sqlite::SqliteStore::open(std::path::Path::new(path))?))
}
