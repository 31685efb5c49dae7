//! The node's services: what the control API (and the pipeline) call. Each takes typed
//! arguments from `agentmesh_api::control`, works on the store in one transaction, and returns a
//! typed reply or an [`Error`](crate::Error); HTTP stays at the edge.

pub mod calls;
pub mod contacts;
pub mod discovery;
pub mod escalations;
pub mod files;
pub mod keys;
pub mod messages;
pub mod status;
pub mod tasks;
