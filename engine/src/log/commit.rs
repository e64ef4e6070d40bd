//! Group commit: how appended revisions become durable and then visible under
//! [`FsyncPolicy::Always`] and [`FsyncPolicy::Batch`].
//!
//! Writers append under the store's write lock (which queues the revision in
//! [`SyncState::pending`]) and call [`RevisionLog::wait_durable`] outside it. At most
//! one of them at a time holds the **syncer role**: it takes every queued revision,
//! fsyncs each segment they touch once, publishes them in order (each segment's
//! committed length, then `committed_rev`, then the commit listeners run) and only
//! then wakes, each on its own [`Slot`], exactly the sleeping writers whose revision
//! that publish covered. If revisions were queued while it synced, it hands the role
//! to one sleeping writer of those (the one with the lowest revision), which starts
//! the next fsync at once; every other writer sleeps on. A writer that finds the
//! role taken adds a slot to [`SyncState::waiters`] and sleeps on it until it is
//! woken, exactly once, with its outcome ([`Wake`]). So a writer that arrives while
//! an fsync runs joins the next group without waking anyone, and nobody wakes only
//! to find that it must sleep again.
//!
//! Invariants (`SyncState` changes under the `sync` mutex; the fsyncs and the
//! publish are done without it, by the holder of the role only):
//! 1. the role is taken when `syncing` goes from false to true, or handed from one
//!    thread to the next without `syncing` ever being false in between: one holder
//!    at a time, so rounds, and the publishes in them, are sequential and in
//!    revision order (each round drains `pending` from its front);
//! 2. `committed_rev` is stored only after every revision up to it was fsynced, and
//!    a slot is woken [`Wake::Durable`] only after that store and only for a
//!    revision at or below it;
//! 3. a writer goes to sleep only after adding its slot to `waiters` under the same
//!    lock in which it saw its revision neither committed nor poisoned; the holder
//!    of the role takes that lock after publishing (or poisoning) and removes every
//!    slot it covered before waking it, so no wake-up is lost and none is doubled;
//! 4. the role is given up (`syncing` back to false) only when no sleeping writer
//!    has a revision in `pending`: every appended revision is then either published
//!    or queued by a writer that has not called `wait_durable` yet and takes the
//!    role itself when it does. After poisoning, every waiter is woken and the role
//!    is given up for good.
//!
//! Under `Batch` the holder of the role first waits for company in slices of an
//! eighth of `batch_delay` (on a slot that an append rings once `batch_bytes` are
//! pending), stopping when a slice brings nobody new, as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::segment::Segment;
use super::{FsyncPolicy, RevisionLog, Ticket};
use crate::error::Result;
use crate::sync::{lock, Arc, Condvar, Mutex, MutexGuard};

/// A revision appended and not yet taken by a syncer.
struct Pending {
    rev: u64,
    segment: Arc<Segment>,
    /// Offset just past the revision's last record in `segment`.
    end: u64,
}

/// The commit path's shared state, under `Inner::sync`.
pub(super) struct SyncState {
    /// Appended revisions no syncer has taken yet, in revision order.
    pending: VecDeque<Pending>,
    pending_bytes: u64,
    first_pending_at: Option<Instant>,
    /// Someone holds the syncer role (see the module's invariants).
    syncing: bool,
    /// Writers asleep until their revision is durable (or they get the role).
    waiters: Vec<Arc<Slot>>,
    /// `Batch`: the slot the holder of the role waits for company on.
    company: Option<Arc<Slot>>,
    stats: CommitStats,
}

impl SyncState {
    pub(super) fn new() -> SyncState {
        SyncState {
            pending: VecDeque::new(),
            pending_bytes: 0,
            first_pending_at: None,
            syncing: false,
            waiters: Vec::new(),
            company: None,
            stats: CommitStats::default(),
        }
    }
}

#[cfg(test)]
impl SyncState {
    pub(super) fn waiters_revs(&self) -> Vec<u64> {
        self.waiters.iter().map(|w| w.rev).collect()
    }
    pub(super) fn syncing_now(&self) -> bool {
        self.syncing
    }
}

