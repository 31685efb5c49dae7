//! The embedded backend: SQLite with an FTS5 index (`unicode61` tokenizer, prefix queries,
//! bm25 ranking with name > capabilities > description), WAL, one writer connection and a small
//! pool of readers.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::model::{AgentRecord, SearchQuery, Visibility, query_words};
use crate::store::{Heartbeat, RegistryStore, Result, StoreError, Upsert};

/// The schema, one numbered migration per file, applied in order; the version applied last is
/// kept in `PRAGMA user_version`. Append new files, never edit applied ones.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/001_init.sql")];

/// Brings the database up to the latest schema: each missing migration in its own immediate
/// transaction, the version read again inside it so two processes opening one file do not both
/// apply a step. A database newer than this build is refused.
fn migrate(conn: &mut Connection) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > supported {
            return Err(StoreError::TooNew { found: current, supported });
        }
        let index = usize::try_from(current).map_err(|_| StoreError::Corrupt(format!("schema version {current}")))?;
        let Some(sql) = MIGRATIONS.get(index) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}

const COLUMNS: &str = "a.id, a.hostname, a.display_name, a.description, a.capabilities, a.p2p_endpoint, a.visibility, \
                       a.public_key, a.registered_at, a.last_seen, a.last_request";

/// Readers kept open for searches.
const READERS: usize = 4;

/// SQLite registry store.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn record(row: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    let caps: String = row.get(4)?;
    let key: Vec<u8> = row.get(7)?;
    let visibility: String = row.get(6)?;
    Ok(AgentRecord {
        id: row.get(0)?,
        hostname: row.get(1)?,
        display_name: row.get(2)?,
        description: row.get(3)?,
        capabilities: caps.split(' ').filter(|c| !c.is_empty()).map(|c| c.replace('\u{1f}', " ")).collect(),
        p2p_endpoint: row.get(5)?,
        visibility: Visibility::parse(&visibility),
        public_key: key.try_into().map_err(|_| rusqlite::Error::IntegralValueOutOfRange(7, 0))?,
        registered_at: row.get(8)?,
        last_seen: row.get(9)?,
        last_request: row.get(10)?,
    })
}

/// Capabilities as stored in the `capabilities` column (space-separated; spaces inside a tag
/// become U+001F so the tag stays one token list entry).
fn caps_text(caps: &[String]) -> String {
    caps.iter().map(|c| c.replace(' ', "\u{1f}")).collect::<Vec<_>>().join(" ")
}

/// An FTS5 query: every word as a quoted prefix term (no operators from user text get through).
fn fts_query(words: &[String]) -> String {
    words.iter().map(|w| format!("\"{}\"*", w.replace('"', ""))).collect::<Vec<_>>().join(" ")
}

impl SqliteStore {
    /// Opens (creating) the database at `path` and migrates it to the latest schema; a database
    /// written by a newer registry is refused with [`StoreError::TooNew`].
    pub fn open(path: &Path) -> Result<Self> {
        let mut writer = open(path)?;
        migrate(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open(path)?));
        }
        Ok(SqliteStore { writer: Mutex::new(writer), readers, next_reader: Default::default() })
    }

    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let i = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }
}

fn insert(tx: &Connection, rec: &AgentRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO agents (id, hostname, display_name, description, capabilities, p2p_endpoint, visibility, public_key,
             registered_at, last_seen, last_request)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, display_name = excluded.display_name,
             description = excluded.description, capabilities = excluded.capabilities,
             p2p_endpoint = excluded.p2p_endpoint, visibility = excluded.visibility, public_key = excluded.public_key,
             last_seen = excluded.last_seen, last_request = excluded.last_request",
        params![
            rec.id,
            rec.hostname,
            rec.display_name,
            rec.description,
            caps_text(&rec.capabilities),
            rec.p2p_endpoint,
            rec.visibility.as_str(),
            &rec.public_key[..],
            rec.registered_at,
            rec.last_seen,
            rec.last_request,
        ],
    )?;
    let rowid: i64 = tx.query_row("SELECT rowid FROM agents WHERE id = ?1", [&rec.id], |r| r.get(0))?;
    tx.execute("DELETE FROM agent_capabilities WHERE agent = ?1", [rowid])?;
    let mut add = tx.prepare_cached("INSERT OR IGNORE INTO agent_capabilities (agent, capability) VALUES (?1, ?2)")?;
    for c in &rec.capabilities {
        add.execute(params![rowid, c])?;
    }
    Ok(())
}

impl RegistryStore for SqliteStore {
    fn upsert(&self, rec: &AgentRecord) -> Result<Upsert> {
        self.write(|tx| {
            let holder: Option<String> =
                tx.query_row("SELECT id FROM agents WHERE hostname = ?1", [&rec.hostname], |r| r.get(0)).optional()?;
            if holder.as_ref().is_some_and(|h| *h != rec.id) {
                return Ok(Upsert::HostnameTaken);
            }
            let existing: Option<(i64, i64)> = tx
                .query_row("SELECT last_request, registered_at FROM agents WHERE id = ?1", [&rec.id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((last, _)) = existing
                && rec.last_request <= last
            {
                return Ok(Upsert::Stale);
            }
            insert(tx, rec)?;
            Ok(Upsert::Stored(existing.is_none()))
        })
    }

    fn get(&self, id: &str) -> Result<Option<AgentRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM agents a WHERE a.id = ?1");
        self.read(|c| Ok(c.prepare_cached(&sql)?.query_row([id], record).optional()?))
    }

    fn by_hostname(&self, hostname: &str) -> Result<Option<AgentRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM agents a WHERE a.hostname = ?1");
        self.read(|c| Ok(c.prepare_cached(&sql)?.query_row([hostname], record).optional()?))
    }

