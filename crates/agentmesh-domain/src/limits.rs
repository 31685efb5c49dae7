//! Rate limits on the peer API: token buckets (GCRA, the `governor` crate) keyed by sender agent
//! id and by source IP. A refusal is 429 `rate_limited` with `Retry-After` giving the real whole
//! seconds until the next request would be allowed (rounded up).
//!
//! | bucket | key | default |
//! |---|---|---|
//! | contact requests | sender agent id, and separately source IP | 10 per hour |
//! | messages and read receipts | trusted sender agent id | 600 per minute |
//! | every other peer route | source IP | 600 per minute |
//!
//! Message routes are never limited per IP: peers behind one NAT, and batching, would suffer.
//! Idle keys are forgotten every minute, so the tables stay bounded by recent senders.
//!
//! Per-agent budgets are charged only after an envelope's signature proves its sender (forgeries
//! in a peer's name cannot drain its budget). Once a proven sender is over its message budget,
//! it is remembered as throttled until its next token ([`RateLimits::throttled`]): its further
//! envelopes get their 429 before any database lookup or signature check, which keeps a flood
//! cheap for us and away from other senders.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::Config;
use crate::error::Error;
use crate::remote::Remote;

/// The node's rate limiters.
pub struct RateLimits {
    contact_by_id: Option<DefaultKeyedRateLimiter<String>>,
    contact_by_remote: Option<DefaultKeyedRateLimiter<Remote>>,
    messages_by_id: Option<DefaultKeyedRateLimiter<String>>,
    other_by_remote: Option<DefaultKeyedRateLimiter<Remote>>,
    clock: DefaultClock,
    /// Proven senders over their message budget, until when.
    throttled: Mutex<HashMap<String, Instant>>,
}

/// Most senders remembered as throttled at once.
const MAX_THROTTLED: usize = 10_000;