/// What a sleeping writer is woken with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// Not woken yet.
    Asleep,
    /// Its revision is published (so durable): return `Ok`.
    Durable,
    /// The log is poisoned and its revision was not made durable.
    Poisoned,
    /// It holds the syncer role now: run the next round.
    Syncer,
    /// `Batch`, the syncer's company slot: `batch_bytes` are pending, sync now.
    Full,
}

/// One sleeping writer's own wake-up: woken once, by whoever took it out of
/// `SyncState::waiters`, with no other thread waking as well.
struct Slot {
    rev: u64,
    state: Mutex<Wake>,
    cv: Condvar,
}

impl Slot {
    fn new(rev: u64) -> Arc<Slot> {
        Arc::new(Slot { rev, state: Mutex::new(Wake::Asleep), cv: Condvar::new() })
    }

    fn wake(&self, how: Wake) {
        let mut s = lock(&self.state);
        *s = how;
        self.cv.notify_one();
    }

    /// Sleeps until woken; returns how.
    fn sleep(&self) -> Wake {
        let mut s = lock(&self.state);
        while *s == Wake::Asleep {
            s = match self.cv.wait(s) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        *s
    }

    /// Sleeps until woken or `timeout` passes; leaves the slot asleep again.
    fn sleep_for(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.state);
        while *s == Wake::Asleep {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = match self.cv.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *s = Wake::Asleep;
    }
}

/// Upper bounds (inclusive) of the buckets of [`CommitStats::group_sizes`]: one
/// bucket per size up to 16, then powers of two, then everything larger.
pub const GROUP_SIZE_BOUNDS: [u64; 26] =
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, u64::MAX];

/// Counters of the group commit path since the log was opened, from
/// [`RevisionLog::commit_stats`]. A **group** is one syncer round that made
/// revisions durable: one fsync per segment its revisions touch (almost always
/// one), then one publish. Under [`FsyncPolicy::Never`] everything stays zero.
///
/// Take two snapshots and [`CommitStats::since`] to get the figures of an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitStats {
    /// Groups committed.
    pub groups: u64,
    /// fdatasyncs the commit path did for them (segment seals at a roll, `flush`
    /// and snapshots are not counted).
    pub fsyncs: u64,
    /// Revisions made durable and published by them.
    pub revisions: u64,
    /// Times the syncer role went to a writer that was asleep waiting for its
    /// revision (the next group began without the writer asking for it).
    pub handoffs: u64,
    /// Groups by their size (revisions made durable): `group_sizes[i]` counts the
    /// groups of a size at most `GROUP_SIZE_BOUNDS[i]` and above the bound before.
    pub group_sizes: [u64; GROUP_SIZE_BOUNDS.len()],
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats { groups: 0, fsyncs: 0, revisions: 0, handoffs: 0, group_sizes: [0; GROUP_SIZE_BOUNDS.len()] }
    }
}

impl CommitStats {
    pub(super) fn record_group(&mut self, revisions: u64, fsyncs: u64) {
        self.groups += 1;
        self.fsyncs += fsyncs;
        self.revisions += revisions;
        let i = GROUP_SIZE_BOUNDS.partition_point(|&b| b < revisions);
        self.group_sizes[i.min(GROUP_SIZE_BOUNDS.len() - 1)] += 1;
    }

    /// The counts of the interval from `earlier` (a snapshot of the same log) to `self`.
    pub fn since(&self, earlier: &CommitStats) -> CommitStats {
        let mut d = CommitStats {
            groups: self.groups.saturating_sub(earlier.groups),
            fsyncs: self.fsyncs.saturating_sub(earlier.fsyncs),
            revisions: self.revisions.saturating_sub(earlier.revisions),
            handoffs: self.handoffs.saturating_sub(earlier.handoffs),
            ..CommitStats::default()
        };
        for (i, g) in d.group_sizes.iter_mut().enumerate() {
            *g = self.group_sizes[i].saturating_sub(earlier.group_sizes[i]);
        }
        d
    }

