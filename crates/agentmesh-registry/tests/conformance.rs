//! The storage conformance suite against SQLite (always) and PostgreSQL (when `DATABASE_URL` is
//! set; `.ci/run` starts one on loopback).

use agentmesh_registry::conformance;
use agentmesh_registry::postgres::PostgresStore;
use agentmesh_registry::sqlite::SqliteStore;

#[test]
fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("registry.db")).expect("open");
    conformance::run(&store);
}

/// One test for everything PostgreSQL: the tests share one database and must not interleave.
#[test]
fn postgres_passes_the_conformance_suite_and_shares_one_database() {
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED postgres conformance: DATABASE_URL is not set (.ci/run sets it)");
        return;
    };
    use agentmesh_registry::{RegistryStore, Upsert};
    let store = PostgresStore::connect(&url, 4).expect("connect");
    store.truncate().expect("truncate");
    conformance::run(&store);
    store.truncate().expect("truncate");

    // Two registries (two stores, as two processes would hold) in front of one database.
    let other = PostgresStore::connect(&url, 2).expect("second registry");
    let rec = conformance::sample(77, "Shared", "written through one registry", &["shared"], 5_000);
    assert_eq!(store.upsert(&rec).expect("write via one"), Upsert::Stored(true));
    assert_eq!(other.get(&rec.id).expect("read via the other"), Some(rec.clone()));
    let mut claim = conformance::sample(78, "Other", "", &[], 5_000);
    claim.hostname = rec.hostname.clone();
    assert_eq!(other.upsert(&claim).expect("claim"), Upsert::HostnameTaken, "uniqueness holds across registries");
    drop(other);
    store.truncate().expect("truncate");
}
