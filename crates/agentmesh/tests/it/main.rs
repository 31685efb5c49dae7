//! Integration tests of the `agentmesh` binary: real processes on 127.0.0.1 (port 0 or free
//! ports), driven through the CLI and the typed control API. One test binary; each module holds
//! a group, `support` the shared helpers (temporary homes, CLI runs, real nodes, waiting for a
//! condition instead of sleeping).

mod a2a;
mod agent_mesh_v1;
mod bad_input;
mod bad_input_routes;
mod calls;
mod claims;
mod cli_flow;
mod crash;
mod events;
mod files;
mod gossip;
mod hooks;
mod hostile;
mod injection;
mod iroh;
mod keys;
mod mcp;
mod mdns;
mod nat;
mod registry;
mod scan;
mod secrets;
mod support;
mod tasks;
mod tls;
mod trust;
mod usability;
