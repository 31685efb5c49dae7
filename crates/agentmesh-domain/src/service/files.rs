//! File transfers: a file of any size sent to a contact in sealed chunks, resumable after either
//! side restarts or the connection drops, in bounded memory.
//!
//! The offer and the steps around it are `message` envelopes of the file content type
//! (`agentmesh_core::file`), queued in the outbox like any message and received through the one
//! pipeline, so they get the same signatures, encryption, trust checks, receipts and retries. The
//! offer carries a per-transfer secret; the bytes never enter the outbox or SQLite. The receiver
//! pulls them from the sender's peer API (`GET /v1/files/{id}?from=N`, [`serve_chunks`]) with a bearer
//! token derived from that secret, as length-prefixed ChaCha20-Poly1305 frames read from disk one
//! chunk at a time; it checks each chunk, writes it to `<home>/files/.partial/<id>`, hashes as it
//! goes, and every [`COMMIT_BYTES`] syncs the file and commits the chunk count. A restart
//! re-hashes the committed prefix and fetches from there; a chunk that does not authenticate is
//! dropped and fetched again ([`MAX_BAD_CHUNKS`] times at most). Complete, the SHA-256 must match
//! the signed offer; the file is then linked into `<home>/files/<peer id>/<sanitised name>`
//! (never over an existing file) and the sender told (`received`).
//!
//! | state (each side) | event | next |
//! |---|---|---|
//! | `offered` | receiver: `accept-file`, or auto-accept | `transferring` |
//! | `offered` | receiver: `cancel-file` (a `decline` is sent) / over `max_file_bytes` or the open-transfer limits / not accepted within `file_offer_ttl_secs` (a `decline` is sent) | `declined` |
//! | `offered`, `transferring` | sender: the first fetch | `transferring` |
//! | `offered`, `transferring` | either: `cancel-file` (a `cancel` is sent), or the peer's `cancel` | `cancelled` |
//! | `transferring` | receiver: digest verified, saved (a `received` is sent) | `done` |
//! | `offered`, `transferring` | sender: `received` with the offer's digest | `done` |
//! | `transferring` | receiver: digest mismatch, chunks refused too often, the sender refuses for good | `failed` (a `cancel` is sent) |
//! | `offered`, `transferring` | sender: the source changed on disk | `failed` |
//!
//! A small file a contact sends inline in a call (`file` line, at most 64 KiB) is an incoming
//! transfer under the same rules, its bytes kept in the database until it is saved or declined;
//! its sender has no transfer and is told nothing. Slots are shared out: at most
//! [`MAX_DOWNLOADS`] downloads run, [`MAX_DOWNLOADS_PER_PEER`] from one sender, and one without
//! progress for `download_stall_secs` gives its slot up for as long; at most [`MAX_SERVING`] fetches are
//! served, [`MAX_SERVING_PER_PEER`] to one receiver, and one whose receiver stops reading is ended
//! after `peer_write_timeout_secs`. A save is recorded before it is linked, so a restart
//! finishes it rather than saving a second copy.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use agentmesh_api::control::{CancelFileArgs, FilesQuery, SendFileArgs, TransferList, TransferReply};
use agentmesh_api::{Direction, ErrorCode, ErrorDetail, Event, Transfer, TransferState};
use agentmesh_core::PeerId;
use agentmesh_core::file::{
    ChunkCipher, FileBody, FileOp, MAX_FILE_BYTES, MAX_OFFER_NAME_BYTES, TAG_BYTES, TransferKey, chunk_count,
    chunk_len, is_transfer_id, new_transfer_id, sanitise_name,
};
use agentmesh_core::time::now_ms;
use agentmesh_store::{Peer, Store, TransferFilter, TransferRecord};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::adapter::{Capability, Outgoing};
use crate::carrier::{Request, Response as PeerResponse, Status};
use crate::error::Error;
use crate::limits::SharedSlots;
use crate::service::contacts::resolve;
use crate::service::messages::not_sendable;
use crate::{Node, Tx};

/// Largest error body read from a sender that refuses a fetch, bytes.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Bytes per chunk of the files we send.
pub const CHUNK_SIZE: u32 = 1 << 20;
/// The receiver syncs the partial file and commits its progress at least this often, bytes.
const COMMIT_BYTES: u64 = 16 << 20;
/// Chunks in flight between the network and the disk, each side (bounds memory: a few MiB).
const PIPE_CHUNKS: usize = 4;
/// Downloads running at once; more wait their turn.
const MAX_DOWNLOADS: usize = 4;
/// Of those, most from one sender: one contact's transfers cannot hold every slot.
const MAX_DOWNLOADS_PER_PEER: usize = 2;
/// Fetches served at once; more are refused with 429.
const MAX_SERVING: usize = 16;
/// Of those, most for one receiver (then 429 for it alone).
const MAX_SERVING_PER_PEER: usize = 4;
/// Chunks that fail authentication before a transfer fails.
const MAX_BAD_CHUNKS: u32 = 5;
/// A fetch that brings no byte for this long is dropped and retried.
const IDLE: Duration = Duration::from_secs(30);
/// Longest wait between attempts to reach a sender.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Name suffixes tried before a saved file gets the transfer id in its name.
const MAX_SUFFIX: u32 = 100;

/// The node's transfer machinery: where files go, the downloads running, the fetch budget.
pub struct Files {
    /// The agent's home, and the node's secrets kept elsewhere: none of them is ever offered
    /// ([`crate::paths`]).
    home: OnceLock<(PathBuf, Vec<PathBuf>)>,
    dir: OnceLock<PathBuf>,
    /// Downloads running: their sender and how to stop them.
    running: Mutex<HashMap<String, (PeerId, CancellationToken)>>,
    /// Downloads that gave their slot up for want of progress, and when they may try again.
    paused: Mutex<HashMap<String, Instant>>,
    wake: Notify,
    /// Fetches served at once: [`MAX_SERVING`], [`MAX_SERVING_PER_PEER`] for one receiver.
    serving: SharedSlots<PeerId>,
}

impl Default for Files {
    fn default() -> Self {
        Files::new()
    }
}

impl Files {
    /// No transfers running yet; [`set_home`](Self::set_home) before any.
    pub fn new() -> Self {
        Files {
            home: OnceLock::new(),
            dir: OnceLock::new(),
            running: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            serving: SharedSlots::new(MAX_SERVING, MAX_SERVING_PER_PEER),
        }
    }

    /// Sets the home, the node's `secrets` kept outside it (a hooks token file, a registry key
    /// file), and `<home>/files` where received files go (once, at launch).
    pub fn set_home(&self, home: &Path, secrets: Vec<PathBuf>) {
        let _ = self.home.set((home.to_path_buf(), secrets));
        let _ = self.dir.set(home.join("files"));
    }

    fn home(&self) -> Result<(PathBuf, Vec<PathBuf>), Error> {
        self.home.get().cloned().ok_or_else(|| Error::internal("no home directory"))
    }

    fn dir(&self) -> Result<&Path, Error> {
        self.dir.get().map(PathBuf::as_path).ok_or_else(|| Error::internal("no files directory"))
    }

    fn partial(&self, id: &str) -> Result<PathBuf, Error> {
        Ok(self.dir()?.join(".partial").join(id))
    }

