//! Integration tests of agentmesh-core: property tests of its formats, and the published test
//! vectors (docs/vectors/) checked against this implementation. One test binary.

mod properties;
mod vectors;