    /// The median group size (the lower median over groups), as the upper bound of
    /// the bucket that holds it: exact up to 16. `None` before the first group.
    pub fn median_group_size(&self) -> Option<u64> {
        let total: u64 = self.group_sizes.iter().sum();
        if total == 0 {
            return None;
        }
        let half = total.div_ceil(2);
        let mut seen = 0;
        for (i, &n) in self.group_sizes.iter().enumerate() {
            seen += n;
            if seen >= half {
                return Some(GROUP_SIZE_BOUNDS[i]);
            }
        }
        None
    }

    /// Revisions per group on average. `None` before the first group.
    pub fn mean_group_size(&self) -> Option<f64> {
        (self.groups > 0).then(|| self.revisions as f64 / self.groups as f64)
    }
}

/// Whether a round's outcome covers a sleeping writer's revision: it is woken
/// `Durable` only if the publish covered it.
fn covered(rev: u64, committed: u64) -> bool {
    // Seeded bug (loom twin): every writer asleep when the round ends is told its
    // revision is durable, including those whose revision arrived during the fsync.
    cfg!(argus_bug = "early-wake") || rev <= committed
}

/// Held by the thread that runs a round without the `sync` lock: if the round
/// unwinds (a storage or a commit listener panicked), it poisons the log and wakes
/// every waiter, so none sleeps forever on a role nobody holds.
struct RoleGuard<'a> {
    log: &'a RevisionLog,
    armed: bool,
}

impl Drop for RoleGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.log.poison("the group commit syncer panicked".to_string());
            self.log.end_round(lock(&self.log.inner.sync), 0, 0);
        }
    }
}

impl RevisionLog {
    /// Publishes a written revision (`Never`) or queues it for the group commit.
    pub(super) fn queue_commit(&self, rev: u64, segment: Arc<Segment>, end: u64, len: u64) {
        let inner = &*self.inner;
        if inner.opts.fsync == FsyncPolicy::Never {
            segment.publish(end);
            self.publish_committed(rev);
            return;
        }
        let mut s = lock(&inner.sync);
        if s.pending.is_empty() {
            s.first_pending_at = Some(Instant::now());
        }
        s.pending.push_back(Pending { rev, segment, end });
        s.pending_bytes += len;
        if inner.opts.fsync == FsyncPolicy::Batch && s.pending_bytes >= inner.opts.batch_bytes {
            if let Some(c) = s.company.take() {
                c.wake(Wake::Full);
            }
        }
    }

    /// Returns once revision `ticket.rev` is committed (durable under `Always` and
    /// `Batch`), running group commits while it holds the syncer role (see the
    /// `commit` module).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Poisoned`] if the log was poisoned before the revision was
    /// made durable.
    pub fn wait_durable(&self, ticket: Ticket) -> Result<()> {
        let inner = &*self.inner;
        if inner.opts.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let mut s = lock(&inner.sync);
        loop {
            if self.committed_rev() >= ticket.rev {
                return Ok(());
            }
            if self.is_poisoned() {
                return Err(self.poisoned_error());
            }
            if s.syncing || s.pending.is_empty() {
                // Someone else syncs (our revision is in their round or the next):
                // sleep until told how it ended.
                let slot = Slot::new(ticket.rev);
                s.waiters.push(Arc::clone(&slot));
                drop(s);
                match slot.sleep() {
                    Wake::Durable => {
                        debug_assert!(self.committed_rev() >= ticket.rev, "woken before durable");
                        return Ok(());
                    }
                    Wake::Poisoned => return Err(self.poisoned_error()),
                    // The role is ours (`syncing` stayed true for us): run the round
                    // whatever happened meanwhile, so the role is handed on or
                    // given up (poisoned) and nobody is left asleep.
                    _ => s = lock(&inner.sync),
                }
            } else {
                s.syncing = true;
            }
            self.run_round(s);
            if self.committed_rev() >= ticket.rev {
                return Ok(());
            }
            s = lock(&inner.sync);
        }
    }

