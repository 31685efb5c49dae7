//! The node's services: what the control API (and the pipeline) call. Each takes typed
//! arguments from `agentmesh_api::control`, works on the store in one transaction, and returns a
//! typed reply or an [`Error`](crate::Error); HTTP stays at the edge.

pub(crate) mod calls;
pub(crate) mod contacts;
pub(crate) mod discovery;
pub(crate) mod escalations;
pub(crate) mod files;
pub(crate) mod keys;
pub(crate) mod messages;
pub(crate) mod status;
pub(crate) mod tasks;
