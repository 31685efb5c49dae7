//! File transfers, both directions (`transfers`).

use agentmesh_api::{Direction, Transfer, TransferState};
use agentmesh_core::PeerId;
use rusqlite::{OptionalExtension, Row, params};

use crate::peers::parsed;
use crate::{Result, Store};

/// A transfer with what only the node sees: the per-transfer secret, the committed chunk count
/// and, for ours, the source file's modification time when offered.
#[derive(Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The transfer as the owner sees it (`path`: the source for outgoing, the saved file for
    /// incoming).
    pub transfer: Transfer,
    /// The per-transfer secret (32 bytes).
    pub key: [u8; 32],
    /// Chunks committed (incoming) or the chunk the last fetch started at (outgoing).
    pub chunks_done: u64,
    /// Outgoing: the source's modification time when offered, ns since the Unix epoch.
    pub source_mtime: Option<i64>,
    /// Incoming, verified and being saved: the path it is linked to (recorded before the link,
    /// so a restart finishes the save instead of saving a second copy).
    pub saving_path: Option<String>,
}

impl std::fmt::Debug for TransferRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferRecord")
            .field("transfer", &self.transfer)
            .field("key", &"..")
            .field("chunks_done", &self.chunks_done)
            .field("source_mtime", &self.source_mtime)
            .field("saving_path", &self.saving_path)
            .finish()
    }
}

/// What `Store::transfers` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferFilter {
    /// Only transfers with this peer.
    pub peer: Option<PeerId>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only offered or transferring ones.
    pub open: bool,
    /// At most this many (default 100, at most 10,000), newest first.
    pub limit: Option<u32>,
}

const COLUMNS: &str = "transfer_id, peer_id, direction, name, size, sha256, chunk_size, key, call_id, state, \
     chunks_done, bytes_done, source_path, source_mtime, final_path, error, created_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<TransferRecord> {
    let direction: Direction = parsed(row, 2)?;
    let key: Vec<u8> = row.get(7)?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Blob, "key size".into()))?;
    let source: Option<String> = row.get(12)?;
    let saved: Option<String> = row.get(14)?;
    let size: i64 = row.get(4)?;
    let bytes_done: i64 = row.get(11)?;
    let chunks_done: i64 = row.get(10)?;
    let state: TransferState = parsed(row, 9)?;
    // An incoming transfer's path is the saved file's, once saved; before, the path it is being
    // saved to, if any, is the node's own business.
    let (path, saving_path) = match direction {
        Direction::Outgoing => (source, None),
        Direction::Incoming if state == TransferState::Done => (saved, None),
        Direction::Incoming => (None, saved),
    };
    Ok(TransferRecord {
        transfer: Transfer {
            transfer_id: row.get(0)?,
            peer_id: parsed(row, 1)?,
            direction,
            name: row.get(3)?,
            size: size.max(0) as u64,
            sha256: row.get(5)?,
            chunk_size: row.get(6)?,
            call_id: row.get(8)?,
            state,
            bytes_done: bytes_done.max(0) as u64,
            path,
            error: row.get(15)?,
            created_at: row.get(16)?,
            updated_at: row.get(17)?,
        },
        key,
        chunks_done: chunks_done.max(0) as u64,
        source_mtime: row.get(13)?,
        saving_path,
    })
}

impl Store {
    /// Stores a new transfer (outgoing: `transfer.path` is the source).
    pub fn insert_transfer(&self, r: &TransferRecord) -> Result<()> {
        let t = &r.transfer;
        let (source, saved) = match t.direction {
            Direction::Outgoing => (t.path.as_deref(), None),
            Direction::Incoming => (None, t.path.as_deref()),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO transfers (transfer_id, peer_id, direction, name, size, sha256, chunk_size, key, call_id,
                 state, chunks_done, bytes_done, source_path, source_mtime, final_path, error, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?
            .execute(params![
                t.transfer_id,
                t.peer_id.as_str(),
                t.direction.as_str(),
                t.name,
                t.size as i64,
                t.sha256,
                t.chunk_size,
                r.key.as_slice(),
                t.call_id,
                t.state.as_str(),
                r.chunks_done as i64,
                t.bytes_done as i64,
                source,
                r.source_mtime,
                saved,
                t.error,
                t.created_at,
                t.updated_at,
            ])?;
        Ok(())
    }

    /// A transfer by id.
    pub fn transfer(&self, transfer_id: &str) -> Result<Option<TransferRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM transfers WHERE transfer_id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([transfer_id], from_row).optional()?)
    }

