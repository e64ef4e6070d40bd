//! Leases: etcd's lessor. A lease has a TTL and a deadline; keys put with it are
//! attached to it; when its deadline passes without a keep-alive, the store revokes
//! it, deleting all its keys in one revision (`Store::revoke_lease`).
//!
//! The table of leases (TTL, deadline, attached keys) lives under one mutex; the
//! store takes it only inside its own write lock (grant, revoke, attach, detach) or
//! alone (keep-alive, time-to-live, listing), so the order is always store write
//! lock, then the table.
//!
//! Deadlines are kept in an [`ExpiryWheel`]: buckets of [`TICK`] keyed by the tick
//! a deadline falls in, each a list of `(lease, generation)`. A keep-alive only
//! moves the lease's deadline later: it leaves the wheel alone, and when the
//! lease's entry comes due with the deadline still ahead, the entry is filed again
//! at the deadline. So a lease renewed many times per TTL still has one entry (the
//! wheel's size is the number of leases, whatever the keep-alive rate), and a
//! renewed lease costs one re-filing per TTL. A grant of an existing ID (a new TTL,
//! possibly shorter) bumps the lease's generation and adds an entry; an entry whose
//! generation is no longer the lease's is dropped when its bucket comes due. So
//! finding what expired at a tick costs the entries of the buckets that came due
//! (plus a logarithmic step in the number of buckets), never a pass over the live
//! leases.
//!
//! Invariants:
//! - every live lease has exactly one wheel entry with its current generation, at
//!   or before the tick of its deadline (rounded up), so it is found no later than
//!   one tick after its deadline;
//! - a key is in the key set of lease `l` iff its newest live index entry carries
//!   `l` (the store attaches and detaches under its write lock, as it writes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::sync::{lock, Mutex};

/// The largest TTL a grant may ask for, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The smallest TTL a lease gets, in seconds: a grant asking for less gets this
/// (etcd's minimum for its default election timeout: 1.5 × 1 s, rounded up).
pub const MIN_LEASE_TTL: i64 = 2;

/// The granularity of expiry: a lease is found expired at most this long after
/// its deadline (etcd checks every 500 ms).
pub const TICK: Duration = Duration::from_millis(100);

/// One lease.
#[derive(Debug)]
struct Lease {
    /// Granted TTL, in seconds.
    ttl: i64,
    /// Milliseconds since the lessor's epoch.
    deadline: u64,
    /// Bumped when the lease is (re)granted; the wheel entry with this generation is
    /// the live one.
    generation: u64,
    /// Keys attached to it.
    keys: HashSet<Box<[u8]>>,
}

/// What [`Lessor::time_to_live`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Seconds left (truncated, as etcd); 0 or less once expired.
    pub remaining: i64,
    /// The TTL it was granted with.
    pub granted: i64,
    /// Its keys (sorted), if asked for.
    pub keys: Vec<Vec<u8>>,
}

/// Deadlines by tick (see the module note).
#[derive(Debug, Default)]
pub(crate) struct ExpiryWheel {
    buckets: BTreeMap<u64, Vec<(i64, u64)>>,
    entries: usize,
}

impl ExpiryWheel {
    fn tick_of(ms: u64) -> u64 {
        ms.div_ceil(TICK.as_millis() as u64)
    }

    /// Schedules lease `id` of generation `generation` at deadline `at` (ms).
    pub(crate) fn schedule(&mut self, id: i64, generation: u64, at: u64) {
        self.buckets.entry(Self::tick_of(at)).or_default().push((id, generation));
        self.entries += 1;
    }

    /// Takes every entry of the buckets due at `now` (ms).
    pub(crate) fn take_due(&mut self, now: u64) -> Vec<(i64, u64)> {
        let tick = now / TICK.as_millis() as u64;
        let mut out = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > tick {
                break;
            }
            out.extend(entry.remove());
        }
        self.entries -= out.len();
        out
    }

    /// Entries held, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }
}

#[derive(Debug, Default)]
struct Table {
    leases: HashMap<i64, Lease>,
    wheel: ExpiryWheel,
    next_generation: u64,
    attached_keys: usize,
}

/// The table of leases and their deadlines. See the module note.
#[derive(Debug)]
pub struct Lessor {
    table: Mutex<Table>,
    epoch: Instant,
}

