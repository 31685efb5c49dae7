//! Replays the fuzz seed corpus and every past fuzzer finding (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) through the same harnesses the cargo-fuzz targets run, on
//! stable Rust, so a fixed crash stays fixed.
//!
//! `AGENTMESH_WRITE_SEEDS=1 cargo test -p agentmesh-testkit --test fuzz_corpus` regenerates the
//! generated part of the seed corpus.

use std::path::{Path, PathBuf};

use agentmesh_core::{AgentCard, Identity, RotationStatement};
use agentmesh_node::fuzzing::{self, PeerApiHarness};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("readable corpus file");
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn write_seeds() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    };
    for (i, seed) in fuzzing::peer_api_seeds().iter().enumerate() {
        write("peer_api", &format!("generated-{i}"), seed);
        if i < 3 {
            write("envelope", &format!("generated-{i}"), &seed[2..]);
        }
    }
    let genesis = Identity::from_secret_bytes(&[7; 32], &[8; 32]).expect("keys");
    let card = AgentCard::new(
        &genesis,
        "alice",
        vec!["http://127.0.0.1:8787".into()],
        vec!["chat".into()],
        vec!["agentmesh/1".into()],
        1,
    );
    write("card", "generated-plain", &serde_json::to_vec(&card).expect("json"));
    let next = Identity::from_secret_bytes(&[9; 32], &[10; 32]).expect("keys");
    let statement = RotationStatement::sign(genesis.agent_id(), 1, &genesis, &next, 2);
    let next = next.with_history(genesis.agent_id(), vec![statement]).expect("chain");
    let rotated = AgentCard::new(&next, "alice", vec![], vec![], vec![], 1);
    write("card", "generated-rotated", &serde_json::to_vec(&rotated).expect("json"));
}

#[test]
fn seeds_and_regressions_pass_the_harnesses() {
    if std::env::var_os("AGENTMESH_WRITE_SEEDS").is_some() {
        write_seeds();
    }
    let mut total = 0;
    for (path, bytes) in inputs("envelope") {
        eprintln!("envelope {}", path.display());
        fuzzing::check_envelope(&bytes);
        total += 1;
    }
    for (path, bytes) in inputs("canonical") {
        eprintln!("canonical {}", path.display());
        fuzzing::check_canonical(&bytes);
        total += 1;
    }
    for (path, bytes) in inputs("card") {
        eprintln!("card {}", path.display());
        fuzzing::check_card(&bytes);
        total += 1;
    }
    let harness = PeerApiHarness::new();
    for (path, bytes) in inputs("peer_api") {
        eprintln!("peer_api {}", path.display());
        harness.check(&bytes);
        total += 1;
    }
    assert!(total >= 10, "the seed corpus is missing ({total} inputs under {})", fuzz_dir().display());
}

#[test]
fn the_harness_accepts_a_valid_message_and_refuses_a_forged_one() {
    // The harness must reach the real pipeline, or the fuzzer explores nothing.
    let harness = PeerApiHarness::new();
    let seeds = fuzzing::peer_api_seeds();
    let mut forged = seeds[0].clone();
    let sig = String::from_utf8_lossy(&forged).find("\"sig\":\"").expect("a sig member") + 8;
    forged[sig] = if forged[sig] == b'A' { b'B' } else { b'A' };
    let (status, body) = harness.request(&forged);
    assert_eq!(status.as_u16(), 401, "{}", String::from_utf8_lossy(&body));
    let (status, body) = harness.request(&seeds[0]);
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&body));
}
