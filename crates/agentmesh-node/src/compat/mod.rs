//! Wire compatibility with the protocols agentmesh replaces. Each module translates between its
//! protocol's JSON and our own types at the edge; nothing outside `compat` knows their quirks.

pub mod agent_mesh_v1;
