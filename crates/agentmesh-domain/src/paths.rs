//! Which local files the node may read on someone's behalf. The home holds the identity (its
//! secret keys), the control token and the database, so no file of it is ever offered to a peer,
//! whatever path names it: a symbolic link is resolved; the file's device and inode are compared
//! with those of the home's own files (all but the received ones under `files/`) and of the
//! node's secrets kept elsewhere (a hooks token, a registry key), which also catches the home
//! reached through a bind mount; and a file with several hard links is compared with every file
//! of the home. An agent reaching the node through MCP is held to the directories its owner
//! listed (`mcp_file_roots`) besides.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most entries of the home looked at when a file with several hard links is checked; a home
/// with more is not searched and the file is refused.
const MAX_HOME_ENTRIES: usize = 200_000;
/// Deepest directory level of the home searched.
const MAX_HOME_DEPTH: usize = 32;

/// Why a path may not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathRefusal {
    /// The file is the agent's home or inside it, under this or another name.
    #[error("{0} is inside this agent's home, which holds its keys: never offered to anyone")]
    InsideHome(String),
    /// MCP: the path is outside every directory listed in `mcp_file_roots` (or none is listed).
    #[error(
        "{path} is outside the directories this agent's owner allowed for MCP ({roots}); the owner lists them in config.toml as mcp_file_roots"
    )]
    OutsideRoots {
        /// The path asked for.
        path: String,
        /// The allowed directories, or a note that there are none.
        roots: String,
    },
    /// The path changed while it was checked (a link swapped in), or could not be examined.
    #[error("{0}: {1}")]
    Unreadable(String, String),
}

/// `(device, inode)`: what a file is, whatever its name.
fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Checks that `file`, opened from `path`, is no file of the home at `home` and none of the
/// `secrets` kept elsewhere: its resolved path is outside the home, that path still names the
/// same file, it is not one of the home's own files or the secrets under another name, and, when
/// the file has several names (hard links), none of the home's files at all is it.
///
/// Errors: [`PathRefusal::InsideHome`]; [`PathRefusal::Unreadable`] when `path` no longer names
/// the opened file or the home cannot be searched.
pub fn check_outside_home(home: &Path, secrets: &[PathBuf], path: &Path, file: &File) -> Result<(), PathRefusal> {
    let shown = path.display().to_string();
    let unreadable = |e: std::io::Error| PathRefusal::Unreadable(shown.clone(), e.to_string());
    let opened = file.metadata().map_err(unreadable)?;
    let resolved = path.canonicalize().map_err(unreadable)?;
    let home = home.canonicalize().map_err(unreadable)?;
    if resolved.starts_with(&home) {
        return Err(PathRefusal::InsideHome(shown));
    }
    let named = std::fs::metadata(&resolved).map_err(unreadable)?;
    if identity(&named) != identity(&opened) {
        return Err(PathRefusal::Unreadable(shown, "it changed while it was checked".into()));
    }
    // The home's own files (and the secrets kept elsewhere) under any other name: a bind mount of
    // the home, a second mount of the same disk.
    let mut own = home_identities(&home, true).map_err(unreadable)?;
    own.extend(secrets.iter().filter_map(|s| std::fs::metadata(s).ok()).map(|m| identity(&m)));
    // Several names: any file of the home, the received ones too.
    if own.contains(&identity(&opened))
        || (opened.nlink() > 1 && home_identities(&home, false).map_err(unreadable)?.contains(&identity(&opened)))
    {
        return Err(PathRefusal::InsideHome(shown));
    }
    Ok(())
}

