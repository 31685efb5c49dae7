//! Event feeds: the event log from a cursor, then live events as they commit.
//!
//! A feed first reads the log after the cursor asked for (pages of [`PAGE`]), then follows the
//! live channel the database thread publishes to. It subscribes before it reads, so no event
//! falls between the two. A feed that falls more than the live channel holds behind reads the
//! rest from the log again instead of losing it, so memory stays bounded by the channel and one
//! page per feed whatever the consumer's pace. The SSE route, `wait_for_event` and the hooks push
//! all read feeds.

use std::collections::VecDeque;
use std::sync::Arc;

use agentmesh_api::{LoggedEvent, StreamNotice};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::Node;
use crate::error::Error;

/// Events read from the log at a time.
const PAGE: usize = 256;

/// What a feed yields.
#[derive(Clone, Debug)]
pub enum Frame {
    /// The next event.
    Event(Arc<LoggedEvent>),
    /// Something about the feed itself.
    Notice(StreamNotice),
}

/// A feed of events after a cursor.
pub struct Feed {
    node: Arc<Node>,
    live: broadcast::Receiver<Arc<LoggedEvent>>,
    /// The last event yielded.
    cursor: i64,
    backlog: VecDeque<LoggedEvent>,
    /// Whether events after `cursor` may still be in the log only.
    catching_up: bool,
    notice: Option<StreamNotice>,
    /// Events below this were reported pruned already (by [`Feed::open`]).
    told_gap_below: i64,
}

impl Feed {
    /// A feed of the events after `after`, or of new events only when `None`.
    ///
    /// A cursor whose events were pruned yields a [`StreamNotice::Gap`] first; one past the
    /// newest event (another database) a [`StreamNotice::Reset`] and the whole log.
    pub async fn open(node: Arc<Node>, after: Option<i64>) -> Result<Feed, Error> {
        let live = node.subscribe();
        let (last, first) = node.db(|s| Ok((s.last_event_seq()?, s.first_event_seq()?))).await?;
        let (cursor, notice) = match after {
            None => (last, None),
            Some(after) if after > last => (0, Some(StreamNotice::Reset { after, last })),
            Some(after) => {
                let next = first.unwrap_or(last + 1);
                let gap = after < last && next > after + 1;
                (after.max(0), gap.then_some(StreamNotice::Gap { after, next }))
            }
        };
        let told_gap_below = match &notice {
            Some(StreamNotice::Gap { next, .. }) => *next,
            _ => 0,
        };
        Ok(Feed { node, live, cursor, backlog: VecDeque::new(), catching_up: after.is_some(), notice, told_gap_below })
    }

    /// The next frame; `None` once the node stops.
    pub async fn next(&mut self) -> Option<Result<Frame, Error>> {
        if let Some(notice) = self.notice.take() {
            return Some(Ok(Frame::Notice(notice)));
        }
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if event.seq <= self.cursor {
                    continue;
                }
                self.cursor = event.seq;
                return Some(Ok(Frame::Event(Arc::new(event))));
            }
            if self.catching_up {
                let after = self.cursor;
                let page = match self.node.db(move |s| Ok(s.events_after(after, PAGE)?)).await {
                    Ok(page) => page,
                    Err(e) => return Some(Err(e)),
                };
                self.catching_up = page.len() == PAGE;
                // Pruned while this feed was catching up.
                let gap =
                    page.first().map(|e| e.seq).filter(|&next| next > self.cursor + 1 && next > self.told_gap_below);
                self.backlog.extend(page);
                if let Some(next) = gap {
                    self.told_gap_below = next;
                    return Some(Ok(Frame::Notice(StreamNotice::Gap { after: self.cursor, next })));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) if event.seq <= self.cursor => continue,
                Ok(event) => {
                    self.cursor = event.seq;
                    return Some(Ok(Frame::Event(event)));
                }
                Err(RecvError::Lagged(_)) => {
                    // Too far behind for the channel: the log has it all.
                    self.live = self.live.resubscribe();
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