    /// Wakes the download manager (a transfer was accepted).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the download of `id` if it runs.
    fn stop(&self, id: &str) {
        if let Some((_, token)) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            token.cancel();
        }
        self.paused.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Removes what an incoming transfer that ended unsaved left on disk: its partial file and,
    /// when a save had begun (`saving`), the saved name if it is the partial file's own link.
    fn drop_partial(&self, id: &str, saving: Option<&str>) {
        let Ok(partial) = self.partial(id) else { return };
        if let Some(saving) = saving {
            discard_save(&partial, Path::new(saving));
        }
        let _ = std::fs::remove_file(partial);
    }
}

/// Creates `dir` and its missing parents 0700, like every directory of the home.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens (creating it 0600, like every file of the home) a partial file for reading and writing.
fn private_file(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(truncate).mode(0o600).open(path)
}

fn unknown(id: &str) -> Error {
    Error::conflict(ErrorCode::UnknownTransfer, format!("no transfer {id} with you"))
}

fn wrong_state(t: &Transfer, wanted: &str) -> Error {
    let why = t.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
    Error::conflict(ErrorCode::TransferState, format!("{} is {}{why}: {wanted}", t.transfer_id, t.state))
}

/// Emits the transfer's `file` event as it stands now; returns it.
fn emit(tx: &Tx<'_>, id: &str) -> Result<Transfer, Error> {
    let t = tx.transfer(id)?.ok_or_else(|| Error::internal("a transfer vanished"))?.transfer;
    tx.emit(Event::File { transfer: t.clone() });
    Ok(t)
}

/// Queues `op` about transfer `id` to `peer`.
fn queue(tx: &Tx<'_>, peer: &Peer, id: &str, op: FileOp) -> Result<(), Error> {
    let what = Outgoing::File(FileBody { transfer_id: id.to_owned(), op });
    let outbound = tx.node().adapters().get(peer.protocol).prepare(tx.node(), peer, what)?;
    tx.enqueue(&outbound)
}

/// Why an incoming file of `size` bytes from `peer` is declined at once, if it is: over
/// `max_file_bytes`, or the peer's share (`max_open_transfers_per_peer`) or every place
/// (`max_open_transfers`) of incoming transfers is taken.
fn decline_reason(tx: &Tx<'_>, peer: &Peer, size: u64) -> Result<Option<String>, Error> {
    let config = tx.node().config();
    if size > config.max_file_bytes {
        return Ok(Some(format!("the file is over this agent's limit of {} bytes", config.max_file_bytes)));
    }
    let from_peer = tx.open_transfers(Some(Direction::Incoming), Some(&peer.agent_id))?;
    if from_peer >= i64::from(config.max_open_transfers_per_peer) {
        return Ok(Some(format!(
            "this agent has {from_peer} of your transfers open, its limit per contact; offer it again once one is done"
        )));
    }
    if tx.open_transfers(Some(Direction::Incoming), None)? >= i64::from(config.max_open_transfers) {
        return Ok(Some("this agent has too many transfers open; offer it again later".to_owned()));
    }
    Ok(None)
}

/// Whether files from `peer` are accepted without the owner.
fn auto_accepted(tx: &Tx<'_>, peer: &Peer) -> bool {
    let config = tx.node().config();
    config.file_auto_accept
        || config.file_auto_accept_from.iter().any(|a| a.eq_ignore_ascii_case(peer.agent_id.as_str()))
}

/// Applies a file step `peer` sent, inside the pipeline's transaction. An offer is stored
/// (accepted at once when auto-accept covers the peer; declined at once, the sender told, when
/// over `max_file_bytes`, or when the incoming transfers fill the peer's share
/// (`max_open_transfers_per_peer`) or every place (`max_open_transfers`)); the same offer again
/// changes nothing.
/// Refused (nothing stored): a step about a transfer we do not have with this peer (404
/// `unknown_transfer`), `received` or `decline` about a transfer the peer sends (409
/// `transfer_state`).
pub fn receive(tx: &Tx<'_>, peer: &Peer, body: FileBody, now: i64) -> Result<(), Error> {
    let FileBody { transfer_id: id, op } = body;
    let existing = tx.transfer(&id)?;
    if existing.as_ref().is_some_and(|r| r.transfer.peer_id != peer.agent_id) {
        return Err(unknown(&id));
    }
    let record = match (existing, op) {
        (Some(_), FileOp::Offer { .. }) => return Ok(()),
        (None, FileOp::Offer { name, size, sha256, chunk_size, key, call_id }) => {
            let key = TransferKey::from_base64(&key)
                .ok_or_else(|| Error::invalid(ErrorCode::MalformedBody, "key must be 32 bytes of base64"))?;
            let declined = decline_reason(tx, peer, size)?;
            let auto = auto_accepted(tx, peer);
            let state = match (&declined, auto) {
                (Some(_), _) => TransferState::Declined,
                (None, true) => TransferState::Transferring,
                (None, false) => TransferState::Offered,
            };
            tx.insert_transfer(&TransferRecord {
                transfer: Transfer {
                    transfer_id: id.clone(),
                    peer_id: peer.agent_id.clone(),
                    direction: Direction::Incoming,
                    // Kept as the owner will see it: bidirectional overrides and other invisible
                    // characters shown (the saved file's name is sanitised apart).
                    name: agentmesh_core::text::display_name(&name),
                    size,
                    sha256,
                    chunk_size,
                    state,
                    bytes_done: 0,
                    path: None,
                    call_id,
                    error: declined.clone(),
                    created_at: now,
                    updated_at: now,
                },
                key: key.to_bytes(),
                chunks_done: 0,
                source_mtime: None,
                saving_path: None,
            })?;
            if let Some(reason) = declined {
                queue(tx, peer, &id, FileOp::Decline { reason: Some(reason) })?;
            } else if auto {
                tx.node().files().wake();
            }
            emit(tx, &id)?;
            return Ok(());
        }
        (None, _) => return Err(unknown(&id)),
        (Some(r), op) => (r, op),
    };
    let (r, op) = record;
    let t = &r.transfer;
    if !t.state.is_open() {
        return Ok(());
    }
    match op {
        FileOp::Offer { .. } => {}
        FileOp::Received { .. } | FileOp::Decline { .. } if t.direction != Direction::Outgoing => {
            return Err(Error::conflict(ErrorCode::TransferState, format!("{id} is your file: only we receive it")));
        }
        FileOp::Received { sha256 } => {
            if sha256 == t.sha256 {
                tx.set_transfer_state(&id, TransferState::Done, None, None, now)?;
                tx.set_transfer_progress(&id, chunk_count(t.size, t.chunk_size), t.size, now)?;
            } else {
                let why = "the receiver stored a file with another SHA-256";
                tx.set_transfer_state(&id, TransferState::Failed, Some(why), None, now)?;
            }
        }
        FileOp::Decline { reason } => {
            let why = reason.unwrap_or_else(|| "declined by the peer".into());
            tx.set_transfer_state(&id, TransferState::Declined, Some(&why), None, now)?;
        }
        FileOp::Cancel { reason } => {
            let why = reason.unwrap_or_else(|| "cancelled by the peer".into());
            tx.set_transfer_state(&id, TransferState::Cancelled, Some(&why), None, now)?;
            if t.direction == Direction::Incoming {
                let files = tx.node().files();
                files.stop(&id);
                files.drop_partial(&id, r.saving_path.as_deref());
            }
        }
    }
    emit(tx, &id)?;
    Ok(())
}

