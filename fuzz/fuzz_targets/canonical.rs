//! Fuzz target: see `agentmesh_node::fuzzing::check_canonical`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh_node::fuzzing::check_canonical(data));
