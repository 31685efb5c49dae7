//! A registry client: signed writes with the agent's identity, and search.

use agentmesh_core::Identity;
use agentmesh_core::time::now_ms;
use serde_json::Value;

use crate::model::{Registration, sign_request};

/// Talks to one registry.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    last_timestamp: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A failed registry call: the status (0 when it did not answer) and its `detail`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("registry {status}: {detail}")]
pub struct RegistryError {
    /// HTTP status, 0 for transport failures.
    pub status: u16,
    /// The registry's `detail`, or the transport error.
    pub detail: String,
}

impl RegistryClient {
    /// A client for the registry at `base` (e.g. `http://127.0.0.1:8001`).
    pub fn new(http: reqwest::Client, base: &str, api_key: Option<String>) -> Self {
        RegistryClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            last_timestamp: Default::default(),
        }
    }

    /// A strictly increasing request timestamp (ms), as the registry's replay guard requires.
    fn timestamp(&self) -> u64 {
        let now = now_ms();
        let mut last = self.last_timestamp.load(std::sync::atomic::Ordering::SeqCst);
        loop {
            let next = now.max(last + 1);
            match self.last_timestamp.compare_exchange(
                last,
                next,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    async fn send(
        &self,
        identity: Option<&Identity>,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Value, RegistryError> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(identity) = identity {
            let path_only = path.split('?').next().unwrap_or(path);
            for (name, value) in sign_request(identity, method.as_str(), path_only, self.timestamp(), &body) {
                request = request.header(name, value);
            }
        }
        if let Some(key) = &self.api_key {
            request = request.header("x-registry-key", key);
        }
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| RegistryError { status: 0, detail: e.to_string() })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| RegistryError { status, detail: e.to_string() })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let detail = value["detail"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(RegistryError { status, detail });
        }
        Ok(value)
    }

    /// Registers (or re-registers) `identity`'s agent; returns the record.
    pub async fn register(&self, identity: &Identity, registration: &Registration) -> Result<Value, RegistryError> {
        let body = serde_json::to_vec(registration).map_err(|e| RegistryError { status: 0, detail: e.to_string() })?;
        self.send(Some(identity), reqwest::Method::POST, "/api/v1/agents/", body).await
    }

    /// Heartbeat for agent `id`.
    pub async fn heartbeat(&self, identity: &Identity, id: &str) -> Result<Value, RegistryError> {
        self.send(Some(identity), reqwest::Method::POST, &format!("/api/v1/agents/{id}/heartbeat"), Vec::new()).await
    }

    /// Removes agent `id`.
    pub async fn deregister(&self, identity: &Identity, id: &str) -> Result<Value, RegistryError> {
        self.send(Some(identity), reqwest::Method::DELETE, &format!("/api/v1/agents/{id}"), Vec::new()).await
    }

    /// Searches: `{"agents":[…],"total":N}`.
    pub async fn search(
        &self,
        text: Option<&str>,
        capabilities: &[String],
        limit: usize,
        offset: usize,
    ) -> Result<Value, RegistryError> {
        let mut pairs: Vec<(&str, String)> = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
        if let Some(t) = text {
            pairs.push(("q", t.to_owned()));
        }
        pairs.extend(capabilities.iter().map(|c| ("capabilities", c.clone())));
        let query =
            serde_urlencoded::to_string(&pairs).map_err(|e| RegistryError { status: 0, detail: e.to_string() })?;
        self.send(None, reqwest::Method::GET, &format!("/api/v1/agents/search?{query}"), Vec::new()).await
    }
}
