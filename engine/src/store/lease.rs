//! The store's lease calls (etcd's Lease service) and lease expiry.
//!
//! A grant writes a LEASE_GRANT record and is acknowledged once it is durable; a
//! revoke deletes the lease's keys in one revision (one DELETE each, so every
//! watcher gets them together) and then writes a LEASE_REVOKE record
//! (`engine/FORMAT.md`, Lease records). Both run under the store's write lock, as
//! puts do, so a put naming a lease and the lease's revoke are ordered, and a key
//! is never attached to a lease that is gone.
//!
//! Expiry: [`LeaseExpiry`] runs a thread that, every [`TICK`], asks the lessor
//! which deadlines passed (its cost is the due entries, not the live leases) and
//! revokes those leases, a few at a time under the write lock, pausing between two
//! holds as long as the last one took so that writers get the lock in between
//! ([`expiry_pause`]), then waits once for the durability of the last revision.

use std::time::{Duration, Instant};

use super::{PlannedEvent, Store};
use crate::error::{Error, Result};
use crate::lease::{LeaseStatus, Lessor, MAX_LEASE_TTL, MIN_LEASE_TTL, TICK};
use crate::log::record::RecordKind;
use crate::log::{LeaseWrite, Ticket};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{lock, Arc};

/// Leases revoked per hold of the write lock by expiry.
const EXPIRY_CHUNK: usize = 16;

/// The shortest pause of expiry between two holds of the write lock.
const EXPIRY_MIN_PAUSE: Duration = Duration::from_micros(50);

/// How long expiry sleeps after a chunk of revokes that took `took` (waiting for
/// the write lock included): as long again, and at least [`EXPIRY_MIN_PAUSE`]. So a
/// mass expiry holds the lock, and keeps a core busy, at most about half of the
/// time, and writers waiting for the lock get it in the pause: the expiry thread is
/// asleep, not back at the lock before they are scheduled. With a yield instead, 16
/// closed-loop put clients waited 20-30 ms at a time while 20,000 leases expired
/// (put p99 4-9× their idle p99; with the pause 1-2×: `scripts/compare-etcd.sh`,
/// `lease-expiry`). The cost is the expiry's length: those 20,000 leases took about
/// 0.7 s instead of 0.15 s on the 2-core machine (a sleep there lasts longer than
/// asked), still tens of times etcd's fixed 1,000 leases per second.
fn expiry_pause(took: Duration) -> Duration {
    took.max(EXPIRY_MIN_PAUSE)
}

/// What a grant gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's ID (the one asked for, or a new one).
    pub id: i64,
    /// Its TTL in seconds (at least [`MIN_LEASE_TTL`]).
    pub ttl: i64,
}

impl Store {
    /// The lease table.
    pub fn lessor(&self) -> &Lessor {
        &self.inner.leases
    }