    /// One group commit by the holder of the role, entered with the lock held and
    /// `syncing` set; ends with the role handed on or given up.
    fn run_round<'a>(&'a self, mut s: MutexGuard<'a, SyncState>) {
        let inner = &*self.inner;
        if inner.opts.fsync == FsyncPolicy::Batch {
            s = self.wait_for_company(s);
        }
        let batch: Vec<Pending> = s.pending.drain(..).collect();
        s.pending_bytes = 0;
        s.first_pending_at = None;
        drop(s);
        let mut guard = RoleGuard { log: self, armed: true };
        // A poisoned log syncs and publishes nothing more; the round only wakes everyone.
        let mut synced = !self.is_poisoned();
        let mut fsyncs = 0;
        let mut last_synced: Option<&Arc<Segment>> = None;
        for p in &batch {
            if !synced {
                break;
            }
            // One fsync per distinct segment covers all of its entries (a segment
            // the batch left was sealed, and fsynced, when the writer rolled).
            if last_synced.is_some_and(|l| Arc::ptr_eq(l, &p.segment)) {
                continue;
            }
            if let Err(e) = p.segment.file.sync() {
                let _ = self.poison(format!("fsync of {}: {e}", p.segment.name));
                synced = false;
                break;
            }
            fsyncs += 1;
            last_synced = Some(&p.segment);
        }
        // An fsync that failed elsewhere meanwhile (a segment seal, `flush`) may
        // have reported, and so cleared, the error of pages this round relies on:
        // a poisoned log publishes nothing more.
        let mut made_durable = 0;
        if synced && !self.is_poisoned() {
            for p in &batch {
                p.segment.publish(p.end);
            }
            if let Some(p) = batch.last() {
                self.publish_committed(p.rev);
            }
            made_durable = batch.len() as u64;
        }
        guard.armed = false;
        self.end_round(lock(&inner.sync), made_durable, fsyncs);
    }

    /// `Batch`: waits for more writers to join the round (see [`FsyncPolicy::Batch`]).
    fn wait_for_company<'a>(&'a self, mut s: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        let opts = &self.inner.opts;
        let slot = Slot::new(0);
        loop {
            if s.pending_bytes >= opts.batch_bytes {
                return s;
            }
            let since = s.first_pending_at.map_or(Duration::ZERO, |t| t.elapsed());
            if since >= opts.batch_delay {
                return s;
            }
            let before = s.pending.len();
            let slice = (opts.batch_delay / 8).max(Duration::from_micros(50)).min(opts.batch_delay - since);
            s.company = Some(Arc::clone(&slot));
            drop(s);
            slot.sleep_for(slice);
            s = lock(&self.inner.sync);
            s.company = None;
            if s.pending.len() == before {
                return s; // a slice brought nobody new: everyone who will come is here
            }
        }
    }

    /// Ends a round (its publish, if any, done): wakes the writers it covered (all of
    /// them, if the log is poisoned) and hands the role to one whose revision is
    /// still pending, or gives the role up.
    fn end_round(&self, mut s: MutexGuard<'_, SyncState>, made_durable: u64, fsyncs: u64) {
        if made_durable > 0 {
            s.stats.record_group(made_durable, fsyncs);
        }
        let committed = self.committed_rev();
        let poisoned = self.is_poisoned();
        let mut woken = Vec::new();
        let mut i = 0;
        while i < s.waiters.len() {
            if poisoned || covered(s.waiters[i].rev, committed) {
                woken.push(s.waiters.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Every waiter left has its revision in `pending` (invariant 4): hand the role
        // to the lowest, so the next fsync starts now.
        // Seeded bug (loom twin): the role is never handed on, so a writer whose
        // revision arrived during the fsync sleeps with nobody left to sync it.
        let next = if poisoned || s.pending.is_empty() || cfg!(argus_bug = "lost-handoff") {
            None
        } else {
            let lowest = s.waiters.iter().enumerate().min_by_key(|(_, w)| w.rev).map(|(i, _)| i);
            lowest.map(|i| s.waiters.swap_remove(i))
        };
        s.syncing = next.is_some();
        if next.is_some() {
            s.stats.handoffs += 1;
        }
        drop(s);
        if let Some(n) = next {
            n.wake(Wake::Syncer);
        }
        for w in woken {
            w.wake(if poisoned && w.rev > committed { Wake::Poisoned } else { Wake::Durable });
        }
    }

    /// Counters of the commit path since the log was opened (see [`CommitStats`]).
    pub fn commit_stats(&self) -> CommitStats {
        lock(&self.inner.sync).stats.clone()
    }
}
