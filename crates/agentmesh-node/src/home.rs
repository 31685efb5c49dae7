//! The home directory: identity key files, profile, config, database and runtime files.
//!
//! ```text
//! <home>/
//!   keys/ed25519.key   Ed25519 secret seed, base64 of 32 bytes, mode 0600
//!   keys/x25519.key    X25519 secret, base64 of 32 bytes, mode 0600
//!   profile.json       name, endpoint override, capabilities, created_at (public)
//!   config.toml        optional node settings (see Config)
//!   agentmesh.db       SQLite store
//!   node.json          written by a running node: pid, peer and control URLs (0600)
//!   control.token      bearer token of the running node's control API (0600)
//!   node.lock          held by the running node
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agentmesh_core::{Identity, b64, time::now_ms};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The default home: `$HOME/.openclaw/agentmesh`.
pub fn default_home() -> PathBuf {
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    base.join(".openclaw").join("agentmesh")
}

/// Paths inside a home directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

/// The public profile written by `init`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// Display name.
    pub name: String,
    /// Public base URL peers should use; when absent the node advertises its listen address.
    pub endpoint: Option<String>,
    /// Capability tags.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// When the identity was created, ms.
    pub created_at: u64,
}

/// What a running node publishes about itself in `node.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The node's process id.
    pub pid: u32,
    /// Our agent id.
    pub agent_id: String,
    /// Base URL of the peer API as bound.
    pub peer_url: String,
    /// Base URL of the control API (loopback only).
    pub control_url: String,
}

impl Home {
    /// A home rooted at `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    fn ed25519_path(&self) -> PathBuf {
        self.keys_dir().join("ed25519.key")
    }
    fn x25519_path(&self) -> PathBuf {
        self.keys_dir().join("x25519.key")
    }
    fn profile_path(&self) -> PathBuf {
        self.root.join("profile.json")
    }
    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `agentmesh.db`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("agentmesh.db")
    }
    /// `node.json`.
    pub fn runtime_path(&self) -> PathBuf {
        self.root.join("node.json")
    }
    /// `control.token`.
    pub fn token_path(&self) -> PathBuf {
        self.root.join("control.token")
    }
    /// `node.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("node.lock")
    }

    /// Whether an identity exists here.
    pub fn has_identity(&self) -> bool {
        self.ed25519_path().exists() || self.profile_path().exists()
    }

    /// Creates a new identity and profile. Refuses to replace an existing one unless `force`.
    pub fn init(&self, profile: &Profile, force: bool) -> Result<Identity> {
        if self.has_identity() && !force {
            bail!(
                "an identity already exists in {}; pass --force to replace it (the old keys are lost)",
                self.root.display()
            );
        }
        create_private_dir(&self.root)?;
        create_private_dir(&self.keys_dir())?;
        let identity = Identity::generate();
        write_private(&self.ed25519_path(), b64::encode(*identity.ed25519_secret_bytes()).as_bytes())?;
        write_private(&self.x25519_path(), b64::encode(*identity.x25519_secret_bytes()).as_bytes())?;
        let profile = Profile {
            created_at: if profile.created_at == 0 { now_ms() } else { profile.created_at },
            ..profile.clone()
        };
        fs::write(self.profile_path(), serde_json::to_vec_pretty(&profile)?)
            .with_context(|| format!("writing {}", self.profile_path().display()))?;
        Ok(identity)
    }

    /// Loads the identity, refusing key files that group or others can read (like ssh).
    pub fn load_identity(&self) -> Result<Identity> {
        if !self.ed25519_path().exists() {
            bail!(
                "no identity in {}; create one with `agentmesh init --name NAME --home {}`",
                self.root.display(),
                self.root.display()
            );
        }
        let ed = read_secret(&self.ed25519_path())?;
        let x = read_secret(&self.x25519_path())?;
        Identity::from_secret_bytes(&ed, &x).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Loads `profile.json`.
    pub fn load_profile(&self) -> Result<Profile> {
        let bytes =
            fs::read(self.profile_path()).with_context(|| format!("reading {}", self.profile_path().display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", self.profile_path().display()))
    }

    /// Reads `node.json` and `control.token` of the running node, if any.
    pub fn runtime(&self) -> Option<(RuntimeInfo, String)> {
        let info: RuntimeInfo = serde_json::from_slice(&fs::read(self.runtime_path()).ok()?).ok()?;
        let token = fs::read_to_string(self.token_path()).ok()?.trim().to_owned();
        Some((info, token))
    }
}

fn create_private_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod {}", path.display()))
}

/// Writes a file readable and writable by its owner only (0600), replacing it atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn read_secret(path: &Path) -> Result<[u8; 32]> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "private key file {} has mode {mode:04o}, readable by others; fix it with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text =
        zeroize::Zeroizing::new(fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    b64::decode_array::<32>(text.trim()).with_context(|| format!("{} does not hold a 32-byte key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile { name: "a".into(), endpoint: None, capabilities: vec![], created_at: 0 }
    }

    #[test]
    fn init_writes_private_keys_and_refuses_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path().join("h"));
        let id = home.init(&profile(), false).expect("init");
        let mode = fs::metadata(home.ed25519_path()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(home.load_identity().expect("load").agent_id(), id.agent_id());
        assert!(home.init(&profile(), false).is_err());
        let again = home.init(&profile(), true).expect("force");
        assert_ne!(again.agent_id(), id.agent_id());
    }

    #[test]
    fn refuses_readable_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        home.init(&profile(), false).expect("init");
        fs::set_permissions(home.ed25519_path(), fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = home.load_identity().expect_err("must refuse");
        assert!(format!("{err:#}").contains("chmod 600"));
    }
}
