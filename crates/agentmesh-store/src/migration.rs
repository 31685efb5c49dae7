//! Schema migrations: numbered SQL files applied in order, the version kept in
//! `PRAGMA user_version`. A database newer than this build is refused.

use crate::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/001_init.sql"),
    include_str!("../migrations/002_security.sql"),
    include_str!("../migrations/003_directory.sql"),
    include_str!("../migrations/004_trust.sql"),
    include_str!("../migrations/005_request_sources.sql"),
    include_str!("../migrations/006_events.sql"),
    include_str!("../migrations/007_calls.sql"),
    include_str!("../migrations/008_tasks.sql"),
    include_str!("../migrations/009_a2a.sql"),
    include_str!("../migrations/010_files.sql"),
    include_str!("../migrations/011_hardening.sql"),
    include_str!("../migrations/012_endpoints.sql"),
];

pub(crate) fn migrate(conn: &mut rusqlite::Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::TooNew { found: current, supported });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_newer_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        drop(crate::Store::open(&path).expect("open"));
        let conn = rusqlite::Connection::open(&path).expect("raw");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        assert!(matches!(crate::Store::open(&path), Err(StoreError::TooNew { found: 99, .. })));
    }

    #[test]
    fn migrate_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        drop(crate::Store::open(&path).expect("open"));
        drop(crate::Store::open(&path).expect("reopen"));
    }

    #[test]
    fn version_3_trust_states_become_the_state_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let conn = rusqlite::Connection::open(&path).expect("raw");
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 3).expect("version");
        let card = r#"{"capabilities":["search"]}"#;
        for (id, trust) in [("in", "pending"), ("out", "pending"), ("t", "trusted"), ("b", "blocked")] {
            conn.execute(
                "INSERT INTO peers (agent_id, name, protocol, endpoint, ed25519, fingerprint, card, trust, first_seen, last_seen)
                 VALUES (?1, 'n', 'agentmesh/1', 'http://x', zeroblob(32), 'f', ?2, ?3, 1, 1)",
                rusqlite::params![id, card, trust],
            )
            .expect("peer");
        }
        conn.execute(
            "INSERT INTO contact_requests (request_id, direction, peer_id, purpose, status, protocol, created_at)
             VALUES ('req_1', 'incoming', 'in', '', 'pending', 'agentmesh/1', 1)",
            [],
        )
        .expect("request");
        drop(conn);
        let store = crate::Store::open(&path).expect("migrate");
        let trust = |id: &str| store.peer_by_text(id).expect("get").expect("exists").trust.as_str();
        assert_eq!(
            [trust("in"), trust("out"), trust("t"), trust("b")],
            ["requested_in", "requested_out", "trusted", "blocked"]
        );
        assert_eq!(store.peer_by_text("IN").expect("get").expect("case").capabilities, vec!["search".to_string()]);
        assert!(store.request("req_1").expect("get").is_some());
    }

    #[test]
    fn version_11_peers_get_every_endpoint_of_their_card() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let conn = rusqlite::Connection::open(&path).expect("raw");
        for sql in &MIGRATIONS[..11] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 11).expect("version");
        let native = r#"{"endpoints":["http://10.0.0.5:8787","iroh:00"]}"#;
        let v1 = r#"{"agent_id":"agent-1","endpoint":"http://10.0.0.6:8787"}"#;
        for (id, protocol, endpoint, card) in [
            ("n1", "agentmesh/1", "http://10.0.0.5:8787", Some(native)),
            ("v1", "openclaw-agent-mesh/v1", "http://10.0.0.6:8787", Some(v1)),
            ("bare", "agentmesh/1", "http://10.0.0.7:8787", None),
        ] {
            conn.execute(
                "INSERT INTO peers (agent_id, name, protocol, endpoint, ed25519, fingerprint, card, trust, first_seen, last_seen)
                 VALUES (?1, 'n', ?2, ?3, zeroblob(32), 'f', ?4, 'discovered', 1, 1)",
                rusqlite::params![id, protocol, endpoint, card],
            )
            .expect("peer");
        }
        drop(conn);
        let store = crate::Store::open(&path).expect("migrate");
        let endpoints = |id: &str| store.peer_by_text(id).expect("get").expect("exists").endpoints;
        assert_eq!(endpoints("n1"), ["http://10.0.0.5:8787", "iroh:00"]);
        assert_eq!(endpoints("v1"), ["http://10.0.0.6:8787"]);
        assert_eq!(endpoints("bare"), ["http://10.0.0.7:8787"]);
    }
}
