//! The storage conformance suite against SQLite (always) and PostgreSQL (an ignored test, run with
//! `cargo nextest run --run-ignored only`: it needs `DATABASE_URL`, which `.ci/run` provides by
//! starting one on loopback; without it the test fails).

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
#[ignore = "needs PostgreSQL: set DATABASE_URL (eval \"$(.ci/postgres.sh start)\"); .ci/run runs it"]
fn postgres_passes_the_conformance_suite_and_shares_one_database() {
    let url =
        conformance::postgres_url(std::env::var("DATABASE_URL").ok().as_deref()).unwrap_or_else(|e| panic!("{e}"));
    use agentmesh_registry::{RegistryStore, SearchQuery, StoreError, Upsert};
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

    // Migrations: the version is recorded, reopening changes nothing, a newer database is refused.
    drop(store);
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).expect("raw connection");
    let version = |raw: &mut postgres::Client| -> i32 {
        raw.query_one("SELECT version FROM registry_schema", &[]).expect("schema version").get(0)
    };
    let supported = version(&mut raw);
    assert!(supported >= 1, "a migrated database records its version");
    drop(PostgresStore::connect(&url, 1).expect("reopen"));
    assert_eq!(version(&mut raw), supported, "reopening applies nothing");
    raw.execute("UPDATE registry_schema SET version = 99", &[]).expect("bump");
    let refused = PostgresStore::connect(&url, 1).err();
    // Restore before asserting, so a failure leaves the shared database usable.
    raw.execute("UPDATE registry_schema SET version = $1", &[&supported]).expect("restore");
    match refused {
        Some(StoreError::TooNew { found: 99, supported: s }) => assert_eq!(s, i64::from(supported)),
        Some(other) => panic!("expected TooNew, got {other}"),
        None => panic!("a database newer than this build opened"),
    }
    assert_eq!(version(&mut raw), supported, "a refused database is left alone");
    drop(PostgresStore::connect(&url, 1).expect("opens again once restored"));

    // A database made before versioning (tables, no `registry_schema`) opens and keeps its rows.
    let store = PostgresStore::connect(&url, 1).expect("connect");
    let old = conformance::sample(79, "Old Search", "registered before versioning", &["search"], 5_000);
    assert_eq!(store.upsert(&old).expect("old row"), Upsert::Stored(true));
    drop(store);
    raw.batch_execute("DROP TABLE registry_schema").expect("forget the version");
    let store = PostgresStore::connect(&url, 1).expect("open an unversioned database");
    assert_eq!(version(&mut raw), supported);
    assert_eq!(store.get(&old.id).expect("get"), Some(old.clone()));
    let q = SearchQuery { text: Some("sea".into()), capabilities: vec!["search".into()], limit: 10, offset: 0 };
    assert_eq!(store.search(&q, 0).expect("search").1, 1);
    drop(store);

    // Several registries starting at once on an empty database: each step applied once.
    raw.batch_execute("DROP TABLE agents; DROP TABLE registry_schema").expect("empty the database");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn({
                let url = url.clone();
                move || PostgresStore::connect(&url, 1)
            })
        })
        .collect();
    for start in starts {
        drop(start.join().expect("thread").expect("concurrent start"));
    }
    assert_eq!(version(&mut raw), supported);
    let rows: i64 = raw.query_one("SELECT COUNT(*) FROM registry_schema", &[]).expect("count").get(0);
    assert_eq!(rows, 1, "one version row");
    PostgresStore::connect(&url, 1).expect("connect").truncate().expect("truncate");
}

#[test]
fn regression_the_postgres_suite_never_passes_without_a_database() {
    for missing in [None, Some(""), Some("  ")] {
        let err = conformance::postgres_url(missing).expect_err("no database is an error, not a pass");
        assert!(err.contains(".ci/postgres.sh start"), "the message says how to start one: {err}");
    }
    let url = "postgres://agentmesh@127.0.0.1:54329/registry";
    assert_eq!(conformance::postgres_url(Some(url)), Ok(url.to_owned()));
}
