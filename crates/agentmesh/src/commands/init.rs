//! `agentmesh init`.

use agentmesh_api::ErrorCode;
use agentmesh_node::{Config, Profile};
use anyhow::Result;
use serde_json::json;

use super::{Ctx, fail};
use crate::cli::InitArgs;
use crate::output;

pub(crate) fn run(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let name = args.name.trim();
    if name.is_empty() || name.chars().count() > agentmesh_core::card::MAX_NAME_CHARS {
        return Err(fail(
            ErrorCode::InvalidArgument,
            format!("--name must be 1 to {} characters", agentmesh_core::card::MAX_NAME_CHARS),
        ));
    }
    if let Some(e) = &args.endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(fail(ErrorCode::InvalidEndpoint, "--endpoint must be an http:// or https:// URL"));
    }
    if args.capabilities.len() > agentmesh_core::card::MAX_CAPABILITIES
        || args.capabilities.iter().any(|c| c.is_empty() || c.len() > 64)
    {
        return Err(fail(
            ErrorCode::InvalidArgument,
            format!("capabilities: at most {} tags of 1 to 64 bytes", agentmesh_core::card::MAX_CAPABILITIES),
        ));
    }
    let profile = Profile {
        name: name.to_owned(),
        endpoint: args.endpoint.clone(),
        capabilities: args.capabilities.clone(),
        created_at: 0,
    };
    let identity = ctx.home.init(&profile, args.force)?;
    let home = ctx.home.root().display().to_string();
    // Where `up` will listen: the endpoint's own address when it names this host over http.
    let listen = Config::load(&ctx.home.config_path())?.listen_addr(args.endpoint.as_deref());
    let up = format!("agentmesh up --home {home}");
    if ctx.json {
        output::json_doc(&json!({
            "agent_id": identity.agent_id().to_string(),
            "fingerprint": identity.fingerprint(),
            "name": name,
            "endpoint": args.endpoint,
            "capabilities": args.capabilities,
            "home": home,
            "listen": listen.to_string(),
        }));
    } else {
        output::line(&format!("Created agent {name}"));
        output::line(&format!("  agent id:    {}", identity.agent_id()));
        output::line(&format!("  fingerprint: {}", identity.fingerprint()));
        output::line(&format!("  home:        {home}"));
        output::line(&format!("Start it with: {up}   (listens on {listen})"));
    }
    Ok(())
}
