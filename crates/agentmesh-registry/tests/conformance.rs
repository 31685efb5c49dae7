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

#[test]
fn two_postgres_registries_share_one_database() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("SKIPPED postgres sharing: DATABASE_URL is not set (.ci/run sets it)");
        return;
    };
    use agentmesh_registry::{RegistryStore, Upsert};
    let (a, b) = (PostgresStore::connect(&url, 2).expect("a"), PostgresStore::connect(&url, 2).expect("b"));
    a.truncate().expect("truncate");
    let rec = conformance::sample(77, "Shared", "written through one registry", &["shared"], 5_000);
    assert_eq!(a.upsert(&rec).expect("write via a"), Upsert::Stored(true));
    assert_eq!(b.get(&rec.id).expect("read via b"), Some(rec.clone()));
    let mut claim = conformance::sample(78, "Other", "", &[], 5_000);
    claim.hostname = rec.hostname.clone();
    assert_eq!(b.upsert(&claim).expect("claim via b"), Upsert::HostnameTaken, "uniqueness holds across processes");
    a.truncate().expect("truncate");
}
