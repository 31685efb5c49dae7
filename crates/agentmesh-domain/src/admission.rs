//! Which connections the peer API keeps, on any carrier: at most `max_connections` at once, at
//! most `max_connections_per_ip` from one [`Remote`] (an address, an IPv6 /64 counting as one; or
//! an endpoint key), and a share (`reserved_connections`) that only remotes our contacts sent new
//! messages from in the last day may use. When a limit is reached, the oldest
//! *idle* connection in the way (one not serving a request: kept alive, or still trickling its
//! request head, and open for at least [`Limits::grace`] so a fresh one can send its first
//! request) is closed to make room; only when none is idle is the newcomer turned away.
//! So one address holding thousands of sockets costs itself its own connections, not everyone
//! else's.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::remote::Remote;

/// Most addresses remembered as our contacts'.
const MAX_KNOWN_ADDRESSES: usize = 10_000;
/// How long an address stays a contact's after the last new message from it.
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);

/// The unit one client is counted in: an IPv4 address, an IPv6 /64 (what one host or
/// subscriber is usually given, so hopping addresses within it gains nothing), or a key.
fn client_key(remote: Remote) -> Remote {
    match remote {
        Remote::Ip(ip) => Remote::Ip(match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
            v4 => v4,
        }),
        key => key,
    }
}

/// The limits, from the config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once (`max_connections`).
    pub max: usize,
    /// Connections from one client at once (`max_connections_per_ip`).
    pub per_ip: usize,
    /// The share only our contacts' remotes may use (`reserved_connections`; at most half).
    pub reserved: usize,
    /// How long a connection is safe from shedding after it opens.
    pub grace: Duration,
}

/// An admitted connection: release it when it ends.
pub struct Ticket {
    /// The connection's number, to [`release`](Admission::release) it by.
    pub id: u64,
    /// Requests being served on it right now.
    pub active: Arc<AtomicUsize>,
    /// Cancelled when the connection is shed to make room.
    pub shed: CancellationToken,
}

struct Open {
    remote: Remote,
    known: bool,
    since: Instant,
    active: Arc<AtomicUsize>,
    shed: CancellationToken,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// By admission order: the first idle entry is the oldest idle connection.
    open: BTreeMap<u64, Open>,
    by_remote: HashMap<Remote, usize>,
    /// Open connections from addresses that were not our contacts' when admitted.
    strangers: usize,
}

/// The connection table and the addresses our contacts write from.
pub struct Admission {
    limits: Limits,
    table: Mutex<Table>,
    known: Mutex<HashMap<Remote, Instant>>,
}

impl Admission {
    /// An empty table under `limits` (each at least 1; the reserved share at most half).
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max: limits.max.max(1),
            per_ip: limits.per_ip.max(1),
            reserved: limits.reserved.min(limits.max.max(1) / 2),
            grace: limits.grace,
        };
        Admission { limits, table: Mutex::default(), known: Mutex::default() }
    }

    /// Remembers that a contact's envelope was accepted from `remote` (bounded; the least
    /// recently seen is forgotten first).
    pub fn note_contact(&self, remote: Remote) {
        let remote = client_key(remote);
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN_ADDRESSES && !known.contains_key(&remote) {
            let oldest = known.iter().min_by_key(|(_, at)| **at).map(|(r, _)| *r);
            if let Some(oldest) = oldest {
                known.remove(&oldest);
            }
        }
        known.insert(remote, Instant::now());
    }

    fn is_known(&self, remote: Remote) -> bool {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&remote).is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }

    /// Admits a connection from `remote`, shedding an idle one when a limit is in the way; `None`
    /// when the newcomer must be turned away. A trusted reverse proxy (`proxy`) carries many
    /// clients: it is not held to the per-address cap, and counts as our contacts' (it carries
    /// theirs too); each of its requests is limited by the client it names.
    pub fn admit(&self, remote: Remote, proxy: bool) -> Option<Ticket> {
        let remote = client_key(remote);
        let known = proxy || self.is_known(remote);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let grace = self.limits.grace;
        if !proxy
            && table.by_remote.get(&remote).copied().unwrap_or(0) >= self.limits.per_ip
            && !shed_idle(&mut table, grace, |o| o.remote == remote)
        {
            return None;
        }
        // Strangers may hold all but the reserved share; contacts' addresses may use all of it.
        let stranger_limit = self.limits.max - self.limits.reserved;
        while table.open.len() >= self.limits.max || (!known && table.strangers >= stranger_limit) {
            // Make room from strangers first, from anyone idle if a contact needs it.
            let made_room =
                shed_idle(&mut table, grace, |o| !o.known) || (known && shed_idle(&mut table, grace, |_| true));
            if !made_room {
                return None;
            }
        }
        let id = table.next;
        table.next += 1;
        let active = Arc::new(AtomicUsize::new(0));
        let shed = CancellationToken::new();
        table
            .open
            .insert(id, Open { remote, known, since: Instant::now(), active: Arc::clone(&active), shed: shed.clone() });
        table.count(remote, known, 1);
        Some(Ticket { id, active, shed })
    }

    /// Forgets a connection that ended.
    pub fn release(&self, id: u64) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = table.open.remove(&id) {
            table.count(open.remote, open.known, -1);
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).open.len()
    }
}

