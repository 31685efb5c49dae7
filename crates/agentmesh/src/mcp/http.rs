//! `agentmesh mcp --http ADDR`: streamable HTTP at `http://ADDR/mcp`, on loopback only, each
//! request carrying `Authorization: Bearer <token>` with the token from `<home>/mcp.token`
//! (made on first use: 32 random bytes as hex, 0600). The token is never printed or logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentmesh_api::ErrorCode;
use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::McpServer;
use super::link::NodeLink;
use crate::commands::{Ctx, fail};

/// `<home>/mcp.token`.
fn token_path(ctx: &Ctx) -> PathBuf {
    ctx.home.root().join("mcp.token")
}

/// The bearer token: read from `path`, or made and written there (0600) if it does not exist.
fn load_or_create_token(path: &Path) -> Result<String> {
    if path.exists() {
        return agentmesh_node::home::read_private_text(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    agentmesh_node::home::write_private(path, token.as_bytes())?;
    Ok(token)
}

/// Equal bytes, in time that depends on the length only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets through requests with the right bearer token; 401 otherwise.
async fn authorize(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    let given = agentmesh_node::credentials::bearer_token(request.headers());
    if given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let body = json!({"error": {
        "code": ErrorCode::Unauthorized.as_str(),
        "message": "missing or wrong bearer token (see mcp.token in the agentmesh home)",
    }});
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response()
}

/// Serves until SIGINT or SIGTERM.
pub(super) async fn serve(
    ctx: &Ctx,
    addr: SocketAddr,
    link: Arc<NodeLink>,
    tools: Arc<ToolRouter<McpServer>>,
) -> Result<()> {
    if !addr.ip().is_loopback() {
        return Err(fail(
            ErrorCode::InvalidArgument,
            format!(
                "--http {addr}: the MCP server listens on loopback only (127.0.0.1 or [::1]); \
                 reach it from elsewhere through an SSH tunnel or a proxy that authenticates"
            ),
        ));
    }
    let path = token_path(ctx);
    let token = Arc::new(load_or_create_token(&path)?);
    let stop = CancellationToken::new();
    let factory = {
        let (link, tools) = (Arc::clone(&link), Arc::clone(&tools));
        move || McpServer::new(Arc::clone(&link), Arc::clone(&tools)).map_err(std::io::Error::other)
    };
    let service = StreamableHttpService::new(
        factory,
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()),
    );
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&token), authorize));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    if ctx.json {
        eprintln!("{}", json!({"event": "ready", "url": url, "token_file": path.display().to_string()}));
    } else {
        eprintln!(
            "agentmesh mcp: streamable HTTP at {url}; send `Authorization: Bearer <token>` with the token in {}",
            path.display()
        );
    }
    let signal = stop.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        signal.cancel();
    });
    let shutdown = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving MCP over HTTP")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_made_once_private_and_compared_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcp.token");
        let made = load_or_create_token(&path).expect("made");
        assert_eq!(made.len(), 64);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_token(&path).expect("read"), made);
        assert!(same(made.as_bytes(), made.as_bytes()));
        assert!(!same(made.as_bytes(), &made.as_bytes()[1..]));
        assert!(!same(b"abcd", b"abce"));
    }
}