    fn heartbeat(&self, id: &str, key: &[u8; 32], request: i64, now: i64) -> Result<Heartbeat> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE agents SET last_seen = ?3, last_request = ?2
                     WHERE id = ?1 AND last_request < ?2 AND public_key = ?4",
                )?
                .execute(params![id, request, now, &key[..]])?;
            if n == 1 {
                return Ok(Heartbeat::Recorded);
            }
            let stored: Option<Vec<u8>> =
                tx.query_row("SELECT public_key FROM agents WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            Ok(match stored {
                None => Heartbeat::Unknown,
                Some(k) if k != key[..] => Heartbeat::WrongKey,
                Some(_) => Heartbeat::Stale,
            })
        })
    }

    fn delete(&self, id: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM agents WHERE id = ?1", [id])? == 1))
    }

    fn search(&self, q: &SearchQuery, online_since: i64) -> Result<(Vec<AgentRecord>, u64)> {
        let words = q.text.as_deref().map(query_words).unwrap_or_default();
        let mut filters = vec!["a.visibility = 'public'".to_owned(), "a.last_seen >= ?".to_owned()];
        let mut args: Vec<rusqlite::types::Value> = vec![online_since.into()];
        // Capabilities: with text, each is an EXISTS on the capability index; without text, the
        // first one drives the query through that index, in registration order (no sort).
        let mut caps = q.capabilities.iter();
        let (from, order) = if !words.is_empty() {
            filters.push("agents_fts MATCH ?".to_owned());
            args.push(fts_query(&words).into());
            ("agents_fts JOIN agents a ON a.rowid = agents_fts.rowid".to_owned(), "agents_fts.rank, a.rowid".to_owned())
        } else if let Some(first) = caps.next() {
            filters.push("c0.capability = ?".to_owned());
            args.push(first.clone().into());
            ("agent_capabilities c0 JOIN agents a ON a.rowid = c0.agent".to_owned(), "c0.agent".to_owned())
        } else {
            ("agents a".to_owned(), "a.last_seen DESC, a.rowid".to_owned())
        };
        for c in caps {
            filters.push(
                "EXISTS (SELECT 1 FROM agent_capabilities c WHERE c.agent = a.rowid AND c.capability = ?)".to_owned(),
            );
            args.push(c.clone().into());
        }
        let filter = filters.join(" AND ");
        let count_sql = format!("SELECT COUNT(*) FROM {from} WHERE {filter}");
        let page_sql = format!("SELECT {COLUMNS} FROM {from} WHERE {filter} ORDER BY {order} LIMIT ? OFFSET ?");
        self.read(|c| {
            let total: i64 = c.prepare_cached(&count_sql)?.query_row(params_from_iter(args.iter()), |r| r.get(0))?;
            let mut page_args = args.clone();
            page_args.push((q.limit as i64).into());
            page_args.push((q.offset as i64).into());
            let mut stmt = c.prepare_cached(&page_sql)?;
            let rows = stmt.query_map(params_from_iter(page_args.iter()), record)?;
            let recs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((recs, total as u64))
        })
    }

    fn bulk_insert(&self, recs: &[AgentRecord]) -> Result<()> {
        for chunk in recs.chunks(5_000) {
            self.write(|tx| {
                for rec in chunk {
                    insert(tx, rec)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_version(path: &Path) -> i64 {
        let conn = Connection::open(path).expect("raw open");
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version")
    }

    #[test]
    fn new_database_is_at_the_latest_version_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        drop(SqliteStore::open(&path).expect("open"));
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
        drop(SqliteStore::open(&path).expect("reopen"));
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_a_database_newer_than_this_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        drop(SqliteStore::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = SqliteStore::open(&path).err().expect("a newer database is refused");
        assert!(matches!(err, StoreError::TooNew { found: 99, supported } if supported == MIGRATIONS.len() as i64));
        assert!(err.to_string().contains("newer"), "{err}");
        assert_eq!(user_version(&path), 99, "a refused database is left alone");
    }

    /// A database made before versioning (schema run at every open, `user_version` 0) opens,
    /// keeps its rows, and its full-text index and ranking still work after 001 runs again.
    #[test]
    fn unversioned_database_from_before_migrations_opens_and_keeps_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        let old = crate::conformance::sample(1, "Old Search", "registered before versioning", &["search"], 1_000);
        {
            let conn = open(&path).expect("raw open");
            conn.execute_batch(MIGRATIONS[0]).expect("old schema");
            conn.execute_batch(MIGRATIONS[0]).expect("old schema, run at a second open");
            insert(&conn, &old).expect("old row");
        }
        assert_eq!(user_version(&path), 0);
        let store = SqliteStore::open(&path).expect("open an unversioned database");
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
        assert_eq!(store.get(&old.id).expect("get"), Some(old.clone()));
        let newer = crate::conformance::sample(2, "Newer", "a search helper", &["search"], 1_000);
        assert_eq!(store.upsert(&newer).expect("insert"), Upsert::Stored(true));
        let q = SearchQuery { text: Some("search".into()), capabilities: vec![], limit: 10, offset: 0 };
        let (found, total) = store.search(&q, 0).expect("search");
        assert_eq!(total, 2);
        assert_eq!(found[0].id, old.id, "the name match still ranks first");
        let configs: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM agents_fts_config WHERE k = 'rank'", [], |r| r.get(0))?))
            .expect("rank config");
        assert_eq!(configs, 1, "re-running the rank option leaves one setting");
    }
}
