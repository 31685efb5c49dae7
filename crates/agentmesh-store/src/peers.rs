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
    /// A name the owner gave this peer (`add-peer --alias`).
    pub alias: Option<String>,
    /// The key the peer rotated away from, accepted on envelopes until `prev_until`.
    #[serde(skip)]
    pub prev_ed25519: Option<[u8; 32]>,
    /// End of the rotation grace period, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_until: Option<i64>,
}

impl Peer {
    /// The previous key while the rotation grace period lasts at `now` (ms).
    pub fn previous_key(&self, now: i64) -> Option<[u8; 32]> {
        self.prev_ed25519.filter(|_| self.prev_until.is_some_and(|until| until > now))
    }
}

/// A pinned agent id that presented another key (see `key_mismatches` in the schema).
#[derive(Clone, Debug, Serialize)]
pub struct KeyMismatch {
    /// The peer.
    pub peer_id: String,
    /// Fingerprint of the key we pinned.
    pub pinned_fingerprint: String,
    /// Fingerprint of the key it presented.
    pub presented_fingerprint: String,
    /// The presented Ed25519 key.
    #[serde(skip)]
    pub presented_ed25519: [u8; 32],
    /// The presented X25519 key (native peers).
    #[serde(skip)]
    pub presented_x25519: Option<[u8; 32]>,
    /// The presented card or discovery document, JSON.
    #[serde(skip)]
    pub presented_card: Option<String>,
    /// `inbound` (it called us) or `outbound` (we fetched its card).
    pub direction: String,
    /// How many times it was seen.
    pub count: i64,
    /// First seen, ms.
    pub first_at: i64,
    /// Last seen, ms.
    pub last_at: i64,
    /// When the owner repinned, ms; `None` while refused.
    pub resolved_at: Option<i64>,
}

/// Most key-mismatch records kept; the oldest are dropped first.
pub const MAX_KEY_MISMATCHES: i64 = 1000;

fn blob32(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = row.get(idx)?;
    v.try_into().map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, 0))
}

