//! The PostgreSQL backend, for deployments where several stateless registry processes share one
//! database: a `tsvector` column (weights A name, B capabilities, C description; `simple`
//! configuration, prefix queries, `ts_rank` ordering) with a GIN index, a GIN index on the
//! capability array, heartbeats as heap-only updates (no indexed column changes, fill factor 70)
//! on connections with `synchronous_commit = off`, and every operation one statement or one transaction, so concurrent
//! registries stay consistent (hostname uniqueness and the replay guard are enforced by the
//! database).

use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::postgres::types::ToSql;
use r2d2_postgres::postgres::{NoTls, Row};

use crate::model::{AgentRecord, SearchQuery, Visibility, query_words};
use crate::store::{Heartbeat, RegistryStore, Result, StoreError, Upsert};

/// The schema, one numbered migration per file, applied in order; the version applied last is
/// kept in the one-row table `registry_schema`. Append new files, never edit applied ones.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/postgres/001_init.sql")];

/// The advisory lock every registry process takes while it migrates, so that several starting
/// on one database at once apply each step once, one after the other.
const MIGRATION_LOCK: i64 = 8111;

/// Brings the database up to the latest schema: each missing migration in its own transaction,
/// under [`MIGRATION_LOCK`], the version read again inside it. A database newer than this build
/// is refused. Databases made before versioning have the tables but no `registry_schema` row:
/// they start at version 0 and migration 001 (all `IF NOT EXISTS`) runs on them harmlessly.
fn migrate(conn: &mut postgres::Client) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    loop {
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS registry_schema (version INTEGER NOT NULL);
             CREATE UNIQUE INDEX IF NOT EXISTS registry_schema_one_row ON registry_schema ((true));
             INSERT INTO registry_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM registry_schema);",
        )?;
        let current = i64::from(tx.query_one("SELECT version FROM registry_schema", &[])?.try_get::<_, i32>(0)?);
        if current > supported {
            return Err(StoreError::TooNew { found: current, supported });
        }
        let index = usize::try_from(current).map_err(|_| StoreError::Corrupt(format!("schema version {current}")))?;
        let Some(sql) = MIGRATIONS.get(index) else {
            return Ok(());
        };
        tx.batch_execute(sql)?;
        tx.execute("UPDATE registry_schema SET version = $1", &[&(current as i32 + 1)])?;
        tx.commit()?;
    }
}

const COLUMNS: &str = "id, hostname, display_name, description, capabilities, p2p_endpoint, visibility, public_key, \
                       registered_at, last_seen, last_request";

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// PostgreSQL registry store. Its methods block: call them off async threads.
pub struct PostgresStore {
    pool: Option<Pool>,
    /// Connections for heartbeats, with `synchronous_commit = off`: a crash may forget the last
    /// fraction of a second of heartbeats, which the agents' next ones restore.
    heartbeats: Option<Pool>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The synchronous client runs its own runtime and cannot be dropped on an async thread:
        // hand the pool to a plain thread when we are on one.
        let pools = (self.pool.take(), self.heartbeats.take());
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::spawn(move || drop(pools)).join();
        }
    }
}

fn record(row: &Row) -> Result<AgentRecord> {
    let key: Vec<u8> = row.try_get(7)?;
    let visibility: String = row.try_get(6)?;
    Ok(AgentRecord {
        id: row.try_get(0)?,
        hostname: row.try_get(1)?,
        display_name: row.try_get(2)?,
        description: row.try_get(3)?,
        capabilities: row.try_get(4)?,
        p2p_endpoint: row.try_get(5)?,
        visibility: Visibility::parse(&visibility),
        public_key: key.try_into().map_err(|_| StoreError::Corrupt("public_key is not 32 bytes".into()))?,
        registered_at: row.try_get(8)?,
        last_seen: row.try_get(9)?,
        last_request: row.try_get(10)?,
    })
}

/// A `to_tsquery` text: each word a prefix term, all required; nothing else from user input.
fn ts_query(words: &[String]) -> String {
    words
        .iter()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>())
        .filter(|w| !w.is_empty())
        .map(|w| format!("{w}:*"))
        .collect::<Vec<_>>()
        .join(" & ")
}

impl PostgresStore {
    /// Connects (`postgres://user@host/db`) and migrates the database to the latest schema (a
    /// database written by a newer registry is refused with [`StoreError::TooNew`]). `pool_size`
    /// connections at most.
    pub fn connect(url: &str, pool_size: u32) -> Result<Self> {
        let config: r2d2_postgres::postgres::Config =
            url.parse().map_err(|e: postgres::Error| StoreError::Corrupt(format!("database URL: {e}")))?;
        let mut relaxed = config.clone();
        relaxed.options("-c synchronous_commit=off");
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder().max_size(pool_size.max(1)).build(manager)?;
        let heartbeats =
            r2d2::Pool::builder().max_size(pool_size.max(1)).build(PostgresConnectionManager::new(relaxed, NoTls))?;
        migrate(&mut *pool.get()?)?;
        Ok(PostgresStore { pool: Some(pool), heartbeats: Some(heartbeats) })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        match &self.pool {
            Some(pool) => Ok(pool.get()?),
            None => Err(StoreError::Corrupt("the store is closed".into())),
        }
    }

    /// Empties the table (tests and benchmarks).
    pub fn truncate(&self) -> Result<()> {
        self.conn()?.batch_execute("TRUNCATE agents")?;
        Ok(())
    }
}