impl Default for Lessor {
    fn default() -> Self {
        Lessor { table: Mutex::new(Table::default()), epoch: Instant::now() }
    }
}

/// Counts of a lessor, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LessorStats {
    /// Live leases.
    pub leases: usize,
    /// Keys attached to them.
    pub attached_keys: usize,
    /// Entries of the expiry wheel (live and stale).
    pub wheel_entries: usize,
}

impl Lessor {
    /// Milliseconds since the epoch at `t`.
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn deadline(&self, now: Instant, ttl: i64) -> u64 {
        self.ms(now).saturating_add((ttl.max(0) as u64).saturating_mul(1000))
    }

    /// Adds (or replaces the TTL of) lease `id`, with its deadline `ttl` from `now`.
    pub(crate) fn insert(&self, id: i64, ttl: i64, now: Instant) {
        let deadline = self.deadline(now, ttl);
        let mut t = lock(&self.table);
        t.next_generation += 1;
        let generation = t.next_generation;
        let lease = t.leases.entry(id).or_insert_with(|| Lease { ttl, deadline, generation, keys: HashSet::new() });
        lease.ttl = ttl;
        lease.deadline = deadline;
        lease.generation = generation;
        t.wheel.schedule(id, generation, deadline);
    }

    /// Whether lease `id` exists.
    pub fn contains(&self, id: i64) -> bool {
        lock(&self.table).leases.contains_key(&id)
    }

    /// Removes lease `id`, returning its keys (sorted), or `None` if absent.
    pub(crate) fn remove(&self, id: i64) -> Option<Vec<Box<[u8]>>> {
        let mut t = lock(&self.table);
        let lease = t.leases.remove(&id)?;
        t.attached_keys -= lease.keys.len();
        let mut keys: Vec<_> = lease.keys.into_iter().collect();
        keys.sort_unstable();
        Some(keys)
    }

    /// The keys of lease `id` (sorted), or `None` if absent.
    pub(crate) fn keys(&self, id: i64) -> Option<Vec<Box<[u8]>>> {
        let t = lock(&self.table);
        let mut keys: Vec<_> = t.leases.get(&id)?.keys.iter().cloned().collect();
        keys.sort_unstable();
        Some(keys)
    }

    /// Moves `key` from lease `from` to lease `to` (either may be 0: none).
    pub(crate) fn reattach(&self, key: &[u8], from: i64, to: i64) {
        if from == to {
            return;
        }
        let mut t = lock(&self.table);
        if from != 0 {
            if let Some(l) = t.leases.get_mut(&from) {
                if l.keys.remove(key) {
                    t.attached_keys -= 1;
                }
            }
        }
        if to != 0 {
            if let Some(l) = t.leases.get_mut(&to) {
                if l.keys.insert(Box::from(key)) {
                    t.attached_keys += 1;
                }
            }
        }
    }

    /// Renews lease `id` (a keep-alive): its deadline becomes its TTL from `now`.
    /// Returns the TTL, or `None` if the lease does not exist or its deadline has
    /// passed already (it is being revoked: etcd answers "not found" then too).
    ///
    /// The deadline only moves later (same TTL, later `now`), so the lease's wheel
    /// entry stays where it is, at or before the new deadline; [`Lessor::expired`]
    /// files it again when it comes due early.
    pub fn renew(&self, id: i64, now: Instant) -> Option<i64> {
        let now_ms = self.ms(now);
        let mut t = lock(&self.table);
        let lease = t.leases.get_mut(&id)?;
        if lease.deadline <= now_ms {
            return None;
        }
        lease.deadline = lease.deadline.max(now_ms.saturating_add((lease.ttl.max(0) as u64).saturating_mul(1000)));
        Some(lease.ttl)
    }

    /// Lease `id`'s remaining and granted TTL (and keys, if `keys`), or `None`.
    pub fn time_to_live(&self, id: i64, keys: bool, now: Instant) -> Option<LeaseStatus> {
        let now_ms = self.ms(now);
        let t = lock(&self.table);
        let l = t.leases.get(&id)?;
        let remaining = (l.deadline as i64 - now_ms as i64) / 1000;
        let mut list: Vec<Vec<u8>> = if keys { l.keys.iter().map(|k| k.to_vec()).collect() } else { Vec::new() };
        list.sort_unstable();
        Some(LeaseStatus { remaining, granted: l.ttl, keys: list })
    }

