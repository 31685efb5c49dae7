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

#[test]
fn postgres_passes_the_conformance_suite() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("SKIPPED postgres conformance: DATABASE_URL is not set (.ci/run sets it)");
        return;
    };
    let store = PostgresStore::connect(&url, 4).expect("connect");
    store.truncate().expect("truncate");
    conformance::run(&store);
    store.truncate().expect("truncate");
}