/// The peer, when we may send it files now.
fn sendable(node: &Node, store: &Store, peer: &Peer) -> Result<(), Error> {
    if let Some(error) = not_sendable(node, store, peer)? {
        return Err(error);
    }
    if !node.adapters().get(peer.protocol).can(Capability::Files) {
        return Err(Error::conflict(
            ErrorCode::UnsupportedByPeer,
            format!("{} speaks {}, which has no file transfers", peer.agent_id, peer.protocol),
        ));
    }
    Ok(())
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i64)
}

/// Opens the file at `path` for sending, refused (`path_not_allowed`) when it is a file of the
/// home under any name; `invalid_argument` when it cannot be opened or examined.
fn open_outside_home(home: &(PathBuf, Vec<PathBuf>), path: &Path) -> Result<std::fs::File, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::invalid(ErrorCode::InvalidArgument, format!("cannot read {}: {e}", path.display())))?;
    crate::paths::check_outside_home(&home.0, &home.1, path, &file).map_err(|refusal| match refusal {
        crate::paths::PathRefusal::Unreadable(..) => Error::invalid(ErrorCode::InvalidArgument, refusal.to_string()),
        _ => Error::refused(ErrorCode::PathNotAllowed, refusal.to_string()),
    })?;
    Ok(file)
}

/// Size, modification time (ns) and SHA-256 (hex) of the regular file `file` (opened from
/// `path`), read once in chunks; refused when it changes meanwhile.
fn digest_file(mut file: std::fs::File, path: &Path) -> std::io::Result<(u64, i64, String)> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let after = std::fs::metadata(path)?;
    if after.len() != meta.len() || mtime_ns(&after) != mtime_ns(&meta) {
        return Err(std::io::Error::other("it changed while it was read"));
    }
    Ok((meta.len(), mtime_ns(&meta), hex::encode(hasher.finalize())))
}

/// `POST /control/files`: hashes the file, then offers it to a contact.
pub async fn send(node: &Arc<Node>, args: SendFileArgs) -> Result<TransferReply, Error> {
    let invalid = |m: String| Error::invalid(ErrorCode::InvalidArgument, m);
    let path = PathBuf::from(&args.path);
    if !path.is_absolute() {
        return Err(invalid(format!("{}: give an absolute path", args.path)));
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if name.is_empty() || name.len() > MAX_OFFER_NAME_BYTES {
        return Err(invalid("the file name must be 1 to 1024 bytes".into()));
    }
    if let Some(call) = &args.call_id
        && !agentmesh_core::call::is_call_id(call)
    {
        return Err(invalid(format!("{call} is not a call id")));
    }
    // The peer first: no point in reading a large file for a peer we cannot send to.
    let to = args.to.clone();
    let n = Arc::clone(node);
    node.db(move |s| sendable(&n, s, &resolve(s, &to)?)).await?;
    let (source, home) = (path.clone(), node.files().home()?);
    let (size, mtime, sha256) = tokio::task::spawn_blocking(move || {
        let file = open_outside_home(&home, &source)?;
        digest_file(file, &source).map_err(|e| invalid(format!("cannot read {}: {e}", source.display())))
    })
    .await
    .map_err(Error::internal)??;
    if size > MAX_FILE_BYTES {
        return Err(Error::TooLarge { what: "file", limit: MAX_FILE_BYTES as usize });
    }
    node.transact(move |tx| {
        let peer = resolve(tx, &args.to)?;
        sendable(tx.node(), tx, &peer)?;
        if let Some(call_id) = &args.call_id {
            match tx.call(call_id)? {
                Some(c) if c.peer_id == peer.agent_id => {}
                _ => return Err(Error::conflict(ErrorCode::UnknownCall, format!("no call {call_id} with this peer"))),
            }
        }
        let id = new_transfer_id();
        let key = TransferKey::generate();
        let now = now_ms() as i64;
        tx.insert_transfer(&TransferRecord {
            transfer: Transfer {
                transfer_id: id.clone(),
                peer_id: peer.agent_id.clone(),
                direction: Direction::Outgoing,
                name: name.clone(),
                size,
                sha256: sha256.clone(),
                chunk_size: CHUNK_SIZE,
                state: TransferState::Offered,
                bytes_done: 0,
                path: Some(path.to_string_lossy().into_owned()),
                call_id: args.call_id.clone(),
                error: None,
                created_at: now,
                updated_at: now,
            },
            key: key.to_bytes(),
            chunks_done: 0,
            source_mtime: Some(mtime),
            saving_path: None,
        })?;
        let offer =
            FileOp::Offer { name, size, sha256, chunk_size: CHUNK_SIZE, key: key.to_base64(), call_id: args.call_id };
        queue(tx, &peer, &id, offer)?;
        Ok(TransferReply { transfer: emit(tx, &id)? })
    })
    .await
}

/// `POST /control/files/{id}/accept`: accepts an incoming offer; the download starts.
pub async fn accept(node: &Arc<Node>, id: String) -> Result<TransferReply, Error> {
    let reply = node
        .transact(move |tx| {
            let r = tx
                .transfer(&id)?
                .ok_or_else(|| Error::conflict(ErrorCode::UnknownTransfer, format!("no transfer {id}")))?;
            let t = &r.transfer;
            if t.direction != Direction::Incoming {
                return Err(Error::conflict(
                    ErrorCode::TransferState,
                    format!("{id} is our file: the peer accepts it"),
                ));
            }
            if t.state != TransferState::Offered {
                return Err(wrong_state(t, "only an offered file can be accepted"));
            }
            tx.set_transfer_state(&id, TransferState::Transferring, None, None, now_ms() as i64)?;
            Ok(TransferReply { transfer: emit(tx, &id)? })
        })
        .await?;
    node.files().wake();
    Ok(reply)
}

/// `POST /control/files/{id}/cancel`: declines an incoming offer, or stops a transfer either
/// way; the peer is told.
pub async fn cancel(node: &Arc<Node>, id: String, args: CancelFileArgs) -> Result<TransferReply, Error> {
    if args.reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(Error::invalid(ErrorCode::InvalidArgument, "the reason is limited to 1000 characters"));
    }
    let stop_id = id.clone();
    let reply = node
        .transact(move |tx| {
            let r = tx
                .transfer(&id)?
                .ok_or_else(|| Error::conflict(ErrorCode::UnknownTransfer, format!("no transfer {id}")))?;
            let t = &r.transfer;
            if !t.state.is_open() {
                return Err(wrong_state(t, "it is over already"));
            }
            let decline = t.direction == Direction::Incoming && t.state == TransferState::Offered;
            // An inline file's sender has no transfer to be told about.
            let inline = tx.transfer_inline(&id)?.is_some();
            let (state, op) = if decline {
                (TransferState::Declined, FileOp::Decline { reason: args.reason.clone() })
            } else {
                (TransferState::Cancelled, FileOp::Cancel { reason: args.reason.clone() })
            };
            let why = args.reason.clone().unwrap_or_else(|| if decline { "declined" } else { "cancelled" }.into());
            tx.set_transfer_state(&id, state, Some(&why), None, now_ms() as i64)?;
            if !inline
                && let Some(peer) = tx.peer(&t.peer_id)?
                && not_sendable(tx.node(), tx, &peer)?.is_none()
            {
                queue(tx, &peer, &id, op)?;
            }
            Ok((TransferReply { transfer: emit(tx, &id)? }, r.saving_path.clone()))
        })
        .await?;
    let (reply, saving) = reply;
    let files = node.files();
    files.stop(&stop_id);
    if reply.transfer.direction == Direction::Incoming {
        files.drop_partial(&stop_id, saving.as_deref());
    }
    Ok(reply)
}