impl Table {
    /// Counts a connection from `remote` in (`1`) or out (`-1`).
    fn count(&mut self, remote: Remote, known: bool, delta: isize) {
        if !known {
            self.strangers = self.strangers.saturating_add_signed(delta);
        }
        let n = self.by_remote.entry(remote).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.by_remote.remove(&remote);
        }
    }
}

/// Closes the oldest idle connection past its `grace` that `which` selects; whether there was one.
fn shed_idle(table: &mut Table, grace: Duration, which: impl Fn(&Open) -> bool) -> bool {
    let victim = table
        .open
        .iter()
        .find(|(_, o)| which(o) && o.active.load(Ordering::SeqCst) == 0 && o.since.elapsed() >= grace)
        .map(|(id, _)| *id);
    let Some(id) = victim else { return false };
    if let Some(open) = table.open.remove(&id) {
        open.shed.cancel();
        table.count(open.remote, open.known, -1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Remote {
        Remote::Ip(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn one_address_cannot_crowd_out_the_others() {
        let admission = Admission::new(Limits { max: 10, per_ip: 4, reserved: 2, grace: Duration::ZERO });
        // One address: its fifth connection sheds its own oldest idle one.
        let first: Vec<Ticket> = (0..4).map(|_| admission.admit(ip(2), false).expect("admitted")).collect();
        let fifth = admission.admit(ip(2), false).expect("admitted by shedding");
        assert!(first[0].shed.is_cancelled(), "the oldest idle connection of that address went");
        assert_eq!(admission.open(), 4);
        // Busy connections are not shed: with all four busy, a fifth is refused.
        for t in first.iter().skip(1).chain([&fifth]) {
            t.active.store(1, Ordering::SeqCst);
        }
        assert!(admission.admit(ip(2), false).is_none());
        // Strangers fill up to max - reserved, then shed each other's idle connections.
        let others: Vec<Ticket> = (3..7).map(|n| admission.admit(ip(n), false).expect("admitted")).collect();
        assert_eq!(admission.open(), 8);
        let newcomer = admission.admit(ip(9), false).expect("sheds an idle stranger");
        assert!(others[0].shed.is_cancelled());
        assert_eq!(admission.open(), 8);
        // A contact's address may use the reserved share.
        admission.note_contact(ip(1));
        let contact: Vec<Ticket> = (0..2).map(|_| admission.admit(ip(1), false).expect("reserved share")).collect();
        assert_eq!(admission.open(), 10);
        assert!(!newcomer.shed.is_cancelled() && !contact[0].shed.is_cancelled());
        // Full: a stranger gets in only by shedding an idle stranger, never a contact.
        let late = admission.admit(ip(8), false).expect("sheds an idle stranger");
        assert!(others[1].shed.is_cancelled() && !contact[0].shed.is_cancelled());
        assert_eq!(admission.open(), 10);
        // With every stranger busy, the next stranger is turned away; a contact still sheds.
        for t in others.iter().skip(2).chain([&newcomer, &late]) {
            t.active.store(1, Ordering::SeqCst);
        }
        assert!(admission.admit(ip(10), false).is_none());
        admission.release(contact[0].id);
        assert_eq!(admission.open(), 9);
        assert!(admission.admit(ip(10), false).is_none(), "the free slot is in the reserved share");
        assert!(admission.admit(ip(1), false).is_some(), "a contact takes it");
    }

    #[test]
    fn an_ipv6_64_counts_as_one_client() {
        let admission = Admission::new(Limits { max: 10, per_ip: 2, reserved: 0, grace: Duration::from_secs(60) });
        let host = |last: u16| Remote::Ip(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]));
        let _held: Vec<Ticket> = (1..=2).map(|n| admission.admit(host(n), false).expect("admitted")).collect();
        assert!(admission.admit(host(3), false).is_none(), "another address in the same /64");
        let other = Remote::Ip(IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]));
        assert!(admission.admit(other, false).is_some(), "another /64");
        let mapped = Remote::Ip("::ffff:127.0.0.5".parse().expect("ip"));
        assert_eq!(client_key(mapped), ip(5), "IPv4-mapped is IPv4");
    }

    #[test]
    fn a_key_is_a_client_of_its_own_and_may_be_a_contacts() {
        let admission = Admission::new(Limits { max: 4, per_ip: 2, reserved: 2, grace: Duration::from_secs(60) });
        let (stranger, contact) = (Remote::Key([1; 32]), Remote::Key([2; 32]));
        let _held: Vec<Ticket> = (0..2).map(|_| admission.admit(stranger, false).expect("admitted")).collect();
        assert!(admission.admit(stranger, false).is_none(), "the per-client cap holds for a key");
        assert!(admission.admit(Remote::Key([3; 32]), false).is_none(), "strangers' share is full");
        admission.note_contact(contact);
        assert!(admission.admit(contact, false).is_some(), "a contact's key uses the reserved share");
    }

    #[test]
    fn a_fresh_connection_is_not_shed_before_its_first_request() {
        let admission = Admission::new(Limits { max: 10, per_ip: 2, reserved: 0, grace: Duration::from_secs(60) });
        let _held: Vec<Ticket> = (0..2).map(|_| admission.admit(ip(2), false).expect("admitted")).collect();
        assert!(admission.admit(ip(2), false).is_none(), "both are within their grace: the newcomer waits its turn");
    }
}
