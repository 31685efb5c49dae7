//! The home directory: identity key files, profile, config, database and runtime files.
//!
//! ```text
//! <home>/
//!   keys/ed25519.key   Ed25519 secret seed, base64 of 32 bytes, mode 0600
//!   keys/x25519.key    X25519 secret, base64 of 32 bytes, mode 0600
//!   keys/rotation.json after `rotate-key`: the rotation chain and, for the grace period, the
//!                      previous secret keys (mode 0600; see RotationState)
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

use agentmesh_core::{AgentId, Identity, RotationStatement, b64, time::now_ms};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Why a home cannot be used as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// `init` without `--force` where an identity exists.
    #[error("an identity already exists in {0}; pass --force to replace it (the old keys are lost)")]
    IdentityExists(String),
    /// No identity in the home.
    #[error("no identity in {0}; create one with `agentmesh init --name NAME --home {0}`")]
    NoIdentity(String),
    /// A private file that group or others can read or write.
    #[error("{path} has mode {mode:04o}, open to other users; fix it with `chmod {fix:o} {path}`")]
    InsecureFile {
        /// The file or directory.
        path: String,
        /// Its mode.
        mode: u32,
        /// The mode to set.
        fix: u32,
    },
}

impl HomeError {
    /// The error code the CLI reports.
    pub fn code(&self) -> agentmesh_api::ErrorCode {
        match self {
            HomeError::IdentityExists(_) => agentmesh_api::ErrorCode::IdentityExists,
            HomeError::NoIdentity(_) => agentmesh_api::ErrorCode::NoIdentity,
            HomeError::InsecureFile { .. } => agentmesh_api::ErrorCode::InsecureFile,
        }
    }
}

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
    fn rotation_path(&self) -> PathBuf {
        self.keys_dir().join("rotation.json")
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

    /// Takes the node lock (`node.lock`): `Ok(None)` when a running node holds it. The lock is
    /// held until the returned file is dropped.
    pub fn try_lock(&self) -> Result<Option<fs::File>> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.lock_path())
            .with_context(|| format!("opening {}", self.lock_path().display()))?;
        Ok(lock.try_lock().is_ok().then_some(lock))
    }

    /// The files of the home that are private to its owner: every one is created 0600 whatever
    /// the umask (the database and its WAL hold decrypted messages).
    fn private_files(&self) -> Vec<PathBuf> {
        let db = self.db_path();
        let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", db.display()));
        vec![
            db.clone(),
            with("-wal"),
            with("-shm"),
            self.profile_path(),
            self.lock_path(),
            self.runtime_path(),
            self.token_path(),
        ]
    }

    /// Checks the home before a node opens it: the directory must be closed to other users
    /// (refused otherwise: [`HomeError::InsecureFile`], fix `chmod 700`), and every private file
    /// in it is made 0600 (a file left group- or world-readable by an older version or a loose
    /// umask could only be read through the home, which is closed).
    pub fn secure(&self) -> Result<()> {
        for dir in [self.root.clone(), self.keys_dir()] {
            if let Ok(meta) = fs::metadata(&dir) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(HomeError::InsecureFile { path: dir.display().to_string(), mode, fix: 0o700 }.into());
                }
            }
        }
        self.tighten()
    }

    /// Makes every existing private file of the home 0600 (after SQLite created its files).
    pub fn tighten(&self) -> Result<()> {
        for file in self.private_files() {
            let Ok(meta) = fs::metadata(&file) else { continue };
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("chmod 600 {}", file.display()))?;
                tracing::warn!(file = %file.display(), "was open to other users; now 0600");
            }
        }
        Ok(())
    }

    /// Whether an identity exists here.
    pub fn has_identity(&self) -> bool {
        self.ed25519_path().exists() || self.profile_path().exists()
    }

    /// Creates a new identity and profile. Refuses to replace an existing one unless `force`.
    pub fn init(&self, profile: &Profile, force: bool) -> Result<Identity> {
        if self.has_identity() && !force {
            return Err(HomeError::IdentityExists(self.root.display().to_string()).into());
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
        write_private(&self.profile_path(), &serde_json::to_vec_pretty(&profile)?)?;
        Ok(identity)
    }

    /// Loads the identity, refusing key files that group or others can read (like ssh).
    pub fn load_identity(&self) -> Result<Identity> {
        Ok(self.load_keys()?.identity)
    }

    /// Loads the current keys with their rotation chain, and the previous keys while their grace
    /// period lasts.
    ///
    /// A rotation interrupted between writing `rotation.json` and the new key files (a crash) is
    /// rolled back: the chain is cut back to the key files, which still hold the old keys.
    pub fn load_keys(&self) -> Result<KeyState> {
        let identity = self.load_genesis_files()?;
        let Some(mut state) = self.load_rotation()? else {
            return Ok(KeyState { identity, previous: None });
        };
        let current = b64::encode(identity.public().ed25519.as_bytes());
        if let Some(cut) = state.rotations.iter().position(|r| r.old_ed25519 == current) {
            // Crash before the new key files landed: forget the unfinished rotation(s).
            state.rotations.truncate(cut);
            state.previous = None;
            write_private(&self.rotation_path(), &serde_json::to_vec_pretty(&state)?)?;
        }
        let identity = identity
            .with_history(state.agent_id, state.rotations.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.rotation_path().display()))?;
        let previous = match state.previous {
            Some(p) if p.until > now_ms() => {
                let ed = decode_secret(&p.ed25519, "previous ed25519")?;
                let x = decode_secret(&p.x25519, "previous x25519")?;
                let before = &state.rotations[..state.rotations.len().saturating_sub(1)];
                let old = Identity::from_secret_bytes(&ed, &x)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .with_history(state.agent_id, before.to_vec())
                    .map_err(|e| anyhow::anyhow!("{}: previous keys: {e}", self.rotation_path().display()))?;
                Some((old, p.until))
            }
            _ => None,
        };
        Ok(KeyState { identity, previous })
    }

    /// Rotates to fresh keys: signs a rotation statement with the current and the new key,
    /// writes `rotation.json` (chain + previous secrets kept for `grace_ms`), then the new key
    /// files. The caller holds the node lock.
    pub fn rotate_keys(&self, grace_ms: u64) -> Result<KeyState> {
        let current = self.load_keys()?.identity;
        let agent_id = current.agent_id();
        let mut rotations = current.rotations().to_vec();
        if rotations.len() >= agentmesh_core::rotation::MAX_ROTATIONS {
            bail!(
                "this identity has been rotated {} times, the most a card can carry",
                agentmesh_core::rotation::MAX_ROTATIONS
            );
        }
        let next = Identity::generate();
        let now = now_ms();
        rotations.push(RotationStatement::sign(agent_id, rotations.len() as u32 + 1, &current, &next, now));
        let next = next.with_history(agent_id, rotations.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let until = now.saturating_add(grace_ms);
        let state = RotationState {
            agent_id,
            rotations,
            previous: Some(PreviousKeys {
                ed25519: b64::encode(*current.ed25519_secret_bytes()),
                x25519: b64::encode(*current.x25519_secret_bytes()),
                until,
            }),
        };
        let json = zeroize::Zeroizing::new(serde_json::to_vec_pretty(&state)?);
        write_private(&self.rotation_path(), &json)?;
        write_private(&self.ed25519_path(), b64::encode(*next.ed25519_secret_bytes()).as_bytes())?;
        write_private(&self.x25519_path(), b64::encode(*next.x25519_secret_bytes()).as_bytes())?;
        Ok(KeyState { identity: next, previous: Some((current, until)) })
    }

    fn load_rotation(&self) -> Result<Option<RotationState>> {
        let path = self.rotation_path();
        if !path.exists() {
            return Ok(None);
        }
        check_private(&path)?;
        let bytes = zeroize::Zeroizing::new(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        serde_json::from_slice(&bytes).map(Some).with_context(|| format!("parsing {}", path.display()))
    }

    fn load_genesis_files(&self) -> Result<Identity> {
        if !self.ed25519_path().exists() {
            return Err(HomeError::NoIdentity(self.root.display().to_string()).into());
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

    /// The 32-byte secret key of a carrier that names this node by a key of its own (`iroh`:
    /// its endpoint key), from `keys/<carrier>.key` (base64, 0600), made from the system's
    /// randomness and written there the first time. It is not the agent's key: the signed card
    /// binds its public half to the agent, and it stays the same across key rotations.
    ///
    /// Errors: the file cannot be read or written, is readable by others, or holds no 32-byte key.
    pub fn carrier_key(&self, carrier: &str) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let path = self.keys_dir().join(format!("{carrier}.key"));
        if !path.exists() {
            let fresh = zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
            create_private_dir(&self.keys_dir())?;
            write_private(&path, zeroize::Zeroizing::new(b64::encode(*fresh)).as_bytes())?;
        }
        Ok(zeroize::Zeroizing::new(read_secret(&path)?))
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

/// The current keys of an agent and, during a rotation's grace period, the previous ones.
pub struct KeyState {
    /// Current keys, with the agent id and rotation chain.
    pub identity: Identity,
    /// The keys before the last rotation and until when (ms) they are still honoured: bodies
    /// sealed to the old X25519 key are opened, and answered with receipts the peer can check.
    pub previous: Option<(Identity, u64)>,
}

/// `keys/rotation.json`: `{"agent_id", "rotations":[statements], "previous":{"ed25519","x25519","until"}}`.
#[derive(Serialize, Deserialize)]
struct RotationState {
    agent_id: AgentId,
    rotations: Vec<RotationStatement>,
    previous: Option<PreviousKeys>,
}

/// The secret keys before the last rotation, base64 of 32 bytes each; `until` in ms.
#[derive(Serialize, Deserialize)]
struct PreviousKeys {
    ed25519: String,
    x25519: String,
    until: u64,
}

impl Drop for PreviousKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.ed25519.zeroize();
        self.x25519.zeroize();
    }
}

fn decode_secret(text: &str, what: &str) -> Result<[u8; 32]> {
    b64::decode_array::<32>(text.trim()).with_context(|| format!("the {what} key is not 32 bytes of base64"))
}

fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HomeError::InsecureFile { path: path.display().to_string(), mode, fix: 0o600 }.into());
    }
    Ok(())
}

/// Reads a secret text file (an API key), refusing one that group or others can read.
pub fn read_private_text(path: &Path) -> Result<String> {
    check_private(path)?;
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(text)
}

fn read_secret(path: &Path) -> Result<[u8; 32]> {
    check_private(path)?;
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