/// `GET /control/files`.
pub async fn list(node: &Arc<Node>, query: FilesQuery) -> Result<TransferList, Error> {
    node.db(move |s| {
        let peer = match &query.peer {
            Some(text) => Some(resolve(s, text)?.agent_id),
            None => None,
        };
        let filter = TransferFilter {
            peer,
            direction: query.direction,
            open: query.open,
            limit: Some(query.limit.unwrap_or(100).min(1000)),
        };
        Ok(TransferList { transfers: s.transfers(&filter)?.into_iter().map(|r| r.transfer).collect() })
    })
    .await
}

/// `GET /control/files/{id}`.
pub async fn get(node: &Arc<Node>, id: String) -> Result<TransferReply, Error> {
    node.db(move |s| {
        let r =
            s.transfer(&id)?.ok_or_else(|| Error::conflict(ErrorCode::UnknownTransfer, format!("no transfer {id}")))?;
        Ok(TransferReply { transfer: r.transfer })
    })
    .await
}

/// Whether two tokens are equal. Their SHA-256 digests are compared, so the time taken tells an
/// attacker at most how much of a digest matched, nothing about the token.
fn same_token(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// A chunk frame of [`serve_chunks`]'s stream: bytes to send, or the read error that ends it.
pub type Frame = Result<Vec<u8>, std::io::Error>;

/// The sealed chunks of our transfer `id` from chunk `from` to the end, for the receiver that
/// presented `token` from `remote` (`GET /v1/files/{id}?from=N` on HTTP): each a frame of its
/// length (4 bytes, big-endian) and ciphertext with tag, read from disk as the stream is taken.
///
/// Errors: [`Error::Unauthorized`] for a missing or wrong token; `unknown_transfer` for a
/// transfer we do not send; `untrusted_sender` when the receiver is no longer a contact;
/// `transfer_state` when it is over; `file_changed` when the source changed since the offer (the
/// transfer fails); rate limited over [`MAX_SERVING`] fetches, or [`MAX_SERVING_PER_PEER`] for
/// this receiver; `malformed` for a `from` past the end.
pub async fn serve_chunks(
    node: Arc<Node>,
    remote: crate::remote::Remote,
    id: String,
    from: u64,
    token: Option<String>,
) -> Result<impl futures_util::Stream<Item = Frame> + Send + 'static, Error> {
    node.limits().other_from(remote)?;
    let token = token.ok_or(Error::Unauthorized)?;
    if !is_transfer_id(&id) {
        return Err(unknown(&id));
    }
    let lookup = id.clone();
    let (r, trusted) = node
        .db(move |s| {
            let Some(r) = s.transfer(&lookup)? else { return Ok((None, false)) };
            let trusted = s.peer(&r.transfer.peer_id)?.is_some_and(|p| p.trust == agentmesh_api::TrustState::Trusted);
            Ok((Some(r), trusted))
        })
        .await?;
    let r = r.filter(|r| r.transfer.direction == Direction::Outgoing).ok_or_else(|| unknown(&id))?;
    let key = TransferKey::from_bytes(r.key);
    if !same_token(&token, &key.token(&id)) {
        return Err(Error::Unauthorized);
    }
    // The token proves the fetcher is the receiver; it must still be our contact.
    if !trusted {
        return Err(Error::refused(ErrorCode::UntrustedSender, "you are no longer a contact of this agent"));
    }
    let slot = node
        .files()
        .serving
        .try_take(&r.transfer.peer_id)
        .ok_or(Error::RateLimited { what: "file fetches", retry_after: 1 })?;
    let t = r.transfer.clone();
    if !t.state.is_open() {
        return Err(wrong_state(&t, "it is not served any more"));
    }
    let count = chunk_count(t.size, t.chunk_size);
    if from > count {
        return Err(Error::malformed(format!("from: the file has {count} chunks")));
    }
    let source = PathBuf::from(t.path.clone().unwrap_or_default());
    // Checked again: the path may name another file now (a link swapped in since the offer).
    let home = node.files().home()?;
    let file =
        tokio::task::spawn_blocking(move || open_outside_home(&home, &source).ok()).await.map_err(Error::internal)?;
    let unchanged = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.len() == t.size && Some(mtime_ns(&m)) == r.source_mtime);
    let Some(file) = file.filter(|_| unchanged) else {
        let why = "the file changed or vanished since it was offered";
        let failed = id.clone();
        node.transact(move |tx| {
            tx.set_transfer_state(&failed, TransferState::Failed, Some(why), None, now_ms() as i64)?;
            emit(tx, &failed)
        })
        .await?;
        return Err(Error::conflict(ErrorCode::FileChanged, why));
    };
    let started = id.clone();
    let offset = from.saturating_mul(u64::from(t.chunk_size)).min(t.size);
    node.transact(move |tx| {
        tx.set_transfer_progress(&started, from, offset, now_ms() as i64)?;
        if t.state == TransferState::Offered {
            tx.set_transfer_state(&started, TransferState::Transferring, None, None, now_ms() as i64)?;
            emit(tx, &started)?;
        }
        Ok(())
    })
    .await?;
    let (frames, rx) = mpsc::channel::<Frame>(PIPE_CHUNKS);
    let (size, chunk_size) = (r.transfer.size, r.transfer.chunk_size);
    // How far the network took it, for the owner: the latest count only, committed now and then.
    let (sent, mut sent_rx) = tokio::sync::watch::channel(from);
    let tracked = (Arc::clone(&node), id.clone());
    tokio::spawn(async move {
        let (node, id) = tracked;
        let mut progress = Progress::new(size);
        while sent_rx.changed().await.is_ok() {
            let chunks = *sent_rx.borrow_and_update();
            let bytes = chunks.saturating_mul(u64::from(chunk_size)).min(size);
            let event = progress.due(bytes) || chunks == count;
            let id = id.clone();
            let _ = node
                .transact(move |tx| {
                    if tx.transfer(&id)?.is_some_and(|r| r.transfer.state == TransferState::Transferring) {
                        tx.set_transfer_progress(&id, chunks, bytes, now_ms() as i64)?;
                        if event {
                            emit(tx, &id)?;
                        }
                    }
                    Ok(())
                })
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // A receiver that stops taking frames is let go after `peer_write_timeout_secs`, and its
    // slot freed.
    let runtime = tokio::runtime::Handle::current();
    let stall = Duration::from_secs(node.config().peer_write_timeout_secs.max(1));
    let send = move |frame: Frame| {
        runtime.block_on(tokio::time::timeout(stall, frames.send(frame))).is_ok_and(|sent| sent.is_ok())
    };
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let cipher = key.chunks(&id);
        for index in from..count {
            let len = chunk_len(size, chunk_size, index);
            // The chunk is read into a buffer with room for its tag, sealed in place, and sent
            // after its length.
            let mut sealed = vec![0u8; len];
            sealed.reserve_exact(TAG_BYTES);
            if let Err(e) = file.read_exact_at(&mut sealed, index * u64::from(chunk_size)) {
                send(Err(e));
                return;
            }
            cipher.seal(index, index + 1 == count, &mut sealed);
            let head = ((len + TAG_BYTES) as u32).to_be_bytes().to_vec();
            if !send(Ok(head)) || !send(Ok(sealed)) {
                return;
            }
            sent.send_replace(index + 1);
        }
    });
    Ok(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// Starts the downloads of accepted transfers (at most [`MAX_DOWNLOADS`] at once,
/// [`MAX_DOWNLOADS_PER_PEER`] from one sender, oldest first), at start (resuming those a restart
/// interrupted), when one is accepted, and every few seconds; declines offers left unanswered
/// past `file_offer_ttl_secs`.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    if let Err(e) = sweep_partials(&node).await {
        tracing::warn!(error = %e, "could not clean up partial files");
    }
    loop {
        if let Err(e) = start_downloads(&node, &stop).await {
            tracing::warn!(error = %e, "could not start file downloads");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = node.files().wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Removes partial files of transfers that are over (a file saved just before a restart leaves
/// its partial name behind, a second link to the saved file).
async fn sweep_partials(node: &Arc<Node>) -> Result<(), Error> {
    let dir = node.files().dir()?.join(".partial");
    let names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(_) => return Ok(()),
    };
    let over = node
        .db(move |s| {
            let mut over = Vec::new();
            for name in names {
                if s.transfer(&name)?.is_none_or(|r| !r.transfer.state.is_open()) {
                    over.push(name);
                }
            }
            Ok(over)
        })
        .await?;
    for name in over {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(())
}

async fn start_downloads(node: &Arc<Node>, stop: &CancellationToken) -> Result<(), Error> {
    let files = node.files();
    let filter = TransferFilter {
        direction: Some(Direction::Incoming),
        open: true,
        limit: Some(10_000),
        ..TransferFilter::default()
    };
    let open = node.db(move |s| Ok(s.transfers(&filter)?)).await?;
    let ttl_ms = node.config().file_offer_ttl_secs.saturating_mul(1000) as i64;
    let now = now_ms() as i64;
    for r in open.iter().filter(|r| r.transfer.state == TransferState::Offered) {
        if ttl_ms > 0 && r.transfer.created_at.saturating_add(ttl_ms) <= now {
            expire_offer(node, &r.transfer.transfer_id).await?;
        }
    }
    // An accepted transfer whose sender sent nothing for as long gives its place up too.
    for r in open.iter().filter(|r| r.transfer.state == TransferState::Transferring) {
        let id = &r.transfer.transfer_id;
        let running = files.running.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id);
        if ttl_ms > 0 && !running && r.transfer.updated_at.saturating_add(ttl_ms) <= now {
            let why = format!("no progress for {} s", ttl_ms / 1000);
            fail(node, id, why).await?;
        }
    }
    if files.running() >= MAX_DOWNLOADS {
        return Ok(());
    }
    let instant = Instant::now();
    files.paused.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, until| *until > instant);
    // Oldest first.
    for r in open.into_iter().rev().filter(|r| r.transfer.state == TransferState::Transferring) {
        let id = r.transfer.transfer_id.clone();
        if files.paused.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id) {
            continue;
        }
        let token = {
            let mut running = files.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.len() >= MAX_DOWNLOADS {
                break;
            }
            let from_peer = running.values().filter(|(p, _)| *p == r.transfer.peer_id).count();
            if running.contains_key(&id) || from_peer >= MAX_DOWNLOADS_PER_PEER {
                continue;
            }
            let token = stop.child_token();
            running.insert(id.clone(), (r.transfer.peer_id.clone(), token.clone()));
            token
        };
        let node = Arc::clone(node);
        tokio::spawn(async move {
            let outcome = download(&node, &id, &token).await;
            {
                let mut running = node.files().running.lock().unwrap_or_else(|p| p.into_inner());
                if running.get(&id).is_some_and(|(_, t)| !t.is_cancelled()) {
                    running.remove(&id);
                }
            }
            match outcome {
                Ok(()) | Err(Stop::Stopped) => {}
                Err(Stop::Stalled) => {
                    tracing::info!(transfer = %id, "no progress: the download gives its slot up for a while");
                    let until = Instant::now() + stall_time(&node);
                    node.files().paused.lock().unwrap_or_else(|p| p.into_inner()).insert(id, until);
                }
                Err(Stop::Failed(why)) => {
                    tracing::warn!(transfer = %id, error = %why, "file transfer failed");
                    if let Err(e) = fail(&node, &id, why).await {
                        tracing::warn!(transfer = %id, error = %e, "could not record a failed transfer");
                    }
                }
            }
            node.files().wake();
        });
    }
    Ok(())
}

/// Declines offer `id`, unanswered past `file_offer_ttl_secs`; the sender is told (not the
/// sender of an inline file, which has no transfer).
async fn expire_offer(node: &Arc<Node>, id: &str) -> Result<(), Error> {
    let (tid, ttl) = (id.to_owned(), node.config().file_offer_ttl_secs);
    node.transact(move |tx| {
        let Some(r) = tx.transfer(&tid)? else { return Ok(()) };
        if r.transfer.state != TransferState::Offered {
            return Ok(());
        }
        let inline = tx.transfer_inline(&tid)?.is_some();
        let why = format!("not accepted within {ttl} s");
        tx.set_transfer_state(&tid, TransferState::Declined, Some(&why), None, now_ms() as i64)?;
        if !inline
            && let Some(peer) = tx.peer(&r.transfer.peer_id)?
            && not_sendable(tx.node(), tx, &peer)?.is_none()
        {
            queue(tx, &peer, &tid, FileOp::Decline { reason: Some(why) })?;
        }
        emit(tx, &tid)?;
        Ok(())
    })
    .await
}

/// Why a download ended before the file was saved.
enum Stop {
    /// Cancelled (by the owner, the peer or shutdown).
    Stopped,
    /// No progress for `download_stall_secs`: it gives its slot up and tries again later.
    Stalled,
    /// It cannot complete: the transfer fails with this reason.
    Failed(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Failed(format!("writing the file: {e}"))
    }
}

/// Marks `id` failed, tells the sender, deletes the partial file.
async fn fail(node: &Arc<Node>, id: &str, why: String) -> Result<(), Error> {
    let tid = id.to_owned();
    let saving = node
        .transact(move |tx| {
            let Some(r) = tx.transfer(&tid)? else { return Ok(None) };
            if !r.transfer.state.is_open() {
                return Ok(None);
            }
            let inline = tx.transfer_inline(&tid)?.is_some();
            tx.set_transfer_state(&tid, TransferState::Failed, Some(&why), None, now_ms() as i64)?;
            if !inline
                && let Some(peer) = tx.peer(&r.transfer.peer_id)?
                && not_sendable(tx.node(), tx, &peer)?.is_none()
            {
                queue(tx, &peer, &tid, FileOp::Cancel { reason: Some(why.clone()) })?;
            }
            emit(tx, &tid)?;
            Ok(r.saving_path)
        })
        .await?;
    node.files().drop_partial(id, saving.as_deref());
    Ok(())
}

/// The partial file and the hash of what it holds, between fetches.
struct Sink {
    file: std::fs::File,
    hasher: Sha256,
    /// Chunks written (all synced once a fetch ends).
    next: u64,
}

/// What the disk side reports to the network side.
enum Written {
    /// Chunks up to (not including) this index are written and synced.
    Synced(u64),
}

/// Downloads accepted transfer `id`, from its committed prefix to the end, then verifies and
/// saves it. An inline file is saved from the bytes kept with it; a save a restart interrupted
/// is finished.
async fn download(node: &Arc<Node>, id: &str, stop: &CancellationToken) -> Result<(), Stop> {
    let tid = id.to_owned();
    let found = node
        .db(move |s| {
            let Some(r) = s.transfer(&tid)? else { return Ok(None) };
            let inline = s.transfer_inline(&tid)?;
            Ok(Some((r, inline)))
        })
        .await?;
    let Some((r, inline)) = found else { return Err(Stop::Stopped) };
    if r.transfer.state != TransferState::Transferring {
        return Err(Stop::Stopped);
    }
    let partial = node.files().partial(id)?;
    if let Some(target) = &r.saving_path {
        return resume_save(node, id, &r.transfer, &partial, PathBuf::from(target), inline.is_none()).await;
    }
    if let Some(bytes) = inline {
        return save_inline(node, id, &r.transfer, &partial, bytes).await;
    }
    let pid = r.transfer.peer_id.clone();
    let peer = node.db(move |s| Ok(s.peer(&pid)?)).await?.ok_or_else(|| Stop::Failed("the sender is gone".into()))?;
    let t = r.transfer.clone();
    let key = TransferKey::from_bytes(r.key);
    let count = chunk_count(t.size, t.chunk_size);
    let committed = r.chunks_done.min(count);
    // Reopen: keep the committed prefix (synced before it was committed), hash it again.
    let (prefix, chunk_size) = (committed.saturating_mul(u64::from(t.chunk_size)).min(t.size), t.chunk_size);
    let path = partial.clone();
    let mut sink = tokio::task::spawn_blocking(move || -> std::io::Result<Sink> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let mut file = private_file(&path, false)?;
        if file.metadata()?.len() < prefix {
            return Err(std::io::Error::other("the partial file is shorter than its committed progress"));
        }
        file.set_len(prefix)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; chunk_size as usize];
        let mut left = prefix;
        while left > 0 {
            let n = (left.min(buf.len() as u64)) as usize;
            file.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(Sink { file, hasher, next: committed })
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))?
    .map_err(|e| {
        // A partial file that lost what was committed (deleted by hand): start over.
        tracing::warn!(transfer = %id, error = %e, "restarting a download from the start");
        Stop::Failed(format!("the partial file is damaged: {e}"))
    })?;
    let mut progress = Progress::new(t.size);
    let mut bad = 0u32;
    let mut backoff = Duration::from_millis(250);
    let mut moved = Instant::now();
    let stall = stall_time(node);
    while sink.next < count {
        if stop.is_cancelled() {
            return Err(Stop::Stopped);
        }
        // A sender that gives nothing (down, stalled, refusing for now) does not keep the slot.
        if moved.elapsed() >= stall {
            return Err(Stop::Stalled);
        }
        // No timeout of the carrier's: the stall checks below bound the wait instead.
        let request = Request::get(format!("/v1/files/{id}?from={}", sink.next))
            .bearer(key.token(id))
            .timeout(Duration::from_secs(365 * 86_400));
        let sent = node.carriers().send_to(&peer, request);
        // A sender that takes the request and never answers does not keep the slot either.
        let response = tokio::select! {
            _ = stop.cancelled() => return Err(Stop::Stopped),
            _ = tokio::time::sleep_until((moved + stall).into()) => return Err(Stop::Stalled),
            r = sent => r,
        };
        let response = match response {
            Ok(r) if r.status == Status::OK => r,
            Ok(r) => {
                let status = r.status;
                let body = r.read(MAX_ERROR_BODY_BYTES).await.unwrap_or_default();
                let detail = serde_json::from_slice::<agentmesh_api::ErrorBody>(&body).ok().map(|b| b.error);
                if status.is_server_error() || status == Status::TOO_MANY_REQUESTS {
                    retry_wait(stop, &mut backoff).await?;
                    continue;
                }
                return Err(Stop::Failed(refusal(status, detail)));
            }
            Err(e) => {
                tracing::debug!(transfer = %id, error = %e, "the sender could not be reached");
                retry_wait(stop, &mut backoff).await?;
                continue;
            }
        };
        let before = sink.next;
        let (next, failed_chunk) = fetch(node, id, &key, &t, sink, response, stop, &mut progress, stall).await?;
        sink = next;
        if sink.next > before {
            backoff = Duration::from_millis(250);
            moved = Instant::now();
        }
        if let Some(index) = failed_chunk {
            bad += 1;
            tracing::warn!(transfer = %id, chunk = index, "a chunk did not authenticate; fetching it again");
            if bad >= MAX_BAD_CHUNKS {
                return Err(Stop::Failed(format!(
                    "chunks failed authentication {MAX_BAD_CHUNKS} times (last: chunk {index})"
                )));
            }
        } else if sink.next < count {
            retry_wait(stop, &mut backoff).await?;
        }
    }
    verify_and_save(node, id, &t, sink, &partial, true).await
}