/// The `(device, inode)` of every entry under `home` (not following links), at most
/// [`MAX_HOME_ENTRIES`] of them; without the received files (`files/`) when `skip_received`.
fn home_identities(home: &Path, skip_received: bool) -> std::io::Result<HashSet<(u64, u64)>> {
    let mut seen = HashSet::new();
    let mut dirs = vec![(home.to_path_buf(), 0usize)];
    seen.insert(identity(&std::fs::symlink_metadata(home)?));
    let received = home.join("files");
    while let Some((dir, depth)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if skip_received && entry.path() == received {
                continue;
            }
            let meta = entry.metadata()?;
            seen.insert(identity(&meta));
            if seen.len() > MAX_HOME_ENTRIES {
                return Err(std::io::Error::other("the home has too many files to search for hard links"));
            }
            if meta.is_dir() && depth < MAX_HOME_DEPTH {
                dirs.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(seen)
}

/// Checks that `path` (absolute) resolves to a place inside one of `roots` (each resolved too);
/// with no roots, nothing is allowed. Returns the resolved path.
///
/// Errors: [`PathRefusal::OutsideRoots`]; [`PathRefusal::Unreadable`] when `path` cannot be
/// resolved (it does not exist).
pub fn check_within_roots(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, PathRefusal> {
    let shown = path.display().to_string();
    let listed = if roots.is_empty() {
        "none are allowed".to_owned()
    } else {
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    let resolved = path.canonicalize().map_err(|e| PathRefusal::Unreadable(shown.clone(), e.to_string()))?;
    let inside = roots.iter().filter_map(|r| r.canonicalize().ok()).any(|root| resolved.starts_with(root));
    if !inside {
        return Err(PathRefusal::OutsideRoots { path: shown, roots: listed });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_is_refused_under_any_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("keys")).expect("mkdir");
        let key = home.join("keys").join("ed25519.key");
        std::fs::write(&key, "secret").expect("key");
        let outside = dir.path().join("notes.txt");
        std::fs::write(&outside, "fine").expect("notes");
        let open = |p: &Path| File::open(p).expect("open");
        let check = |p: &Path| check_outside_home(&home, &[], p, &open(p));
        assert!(check(&outside).is_ok());
        assert!(matches!(check(&key), Err(PathRefusal::InsideHome(_))));
        let via_dots = dir.path().join("home/keys/../keys/ed25519.key");
        assert!(matches!(check(&via_dots), Err(PathRefusal::InsideHome(_))));
        let symlink = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&key, &symlink).expect("symlink");
        assert!(matches!(check(&symlink), Err(PathRefusal::InsideHome(_))));
        let hard = dir.path().join("hard.txt");
        std::fs::hard_link(&key, &hard).expect("hard link");
        assert!(matches!(check(&hard), Err(PathRefusal::InsideHome(_))));
        // A secret kept outside the home (a hooks token).
        let token = dir.path().join("hooks.token");
        std::fs::write(&token, "t").expect("token");
        assert!(check(&token).is_ok());
        assert!(matches!(
            check_outside_home(&home, std::slice::from_ref(&token), &token, &open(&token)),
            Err(PathRefusal::InsideHome(_))
        ));
        // A file opened under one name and swapped for another before the check.
        let swapped = open(&outside);
        std::fs::rename(&hard, &outside).expect("swap");
        assert!(check_outside_home(&home, &[], &outside, &swapped).is_err());
    }

    #[test]
    fn roots_allow_only_what_is_under_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).expect("mkdir");
        let inside = shared.join("a.txt");
        std::fs::write(&inside, "a").expect("a");
        let elsewhere = dir.path().join("b.txt");
        std::fs::write(&elsewhere, "b").expect("b");
        assert!(check_within_roots(&inside, std::slice::from_ref(&shared)).is_ok());
        assert!(matches!(check_within_roots(&inside, &[]), Err(PathRefusal::OutsideRoots { .. })));
        assert!(matches!(
            check_within_roots(&elsewhere, std::slice::from_ref(&shared)),
            Err(PathRefusal::OutsideRoots { .. })
        ));
        let escape = shared.join("../b.txt");
        assert!(check_within_roots(&escape, std::slice::from_ref(&shared)).is_err());
        let link = shared.join("link.txt");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        assert!(check_within_roots(&link, std::slice::from_ref(&shared)).is_err(), "a link out of a root");
    }
}
