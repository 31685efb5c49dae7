//! Local nodes as child processes: what the demo, the benchmark and the integration tests use to
//! run real `agentmesh up` processes on loopback in temporary homes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentmesh_client::{Client, ClientError};
use agentmesh_node::RuntimeInfo;

/// Errors starting or driving a local node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A child process could not be run.
    #[error("running {what}: {source}")]
    Spawn {
        /// What was being run.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command exited with failure.
    #[error("{what} failed: {stderr}")]
    Command {
        /// What was run.
        what: String,
        /// Its standard error.
        stderr: String,
    },
    /// The node did not become ready in time; its log tail is attached.
    #[error("node in {home} did not start within {secs} s; log: {log}")]
    NotReady {
        /// Its home.
        home: String,
        /// Seconds waited.
        secs: u64,
        /// Last lines of its log.
        log: String,
    },
    /// The control API failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A node running as a child process.
pub struct LocalNode {
    /// Its home directory.
    pub home: PathBuf,
    /// Its agent id.
    pub agent_id: String,
    /// Base URL of its peer API.
    pub peer_url: String,
    /// A control API client.
    pub client: Client,
    /// Where its stderr goes.
    pub log: PathBuf,
    child: Option<Child>,
    exe: PathBuf,
}

/// The carrier the tests run over: `AGENTMESH_TEST_CARRIER` (`http`, the default, or `iroh`).
///
/// Panics on any other value: a typo must not run the suites over HTTP unnoticed.
pub fn carrier() -> &'static str {
    match std::env::var("AGENTMESH_TEST_CARRIER").as_deref() {
        Ok("iroh") => "iroh",
        Ok("http") | Err(_) => "http",
        Ok(other) => panic!("AGENTMESH_TEST_CARRIER={other:?}: expected http or iroh"),
    }
}

/// Runs `agentmesh --home HOME init --name NAME [--capability C]...`.
pub fn init(exe: &Path, home: &Path, name: &str, capabilities: &[&str]) -> Result<(), LocalError> {
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home).args(["init", "--name", name]);
    for c in capabilities {
        cmd.args(["--capability", c]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LocalError::Spawn { what: "agentmesh init".into(), source })?;
    if !out.status.success() {
        return Err(LocalError::Command {
            what: "agentmesh init".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

impl LocalNode {
    /// Starts `agentmesh up --listen LISTEN` for `home` and waits (up to 20 s) until its control
    /// API answers. Extra environment variables (e.g. `RUST_LOG`) may be given; one with an
    /// empty value is unset.
    pub async fn start(exe: &Path, home: &Path, listen: &str, env: &[(&str, &str)]) -> Result<Self, LocalError> {
        let log = home.join("node.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| LocalError::Spawn { what: "node log".into(), source })?;
        let mut cmd = Command::new(exe);
        cmd.arg("--home")
            .arg(home)
            .args(["up", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // The suites run over iroh too: `AGENTMESH_TEST_CARRIER=iroh` gives every node an iroh
        // endpoint on loopback, listed first in its card, so peers reach each other over it.
        if carrier() == "iroh" {
            cmd.env("AGENTMESH_IROH_LISTEN", "127.0.0.1:0");
        }
        // An empty value unsets the variable (`("AGENTMESH_IROH_LISTEN", "")`: HTTP only).
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = cmd.spawn().map_err(|source| LocalError::Spawn { what: "agentmesh up".into(), source })?;
        let pid = child.id();
        let started = Instant::now();
        let runtime = home.join("node.json");
        let token_path = home.join("control.token");
        let mut node = None;
        while started.elapsed() < Duration::from_secs(20) {
            let info = std::fs::read(&runtime).ok().and_then(|b| serde_json::from_slice::<RuntimeInfo>(&b).ok());
            let token = std::fs::read_to_string(&token_path).ok();
            if let (Some(info), Some(token)) = (info, token)
                && info.pid == pid
            {
                let client = Client::new(&info.control_url, token.trim())?;
                if client.status().await.is_ok() {
                    node = Some((info, client));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let Some((info, client)) = node else {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            return Err(LocalError::NotReady {
                home: home.display().to_string(),
                secs: 20,
                log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        };
        Ok(LocalNode {
            home: home.to_owned(),
            agent_id: info.agent_id,
            peer_url: info.peer_url,
            client,
            log,
            child: Some(child),
            exe: exe.to_owned(),
        })
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The `host:port` the peer API listens on.
    pub fn listen_addr(&self) -> String {
        self.peer_url.trim_start_matches("http://").to_owned()
    }

    /// Kills the node with SIGKILL (no shutdown at all) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the node with SIGTERM and waits up to 15 s for a clean exit; `true` when it exited
    /// successfully.
    pub async fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts the node again on the same address (after [`kill`](Self::kill) or
    /// [`stop`](Self::stop)).
    pub async fn restart(&mut self) -> Result<(), LocalError> {
        let listen = self.listen_addr();
        let fresh = LocalNode::start(&self.exe, &self.home, &listen, &[]).await?;
        *self = fresh;
        Ok(())
    }

    /// Peak resident set size (`VmHWM`) and current (`VmRSS`) in KiB, from `/proc`.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 25 ms until it yields `Some`, or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
