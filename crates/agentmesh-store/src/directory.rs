//! The directory: agents learnt of through discovery (bootstrap, gossip, LAN), bounded, with the
//! signed record each came with. Being in the directory implies no trust at all.

use agentmesh_api::Source;
use agentmesh_core::{PeerId, Protocol};
use rusqlite::{OptionalExtension, params};

use crate::peers::parsed;
use crate::{Result, Store};

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Agent id.
    pub agent_id: PeerId,
    /// Display name.
    pub name: String,
    /// Base URL from its card.
    pub endpoint: String,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Fingerprint of its current key.
    pub fingerprint: String,
    /// Its Ed25519 key (32 bytes); a newer record must carry the same key or a rotation from it.
    pub ed25519: [u8; 32],
    /// Capability tags from its card.
    pub capabilities: Vec<String>,
    /// The verified record (JSON) as received, passed on unchanged.
    pub record: String,
    /// Where we learnt of it.
    pub source: Source,
    /// First learnt, ms.
    pub first_seen: i64,
    /// Last refreshed, ms.
    pub last_seen: i64,
    /// When its record expires, ms.
    pub expires_at: i64,
}

const COLUMNS: &str = "agent_id, name, endpoint, protocol, fingerprint, ed25519, capabilities, record, source, first_seen, last_seen, expires_at";

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<DirectoryEntry> {
    let caps: String = row.get(6)?;
    let key: Vec<u8> = row.get(5)?;
    Ok(DirectoryEntry {
        agent_id: parsed(row, 0)?,
        name: row.get(1)?,
        endpoint: row.get(2)?,
        protocol: parsed(row, 3)?,
        fingerprint: row.get(4)?,
        ed25519: key.try_into().map_err(|_| rusqlite::Error::IntegralValueOutOfRange(5, 0))?,
        capabilities: serde_json::from_str(&caps).unwrap_or_default(),
        record: row.get(7)?,
        source: parsed(row, 8)?,
        first_seen: row.get(9)?,
        last_seen: row.get(10)?,
        expires_at: row.get(11)?,
    })
}

impl Store {
    /// The entry for `agent_id`.
    pub fn directory_entry(&self, agent_id: &PeerId) -> Result<Option<DirectoryEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM directory WHERE agent_id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([agent_id.as_str()], entry).optional()?)
    }

    /// Stores or refreshes an entry (the caller verified its record and key continuity), then
    /// drops the least recently seen entries beyond `cap`. Returns whether it was new.
    pub fn upsert_directory(&self, e: &DirectoryEntry, cap: usize) -> Result<bool> {
        let known = self.directory_entry(&e.agent_id)?.is_some();
        self.conn
            .prepare_cached(
                "INSERT INTO directory (agent_id, name, endpoint, protocol, fingerprint, ed25519, capabilities, record, source,
                     first_seen, last_seen, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)
                 ON CONFLICT (agent_id) DO UPDATE SET name = excluded.name, endpoint = excluded.endpoint,
                     protocol = excluded.protocol, fingerprint = excluded.fingerprint, ed25519 = excluded.ed25519,
                     capabilities = excluded.capabilities, record = excluded.record, last_seen = excluded.last_seen,
                     expires_at = MAX(directory.expires_at, excluded.expires_at)",
            )?
            .execute(params![
                e.agent_id.as_str(),
                agentmesh_core::text::display_name(&e.name),
                e.endpoint,
                e.protocol.as_str(),
                e.fingerprint,
                &e.ed25519[..],
                serde_json::to_string(&e.capabilities).unwrap_or_else(|_| "[]".into()),
                e.record,
                e.source.as_str(),
                e.last_seen,
                e.expires_at,
            ])?;
        if !known {
            self.conn
                .prepare_cached(
                    "DELETE FROM directory WHERE agent_id IN
                     (SELECT agent_id FROM directory ORDER BY last_seen DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute([cap as i64])?;
        }
        Ok(!known)
    }

    /// Unexpired entries, most recently seen first, optionally matching `query` (a substring of
    /// the name, id or a capability, case-insensitive) and holding every capability in `capabilities`.
    pub fn directory(
        &self,
        now: i64,
        query: Option<&str>,
        capabilities: &[String],
        limit: usize,
    ) -> Result<Vec<DirectoryEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM directory WHERE expires_at > ?1 ORDER BY last_seen DESC");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let query = query.map(str::to_lowercase);
        let mut out = Vec::new();
        for e in stmt.query_map([now], entry)? {
            let e = e?;
            let text_ok = query.as_deref().is_none_or(|q| {
                e.name.to_lowercase().contains(q)
                    || e.agent_id.as_str().to_lowercase().contains(q)
                    || e.capabilities.iter().any(|c| c.to_lowercase().contains(q))
            });
            let caps_ok = capabilities.iter().all(|c| e.capabilities.iter().any(|have| have.eq_ignore_ascii_case(c)));
            if text_ok && caps_ok {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Drops entries whose record has expired; returns how many.
    pub fn prune_directory(&self, now: i64) -> Result<usize> {
        Ok(self.conn.prepare_cached("DELETE FROM directory WHERE expires_at <= ?1")?.execute([now])?)
    }
}