    /// Every lease ID, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = lock(&self.table).leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Every lease with its TTL, in ID order (what a base snapshot records).
    pub(crate) fn grants(&self) -> Vec<(i64, i64)> {
        let t = lock(&self.table);
        let mut v: Vec<(i64, i64)> = t.leases.iter().map(|(&id, l)| (id, l.ttl)).collect();
        v.sort_unstable();
        v
    }

    /// Leases whose deadline is at or before `now` (each once per deadline: a lease
    /// not revoked after this must be [`Lessor::postpone`]d to be found again).
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        let now_ms = self.ms(now);
        let mut t = lock(&self.table);
        let due = t.wheel.take_due(now_ms);
        let mut out = Vec::new();
        for (id, generation) in due {
            match t.leases.get(&id) {
                Some(l) if l.generation == generation && l.deadline <= now_ms => out.push(id),
                Some(l) if l.generation == generation => {
                    // Renewed since the entry was filed (or due in this tick but a
                    // few ms ahead): file it again at the deadline.
                    let d = l.deadline;
                    t.wheel.schedule(id, generation, d.max(now_ms + 1));
                }
                // Granted again (a newer entry is in the wheel) or gone.
                _ => {}
            }
        }
        out
    }

    /// Looks at lease `id` again `after` from `now` (a revoke that failed).
    pub fn postpone(&self, id: i64, now: Instant, after: Duration) {
        let at = self.ms(now + after);
        let mut t = lock(&self.table);
        if let Some(l) = t.leases.get(&id) {
            let generation = l.generation;
            t.wheel.schedule(id, generation, at);
        }
    }

    /// Gives every lease its full TTL from `now` (after a restart: etcd's leader
    /// does the same when it takes over), rebuilding the wheel.
    pub fn restart_clocks(&self, now: Instant) {
        let now_ms = self.ms(now);
        let mut guard = lock(&self.table);
        let t = &mut *guard;
        t.wheel = ExpiryWheel::default();
        for (&id, l) in t.leases.iter_mut() {
            t.next_generation += 1;
            l.generation = t.next_generation;
            l.deadline = now_ms.saturating_add((l.ttl.max(0) as u64).saturating_mul(1000));
            t.wheel.schedule(id, l.generation, l.deadline);
        }
    }

    /// Counts, for metrics and tests.
    pub fn stats(&self) -> LessorStats {
        let t = lock(&self.table);
        LessorStats { leases: t.leases.len(), attached_keys: t.attached_keys, wheel_entries: t.wheel.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_within_a_tick_of_its_deadline_and_not_before() {
        let l = Lessor::default();
        let t0 = l.epoch;
        l.insert(1, 5, t0);
        l.insert(2, 7, t0);
        assert!(l.expired(t0 + Duration::from_millis(4999)).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_millis(5000) + TICK), vec![1]);
        // Found once: not again until postponed.
        assert!(l.expired(t0 + Duration::from_millis(6000)).is_empty());
        l.postpone(1, t0 + Duration::from_millis(6000), Duration::from_millis(500));
        assert_eq!(l.expired(t0 + Duration::from_millis(6600)), vec![1]);
        assert_eq!(l.expired(t0 + Duration::from_millis(7100)), vec![2]);
    }

    #[test]
    fn a_renewed_lease_is_not_found_at_its_old_deadline() {
        let l = Lessor::default();
        let t0 = l.epoch;
        l.insert(1, 3, t0);
        assert_eq!(l.renew(1, t0 + Duration::from_secs(2)), Some(3));
        assert!(l.expired(t0 + Duration::from_millis(3200)).is_empty());
        assert!(l.expired(t0 + Duration::from_millis(4900)).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_millis(5100)), vec![1]);
        // Past its deadline it cannot be renewed: it is being revoked.
        assert_eq!(l.renew(1, t0 + Duration::from_millis(5200)), None);
        assert_eq!(l.renew(9, t0), None);
    }

    #[test]
    fn finding_what_expired_costs_the_due_entries_not_the_live_leases() {
        let l = Lessor::default();
        let t0 = l.epoch;
        for id in 0..10_000 {
            l.insert(id, 1000, t0);
        }
        l.insert(-1, 2, t0);
        // The wheel holds one entry per lease; a tick takes only the due bucket.
        assert_eq!(l.stats().wheel_entries, 10_001);
        assert_eq!(l.expired(t0 + Duration::from_millis(2100)), vec![-1]);
        assert_eq!(l.stats().wheel_entries, 10_000);
        // Renewals add no entry; the renewed lease's entry is filed again when it
        // comes due before the new deadline.
        for _ in 0..3 {
            l.renew(5, t0 + Duration::from_secs(1));
        }
        assert_eq!(l.stats().wheel_entries, 10_000);
        assert_eq!(l.expired(t0 + Duration::from_secs(1000) + TICK).len(), 9_999, "all but the renewed lease");
        assert_eq!(l.stats().wheel_entries, 1, "lease 5's entry, filed again a second later");
        assert_eq!(l.expired(t0 + Duration::from_secs(1001) + TICK), vec![5]);
        assert_eq!(l.stats().wheel_entries, 0);
    }

    /// A keep-alive storm (many renewals per TTL) must not grow the wheel: it holds
    /// one entry per lease whatever the renewal rate, and the lease still expires
    /// one TTL after its last renewal, within a tick.
    #[test]
    fn renewals_do_not_grow_the_wheel() {
        let l = Lessor::default();
        let t0 = l.epoch;
        l.insert(1, 60, t0);
        l.insert(2, 60, t0);
        for ms in 0..100_000u64 {
            assert_eq!(l.renew(1, t0 + Duration::from_micros(ms * 100)), Some(60));
        }
        assert_eq!(l.stats().wheel_entries, 2, "{:?}", l.stats());
        // Last renewal at 9.9999 s: deadline 69.9999 s. Lease 2 goes at 60 s.
        assert_eq!(l.expired(t0 + Duration::from_secs(60) + TICK), vec![2]);
        assert_eq!(l.stats().wheel_entries, 1, "lease 1 filed again at its new deadline");
        assert!(l.expired(t0 + Duration::from_millis(69_900)).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_secs(70) + TICK), vec![1]);
        assert_eq!(l.stats().wheel_entries, 0);
    }

    /// Granting an existing ID again with a shorter TTL files a new entry at the
    /// new, earlier deadline (the old entry is stale and dropped when due).
    #[test]
    fn a_regrant_with_a_shorter_ttl_expires_at_the_new_deadline() {
        let l = Lessor::default();
        let t0 = l.epoch;
        l.insert(1, 100, t0);
        l.insert(1, 5, t0 + Duration::from_secs(1));
        assert_eq!(l.expired(t0 + Duration::from_secs(6) + TICK), vec![1]);
        assert!(l.expired(t0 + Duration::from_secs(100) + TICK).is_empty(), "the stale entry is dropped");
        assert_eq!(l.stats().wheel_entries, 0);
    }

    #[test]
    fn keys_move_between_leases() {
        let l = Lessor::default();
        let t0 = l.epoch;
        l.insert(1, 10, t0);
        l.insert(2, 10, t0);
        l.reattach(b"a", 0, 1);
        l.reattach(b"b", 0, 1);
        l.reattach(b"a", 1, 2);
        assert_eq!(l.keys(1).unwrap(), vec![Box::from(&b"b"[..])]);
        assert_eq!(l.time_to_live(2, true, t0).unwrap().keys, vec![b"a".to_vec()]);
        l.reattach(b"a", 2, 0);
        assert_eq!(l.stats().attached_keys, 1);
        assert_eq!(l.remove(1).unwrap(), vec![Box::from(&b"b"[..])]);
        assert_eq!(l.stats(), LessorStats { leases: 1, attached_keys: 0, wheel_entries: 2 });
    }

    #[test]
    fn a_restart_gives_every_lease_its_full_ttl() {
        let l = Lessor::default();
        let t0 = l.epoch;
        l.insert(1, 10, t0);
        let later = t0 + Duration::from_secs(8);
        l.restart_clocks(later);
        assert_eq!(l.time_to_live(1, false, later).unwrap().remaining, 10);
        assert!(l.expired(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(l.expired(later + Duration::from_secs(10) + TICK), vec![1]);
    }
}