/// `download_stall_secs`.
fn stall_time(node: &Node) -> Duration {
    Duration::from_secs(node.config().download_stall_secs.max(1))
}

async fn retry_wait(stop: &CancellationToken, backoff: &mut Duration) -> Result<(), Stop> {
    tokio::select! {
        _ = stop.cancelled() => return Err(Stop::Stopped),
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    Ok(())
}

fn refusal(status: Status, detail: Option<ErrorDetail>) -> String {
    match detail {
        Some(d) => format!("the sender refused the fetch ({status}, {}): {}", d.code, d.message),
        None => format!("the sender refused the fetch ({status})"),
    }
}

/// When `file` progress events go out: every 5% of the file or every second.
struct Progress {
    step: u64,
    last_bytes: u64,
    last_at: Instant,
}

impl Progress {
    fn new(size: u64) -> Self {
        Progress { step: (size / 20).max(1), last_bytes: 0, last_at: Instant::now() }
    }

    fn due(&mut self, bytes: u64) -> bool {
        if bytes >= self.last_bytes + self.step || self.last_at.elapsed() >= Duration::from_secs(1) {
            self.last_bytes = bytes;
            self.last_at = Instant::now();
            return true;
        }
        false
    }
}

/// One fetch: frames from `response` to the disk (through a bounded pipe to a blocking thread
/// that checks, hashes, writes and syncs), progress committed as it goes. Returns the sink (all
/// of it written and synced) and the chunk that failed authentication, if one did.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    node: &Arc<Node>,
    id: &str,
    key: &TransferKey,
    t: &Transfer,
    sink: Sink,
    mut response: PeerResponse,
    stop: &CancellationToken,
    progress: &mut Progress,
    stall: Duration,
) -> Result<(Sink, Option<u64>), Stop> {
    let count = chunk_count(t.size, t.chunk_size);
    let (size, chunk_size) = (t.size, t.chunk_size);
    let (chunks_tx, mut chunks_rx) = mpsc::channel::<(u64, Vec<u8>)>(PIPE_CHUNKS);
    let (written_tx, mut written_rx) = mpsc::unbounded_channel::<Written>();
    let cipher: ChunkCipher = key.chunks(id);
    // The fetch asked from where the sink stands.
    let mut index = sink.next;
    // Three stages on blocking threads joined by bounded pipes: check and decrypt; write
    // (asking a fourth thread to sync now and then, without waiting for it); hash. A sync covers
    // everything written before it, so the count it reports is safe to commit.
    let (plain_tx, plain_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_CHUNKS);
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_CHUNKS);
    let Sink { file, hasher, next: start } = sink;
    let opener = tokio::task::spawn_blocking(move || -> Option<u64> {
        let mut expect = start;
        while let Some((index, mut buf)) = chunks_rx.blocking_recv() {
            if index != expect || cipher.open(index, index + 1 == count, &mut buf).is_err() {
                return Some(index);
            }
            if plain_tx.send(buf).is_err() {
                return None;
            }
            expect += 1;
        }
        None
    });
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = hasher;
        while let Ok(buf) = hash_rx.recv() {
            hasher.update(&buf);
        }
        hasher
    });
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
        let mut file = file;
        let synced = file.try_clone()?;
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<u64>(1);
        let report = written_tx.clone();
        let syncer =
            std::thread::Builder::new().name("agentmesh-file-sync".into()).spawn(move || -> std::io::Result<()> {
                while let Ok(n) = sync_rx.recv() {
                    synced.sync_data()?;
                    let _ = report.send(Written::Synced(n));
                }
                Ok(())
            })?;
        let mut next = start;
        let mut unsynced = 0u64;
        while let Ok(buf) = plain_rx.recv() {
            file.write_all(&buf)?;
            next += 1;
            unsynced += buf.len() as u64;
            // When the syncer is still busy, ask again after the next chunk.
            if unsynced >= COMMIT_BYTES && sync_tx.try_send(next).is_ok() {
                unsynced = 0;
            }
            if hash_tx.send(buf).is_err() {
                break;
            }
        }
        drop(sync_tx);
        syncer.join().map_err(|_| std::io::Error::other("the sync thread panicked"))??;
        file.sync_data()?;
        let _ = written_tx.send(Written::Synced(next));
        Ok((file, next))
    });
    // Network side: split the stream into frames of the expected sizes.
    let mut pending: Vec<u8> = Vec::new();
    let mut want: Option<usize> = None;
    let mut stopped = false;
    let mut bad_frame = None;
    // A read that brings nothing for IDLE ends the fetch; so does a sender trickling bytes that
    // complete no chunk within `stall` (the download loop then gives the slot up).
    let mut chunk_at = Instant::now();
    'read: while index < count {
        let wait = IDLE.min(stall.saturating_sub(chunk_at.elapsed()));
        let next = tokio::select! {
            _ = stop.cancelled() => { stopped = true; break 'read; }
            Some(w) = written_rx.recv() => { commit(node, id, t, w, progress).await?; continue 'read; }
            r = tokio::time::timeout(wait, response.chunk()) => r,
        };
        let bytes = match next {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break 'read,
        };
        pending.extend_from_slice(&bytes);
        loop {
            let need = match want {
                Some(n) => n,
                None => {
                    if pending.len() < 4 {
                        break;
                    }
                    let n = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
                    pending.drain(..4);
                    if n != chunk_len(size, chunk_size, index) + TAG_BYTES {
                        bad_frame = Some(index);
                        break 'read;
                    }
                    want = Some(n);
                    pending.reserve(n.saturating_sub(pending.len()));
                    n
                }
            };
            if pending.len() < need {
                break;
            }
            let rest = pending.split_off(need);
            let frame = std::mem::replace(&mut pending, rest);
            want = None;
            if chunks_tx.send((index, frame)).await.is_err() {
                break 'read;
            }
            index += 1;
            chunk_at = Instant::now();
            if index == count {
                break 'read;
            }
        }
        // Bounded: at most one frame and one network read pending.
        if pending.capacity() > 2 * (chunk_size as usize + TAG_BYTES) + 65_536 && pending.len() < 65_536 {
            pending.shrink_to_fit();
        }
    }
    drop(chunks_tx);
    drop(response);
    let failed = opener.await.map_err(|e| Stop::Failed(e.to_string()))?;
    let written = writer.await.map_err(|e| Stop::Failed(e.to_string()))?;
    let hasher = hashing.await.map_err(|e| Stop::Failed(e.to_string()))?;
    let (file, next) = written?;
    let sink = Sink { file, hasher, next };
    while let Ok(w) = written_rx.try_recv() {
        commit(node, id, t, w, progress).await?;
    }
    if stopped {
        return Err(Stop::Stopped);
    }
    Ok((sink, failed.or(bad_frame)))
}

