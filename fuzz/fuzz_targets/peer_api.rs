//! Fuzz target: the real peer API router over an in-memory store
//! (`agentmesh_node::fuzzing::PeerApiHarness`).
#![no_main]

use std::sync::LazyLock;

use agentmesh_node::fuzzing::PeerApiHarness;

static HARNESS: LazyLock<PeerApiHarness> = LazyLock::new(PeerApiHarness::new);

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS.check(data));