fn retry_secs(wait: Duration) -> u64 {
    // Whole seconds, rounded up: a client that waits this long is allowed.
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

fn per(count: u32, period: Duration) -> Option<Quota> {
    let burst = NonZeroU32::new(count)?;
    Quota::with_period(period / count).map(|q| q.allow_burst(burst))
}

impl RateLimits {
    /// Limiters per `config`; a rate of 0 disables that bucket.
    pub fn new(config: &Config) -> Self {
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        RateLimits {
            contact_by_id: per(config.contact_requests_per_hour, hour).map(RateLimiter::keyed),
            contact_by_remote: per(config.contact_requests_per_hour, hour).map(RateLimiter::keyed),
            messages_by_id: per(config.messages_per_minute, minute).map(RateLimiter::keyed),
            other_by_remote: per(config.other_requests_per_minute, minute).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
            throttled: Mutex::default(),
        }
    }

    fn check<K: Clone + std::hash::Hash + Eq>(
        &self,
        limiter: &Option<DefaultKeyedRateLimiter<K>>,
        key: &K,
        what: &'static str,
    ) -> Result<(), Error> {
        let Some(limiter) = limiter else { return Ok(()) };
        limiter.check_key(key).map_err(|not_until| Error::RateLimited {
            what,
            retry_after: retry_secs(not_until.wait_time_from(self.clock.now())),
        })
    }

    fn throttle_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.throttled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses, before any lookup, an envelope claiming to come from a sender that proved itself
    /// over its message budget and is still waiting for its next token.
    pub fn throttled(&self, id: &str) -> Result<(), Error> {
        let mut map = self.throttle_map();
        let Some(until) = map.get(id).copied() else { return Ok(()) };
        let now = Instant::now();
        if until <= now {
            map.remove(id);
            return Ok(());
        }
        Err(Error::RateLimited { what: "messages from this agent", retry_after: retry_secs(until - now) })
    }

    /// A contact request attempt from `ip` (before it is parsed).
    pub fn contact_from(&self, remote: Remote) -> Result<(), Error> {
        self.check(&self.contact_by_remote, &remote, "contact requests from this address")
    }

    /// A contact request claiming to come from agent `id`.
    pub fn contact_from_agent(&self, id: &str) -> Result<(), Error> {
        self.check(&self.contact_by_id, &id.to_owned(), "contact requests from this agent")
    }

    /// A message or read receipt whose signature proved it comes from trusted peer `id`.
    pub fn message_from(&self, id: &str) -> Result<(), Error> {
        let Some(limiter) = &self.messages_by_id else { return Ok(()) };
        limiter.check_key(&id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let mut map = self.throttle_map();
            if map.len() < MAX_THROTTLED {
                map.insert(id.to_owned(), Instant::now() + wait);
            }
            Error::RateLimited { what: "messages from this agent", retry_after: retry_secs(wait) }
        })
    }

    /// Any other peer request from `ip`.
    pub fn other_from(&self, remote: Remote) -> Result<(), Error> {
        self.check(&self.other_by_remote, &remote, "requests from this address")
    }

    /// Forgets keys whose buckets are full again (called every minute).
    pub fn prune(&self) {
        let now = Instant::now();
        self.throttle_map().retain(|_, until| *until > now);
        for l in [&self.contact_by_id, &self.messages_by_id].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in [&self.contact_by_remote, &self.other_by_remote].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// A pool of `total` slots of which one key (a peer, an A2A client) may hold at most `per_key`,
/// so that one caller cannot take them all. A slot is given back when its [`Slot`] drops.
pub struct SharedSlots<K: Eq + std::hash::Hash + Clone> {
    total: std::sync::Arc<tokio::sync::Semaphore>,
    held: std::sync::Arc<Mutex<HashMap<K, usize>>>,
    per_key: usize,
}

/// One slot of a [`SharedSlots`].
pub struct Slot<K: Eq + std::hash::Hash + Clone> {
    _permit: tokio::sync::OwnedSemaphorePermit,
    held: std::sync::Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + std::hash::Hash + Clone> SharedSlots<K> {
    /// `total` slots (at least 1), at most `per_key` (at least 1) for one key.
    pub fn new(total: usize, per_key: usize) -> Self {
        SharedSlots {
            total: std::sync::Arc::new(tokio::sync::Semaphore::new(total.max(1))),
            held: std::sync::Arc::default(),
            per_key: per_key.max(1),
        }
    }

    /// A slot for `key`; `None` when every slot, or the key's share, is taken.
    pub fn try_take(&self, key: &K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(key).copied().unwrap_or(0) >= self.per_key {
            return None;
        }
        let permit = std::sync::Arc::clone(&self.total).try_acquire_owned().ok()?;
        *held.entry(key.clone()).or_default() += 1;
        Some(Slot { _permit: permit, held: std::sync::Arc::clone(&self.held), key: key.clone() })
    }
}

impl<K: Eq + std::hash::Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn shared_slots_keep_a_share_for_others() {
        let slots = SharedSlots::new(4, 2);
        let a: Vec<_> = (0..2).map(|_| slots.try_take(&"a").expect("a's share")).collect();
        assert!(slots.try_take(&"a").is_none(), "a's share is 2");
        let b: Vec<_> = (0..2).map(|_| slots.try_take(&"b").expect("b's share")).collect();
        assert!(slots.try_take(&"c").is_none(), "all 4 taken");
        drop(a);
        assert!(slots.try_take(&"c").is_some() && slots.try_take(&"a").is_some(), "given back on drop");
        drop(b);
    }

    #[test]
    fn retry_after_is_the_real_wait_rounded_up() {
        let config = Config { contact_requests_per_hour: 10, ..Config::default() };
        let limits = RateLimits::new(&config);
        let ip = Remote::Ip(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..10 {
            limits.contact_from(ip).expect("within the burst");
        }
        let refused = limits.contact_from(ip).expect_err("over the limit");
        assert_eq!(refused.code().as_str(), "rate_limited");
        // One token per 360 s: the next is allowed in (just under) 360 s.
        let crate::Error::RateLimited { retry_after: secs, .. } = refused else { panic!("{refused:?}") };
        assert!((359..=360).contains(&secs), "{secs}");
        // Other keys are unaffected.
        limits.contact_from(Remote::Ip(IpAddr::from([127, 0, 0, 2]))).expect("another address");
        limits.contact_from(Remote::Key([7; 32])).expect("another carrier's sender");
    }

    #[test]
    fn zero_disables() {
        let config = Config { messages_per_minute: 0, ..Config::default() };
        let limits = RateLimits::new(&config);
        for _ in 0..10_000 {
            limits.message_from("a").expect("unlimited");
        }
    }
}