/// Commits synced progress; emits a `file` event when one is due.
async fn commit(node: &Arc<Node>, id: &str, t: &Transfer, w: Written, progress: &mut Progress) -> Result<(), Stop> {
    let Written::Synced(chunks) = w;
    let bytes = chunks.saturating_mul(u64::from(t.chunk_size)).min(t.size);
    let event = progress.due(bytes);
    let tid = id.to_owned();
    node.transact(move |tx| {
        tx.set_transfer_progress(&tid, chunks, bytes, now_ms() as i64)?;
        if event {
            emit(tx, &tid)?;
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// The first of `name`, `name (1).ext`, … `name (<id>).ext` that names nothing in `dir` yet
/// (creating `dir` 0700).
fn free_name(dir: &Path, name: &str, id: &str) -> std::io::Result<PathBuf> {
    private_dir(dir)?;
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    std::iter::once(name.to_owned())
        .chain((1..=MAX_SUFFIX).map(|n| format!("{stem} ({n}){ext}")))
        .chain(std::iter::once(format!("{stem} ({id}){ext}")))
        .map(|candidate| dir.join(candidate))
        .find(|target| std::fs::symlink_metadata(target).is_err())
        .ok_or_else(|| std::io::Error::other("no free file name"))
}

/// The SHA-256 state of everything `file` holds from where it stands, read in chunks.
fn hash_all(file: &mut std::fs::File) -> std::io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hasher),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// How linking a verified partial file to its saved name went.
enum Linked {
    /// `target` is the file now (linked here, or before a restart).
    Saved,
    /// Another file took the name meanwhile.
    Taken,
}

/// Whether `a` and `b` name the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Links `partial` to `target` (a hard link never replaces an existing file) and syncs the
/// directory, so the saved name survives a power cut before the transfer is marked done.
fn link_into(partial: &Path, target: &Path) -> std::io::Result<Linked> {
    match std::fs::hard_link(partial, target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if !same_file(partial, target) {
                return Ok(Linked::Taken);
            }
        }
        Err(e) => return Err(e),
    }
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(Linked::Saved)
}

/// Undoes a save that will not be finished (the transfer was cancelled or failed meanwhile):
/// removes the saved name when it is the partial file's own link, never another file.
fn discard_save(partial: &Path, target: &Path) {
    if same_file(partial, target) {
        let _ = std::fs::remove_file(target);
    }
}

/// Saves an accepted inline file: its bytes (kept with the transfer since the call line
/// arrived) to the partial file, synced, then as a download is saved (the sender, which has no
/// transfer, is not told).
async fn save_inline(node: &Arc<Node>, id: &str, t: &Transfer, partial: &Path, bytes: Vec<u8>) -> Result<(), Stop> {
    let path = partial.to_owned();
    let sink = tokio::task::spawn_blocking(move || -> std::io::Result<Sink> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let mut file = private_file(&path, true)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        Ok(Sink { file, hasher, next: 1 })
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))??;
    verify_and_save(node, id, t, sink, partial, false).await
}

/// Verifies the digest, then saves the file under `<home>/files/<peer>/` with its sanitised
/// name (a suffix rather than over an existing file): the chosen path is recorded first, then
/// linked, then the transfer marked done (and the sender told, when `tell`), then the partial
/// name removed. A restart at any point finishes the same save ([`resume_save`]): never a
/// second copy, never a saved file marked failed.
async fn verify_and_save(
    node: &Arc<Node>,
    id: &str,
    t: &Transfer,
    sink: Sink,
    partial: &Path,
    tell: bool,
) -> Result<(), Stop> {
    let digest = hex::encode(sink.hasher.finalize());
    if digest != t.sha256 {
        return Err(Stop::Failed("the file's SHA-256 does not match the offer".into()));
    }
    let file = sink.file;
    tokio::task::spawn_blocking(move || file.sync_all()).await.map_err(|e| Stop::Failed(e.to_string()))??;
    let dir = node.files().dir()?.join(t.peer_id.as_str());
    let name = sanitise_name(&t.name);
    for _ in 0..=MAX_SUFFIX {
        let (dir, name, tid) = (dir.clone(), name.clone(), id.to_owned());
        let target = tokio::task::spawn_blocking(move || free_name(&dir, &name, &tid))
            .await
            .map_err(|e| Stop::Failed(e.to_string()))??;
        let (tid, chosen) = (id.to_owned(), target.to_string_lossy().into_owned());
        node.db(move |s| Ok(s.set_transfer_saving(&tid, &chosen)?)).await?;
        let (from, to) = (partial.to_owned(), target.clone());
        let linked = tokio::task::spawn_blocking(move || link_into(&from, &to))
            .await
            .map_err(|e| Stop::Failed(e.to_string()))??;
        if let Linked::Saved = linked {
            return finish_save(node, id, t, partial, &target, tell).await;
        }
    }
    Err(Stop::Failed("no free file name".into()))
}

/// Finishes a save a restart interrupted after its path was recorded: links the partial file
/// if that did not happen yet (or picks another name if one was taken meanwhile), or, with the
/// partial file gone, accepts the saved file when it holds the offered bytes.
async fn resume_save(
    node: &Arc<Node>,
    id: &str,
    t: &Transfer,
    partial: &Path,
    target: PathBuf,
    tell: bool,
) -> Result<(), Stop> {
    let (from, to, size, sha256) = (partial.to_owned(), target.clone(), t.size, t.sha256.clone());
    let state = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Linked>> {
        if from.exists() {
            return link_into(&from, &to).map(Some);
        }
        // The partial name is gone: only a saved file that holds the offered bytes will do.
        let mut file = std::fs::File::open(&to)?;
        if file.metadata()?.len() != size {
            return Ok(None);
        }
        Ok((hex::encode(hash_all(&mut file)?.finalize()) == sha256).then_some(Linked::Saved))
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))?;
    match state {
        Ok(Some(Linked::Saved)) => finish_save(node, id, t, partial, &target, tell).await,
        Ok(Some(Linked::Taken)) => {
            // Verified before its path was recorded: hash it again all the same, it is cheap
            // next to what a wrong file would cost.
            let path = partial.to_owned();
            let sink = tokio::task::spawn_blocking(move || -> std::io::Result<Sink> {
                let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
                let hasher = hash_all(&mut file)?;
                Ok(Sink { file, hasher, next: 0 })
            })
            .await
            .map_err(|e| Stop::Failed(e.to_string()))??;
            verify_and_save(node, id, t, sink, partial, tell).await
        }
        Ok(None) | Err(_) => Err(Stop::Failed("the received file vanished before it was saved".into())),
    }
}