const PEER_COLUMNS: &str = "agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, trust, first_seen, \
     last_seen, alias, prev_ed25519, prev_until";

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
            alias: row.get(11)?,
            prev_ed25519: row.get::<_, Option<Vec<u8>>>(12)?.and_then(|v| v.try_into().ok()),
            prev_until: row.get(13)?,
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
            "INSERT INTO peers (agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, trust, first_seen, last_seen, alias)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)
             ON CONFLICT (agent_id) DO UPDATE SET
                 name = excluded.name, protocol = excluded.protocol, endpoint = excluded.endpoint,
                 x25519 = COALESCE(excluded.x25519, peers.x25519), fingerprint = excluded.fingerprint,
                 card = COALESCE(excluded.card, peers.card), last_seen = excluded.last_seen,
                 alias = COALESCE(excluded.alias, peers.alias)
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
                peer.alias,
            ],
        )?;
        Ok(changed == 1)
    }

    /// Moves a peer's pin to the keys of `rotated` after its rotation chain was verified; the
    /// old key stays accepted until `prev_until` (ms). Name, endpoint and card are refreshed.
    pub fn rotate_peer_key(&self, rotated: &Peer, prev_until: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE peers SET prev_ed25519 = ed25519, prev_until = ?2, ed25519 = ?3, x25519 = ?4,
                 fingerprint = ?5, card = COALESCE(?6, card), name = ?7, endpoint = ?8,
                 last_seen = MAX(last_seen, ?9)
             WHERE agent_id = ?1 AND ed25519 != ?3",
            params![
                rotated.agent_id,
                prev_until,
                &rotated.ed25519[..],
                rotated.x25519.as_ref().map(|k| &k[..]),
                rotated.fingerprint,
                rotated.card,
                rotated.name,
                rotated.endpoint,
                rotated.last_seen,
            ],
        )?;
        Ok(n == 1)
    }

    /// Sets the owner's alias for a peer; `false` when there is no such peer.
    pub fn set_alias(&self, agent_id: &str, alias: Option<&str>) -> Result<bool> {
        Ok(self.conn.execute("UPDATE peers SET alias = ?2 WHERE agent_id = ?1", params![agent_id, alias])? == 1)
    }

    /// Records that pinned peer `m.peer_id` presented another key (counted once per presented
    /// key; an earlier repin of that key is undone). At most [`MAX_KEY_MISMATCHES`] are kept.
    pub fn record_key_mismatch(&self, m: &KeyMismatch) -> Result<()> {
        self.conn.execute(
            "INSERT INTO key_mismatches (peer_id, presented_fingerprint, pinned_fingerprint, presented_ed25519,
                 presented_x25519, presented_card, direction, count, first_at, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
             ON CONFLICT (peer_id, presented_fingerprint) DO UPDATE SET
                 count = count + 1, last_at = excluded.last_at, pinned_fingerprint = excluded.pinned_fingerprint,
                 direction = excluded.direction, resolved_at = NULL",
            params![
                m.peer_id,
                m.presented_fingerprint,
                m.pinned_fingerprint,
                &m.presented_ed25519[..],
                m.presented_x25519.as_ref().map(|k| &k[..]),
                m.presented_card,
                m.direction,
                m.last_at,
            ],
        )?;
        self.conn.execute(
            "DELETE FROM key_mismatches WHERE (peer_id, presented_fingerprint) IN
                 (SELECT peer_id, presented_fingerprint FROM key_mismatches ORDER BY last_at DESC LIMIT -1 OFFSET ?1)",
            [MAX_KEY_MISMATCHES],
        )?;
        Ok(())
    }

    /// Key mismatches, newest first; only the unresolved ones when `open_only`.
    pub fn key_mismatches(&self, open_only: bool) -> Result<Vec<KeyMismatch>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT peer_id, pinned_fingerprint, presented_fingerprint, presented_ed25519, presented_x25519,
                    presented_card, direction, count, first_at, last_at, resolved_at
             FROM key_mismatches WHERE (?1 = 0 OR resolved_at IS NULL) ORDER BY last_at DESC",
        )?;
        let rows = stmt.query_map([open_only as i64], |row| {
            Ok(KeyMismatch {
                peer_id: row.get(0)?,
                pinned_fingerprint: row.get(1)?,
                presented_fingerprint: row.get(2)?,
                presented_ed25519: blob32(row, 3)?,
                presented_x25519: row.get::<_, Option<Vec<u8>>>(4)?.and_then(|v| v.try_into().ok()),
                presented_card: row.get(5)?,
                direction: row.get(6)?,
                count: row.get(7)?,
                first_at: row.get(8)?,
                last_at: row.get(9)?,
                resolved_at: row.get(10)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Pins the key a peer presented in an open key mismatch with `fingerprint`, after the owner
    /// checked it; resolves the peer's open mismatches. Returns the updated peer, or `None` when
    /// no open mismatch of that peer has that fingerprint.
    pub fn repin(&self, agent_id: &str, fingerprint: &str, now: i64) -> Result<Option<Peer>> {
        let Some(m) = self
            .key_mismatches(true)?
            .into_iter()
            .find(|m| m.peer_id == agent_id && m.presented_fingerprint == fingerprint)
        else {
            return Ok(None);
        };
        self.conn.execute(
            "UPDATE peers SET ed25519 = ?2, x25519 = COALESCE(?3, x25519), fingerprint = ?4, card = COALESCE(?5, card),
                 prev_ed25519 = NULL, prev_until = NULL
             WHERE agent_id = ?1",
            params![
                agent_id,
                &m.presented_ed25519[..],
                m.presented_x25519.as_ref().map(|k| &k[..]),
                m.presented_fingerprint,
                m.presented_card
            ],
        )?;
        self.conn.execute(
            "UPDATE key_mismatches SET resolved_at = ?2 WHERE peer_id = ?1 AND resolved_at IS NULL",
            params![agent_id, now],
        )?;
        self.peer(agent_id)
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
            alias: None,
            prev_ed25519: None,
            prev_until: None,
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
