//! Known peers: pinned keys, cards, and where trust with each stands.

use agentmesh_api::{MismatchDirection, Side, TrustReason, TrustState};
use agentmesh_core::{PeerId, Protocol};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError};

/// A peer row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Agent id (compared without case).
    pub agent_id: PeerId,
    /// Display name from its card.
    pub name: String,
    /// The protocol we speak with it.
    pub protocol: Protocol,
    /// Base URL of the peer's node: the endpoint the HTTP carrier reaches.
    pub endpoint: String,
    /// Every endpoint its card lists, in its order of preference (see
    /// [`agentmesh_core::endpoint`]).
    pub endpoints: Vec<String>,
    /// Ed25519 public key (pinned on first sight, moved only along a verified rotation chain or
    /// by the owner's `repin`).
    pub ed25519: [u8; 32],
    /// X25519 HPKE key; `None` for V1 peers, which do not encrypt.
    pub x25519: Option<[u8; 32]>,
    /// `sha256:` fingerprint as the peer's protocol defines it.
    pub fingerprint: String,
    /// The last verified card or V1 identity document (JSON), if any.
    pub card: Option<String>,
    /// Capability tags from its card.
    pub capabilities: Vec<String>,
    /// Where contact stands.
    pub trust: TrustState,
    /// Why, when declined or closed.
    pub trust_reason: Option<TrustReason>,
    /// While trusted: the peer's request whose approval made us contacts.
    pub trust_via: Option<String>,
    /// While trusted through `trust_via`: our own request approved with it.
    pub trust_mutual: Option<String>,
    /// First seen, ms.
    pub first_seen: i64,
    /// Last heard from or fetched, ms.
    pub last_seen: i64,
    /// A name the owner gave this peer.
    pub alias: Option<String>,
    /// The key the peer rotated away from, accepted on envelopes until `prev_until`.
    pub prev_ed25519: Option<[u8; 32]>,
    /// End of the rotation grace period, ms.
    pub prev_until: Option<i64>,
}

impl Peer {
    /// A `discovered` peer with no key or card yet: its adapter fills in what its verified
    /// document says.
    pub fn discovered(agent_id: PeerId, name: &str, protocol: Protocol, endpoint: &str, now: i64) -> Self {
        Peer {
            agent_id,
            name: name.to_owned(),
            protocol,
            endpoint: endpoint.to_owned(),
            endpoints: vec![endpoint.to_owned()],
            ed25519: [0; 32],
            x25519: None,
            fingerprint: String::new(),
            card: None,
            capabilities: Vec::new(),
            trust: TrustState::Discovered,
            trust_reason: None,
            trust_via: None,
            trust_mutual: None,
            first_seen: now,
            last_seen: now,
            alias: None,
            prev_ed25519: None,
            prev_until: None,
        }
    }

    /// The previous key while the rotation grace period lasts at `now` (ms).
    pub fn previous_key(&self, now: i64) -> Option<[u8; 32]> {
        self.prev_ed25519.filter(|_| self.prev_until.is_some_and(|until| until > now))
    }

    /// The view the control API shows.
    pub fn view(&self) -> agentmesh_api::Peer {
        agentmesh_api::Peer {
            agent_id: self.agent_id.clone(),
            name: self.name.clone(),
            alias: self.alias.clone(),
            protocol: self.protocol,
            endpoint: self.endpoint.clone(),
            endpoints: self.endpoints.clone(),
            fingerprint: self.fingerprint.clone(),
            capabilities: self.capabilities.clone(),
            trust: self.trust,
            trust_reason: self.trust_reason.clone(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            previous_key_until: self.prev_until,
            path: None,
        }
    }
}

/// A pinned agent id that presented another key (see `key_mismatches` in the schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMismatch {
    /// The peer.
    pub peer_id: PeerId,
    /// Fingerprint of the key we pinned.
    pub pinned_fingerprint: String,
    /// Fingerprint of the key it presented.
    pub presented_fingerprint: String,
    /// The presented Ed25519 key.
    pub presented_ed25519: [u8; 32],
    /// The presented X25519 key (native peers).
    pub presented_x25519: Option<[u8; 32]>,
    /// The presented card or discovery document, JSON.
    pub presented_card: Option<String>,
    /// How it was seen.
    pub direction: MismatchDirection,
    /// How many times it was seen.
    pub count: i64,
    /// First seen, ms.
    pub first_at: i64,
    /// Last seen, ms.
    pub last_at: i64,
    /// When the owner repinned, ms; `None` while refused.
    pub resolved_at: Option<i64>,
}

