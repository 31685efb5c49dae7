//! The conformance suite every [`RegistryStore`] backend must pass. The tests run it against
//! SQLite always and against PostgreSQL in a test that is ignored unless asked for (it needs
//! `DATABASE_URL`, see [`postgres_url`]).

use crate::model::{AgentRecord, SearchQuery, Visibility};
use crate::store::{Heartbeat, RegistryStore, Upsert};

/// The database the PostgreSQL conformance test runs against, from the `DATABASE_URL`
/// environment value (`None` when unset). The test is ignored by default (`cargo nextest run`
/// reports it skipped) and run on purpose (`--run-ignored`, as `.ci/run` does), so a missing
/// database is an error, never a silent pass.
///
/// Errors: the value is unset or blank; the message says how to start a throwaway database.
pub fn postgres_url(database_url: Option<&str>) -> Result<String, String> {
    database_url.map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).ok_or_else(|| {
        "DATABASE_URL is not set: the PostgreSQL conformance suite needs a database. Start a throwaway one \
         with `eval \"$(.ci/postgres.sh start)\"` (it exports DATABASE_URL) and run the tests again."
            .to_owned()
    })
}

/// A record for tests: id and hostname from `n`.
pub fn sample(n: u32, name: &str, description: &str, capabilities: &[&str], last_seen: i64) -> AgentRecord {
    AgentRecord {
        id: format!("{n:016x}"),
        hostname: format!("host-{n}"),
        display_name: name.to_owned(),
        description: description.to_owned(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        p2p_endpoint: format!("http://127.0.0.1:{}", 10_000 + n),
        visibility: Visibility::Public,
        public_key: [n as u8; 32],
        registered_at: last_seen,
        last_seen,
        last_request: last_seen,
    }
}

fn ids(recs: &[AgentRecord]) -> Vec<String> {
    recs.iter().map(|r| r.id.clone()).collect()
}

fn q(text: Option<&str>, caps: &[&str], limit: usize, offset: usize) -> SearchQuery {
    SearchQuery {
        text: text.map(str::to_owned),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        limit,
        offset,
    }
}

/// Runs every check on an empty store; panics with the failing check.
pub fn run(store: &dyn RegistryStore) {
    let now = 1_000_000_000;
    let online = now - 180_000;

    // Upsert: new, then update; replay guard; hostname claims.
    let alice = sample(1, "Alice Planner", "plans research trips", &["planning", "travel"], now);
    assert_eq!(store.upsert(&alice).expect("insert"), Upsert::Stored(true));
    assert_eq!(store.upsert(&alice).expect("replay"), Upsert::Stale, "same request time is a replay");
    let mut renamed = alice.clone();
    renamed.display_name = "Alice the Planner".into();
    renamed.last_request += 1;
    assert_eq!(store.upsert(&renamed).expect("update"), Upsert::Stored(false));
    assert_eq!(store.get(&alice.id).expect("get").map(|r| r.display_name), Some("Alice the Planner".into()));
    let mut squatter = sample(2, "Mallory", "", &[], now);
    squatter.hostname = alice.hostname.clone();
    assert_eq!(store.upsert(&squatter).expect("squat"), Upsert::HostnameTaken);
    assert!(store.get(&squatter.id).expect("get").is_none(), "a refused claim stores nothing");
    assert_eq!(store.by_hostname("host-1").expect("by hostname").map(|r| r.id), Some(alice.id.clone()));

    // Heartbeats: only later request times count.
    let key = alice.public_key;
    assert_eq!(store.heartbeat(&alice.id, &key, renamed.last_request + 10, now + 5).expect("hb"), Heartbeat::Recorded);
    assert_eq!(store.get(&alice.id).expect("get").map(|r| r.last_seen), Some(now + 5));
    assert_eq!(store.heartbeat(&alice.id, &key, renamed.last_request + 10, now + 6).expect("replay"), Heartbeat::Stale);
    assert_eq!(
        store.heartbeat(&alice.id, &[9; 32], renamed.last_request + 11, now + 6).expect("key"),
        Heartbeat::WrongKey
    );
    assert_eq!(store.get(&alice.id).expect("get").map(|r| r.last_seen), Some(now + 5), "refused beats change nothing");
    assert_eq!(store.heartbeat("ffffffffffffffff", &key, now, now).expect("hb unknown"), Heartbeat::Unknown);

    // Search: text ranking, prefixes, capabilities (all required), visibility, TTL, paging.
    let bob = sample(3, "Bob Search", "finds papers and datasets", &["search", "research"], now);
    let carol = sample(4, "Carol", "searches the web for travel deals", &["search", "travel"], now);
    let mut dave = sample(5, "Dave Search", "private search agent", &["search"], now);
    dave.visibility = Visibility::Private;
    let stale = sample(6, "Erin Search", "offline searcher", &["search"], online - 1);
    for r in [&bob, &carol, &dave, &stale] {
        assert_eq!(store.upsert(r).expect("insert"), Upsert::Stored(true));
    }
    let (found, total) = store.search(&q(Some("search"), &[], 10, 0), online).expect("search");
    assert_eq!(total, 2, "public and online only: {:?}", ids(&found));
    assert_eq!(ids(&found)[0], bob.id, "a name match ranks above a description match");
    let (found, _) = store.search(&q(Some("sea"), &[], 10, 0), online).expect("prefix");
    assert_eq!(found.len(), 2, "words match as prefixes");
    let (found, total) = store.search(&q(None, &["search", "travel"], 10, 0), online).expect("caps");
    assert_eq!((ids(&found), total), (vec![carol.id.clone()], 1), "all capabilities required");
    let (found, _) = store.search(&q(Some("travel"), &["planning"], 10, 0), online).expect("both");
    assert_eq!(ids(&found), vec![alice.id.clone()]);
    let (found, total) = store.search(&q(None, &[], 1, 1), online).expect("page");
    assert_eq!((found.len(), total), (1, 3));
    let (found, total) = store.search(&q(Some("\"*) OR NOT ("), &[], 10, 0), online).expect("operators are text");
    assert_eq!((found.len(), total), (0, 0));
    let (found, _) = store.search(&q(Some("nothing-matches-this"), &[], 10, 0), online).expect("no match");
    assert!(found.is_empty());

    // Delete.
    assert!(store.delete(&bob.id).expect("delete"));
    assert!(!store.delete(&bob.id).expect("delete again"));
    let (_, total) = store.search(&q(Some("search"), &[], 10, 0), online).expect("after delete");
    assert_eq!(total, 1);

    // Bulk insert and capability-only search at size.
    let many: Vec<AgentRecord> = (100..1100)
        .map(|n| sample(n, &format!("agent {n}"), "bulk", if n % 10 == 0 { &["rare"] } else { &["common"] }, now))
        .collect();
    store.bulk_insert(&many).expect("bulk");
    let (found, total) = store.search(&q(None, &["rare"], 50, 0), online).expect("rare");
    assert_eq!((found.len(), total), (50, 100));
}
