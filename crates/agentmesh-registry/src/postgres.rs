//! The PostgreSQL backend, for deployments where several stateless registry processes share one
//! database: a `tsvector` column (weights A name, B capabilities, C description; `simple`
//! configuration, prefix queries, `ts_rank` ordering) with a GIN index, a GIN index on the
//! capability array, and every operation one statement or one transaction, so concurrent
//! registries stay consistent (hostname uniqueness and the replay guard are enforced by the
//! database).

use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::postgres::types::ToSql;
use r2d2_postgres::postgres::{NoTls, Row};

use crate::model::{AgentRecord, SearchQuery, Visibility, query_words};
use crate::store::{RegistryStore, Result, StoreError, Upsert};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    id               TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    description      TEXT NOT NULL,
    capabilities     TEXT[] NOT NULL,
    capabilities_txt TEXT NOT NULL,
    p2p_endpoint     TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    public_key       BYTEA NOT NULL,
    registered_at    BIGINT NOT NULL,
    last_seen        BIGINT NOT NULL,
    last_request     BIGINT NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', display_name), 'A') ||
        setweight(to_tsvector('simple', capabilities_txt), 'B') ||
        setweight(to_tsvector('simple', description), 'C')) STORED
);
CREATE INDEX IF NOT EXISTS agents_tsv ON agents USING GIN (tsv);
CREATE INDEX IF NOT EXISTS agents_capabilities ON agents USING GIN (capabilities);
CREATE INDEX IF NOT EXISTS agents_last_seen ON agents (last_seen);
";

const COLUMNS: &str = "id, hostname, display_name, description, capabilities, p2p_endpoint, visibility, public_key, \
                       registered_at, last_seen, last_request";

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// PostgreSQL registry store.
pub struct PostgresStore {
    pool: Pool,
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
    /// Connects (`postgres://user@host/db`), creates the schema if needed. `pool_size`
    /// connections at most.
    pub fn connect(url: &str, pool_size: u32) -> Result<Self> {
        let config: r2d2_postgres::postgres::Config =
            url.parse().map_err(|e: postgres::Error| StoreError::Corrupt(format!("database URL: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder().max_size(pool_size.max(1)).build(manager)?;
        let mut conn = pool.get()?;
        // Several registries may start at once: serialize schema creation.
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(8111)", &[])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
        Ok(PostgresStore { pool })
    }

    /// Empties the table (tests and benchmarks).
    pub fn truncate(&self) -> Result<()> {
        self.pool.get()?.batch_execute("TRUNCATE agents")?;
        Ok(())
    }
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
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let holder = tx.query_opt("SELECT id FROM agents WHERE hostname = $1", &[&rec.hostname])?;
        if holder.is_some_and(|r| r.get::<_, String>(0) != rec.id) {
            return Ok(Upsert::HostnameTaken);
        }
        let existed = tx.query_opt("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE", &[&rec.id])?.is_some();
        let key = rec.public_key.to_vec();
        let result = tx.execute(
            upsert_sql(),
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
        );
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
        self.pool.get()?.query_opt(&sql, &[&id])?.map(|r| record(&r)).transpose()
    }

    fn by_hostname(&self, hostname: &str) -> Result<Option<AgentRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE hostname = $1");
        self.pool.get()?.query_opt(&sql, &[&hostname])?.map(|r| record(&r)).transpose()
    }

    fn heartbeat(&self, id: &str, request: i64, now: i64) -> Result<Option<bool>> {
        let mut conn = self.pool.get()?;
        let n = conn.execute(
            "UPDATE agents SET last_seen = $3, last_request = $2 WHERE id = $1 AND last_request < $2",
            &[&id, &request, &now],
        )?;
        if n == 1 {
            return Ok(Some(true));
        }
        Ok(conn.query_opt("SELECT 1 FROM agents WHERE id = $1", &[&id])?.map(|_| false))
    }

    fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.pool.get()?.execute("DELETE FROM agents WHERE id = $1", &[&id])? == 1)
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
            "last_seen DESC, id".to_owned()
        } else {
            args.push(&tsq);
            filters.push(format!("tsv @@ to_tsquery('simple', ${})", args.len()));
            format!("ts_rank(tsv, to_tsquery('simple', ${})) DESC, id", args.len())
        };
        let filter = filters.join(" AND ");
        let mut conn = self.pool.get()?;
        let total: i64 = conn.query_one(&format!("SELECT COUNT(*) FROM agents WHERE {filter}"), &args)?.try_get(0)?;
        let n = args.len();
        args.push(&limit);
        args.push(&offset);
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE {filter} ORDER BY {order} LIMIT ${} OFFSET ${}", n + 1, n + 2);
        let rows = conn.query(&sql, &args)?;
        let recs = rows.iter().map(record).collect::<Result<Vec<_>>>()?;
        Ok((recs, total as u64))
    }

    fn bulk_insert(&self, recs: &[AgentRecord]) -> Result<()> {
        let mut conn = self.pool.get()?;
        for chunk in recs.chunks(2_000) {
            let mut tx = conn.transaction()?;
            let stmt = tx.prepare(upsert_sql())?;
            for rec in chunk {
                let key = rec.public_key.to_vec();
                tx.execute(
                    &stmt,
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
                )?;
            }
            tx.commit()?;
        }
        Ok(())
    }
}