/// Marks the transfer done with its saved path and tells the sender (when `tell`), then removes
/// the partial name and syncs the directories.
async fn finish_save(
    node: &Arc<Node>,
    id: &str,
    t: &Transfer,
    partial: &Path,
    target: &Path,
    tell: bool,
) -> Result<(), Stop> {
    let (tid, sha256, path) = (id.to_owned(), t.sha256.clone(), target.to_string_lossy().into_owned());
    let (count, size) = (chunk_count(t.size, t.chunk_size), t.size);
    let finished = node
        .transact(move |tx| {
            let Some(r) = tx.transfer(&tid)? else { return Ok(false) };
            if r.transfer.state != TransferState::Transferring {
                return Ok(false);
            }
            let now = now_ms() as i64;
            tx.set_transfer_progress(&tid, count, size, now)?;
            tx.set_transfer_state(&tid, TransferState::Done, None, Some(&path), now)?;
            if tell
                && let Some(peer) = tx.peer(&r.transfer.peer_id)?
                && not_sendable(tx.node(), tx, &peer)?.is_none()
            {
                queue(tx, &peer, &tid, FileOp::Received { sha256 })?;
            }
            emit(tx, &tid)?;
            Ok(true)
        })
        .await?;
    let (partial, target) = (partial.to_owned(), target.to_owned());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        // Cancelled (or failed) while it was being saved: the saved name, our own link, goes
        // too (if the cancel removed the partial name first, the link is still ours).
        if !finished && (same_file(&partial, &target) || !partial.exists()) {
            let _ = std::fs::remove_file(&target);
        }
        std::fs::remove_file(&partial)?;
        if let Some(dir) = partial.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))?
    .map_err(|e| {
        // Saved and recorded: a partial name left behind is swept at the next start.
        tracing::warn!(transfer = %id, error = %e, "could not remove a partial file");
        e
    })
    .ok();
    Ok(())
}