impl KeyMismatch {
    /// The view the control API shows.
    pub fn view(&self) -> agentmesh_api::KeyMismatch {
        agentmesh_api::KeyMismatch {
            peer_id: self.peer_id.clone(),
            pinned_fingerprint: self.pinned_fingerprint.clone(),
            presented_fingerprint: self.presented_fingerprint.clone(),
            direction: self.direction,
            count: self.count,
            first_at: self.first_at,
            last_at: self.last_at,
            resolved_at: self.resolved_at,
        }
    }
}

/// Most key-mismatch records kept; the oldest are dropped first.
pub const MAX_KEY_MISMATCHES: i64 = 1000;

pub(crate) fn blob32(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = row.get(idx)?;
    v.try_into().map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, 0))
}

/// Parses a text column into a typed value, reporting a corrupt row otherwise.
pub(crate) fn parsed<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, format!("{e}").into())
    })
}

/// Like [`parsed`], for a nullable column.
pub(crate) fn parsed_opt<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        t.parse().map_err(|e: T::Err| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, format!("{e}").into())
        })
    })
    .transpose()
}

const PEER_COLUMNS: &str = "agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, trust, first_seen, \
     last_seen, alias, prev_ed25519, prev_until, capabilities, trust_by, trust_code, trust_via, trust_mutual, endpoints";

fn peer_from_row(row: &Row<'_>) -> rusqlite::Result<Peer> {
    let x: Option<Vec<u8>> = row.get(5)?;
    let capabilities: String = row.get(14)?;
    let by: Option<Side> = parsed_opt(row, 15)?;
    let code: Option<String> = row.get(16)?;
    Ok(Peer {
        agent_id: parsed(row, 0)?,
        name: row.get(1)?,
        protocol: parsed(row, 2)?,
        endpoint: row.get(3)?,
        endpoints: serde_json::from_str(&row.get::<_, String>(19)?).unwrap_or_default(),
        ed25519: blob32(row, 4)?,
        x25519: x.and_then(|v| v.try_into().ok()),
        fingerprint: row.get(6)?,
        card: row.get(7)?,
        trust: parsed(row, 8)?,
        trust_reason: by.zip(code).map(|(by, code)| TrustReason { by, code }),
        trust_via: row.get(17)?,
        trust_mutual: row.get(18)?,
        first_seen: row.get(9)?,
        last_seen: row.get(10)?,
        alias: row.get(11)?,
        prev_ed25519: row.get::<_, Option<Vec<u8>>>(12)?.and_then(|v| v.try_into().ok()),
        prev_until: row.get(13)?,
        capabilities: serde_json::from_str(&capabilities).unwrap_or_default(),
    })
}

