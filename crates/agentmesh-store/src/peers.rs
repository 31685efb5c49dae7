//! Known peers and their trust state.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::{Result, Store, StoreError};

/// Trust state of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Seen (card fetched or a contact request sent); not trusted.
    Discovered,
    /// A contact request is waiting for an answer, in either direction.
    Pending,
    /// Contacts: their messages are accepted.
    Trusted,
    /// Refused: nothing from them is accepted, not even contact requests.
    Blocked,
}

impl Trust {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Discovered => "discovered",
            Trust::Pending => "pending",
            Trust::Trusted => "trusted",
            Trust::Blocked => "blocked",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "discovered" => Trust::Discovered,
            "pending" => Trust::Pending,
            "trusted" => Trust::Trusted,
            "blocked" => Trust::Blocked,
            other => return Err(StoreError::Corrupt(format!("trust {other:?}"))),
        })
    }
}

/// A peer row.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    /// Agent id (16 hex for native agents; any V1 id for Agent Mesh V1 peers).
    pub agent_id: String,
    /// Display name.
    pub name: String,
    /// `agentmesh/1` or `openclaw-agent-mesh/v1`.
    pub protocol: String,
    /// Base URL of the peer's node.
    pub endpoint: String,
    /// Ed25519 public key (pinned on first sight).
    #[serde(skip)]
    pub ed25519: [u8; 32],
    /// X25519 HPKE key; `None` for V1 peers, which do not encrypt.
    #[serde(skip)]
    pub x25519: Option<[u8; 32]>,
    /// `sha256:` fingerprint as the peer's protocol defines it.
    pub fingerprint: String,
    /// The last verified card (JSON), if any.
    #[serde(skip)]
    pub card: Option<String>,
    /// Trust state.
    pub trust: Trust,
    /// First seen, ms.
    pub first_seen: i64,
    /// Last heard from or fetched, ms.
    pub last_seen: i64,
}

fn blob32(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = row.get(idx)?;
    v.try_into().map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, 0))
}

const PEER_COLUMNS: &str =
    "agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, trust, first_seen, last_seen";

fn peer_from_row(row: &Row<'_>) -> rusqlite::Result<(Peer, String)> {
    let x: Option<Vec<u8>> = row.get(5)?;
    let trust: String = row.get(8)?;
    Ok((
        Peer {
            agent_id: row.get(0)?,
            name: row.get(1)?,
            protocol: row.get(2)?,
            endpoint: row.get(3)?,
            ed25519: blob32(row, 4)?,
            x25519: x.and_then(|v| v.try_into().ok()),
            fingerprint: row.get(6)?,
            card: row.get(7)?,
            trust: Trust::Discovered,
            first_seen: row.get(9)?,
            last_seen: row.get(10)?,
        },
        trust,
    ))
}

fn finish((mut peer, trust): (Peer, String)) -> Result<Peer> {
    peer.trust = Trust::parse(&trust)?;
    Ok(peer)
}

impl Store {
    /// Inserts a peer, or refreshes the name, endpoint, card and last-seen time of a known one.
    ///
    /// The Ed25519 key is pinned on first sight (TOFU): when a peer with this id is stored with a
    /// different key, nothing changes and `Ok(false)` is returned. Trust of an existing peer is
    /// left as it is; use [`Store::set_trust`].
    pub fn upsert_peer(&self, peer: &Peer) -> Result<bool> {
        let changed = self.conn.execute(
            "INSERT INTO peers (agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, trust, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
             ON CONFLICT (agent_id) DO UPDATE SET
                 name = excluded.name, protocol = excluded.protocol, endpoint = excluded.endpoint,
                 x25519 = COALESCE(excluded.x25519, peers.x25519), fingerprint = excluded.fingerprint,
                 card = COALESCE(excluded.card, peers.card), last_seen = excluded.last_seen
             WHERE peers.ed25519 = excluded.ed25519",
            params![
                peer.agent_id,
                peer.name,
                peer.protocol,
                peer.endpoint,
                &peer.ed25519[..],
                peer.x25519.as_ref().map(|k| &k[..]),
                peer.fingerprint,
                peer.card,
                peer.trust.as_str(),
                peer.last_seen,
            ],
        )?;
        Ok(changed == 1)
    }

