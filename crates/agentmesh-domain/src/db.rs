//! The database thread: one SQLite connection, owned by one thread, with group commit.
//!
//! Callers send closures over a bounded channel. The thread takes every closure waiting (up to
//! [`MAX_GROUP`]), opens one transaction, runs each inside its own savepoint (a failing closure
//! rolls back only its own writes), commits once, and only then hands each caller its result. So
//! a caller that got `Ok` knows its writes are committed: the node acknowledges nothing before it
//! is stored, and pays one commit per group instead of one per write.
//!
//! The thread also publishes the event log: events a closure logged are sent to watchers right
//! after their group commits, from this thread, so live watchers see them in cursor order and
//! never see one whose change was rolled back. (A reader of the log itself, within a group whose
//! commit then fails — a disk error — could.)

use std::thread::JoinHandle;

use std::sync::Arc;

use agentmesh_api::LoggedEvent;
use agentmesh_store::{Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::Error;

/// Most closures committed together.
pub const MAX_GROUP: usize = 256;
/// Closures waiting for the thread, at most (senders wait when it is full).
pub const QUEUE: usize = 1024;
/// Events kept for live watchers; one that falls further behind catches up from the log. Small:
/// a watcher that stops reading pins up to this many events (a message event holds its text).
pub const LIVE_EVENTS: usize = 256;

type Reply = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Store) -> Reply + Send>;

enum Request {
    Run(Job),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to the database thread.
pub struct Db {
    tx: mpsc::Sender<Request>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    events: broadcast::Sender<Arc<LoggedEvent>>,
}

impl Db {
    /// Moves `store` onto its own thread.
    pub fn spawn(store: Store) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new().name("agentmesh-db".into()).spawn(move || serve(store, rx))?;
        let (events, _) = broadcast::channel(LIVE_EVENTS);
        Ok(Db { tx, thread: std::sync::Mutex::new(Some(thread)), events })
    }

    /// Events as they are committed, in cursor order (bounded: a watcher that falls more than
    /// [`LIVE_EVENTS`] behind gets `Lagged` and should read the rest from the log).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LoggedEvent>> {
        self.events.subscribe()
    }

    /// Like [`run`](Self::run) for a closure that also logged events: they are published once
    /// its group has committed (and dropped if it did not).
    pub async fn run_logged<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<(T, Vec<LoggedEvent>), Error> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, Error>>();
        let events = self.events.clone();
        let job: Job = Box::new(move |store: &Store| {
            let result = store.atomic(f);
            Box::new(move |committed: bool| {
                let result = match result {
                    Ok(_) if !committed => Err(Error::internal("the database could not commit")),
                    Ok((value, logged)) => {
                        for event in logged {
                            let _ = events.send(Arc::new(event));
                        }
                        Ok(value)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply_tx.send(result);
            })
        });
        self.tx.send(Request::Run(job)).await.map_err(|_| Error::internal("the database thread has stopped"))?;
        reply_rx.await.map_err(|_| Error::internal("the database thread has stopped"))?
    }

    /// Runs `f` atomically on the database thread; resolves after its group has committed.
    /// When `f` fails, its writes are rolled back (and only its own).
    ///
    /// Errors: whatever `f` returns; `internal` when SQLite fails or the thread has stopped.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, Error>>();
        let job: Job = Box::new(move |store: &Store| {
            let result = store.atomic(f);
            Box::new(move |committed: bool| {
                let result = match result {
                    Ok(_) if !committed => Err(Error::internal("the database could not commit")),
                    other => other,
                };
                let _ = reply_tx.send(result);
            })
        });
        self.tx.send(Request::Run(job)).await.map_err(|_| Error::internal("the database thread has stopped"))?;
        reply_rx.await.map_err(|_| Error::internal("the database thread has stopped"))?
    }

    /// Finishes queued work, checkpoints the WAL and stops the thread.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Close(tx)).await.is_ok() {
            rx.await.unwrap_or(Ok(()))?;
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        Ok(())
    }
}

fn serve(store: Store, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::new();
        let mut close = None;
        match first {
            Request::Run(job) => jobs.push(job),
            Request::Close(tx) => close = Some(tx),
        }
        while close.is_none() && jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Request::Run(job)) => jobs.push(job),
                Ok(Request::Close(tx)) => close = Some(tx),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            let replies: Vec<Reply>;
            let committed = match store.begin_group() {
                Ok(()) => {
                    replies = jobs.into_iter().map(|job| job(&store)).collect();
                    store.commit_group().map_err(|e| tracing::error!(error = %e, "group commit failed")).is_ok()
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not open a transaction");
                    // Run each alone: `atomic` opens its own transaction.
                    replies = jobs.into_iter().map(|job| job(&store)).collect();
                    true
                }
            };
            for reply in replies {
                reply(committed);
            }
        }
        if let Some(tx) = close {
            let _ = tx.send(store.checkpoint());
            return;
        }
    }
}