    /// Sets a transfer's state, error and (when given) saved path, at `now`. A state that ends
    /// the transfer drops an inline file's bytes.
    pub fn set_transfer_state(
        &self,
        transfer_id: &str,
        state: TransferState,
        error: Option<&str>,
        final_path: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE transfers SET state = ?2, error = ?3, final_path = COALESCE(?4, final_path), updated_at = ?5,
                     inline = CASE WHEN ?2 IN ('offered', 'transferring') THEN inline END
                 WHERE transfer_id = ?1",
            )?
            .execute(params![transfer_id, state.as_str(), error, final_path, now])?;
        Ok(())
    }

    /// Records where an incoming transfer, verified, is about to be linked (before the link).
    pub fn set_transfer_saving(&self, transfer_id: &str, path: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE transfers SET final_path = ?2 WHERE transfer_id = ?1 AND state = 'transferring'")?
            .execute(params![transfer_id, path])?;
        Ok(())
    }

    /// Keeps the bytes of a small file sent inline (a call's `file` line) with its transfer,
    /// until it is saved, declined or cancelled.
    pub fn set_transfer_inline(&self, transfer_id: &str, bytes: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE transfers SET inline = ?2 WHERE transfer_id = ?1")?
            .execute(params![transfer_id, bytes])?;
        Ok(())
    }

    /// The bytes of an inline file not saved yet; `None` for any other transfer.
    pub fn transfer_inline(&self, transfer_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT inline FROM transfers WHERE transfer_id = ?1")?
            .query_row([transfer_id], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    /// Records progress: `chunks` chunks, `bytes` bytes, at `now`.
    pub fn set_transfer_progress(&self, transfer_id: &str, chunks: u64, bytes: u64, now: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE transfers SET chunks_done = ?2, bytes_done = ?3, updated_at = ?4 WHERE transfer_id = ?1",
            )?
            .execute(params![transfer_id, chunks as i64, bytes as i64, now])?;
        Ok(())
    }

    /// Transfers per the filter, newest first.
    pub fn transfers(&self, f: &TransferFilter) -> Result<Vec<TransferRecord>> {
        let limit = f.limit.unwrap_or(100).min(10_000);
        let sql = format!(
            "SELECT {COLUMNS} FROM transfers WHERE (?1 IS NULL OR peer_id = ?1) AND (?2 IS NULL OR direction = ?2)
             AND (?3 = 0 OR state IN ('offered', 'transferring')) ORDER BY rowid DESC LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![f.peer.as_ref().map(PeerId::as_str), f.direction.map(Direction::as_str), f.open, limit],
            from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many transfers are offered or transferring: in `direction` (or both), with `peer`
    /// (or any).
    pub fn open_transfers(&self, direction: Option<Direction>, peer: Option<&PeerId>) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM transfers WHERE state IN ('offered', 'transferring')
                 AND (?1 IS NULL OR direction = ?1) AND (?2 IS NULL OR peer_id = ?2)",
            )?
            .query_row(params![direction.map(Direction::as_str), peer.map(PeerId::as_str)], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, direction: Direction) -> TransferRecord {
        TransferRecord {
            transfer: Transfer {
                transfer_id: id.into(),
                peer_id: PeerId::parse("p1").expect("id"),
                direction,
                name: "a.bin".into(),
                size: 10,
                sha256: "0".repeat(64),
                chunk_size: 4096,
                state: TransferState::Offered,
                bytes_done: 0,
                path: (direction == Direction::Outgoing).then(|| "/tmp/a.bin".into()),
                call_id: None,
                error: None,
                created_at: 1,
                updated_at: 1,
            },
            key: [7; 32],
            chunks_done: 0,
            source_mtime: Some(5),
            saving_path: None,
        }
    }

    #[test]
    fn transfers_round_trip_and_progress() {
        let s = Store::open_in_memory().expect("ok");
        s.insert_transfer(&record("f1", Direction::Outgoing)).expect("ok");
        s.insert_transfer(&record("f2", Direction::Incoming)).expect("ok");
        let out = s.transfer("f1").expect("ok").expect("there");
        assert_eq!(out, record("f1", Direction::Outgoing));
        let inc = s.transfer("f2").expect("ok").expect("there");
        assert_eq!(inc.transfer.path, None, "no saved path before it is done");
        s.set_transfer_progress("f2", 1, 10, 9).expect("ok");
        s.set_transfer_state("f2", TransferState::Done, None, Some("/home/files/a.bin"), 10).expect("ok");
        let inc = s.transfer("f2").expect("ok").expect("there");
        assert_eq!((inc.chunks_done, inc.transfer.bytes_done, inc.transfer.state), (1, 10, TransferState::Done));
        assert_eq!(inc.transfer.path.as_deref(), Some("/home/files/a.bin"));
        assert_eq!(s.open_transfers(None, None).expect("ok"), 1);
        assert_eq!(s.open_transfers(Some(Direction::Incoming), None).expect("ok"), 0);
        // An inline file's bytes stay while it is open, and go with its end.
        s.insert_transfer(&record("f3", Direction::Incoming)).expect("ok");
        s.set_transfer_inline("f3", b"tiny").expect("ok");
        assert_eq!(s.transfer_inline("f3").expect("ok").as_deref(), Some(&b"tiny"[..]));
        s.set_transfer_state("f3", TransferState::Transferring, None, None, 11).expect("ok");
        s.set_transfer_saving("f3", "/home/files/t.bin").expect("ok");
        let saving = s.transfer("f3").expect("ok").expect("there");
        assert_eq!((saving.transfer.path, saving.saving_path.as_deref()), (None, Some("/home/files/t.bin")));
        assert!(s.transfer_inline("f3").expect("ok").is_some());
        s.set_transfer_state("f3", TransferState::Declined, Some("no"), None, 12).expect("ok");
        assert_eq!(s.transfer_inline("f3").expect("ok"), None);
        let open = s.transfers(&TransferFilter { open: true, ..TransferFilter::default() }).expect("ok");
        assert_eq!(open.len(), 1);
        assert!(!format!("{:?}", open[0]).contains("7, 7"), "the key never prints");
    }
}