    /// The peer with this id.
    pub fn peer(&self, agent_id: &str) -> Result<Option<Peer>> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE agent_id = ?1");
        self.conn.query_row(&sql, [agent_id], peer_from_row).optional()?.map(finish).transpose()
    }

    /// Every peer, most recently seen first.
    pub fn peers(&self) -> Result<Vec<Peer>> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY last_seen DESC, agent_id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], peer_from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Sets a peer's trust; `false` when there is no such peer.
    pub fn set_trust(&self, agent_id: &str, trust: Trust) -> Result<bool> {
        let n =
            self.conn.execute("UPDATE peers SET trust = ?2 WHERE agent_id = ?1", params![agent_id, trust.as_str()])?;
        Ok(n == 1)
    }

    /// Records that we heard from a peer at `at` (ms).
    pub fn touch_peer(&self, agent_id: &str, at: i64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE peers SET last_seen = MAX(last_seen, ?2) WHERE agent_id = ?1")?
            .execute(params![agent_id, at])?;
        Ok(())
    }

    /// Forgets a peer (trust revoked, pin dropped) and fails what is still queued for it.
    /// `false` when there was no such peer.
    pub fn remove_peer(&self, agent_id: &str) -> Result<bool> {
        self.atomic(|s| {
            let n = s.conn.execute("DELETE FROM peers WHERE agent_id = ?1", [agent_id])?;
            s.conn.execute(
                "UPDATE outbox SET status = 'failed', last_error = 'peer removed'
                 WHERE peer_id = ?1 AND status IN ('queued', 'sent')",
                [agent_id],
            )?;
            Ok(n == 1)
        })
    }

    /// Runs `f` atomically: inside one immediate transaction, or, when a transaction is already
    /// open (group commit), inside a savepoint of it. When `f` fails, its writes are rolled back
    /// and nothing else is.
    pub fn atomic<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        let nested = !self.conn.is_autocommit();
        self.conn.execute_batch(if nested { "SAVEPOINT atomic" } else { "BEGIN IMMEDIATE" })?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch(if nested { "RELEASE atomic" } else { "COMMIT" })?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch(if nested { "ROLLBACK TO atomic; RELEASE atomic" } else { "ROLLBACK" });
                Err(e)
            }
        }
    }

    /// Opens a transaction for a group of [`atomic`](Self::atomic) calls (group commit).
    pub fn begin_group(&self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the group; on failure everything in it is rolled back.
    pub fn commit_group(&self) -> Result<()> {
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn peer(id: &str, key: u8) -> Peer {
        Peer {
            agent_id: id.into(),
            name: "bob".into(),
            protocol: "agentmesh/1".into(),
            endpoint: "http://127.0.0.1:1".into(),
            ed25519: [key; 32],
            x25519: Some([2; 32]),
            fingerprint: "sha256:00".into(),
            card: None,
            trust: Trust::Discovered,
            first_seen: 1,
            last_seen: 1,
        }
    }

    #[test]
    fn key_is_pinned_on_first_sight() {
        let s = Store::open_in_memory().expect("db");
        assert!(s.upsert_peer(&peer("p", 1)).expect("insert"));
        assert!(s.set_trust("p", Trust::Trusted).expect("trust"));
        let mut again = peer("p", 1);
        again.endpoint = "http://127.0.0.1:2".into();
        assert!(s.upsert_peer(&again).expect("refresh"));
        let got = s.peer("p").expect("get").expect("exists");
        assert_eq!(got.endpoint, "http://127.0.0.1:2");
        assert_eq!(got.trust, Trust::Trusted, "refresh keeps trust");
        assert!(!s.upsert_peer(&peer("p", 9)).expect("mismatch"), "another key is refused");
        assert_eq!(s.peer("p").expect("get").expect("exists").ed25519, [1; 32]);
    }

    #[test]
    fn a_failing_member_of_a_group_rolls_back_alone() {
        let s = Store::open_in_memory().expect("db");
        s.begin_group().expect("begin");
        s.atomic(|s| s.upsert_peer(&peer("a", 1))).expect("a");
        let failed: Result<()> = s.atomic(|s| {
            s.upsert_peer(&peer("b", 2))?;
            Err(StoreError::Corrupt("boom".into()))
        });
        assert!(failed.is_err());
        s.atomic(|s| s.upsert_peer(&peer("c", 3))).expect("c");
        s.commit_group().expect("commit");
        let ids: Vec<String> = s.peers().expect("peers").into_iter().map(|p| p.agent_id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"a".to_string()) && ids.contains(&"c".to_string()));
    }
}