/// Runs the upsert statement (`stmt`, prepared from [`upsert_sql`], or the text itself) for `rec`.
fn execute_upsert<T: postgres::ToStatement + ?Sized>(
    client: &mut impl postgres::GenericClient,
    stmt: &T,
    rec: &AgentRecord,
) -> std::result::Result<u64, postgres::Error> {
    let key = rec.public_key.to_vec();
    client.execute(
        stmt,
        &[
            &rec.id,
            &rec.hostname,
            &rec.display_name,
            &rec.description,
            &rec.capabilities,
            &rec.capabilities.join(" "),
            &rec.p2p_endpoint,
            &rec.visibility.as_str(),
            &key,
            &rec.registered_at,
            &rec.last_seen,
            &rec.last_request,
        ],
    )
}

fn upsert_sql() -> &'static str {
    "INSERT INTO agents (id, hostname, display_name, description, capabilities, capabilities_txt, p2p_endpoint,
         visibility, public_key, registered_at, last_seen, last_request)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, display_name = EXCLUDED.display_name,
         description = EXCLUDED.description, capabilities = EXCLUDED.capabilities,
         capabilities_txt = EXCLUDED.capabilities_txt, p2p_endpoint = EXCLUDED.p2p_endpoint,
         visibility = EXCLUDED.visibility, public_key = EXCLUDED.public_key, last_seen = EXCLUDED.last_seen,
         last_request = EXCLUDED.last_request
     WHERE agents.last_request < EXCLUDED.last_request"
}

impl RegistryStore for PostgresStore {
    fn upsert(&self, rec: &AgentRecord) -> Result<Upsert> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let holder = tx.query_opt("SELECT id FROM agents WHERE hostname = $1", &[&rec.hostname])?;
        if holder.is_some_and(|r| r.get::<_, String>(0) != rec.id) {
            return Ok(Upsert::HostnameTaken);
        }
        let existed = tx.query_opt("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE", &[&rec.id])?.is_some();
        let result = execute_upsert(&mut tx, upsert_sql(), rec);
        match result {
            Ok(0) => Ok(Upsert::Stale),
            Ok(_) => {
                tx.commit()?;
                Ok(Upsert::Stored(!existed))
            }
            // Another registry process claimed the hostname between our check and insert.
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(Upsert::HostnameTaken),
            Err(e) => Err(e.into()),
        }
    }

    fn get(&self, id: &str) -> Result<Option<AgentRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE id = $1");
        self.conn()?.query_opt(&sql, &[&id])?.map(|r| record(&r)).transpose()
    }

    fn by_hostname(&self, hostname: &str) -> Result<Option<AgentRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE hostname = $1");
        self.conn()?.query_opt(&sql, &[&hostname])?.map(|r| record(&r)).transpose()
    }

    fn heartbeat(&self, id: &str, key: &[u8; 32], request: i64, now: i64) -> Result<Heartbeat> {
        let mut conn = match &self.heartbeats {
            Some(pool) => pool.get()?,
            None => return Err(StoreError::Corrupt("the store is closed".into())),
        };
        let key = key.to_vec();
        let n = conn.execute(
            "UPDATE agents SET last_seen = $3, last_request = $2 WHERE id = $1 AND last_request < $2 AND public_key = $4",
            &[&id, &request, &now, &key],
        )?;
        if n == 1 {
            return Ok(Heartbeat::Recorded);
        }
        Ok(match conn.query_opt("SELECT public_key FROM agents WHERE id = $1", &[&id])? {
            None => Heartbeat::Unknown,
            Some(row) if row.try_get::<_, Vec<u8>>(0)? != key => Heartbeat::WrongKey,
            Some(_) => Heartbeat::Stale,
        })
    }

    fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.conn()?.execute("DELETE FROM agents WHERE id = $1", &[&id])? == 1)
    }

    fn search(&self, q: &SearchQuery, online_since: i64) -> Result<(Vec<AgentRecord>, u64)> {
        let words = q.text.as_deref().map(query_words).unwrap_or_default();
        let tsq = ts_query(&words);
        let limit = q.limit as i64;
        let offset = q.offset as i64;
        let mut filters = vec!["visibility = 'public'".to_owned(), "last_seen >= $1".to_owned()];
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&online_since];
        if !q.capabilities.is_empty() {
            args.push(&q.capabilities);
            filters.push(format!("capabilities @> ${}", args.len()));
        }
        let order = if tsq.is_empty() {
            // No relevance to rank by: id order, which the primary key gives without a sort.
            "id".to_owned()
        } else {
            args.push(&tsq);
            filters.push(format!("tsv @@ to_tsquery('simple', ${})", args.len()));
            format!("ts_rank(tsv, to_tsquery('simple', ${})) DESC, id", args.len())
        };
        let filter = filters.join(" AND ");
        let mut conn = self.conn()?;
        let total: i64 = conn.query_one(&format!("SELECT COUNT(*) FROM agents WHERE {filter}"), &args)?.try_get(0)?;
        let n = args.len();
        args.push(&limit);
        args.push(&offset);
        let sql =
            format!("SELECT {COLUMNS} FROM agents WHERE {filter} ORDER BY {order} LIMIT ${} OFFSET ${}", n + 1, n + 2);
        let rows = conn.query(&sql, &args)?;
        let recs = rows.iter().map(record).collect::<Result<Vec<_>>>()?;
        Ok((recs, total as u64))
    }

    fn bulk_insert(&self, recs: &[AgentRecord]) -> Result<()> {
        let mut conn = self.conn()?;
        for chunk in recs.chunks(2_000) {
            let mut tx = conn.transaction()?;
            let stmt = tx.prepare(upsert_sql())?;
            for rec in chunk {
                execute_upsert(&mut tx, &stmt, rec)?;
            }
            tx.commit()?;
        }
        // Fresh statistics for the planner after a large load.
        conn.batch_execute("ANALYZE agents")?;
        Ok(())
    }
}
