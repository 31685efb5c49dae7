//! Test support for agentmesh, kept out of the libraries' API: [`local`] runs real `agentmesh up`
//! processes on loopback in temporary homes (the integration tests, `agentmesh demo` and
//! `agentmesh bench` use it), [`iroh_peer`] speaks to a node's peer API over iroh, and `tests/fuzz_corpus.rs` replays the fuzz corpus through the
//! node's fuzzing harnesses (feature `fuzzing` of `agentmesh-node`).

pub mod iroh_peer;
pub mod local;