impl Store {
    /// Inserts a peer, or refreshes the name (kept with its invisible characters made visible:
    /// [`agentmesh_core::text::display_name`]), protocol, endpoint, card, capabilities and
    /// last-seen time of a known one.
    ///
    /// The Ed25519 key is pinned on first sight (TOFU): when a peer with this id is stored with a
    /// different key, nothing changes and `Ok(false)` is returned — unless the stored peer was
    /// `removed`, whose pin was dropped: then the new key is pinned. Trust and alias of an existing
    /// peer are left as they are (use [`Store::set_trust`] and [`Store::set_alias`]).
    pub fn upsert_peer(&self, peer: &Peer) -> Result<bool> {
        let capabilities = serde_json::to_string(&peer.capabilities).unwrap_or_else(|_| "[]".into());
        let changed = self.conn.prepare_cached(
            "INSERT INTO peers (agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, capabilities,
                                trust, trust_by, trust_code, first_seen, last_seen, alias, endpoints)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15)
             ON CONFLICT (agent_id) DO UPDATE SET
                 name = excluded.name, protocol = excluded.protocol, endpoint = excluded.endpoint,
                 endpoints = excluded.endpoints,
                 ed25519 = excluded.ed25519,
                 x25519 = CASE WHEN peers.ed25519 = excluded.ed25519 THEN COALESCE(excluded.x25519, peers.x25519)
                               ELSE excluded.x25519 END,
                 prev_ed25519 = CASE WHEN peers.ed25519 = excluded.ed25519 THEN peers.prev_ed25519 END,
                 prev_until = CASE WHEN peers.ed25519 = excluded.ed25519 THEN peers.prev_until END,
                 fingerprint = excluded.fingerprint, card = COALESCE(excluded.card, peers.card),
                 capabilities = excluded.capabilities, last_seen = MAX(peers.last_seen, excluded.last_seen)
             WHERE peers.ed25519 = excluded.ed25519 OR peers.trust = 'removed'",
        )?
        .execute(params![
            peer.agent_id.as_str(),
            agentmesh_core::text::display_name(&peer.name),
            peer.protocol.as_str(),
            peer.endpoint,
            &peer.ed25519[..],
            peer.x25519.as_ref().map(|k| &k[..]),
            peer.fingerprint,
            peer.card,
            capabilities,
            peer.trust.as_str(),
            peer.trust_reason.as_ref().map(|r| r.by.as_str()),
            peer.trust_reason.as_ref().map(|r| r.code.as_str()),
            peer.last_seen,
            peer.alias,
            serde_json::to_string(&peer.endpoints).unwrap_or_else(|_| "[]".into()),
        ])?;
        Ok(changed == 1)
    }

    /// Moves a peer's pin to the keys of `rotated` after its rotation chain was verified; the
    /// old key stays accepted until `prev_until` (ms). Name, endpoint and card are refreshed.
    pub fn rotate_peer_key(&self, rotated: &Peer, prev_until: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE peers SET prev_ed25519 = ed25519, prev_until = ?2, ed25519 = ?3, x25519 = ?4,
                 fingerprint = ?5, card = COALESCE(?6, card), name = ?7, endpoint = ?8,
                 last_seen = MAX(last_seen, ?9), endpoints = ?10
             WHERE agent_id = ?1 AND ed25519 != ?3",
            params![
                rotated.agent_id.as_str(),
                prev_until,
                &rotated.ed25519[..],
                rotated.x25519.as_ref().map(|k| &k[..]),
                rotated.fingerprint,
                rotated.card,
                agentmesh_core::text::display_name(&rotated.name),
                rotated.endpoint,
                rotated.last_seen,
                serde_json::to_string(&rotated.endpoints).unwrap_or_else(|_| "[]".into()),
            ],
        )?;
        Ok(n == 1)
    }

    /// Sets the owner's alias for a peer; `false` when there is no such peer. Aliases are unique
    /// (without case): the caller checks first.
    pub fn set_alias(&self, agent_id: &PeerId, alias: Option<&str>) -> Result<bool> {
        Ok(self.conn.execute("UPDATE peers SET alias = ?2 WHERE agent_id = ?1", params![agent_id.as_str(), alias])?
            == 1)
    }

    /// Records that pinned peer `m.peer_id` presented another key (counted once per presented
    /// key; an earlier repin of that key is undone). At most [`MAX_KEY_MISMATCHES`] are kept.
    /// Returns whether it is news to the owner: a new record, or one they had resolved.
    pub fn record_key_mismatch(&self, m: &KeyMismatch) -> Result<bool> {
        let open: Option<bool> = self
            .conn
            .query_row(
                "SELECT resolved_at IS NULL FROM key_mismatches WHERE peer_id = ?1 AND presented_fingerprint = ?2",
                params![m.peer_id.as_str(), m.presented_fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        self.conn.execute(
            "INSERT INTO key_mismatches (peer_id, presented_fingerprint, pinned_fingerprint, presented_ed25519,
                 presented_x25519, presented_card, direction, count, first_at, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
             ON CONFLICT (peer_id, presented_fingerprint) DO UPDATE SET
                 count = count + 1, last_at = excluded.last_at, pinned_fingerprint = excluded.pinned_fingerprint,
                 direction = excluded.direction, resolved_at = NULL",
            params![
                m.peer_id.as_str(),
                m.presented_fingerprint,
                m.pinned_fingerprint,
                &m.presented_ed25519[..],
                m.presented_x25519.as_ref().map(|k| &k[..]),
                m.presented_card,
                m.direction.as_str(),
                m.last_at,
            ],
        )?;
        self.conn.execute(
            "DELETE FROM key_mismatches WHERE (peer_id, presented_fingerprint) IN
                 (SELECT peer_id, presented_fingerprint FROM key_mismatches ORDER BY last_at DESC LIMIT -1 OFFSET ?1)",
            [MAX_KEY_MISMATCHES],
        )?;
        Ok(open != Some(true))
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
                peer_id: parsed(row, 0)?,
                pinned_fingerprint: row.get(1)?,
                presented_fingerprint: row.get(2)?,
                presented_ed25519: blob32(row, 3)?,
                presented_x25519: row.get::<_, Option<Vec<u8>>>(4)?.and_then(|v| v.try_into().ok()),
                presented_card: row.get(5)?,
                direction: parsed(row, 6)?,
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
    pub fn repin(&self, agent_id: &PeerId, fingerprint: &str, now: i64) -> Result<Option<Peer>> {
        let Some(m) = self.key_mismatches(true)?.into_iter().find(|m| {
            m.peer_id.as_str().eq_ignore_ascii_case(agent_id.as_str()) && m.presented_fingerprint == fingerprint
        }) else {
            return Ok(None);
        };
        self.conn.execute(
            "UPDATE peers SET ed25519 = ?2, x25519 = COALESCE(?3, x25519), fingerprint = ?4, card = COALESCE(?5, card),
                 prev_ed25519 = NULL, prev_until = NULL
             WHERE agent_id = ?1",
            params![
                m.peer_id.as_str(),
                &m.presented_ed25519[..],
                m.presented_x25519.as_ref().map(|k| &k[..]),
                m.presented_fingerprint,
                m.presented_card
            ],
        )?;
        self.conn.execute(
            "UPDATE key_mismatches SET resolved_at = ?2 WHERE peer_id = ?1 AND resolved_at IS NULL",
            params![m.peer_id.as_str(), now],
        )?;
        self.peer(&m.peer_id)
    }

    /// The peer with this id (compared without case).
    pub fn peer(&self, agent_id: &PeerId) -> Result<Option<Peer>> {
        self.peer_by_text(agent_id.as_str())
    }

    /// The peer with this id given as text (compared without case).
    pub fn peer_by_text(&self, agent_id: &str) -> Result<Option<Peer>> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE agent_id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([agent_id], peer_from_row).optional()?)
    }

    /// Marks `id` as found by our owner's discovery (a scan, the LAN).
    pub fn mark_found(&self, id: &PeerId) -> Result<()> {
        self.conn.prepare_cached("UPDATE peers SET found_by_owner = 1 WHERE agent_id = ?1")?.execute([id.as_str()])?;
        Ok(())
    }

    /// Whether our owner's discovery found `id` (see [`Store::mark_found`]).
    pub fn found_by_owner(&self, id: &PeerId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT found_by_owner FROM peers WHERE agent_id = ?1")?
            .query_row([id.as_str()], |r| r.get::<_, bool>(0))
            .optional()?
            .unwrap_or(false))
    }

    /// Peers, most recently seen first; removed ones only when `include_removed`.
    pub fn peers(&self, include_removed: bool) -> Result<Vec<Peer>> {
        let sql = format!(
            "SELECT {PEER_COLUMNS} FROM peers WHERE ?1 OR trust != 'removed' ORDER BY last_seen DESC, agent_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([include_removed], peer_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Peers whose id, alias or name equals `text` (without case), or, when none does, starts
    /// with it; removed peers only when nothing else fits. At most 16.
    pub fn find_peers(&self, text: &str) -> Result<Vec<Peer>> {
        let exact = format!(
            "SELECT {PEER_COLUMNS} FROM peers
             WHERE agent_id = ?1 COLLATE NOCASE OR alias = ?1 COLLATE NOCASE OR name = ?1 COLLATE NOCASE
             ORDER BY trust = 'removed', agent_id = ?1 COLLATE NOCASE DESC, alias = ?1 COLLATE NOCASE DESC LIMIT 16"
        );
        let found: Vec<Peer> =
            self.conn.prepare_cached(&exact)?.query_map([text], peer_from_row)?.collect::<rusqlite::Result<_>>()?;
        if !found.is_empty() {
            return Ok(found);
        }
        let escaped: String =
            text.chars().flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] }).collect();
        let prefix = format!(
            "SELECT {PEER_COLUMNS} FROM peers
             WHERE agent_id LIKE ?1 ESCAPE '\\' OR alias LIKE ?1 ESCAPE '\\' OR name LIKE ?1 ESCAPE '\\'
             ORDER BY trust = 'removed', last_seen DESC LIMIT 16"
        );
        let pattern = format!("{escaped}%");
        Ok(self.conn.prepare_cached(&prefix)?.query_map([pattern], peer_from_row)?.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets where trust with a peer stands, and why; `false` when there is no such peer.
    pub fn set_trust(&self, agent_id: &PeerId, trust: TrustState, reason: Option<&TrustReason>) -> Result<bool> {
        self.set_relation(agent_id, trust, reason, None, None)
    }

    /// Sets where trust with a peer stands, why, and (while trusted) the requests it rests on;
    /// `false` when there is no such peer.
    pub fn set_relation(
        &self,
        agent_id: &PeerId,
        trust: TrustState,
        reason: Option<&TrustReason>,
        via: Option<&str>,
        mutual: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE peers SET trust = ?2, trust_by = ?3, trust_code = ?4, trust_via = ?5, trust_mutual = ?6
                 WHERE agent_id = ?1",
            )?
            .execute(params![
                agent_id.as_str(),
                trust.as_str(),
                reason.map(|r| r.by.as_str()),
                reason.map(|r| r.code.as_str()),
                via,
                mutual
            ])?;
        Ok(n == 1)
    }

    /// Records that we heard from a peer at `at` (ms).
    pub fn touch_peer(&self, agent_id: &PeerId, at: i64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE peers SET last_seen = MAX(last_seen, ?2) WHERE agent_id = ?1")?
            .execute(params![agent_id.as_str(), at])?;
        Ok(())
    }

    /// Runs `f` atomically: inside one immediate transaction, or, when a transaction is already
    /// open (group commit), inside a savepoint of it. When `f` fails, its writes are rolled back
    /// and nothing else is. `f` may fail with any error a store error converts into.
    pub fn atomic<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let nested = !self.conn.is_autocommit();
        self.conn
            .execute_batch(if nested { "SAVEPOINT atomic" } else { "BEGIN IMMEDIATE" })
            .map_err(StoreError::from)?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch(if nested { "RELEASE atomic" } else { "COMMIT" }).map_err(StoreError::from)?;
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
            agent_id: PeerId::parse(id).expect("id"),
            name: "bob".into(),
            protocol: Protocol::Native,
            endpoint: "http://127.0.0.1:1".into(),
            endpoints: vec!["http://127.0.0.1:1".into(), format!("iroh:{}", "0a".repeat(32))],
            ed25519: [key; 32],
            x25519: Some([2; 32]),
            fingerprint: "sha256:00".into(),
            card: None,
            capabilities: vec![],
            trust: TrustState::Discovered,
            trust_reason: None,
            trust_via: None,
            trust_mutual: None,
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
        let p = PeerId::parse("p").expect("id");
        assert!(s.set_trust(&p, TrustState::Trusted, None).expect("trust"));
        let mut again = peer("p", 1);
        again.endpoint = "http://127.0.0.1:2".into();
        assert!(s.upsert_peer(&again).expect("refresh"));
        let got = s.peer(&p).expect("get").expect("exists");
        assert_eq!(got.endpoint, "http://127.0.0.1:2");
        assert_eq!(got.trust, TrustState::Trusted, "refresh keeps trust");
        assert!(!s.upsert_peer(&peer("p", 9)).expect("mismatch"), "another key is refused");
        assert_eq!(s.peer(&p).expect("get").expect("exists").ed25519, [1; 32]);
        assert!(!s.upsert_peer(&peer("P", 9)).expect("mismatch"), "ids compare without case");
        // A removed peer's pin is dropped: the next card pins afresh.
        s.set_trust(&p, TrustState::Removed, None).expect("remove");
        assert!(s.upsert_peer(&peer("p", 9)).expect("re-pin"));
        assert_eq!(s.peer(&p).expect("get").expect("exists").ed25519, [9; 32]);
    }

    #[test]
    fn a_failing_member_of_a_group_rolls_back_alone() {
        let s = Store::open_in_memory().expect("db");
        s.begin_group().expect("begin");
        s.atomic::<_, StoreError>(|s| s.upsert_peer(&peer("a", 1))).expect("a");
        let failed: Result<()> = s.atomic(|s| {
            s.upsert_peer(&peer("b", 2))?;
            Err(StoreError::Corrupt("boom".into()))
        });
        assert!(failed.is_err());
        s.atomic::<_, StoreError>(|s| s.upsert_peer(&peer("c", 3))).expect("c");
        s.commit_group().expect("commit");
        let ids: Vec<String> = s.peers(true).expect("peers").into_iter().map(|p| p.agent_id.to_string()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"a".to_string()) && ids.contains(&"c".to_string()));
    }
}
