//! Fuzz target: see `agentmesh_node::fuzzing::check_card`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh_node::fuzzing::check_card(data));
