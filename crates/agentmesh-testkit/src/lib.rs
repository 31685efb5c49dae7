//! Test support for agentmesh, kept out of the libraries' API: [`local`] runs real `agentmesh up`
//! processes on loopback in temporary homes (the integration tests, `agentmesh demo` and
//! `agentmesh bench` use it), and `tests/fuzz_corpus.rs` replays the fuzz corpus through the
//! node's fuzzing harnesses (feature `fuzzing` of `agentmesh-node`).

pub mod local;
