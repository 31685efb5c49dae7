//! The carriers this crate brings: HTTP ([`http`]), and how a carrier is started and serves the
//! peer API ([`start`]); the outbound traits and the node's set of carriers are the domain's
//! (`agentmesh_domain::carrier`), re-exported here.

pub(crate) mod http;
pub(crate) mod iroh;
pub(crate) mod start;

pub(crate) use agentmesh_domain::carrier::*;