/// Receives a small file `peer` sent inline in call `call_id` (p2p-comm's `sendfile`, at most
/// 64 KiB), inside the pipeline's transaction: it follows the rules of an offer. Declined at once
/// (kept as a declined transfer, without its bytes) over `max_file_bytes` or the open-transfer
/// caps; otherwise its bytes are kept with the transfer, `offered` until the owner accepts it
/// (`accept-file`) or `transferring` when auto-accept covers the peer, and saved off the
/// database thread like a downloaded file. The sender, whose side has no transfer, is not told.
pub fn receive_inline(
    tx: &Tx<'_>,
    peer: &Peer,
    call_id: &str,
    name: &str,
    bytes: &[u8],
    now: i64,
) -> Result<(), Error> {
    let size = bytes.len() as u64;
    let declined = decline_reason(tx, peer, size)?;
    let state = match (&declined, auto_accepted(tx, peer)) {
        (Some(_), _) => TransferState::Declined,
        (None, true) => TransferState::Transferring,
        (None, false) => TransferState::Offered,
    };
    let id = new_transfer_id();
    tx.insert_transfer(&TransferRecord {
        transfer: Transfer {
            transfer_id: id.clone(),
            peer_id: peer.agent_id.clone(),
            direction: Direction::Incoming,
            name: agentmesh_core::text::display_name(name),
            size,
            sha256: hex::encode(Sha256::digest(bytes)),
            chunk_size: (bytes.len() as u32).max(1),
            state,
            bytes_done: 0,
            path: None,
            call_id: Some(call_id.to_owned()),
            error: declined.clone(),
            created_at: now,
            updated_at: now,
        },
        key: TransferKey::generate().to_bytes(),
        chunks_done: 0,
        source_mtime: None,
        saving_path: None,
    })?;
    if declined.is_none() {
        tx.set_transfer_inline(&id, bytes)?;
        if state == TransferState::Transferring {
            tx.node().files().wake();
        }
    }
    emit(tx, &id)?;
    Ok(())
}