    /// Grants a lease of `ttl` seconds (etcd's LeaseGrant): ID `id`, or a new unused
    /// one if `id` is 0. A TTL below [`MIN_LEASE_TTL`] is raised to it, as etcd
    /// does. Returns once the grant is durable.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseExists`], [`Error::LeaseTtlTooLarge`], [`Error::NoSpace`],
    /// [`Error::Poisoned`], [`Error::LeasesUpstream`] on a store with
    /// [`foreign_leases`](super::StoreOptions::foreign_leases).
    pub fn grant_lease(&self, id: i64, ttl: i64) -> Result<LeaseGrant> {
        self.own_leases()?;
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge { ttl, max: MAX_LEASE_TTL });
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        let inner = &*self.inner;
        let last = lock(&inner.write);
        let id = match id {
            0 => loop {
                // A positive 63-bit ID, as etcd's are.
                let candidate = (rand::random::<u64>() >> 1) as i64;
                if candidate != 0 && !inner.leases.contains(candidate) {
                    break candidate;
                }
            },
            id if inner.leases.contains(id) => return Err(Error::LeaseExists),
            id => id,
        };
        let written = inner.log.append_lease(id, Some(ttl))?;
        inner.leases.insert(id, ttl, Instant::now());
        drop(last);
        inner.log.sync_lease_record(written)?;
        Ok(LeaseGrant { id, ttl })
    }

    /// Revokes lease `id` (etcd's LeaseRevoke): deletes its keys in one revision
    /// (none if it has no keys) and forgets it. Returns the revision after it.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`], [`Error::NoSpace`], [`Error::Poisoned`],
    /// [`Error::LeasesUpstream`] on a store with
    /// [`foreign_leases`](super::StoreOptions::foreign_leases).
    pub fn revoke_lease(&self, id: i64) -> Result<u64> {
        self.own_leases()?;
        let inner = &*self.inner;
        let mut last = lock(&inner.write);
        let (ticket, record) = self.revoke_locked(id, &mut last)?;
        let rev = *last;
        drop(last);
        if let Some(t) = ticket {
            inner.log.wait_durable(t)?;
        }
        // Acknowledged revokes stay revoked (expiry does not wait for this: a lease
        // that comes back after a crash just expires again).
        if let Some(w) = record {
            inner.log.sync_lease_record(w)?;
        }
        Ok(rev)
    }

    /// Refuses a lease call on a store whose leases belong to an upstream cluster.
    fn own_leases(&self) -> Result<()> {
        if self.inner.opts.foreign_leases {
            return Err(Error::LeasesUpstream);
        }
        Ok(())
    }

    /// Revokes `id` with the write lock held (`last`: the last appended revision).
    fn revoke_locked(&self, id: i64, last: &mut u64) -> Result<(Option<Ticket>, Option<LeaseWrite>)> {
        let inner = &*self.inner;
        let keys = inner.leases.keys(id).ok_or(Error::LeaseNotFound)?;
        let base = *last;
        let events: Vec<PlannedEvent<'_>> = keys
            .iter()
            .filter_map(|k| inner.index.get(k, base).filter(|f| f.lease == id))
            .map(|f| PlannedEvent {
                kind: RecordKind::Delete,
                key: std::rc::Rc::from(f.key),
                value: std::borrow::Cow::Borrowed(&[][..]),
                create_revision: 0,
                version: 0,
                lease: 0,
                old_lease: id,
            })
            .collect();
        let ticket = if events.is_empty() { None } else { Some(self.append_locked(last, &events)?) };
        // The revision deleted the keys; the record says the lease is gone. Should
        // it fail for want of space, a restart finds the lease with no keys and
        // lets it expire again (the revoke was not acknowledged).
        let record = match inner.log.append_lease(id, None) {
            Ok(written) => Some(written),
            Err(Error::NoSpace(why)) => {
                tracing::warn!(lease = id, %why, "lease revoke record not written");
                None
            }
            Err(e) => return Err(e),
        };
        inner.leases.remove(id);
        Ok((ticket, record))
    }

    /// Renews lease `id` (one keep-alive): returns its TTL.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`] if it does not exist or has expired,
    /// [`Error::LeasesUpstream`] on a store with
    /// [`foreign_leases`](super::StoreOptions::foreign_leases).
    pub fn keep_alive(&self, id: i64) -> Result<i64> {
        self.own_leases()?;
        self.inner.leases.renew(id, Instant::now()).ok_or(Error::LeaseNotFound)
    }

    /// Lease `id`'s remaining and granted TTL, and its keys if `keys` (etcd's
    /// LeaseTimeToLive).
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`], [`Error::LeasesUpstream`] on a store with
    /// [`foreign_leases`](super::StoreOptions::foreign_leases).
    pub fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseStatus> {
        self.own_leases()?;
        self.inner.leases.time_to_live(id, keys, Instant::now()).ok_or(Error::LeaseNotFound)
    }

    /// Every lease ID (etcd's LeaseLeases), sorted.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.inner.leases.ids()
    }

    /// Gives every lease its full TTL from now: call when the server is ready after
    /// opening the store (as etcd's new leader does), so no lease expires for the
    /// time the server was down or starting.
    pub fn restart_lease_clocks(&self) {
        self.inner.leases.restart_clocks(Instant::now());
    }

    /// Revokes every lease whose deadline passed by `now`. Returns how many were
    /// revoked. A lease whose revoke fails is looked at again 500 ms later.
    ///
    /// # Errors
    ///
    /// The first revoke's error (the others are still tried).
    pub fn expire_leases(&self, now: Instant) -> Result<usize> {
        let inner = &*self.inner;
        let due = inner.leases.expired(now);
        let mut revoked = 0;
        let mut first_error = None;
        let mut ticket = None;
        let mut took = Duration::ZERO;
        for (i, chunk) in due.chunks(EXPIRY_CHUNK).enumerate() {
            if i > 0 {
                std::thread::sleep(expiry_pause(took));
            }
            let started = Instant::now();
            let mut last = lock(&inner.write);
            for &id in chunk {
                match self.revoke_locked(id, &mut last) {
                    Ok((t, _record)) => {
                        revoked += 1;
                        ticket = t.or(ticket);
                    }
                    Err(Error::LeaseNotFound) => {}
                    Err(e) => {
                        inner.leases.postpone(id, now, Duration::from_millis(500));
                        first_error.get_or_insert(e);
                    }
                }
            }
            drop(last);
            took = started.elapsed();
        }
        if let Some(t) = ticket {
            inner.log.wait_durable(t)?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(revoked),
        }
    }

    /// Starts the expiry thread (`argus-lease`); it stops when the handle drops.
    ///
    /// # Errors
    ///
    /// The OS error if the thread cannot be started.
    pub fn start_lease_expiry(&self) -> std::io::Result<LeaseExpiry> {
        let stop = Arc::new(AtomicBool::new(false));
        let store = self.clone();
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new().name("argus-lease".into()).spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(TICK);
                if let Err(e) = store.expire_leases(Instant::now()) {
                    tracing::warn!(error = %e, "lease expiry failed; retrying");
                }
            }
        })?;
        Ok(LeaseExpiry { stop, handle: Some(handle) })
    }
}

/// The running expiry thread; dropping it stops the thread (and waits for it).
pub struct LeaseExpiry {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LeaseExpiry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expiry pauses at least as long as its last chunk took, and never less than
    /// the minimum: it holds the write lock at most about half of the time.
    #[test]
    fn expiry_pauses_as_long_as_a_chunk_took() {
        assert_eq!(expiry_pause(Duration::ZERO), EXPIRY_MIN_PAUSE);
        assert_eq!(expiry_pause(Duration::from_micros(10)), EXPIRY_MIN_PAUSE);
        assert_eq!(expiry_pause(Duration::from_millis(3)), Duration::from_millis(3));
    }
}
