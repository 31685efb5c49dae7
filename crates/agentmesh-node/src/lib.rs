//! The agentmesh node: the daemon behind `agentmesh up`.
//!
//! It serves two HTTP APIs from two listeners:
//!
//! * the **peer API**, what other agents call: one adapter per wire protocol (our native
//!   envelopes under `/v1/`, [`native`]; Agent Mesh V1 under `/agent-mesh/`,
//!   [`compat::agent_mesh_v1`]), each parsing and verifying its own format into one
//!   [`pipeline::Inbound`] value that a single path checks, stores and acknowledges;
//! * the **control API**, what the owner and the CLI call ([`agentmesh_api::control`]): bound to
//!   `127.0.0.1` on its own port, every request authenticated with a bearer token that the node
//!   writes to `<home>/control.token` (mode 0600) at start. Its handlers decode, call a service
//!   (`service::*`) and encode.
//!
//! What a node is (its state, the trust state machine, the inbound pipeline, the services and the
//! outbox) lives in `agentmesh-domain`, which knows no HTTP; this crate holds its edges: the peer
//! and control routers, our native protocol's and Agent Mesh V1's routes and adapters, A2A,
//! gossip, the hooks push, the HTTP carrier, and the builder that composes a node from them
//! (`launch`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use agentmesh_node::{Home, UpOptions, launch};
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let node = launch(Home::new("/tmp/alice"), UpOptions::default(), shutdown.clone()).await?;
//! println!("peer API at {}", node.info().peer_url);
//! shutdown.cancel();
//! node.wait().await?;
//! # Ok(()) }
//! ```

mod a2a;
mod api_error;
mod carrier;
pub mod compat;
mod control;
pub mod credentials;
pub mod discovery;
mod extract;
mod forwarded;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gossip;
#[cfg(test)]
mod handler_tests;
mod hooks;
mod launch;
pub mod mdns;
mod native;
pub mod net;
mod peer_api;
mod registration;
mod stall;

pub use agentmesh_domain::{Config, Error, Home, HooksConfig, LaunchError, Profile, RuntimeInfo, config, home, paths};
pub use api_error::ApiError;
pub use launch::{NodeHandle, UpOptions, launch, run};

// The domain's modules and types under the paths the edges name them by.
use agentmesh_domain::{Keys, Node, Parts, adapter, db, error, events, limits, outbox, pipeline, remote, service};
