//! The notifier: the one thread that owns every watcher, group and index record, and
//! follows the store's `committed_rev`, off the write path.
//!
//! Loop: fan out the committed revisions after `notified`; take control requests
//! (register, cancel, progress, stream open/close, finished catch-up jobs) and victim
//! retries; dispatch catch-up jobs; periodic progress; then sleep on the doorbell,
//! which control requests, retries, finished jobs and — while some group is synced or
//! parked — commits ring.
//!
//! Fan-out of one revision: match its records, borrowed from the mapped log, against
//! the synced groups of every active index shard; if nothing matched, that is all (no
//! copy, no allocation). Otherwise build the revision's [`RevisionBatch`] once
//! (prev_kv computed once per event, only if a group reached asked for it) and queue
//! ONE delivery per stream reached, whose parts are its groups with their shared id
//! lists: the cost is per stream and per group, never per watcher.
//!
//! State machine of a group (see [`State`]), changed only here:
//! - `Synced` (linked in its range's synced list) receives every revision as it is
//!   fanned out; at most one synced group exists per (stream, range, class), and a
//!   group that becomes synced merges into it;
//! - `Parked` (start in the future) becomes synced when the notifier reaches
//!   `next - 1`, so matching never checks a start revision;
//! - `Unsynced` (behind) waits for a catch-up job, `CatchingUp` is in one;
//! - `Victim`: a delivery to it found its stream full; it holds only `next`.
//!
//! Invariants:
//! - a `Synced` group's watchers have received every matching revision up to
//!   `notified`; any other group's have received every matching revision below its
//!   `next`, and nothing at or after it;
//! - a group becomes `Synced` only when `next == notified + 1`, so the hand-off
//!   skips and repeats nothing; a delivery that finds its stream full leaves every
//!   group in it a `Victim` with `next` = that revision;
//! - a watcher's `created` is queued (here) before it joins a group, its `canceled`
//!   after it left it, so `created` precedes and `canceled` follows all its events.

use std::collections::{BTreeSet, HashSet};

use hashbrown::HashMap;
#[cfg(not(loom))]
use std::time::Duration;
use std::time::Instant;

use super::catchup::{self, event_kind, CatchupJob, CatchupResult, JobGroup, Outcome};
use super::delivery::{Delivery, Ids, Part};
use super::group::{member_count, member_id_list, member_ids, Class, Group, MemberList, Members, State, Watcher};
use super::hub::{Control, HubShared, Keep, Registration};
use super::index::Shard;
use super::slab::{Handle, Record, Slab};
use super::stream::{IdTable, StreamShared, LONE, PENDING};
use super::types::{
    BatchBuilder, EventRef, KvRef, RevisionBatch, RevisionEvents, WatchId, WatchResponse, BEFORE_HISTORY,
    NEVER_COMPACTED,
};
use crate::log::record::{RecordKind, RecordRef};
use crate::log::LogReader;
use crate::store::Store;
use crate::sync::atomic::{fence, Ordering};
use crate::sync::{lock, Arc};

/// Builds the shared batch of one revision from its records (all of one main
/// revision, in sub order), straight from the borrowed records into the batch's
/// chunks (see [`BatchBuilder`]); a previous key-value is copied once, from the
/// store's read into the chunk.
pub(crate) fn batch_from_records(
    store: &Store,
    reader: &mut LogReader,
    records: &[RecordRef<'_>],
    with_prev: bool,
) -> RevisionBatch {
    let revision = records.first().map_or(0, |r| r.main);
    fn view<'a>(r: &RecordRef<'a>) -> EventRef<'a> {
        let kv = match r.kind {
            RecordKind::Delete => {
                KvRef { key: r.key, value: &[], create_revision: 0, mod_revision: r.main, version: 0, lease: 0 }
            }
            _ => KvRef {
                key: r.key,
                value: r.value,
                create_revision: r.create_revision,
                mod_revision: r.main,
                version: r.version,
                lease: r.lease,
            },
        };
        EventRef { kind: event_kind(r), kv, prev_kv: None, sub: r.sub }
    }
    // Exact without prev_kv; the previous values' bytes are not known before they
    // are read.
    let hint = records.iter().map(|r| BatchBuilder::event_len(&view(r))).sum();
    let mut b = BatchBuilder::new(revision, with_prev, records.len(), hint);
    for r in records {
        // As etcd 3.4 (`isCreateEvent` in its `sendLoop`): a create event (a PUT whose
        // create revision is its revision) has no prev_kv. Usually the key did not
        // exist before the revision anyway, but a txn may delete a key and put it
        // again (see `Store::txn`): that put starts a generation and gets none.
        let create = r.kind == RecordKind::Put && r.create_revision == r.main;
        let prev = if with_prev && !create { store.kv_before(reader, r.key, r.main) } else { None };
        b.push(&EventRef { prev_kv: prev.as_ref().map(KvRef::from), ..view(r) });
    }
    b.finish()
}

/// The notifier's internal counts, for tests that check that what watchers cost
/// is given back.
#[cfg(all(test, not(loom)))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NotifierStats {
    /// Range records of the index (live, and freed but not yet dropped).
    pub(crate) ranges: usize,
    /// Index changes not yet applied (ranges waiting to join or leave the tree).
    pub(crate) pending_index_changes: usize,
    pub(crate) groups: usize,
    pub(crate) lists: usize,
    pub(crate) watchers: usize,
    pub(crate) streams: usize,
    pub(crate) stream_slots: usize,
    pub(crate) parked: usize,
    pub(crate) waiting: usize,
    pub(crate) unsynced: usize,
    pub(crate) progress_groups: usize,
    pub(crate) owed: usize,
    pub(crate) synced_groups: usize,
    pub(crate) parked_groups: usize,
}

/// A progress response owed to watchers of a group that was not synced when asked.
enum Owed {
    All,
    Ids(Vec<WatchId>),
}

struct StreamEntry {
    shared: Arc<StreamShared>,
    shard: u32,
    /// Watchers of the stream not in a `Synced` group (a stream-wide progress
    /// response needs every watcher synced).
    unready: u64,
    /// Groups that became victims, waiting for the stream to drain.
    victims: Vec<Handle>,
}

impl Record for StreamEntry {}

/// One match: a synced group reached by event `event` of the revision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    stream: u32,
    group: u32,
    event: u32,
}

/// What queuing one stream's delivery came to.
enum Sent {
    Accepted { progress_groups: Vec<u32> },
    Refused { stream: u32, groups: Vec<u32> },
}

pub(crate) struct Notifier {
    hub: Arc<HubShared>,
    notified: u64,
    streams: Slab<StreamEntry>,
    stream_slots: HashMap<u64, u32>,
    shards: Vec<Shard>,
    groups: Slab<Group>,
    /// Member lists of the groups of more than one watcher.
    lists: Slab<MemberList>,
    watchers: Slab<Watcher>,
    /// Parked groups by start revision. A group leaves it as it leaves the
    /// `Parked` state, so nothing stale stays here (watchers parked and canceled
    /// while nothing is written cost nothing afterwards).
    parked: BTreeSet<(u64, Handle)>,
    /// Groups that wait for their cursor (parked, unsynced, catching up) by what
    /// makes them one: cursor, stream, range, class. A watcher that starts where
    /// such a group waits joins it (a group in a catch-up job included: the job's
    /// result goes to the group's members as they are when it comes back), and a
    /// group that arrives where another waits merges into it, so watchers that agree
    /// are caught up once.
    waiting: HashMap<(u64, u32, u32, Class), Handle>,
    /// Groups waiting for a catch-up job (stale handles are skipped).
    unsynced: Vec<Handle>,
    /// Groups of the `progress_notify` class; a group leaves it as its record is
    /// freed.
    progress_groups: hashbrown::HashSet<Handle>,
    owed: HashMap<Handle, Owed>,
    synced_groups: usize,
    parked_groups: usize,
    /// Length of `unsynced` after its last purge (see `tidy`).
    live_unsynced_hint: usize,
    /// Stats requests, answered at the end of the turn (tests).
    #[cfg(all(test, not(loom)))]
    stats_requests: Vec<std::sync::mpsc::Sender<NotifierStats>>,
    hits: Vec<Hit>,
    /// The last busy turn handled requests (the loop then spins briefly before it
    /// sleeps: requests come in bursts, and a wake-up costs more than the spin).
    recent_controls: bool,
    jobs_in_flight: usize,
    max_jobs: usize,
    next_tick: Instant,
    /// Keeps a compaction from deleting revisions not yet fanned out.
    hold: crate::log::RetentionHold,
}

/// The last response of a watcher canceled with a reason (its events could not be
/// read from the log, or [`Control::Retain`] refused it).
fn canceled_response(id: WatchId, rev: u64, reason: &str) -> WatchResponse {
    let mut r = WatchResponse::control(id, rev);
    r.canceled = true;
    r.cancel_reason = reason.to_string();
    r
}

/// The last response of a watcher whose start revision is compacted: `canceled`
/// with the compaction revision and no `cancel_reason`, as etcd 3.4 sends it (its
/// `sendLoop` sets `canceled` from `compact_revision` and leaves the reason empty;
/// clients tell a compaction by `compact_revision`).
fn compacted_response(id: WatchId, rev: u64, compact: u64) -> WatchResponse {
    let mut r = WatchResponse::control(id, rev);
    r.canceled = true;
    r.compact_revision = compact;
    r
}

/// Queues a watcher's last response and frees its id, atomically with respect to
/// `watch()` (which takes the same lock to claim an id and queue the watcher's
/// registration, whose `created` this thread queues later): a client that has seen
/// `canceled` can reuse the id at once, and a new watcher with that id is
/// `created` only after the old one's `canceled`.
fn finish(stream: &StreamShared, id: WatchId, last: WatchResponse) {
    let mut ids = lock(&stream.ids);
    stream.send_control(last);
    ids.remove(id);
}

impl Notifier {
    pub(crate) fn new(hub: Arc<HubShared>) -> Self {
        let notified = hub.store.current_revision();
        hub.metrics.notified_revision.store(notified, Ordering::Relaxed);
        let max_jobs = hub.catchup_pool.threads().max(1);
        let next_tick = Instant::now() + hub.opts.progress_interval;
        let hold = hub.store.log().hold_from(notified + 1);
        let shards = (0..hub.opts.index_shards.max(1)).map(|_| Shard::default()).collect();
        Notifier {
            hold,
            hub,
            notified,
            streams: Slab::default(),
            stream_slots: HashMap::new(),
            shards,
            groups: Slab::default(),
            lists: Slab::default(),
            watchers: Slab::default(),
            parked: BTreeSet::new(),
            waiting: HashMap::new(),
            unsynced: Vec::new(),
            progress_groups: hashbrown::HashSet::new(),
            owed: HashMap::new(),
            synced_groups: 0,
            parked_groups: 0,
            live_unsynced_hint: 0,
            #[cfg(all(test, not(loom)))]
            stats_requests: Vec::new(),
            hits: Vec::new(),
            recent_controls: false,
            jobs_in_flight: 0,
            max_jobs,
            next_tick,
        }
    }

    #[cfg(loom)]
    pub(crate) fn hub(&self) -> &HubShared {
        &self.hub
    }

    /// Runs the notifier until the hub stops. A panic in it is caught and made
    /// loud: the hub records the failure (`WatchHub::health`), every watcher is
    /// canceled with the reason and every stream ended (rather than left waiting
    /// for a notifier that is gone), and new watches are refused.
    pub(crate) fn run_guarded(mut self) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        let Err(payload) = run else { return };
        let why = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        };
        self.hub.fail(format!("notifier panicked: {why}"));
        // The state may be torn where the panic struck; what this reads (the stream
        // list and each stream's id table, behind its poison-tolerant lock) is
        // changed in single steps. Should it panic too, the hub is still marked
        // failed and stopped.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fail_streams()));
    }

    /// After a failure: answers what is queued, then cancels every watcher of every
    /// stream with the failure as `cancel_reason` and ends the stream.
    fn fail_streams(&mut self) {
        fence(Ordering::SeqCst);
        self.hub.drain_stopped();
        let why = self.hub.failure().unwrap_or_default();
        let rev = self.notified;
        for &slot in self.stream_slots.values() {
            let shared = &self.streams.at(slot).1.shared;
            let mut ids = lock(&shared.ids);
            for (id, _) in ids.drain() {
                shared.send_control(super::hub::failed_response(id, rev, &why));
            }
            drop(ids);
            shared.send_closed();
        }
    }

    pub(crate) fn run(&mut self) {
        #[cfg(not(loom))]
        while !self.hub.stop.load(Ordering::Acquire) {
            if !self.step() {
                if std::mem::take(&mut self.recent_controls) && self.hub.doorbell.spin(Duration::from_micros(20)) {
                    continue;
                }
                // Everything that needs the notifier rings its doorbell (commits while
                // somebody watches, requests, retries, finished jobs); the timeout only
                // serves periodic progress and moves an idle notifier's retention hold
                // along (an idle wake costs tens of microseconds on a VM: not often).
                let wait = if self.progress_groups.is_empty() {
                    Duration::from_secs(1)
                } else {
                    self.next_tick.saturating_duration_since(Instant::now()).min(Duration::from_secs(1))
                };
                self.hub.doorbell.wait(wait);
            }
        }
        self.shutdown();
    }

    /// One turn of the loop, without waiting. Returns whether it did anything.
    pub(crate) fn step(&mut self) -> bool {
        #[cfg(loom)]
        self.hub.doorbell.take();
        // Revisions first, so that a progress request answers as late as possible.
        let mut busy = self.notify_committed();
        busy |= self.take_controls();
        busy |= self.take_retries();
        busy |= self.dispatch_catchup();
        self.tick_progress();
        self.tidy();
        if busy {
            self.hub.metrics.notifier_turns.fetch_add(1, Ordering::Relaxed);
        }
        busy
    }

    /// Applies what changes of the watcher set left pending, at the end of every
    /// turn, without waiting for a write: range records freed by cancels are
    /// dropped from the index (and new ones added to its tree), and the list of
    /// groups waiting for catch-up loses the ones canceled meanwhile. Cheap when
    /// nothing changed (one flag per shard); a tree rebuild happens at most once a
    /// turn, as it would at the next write anyway.
    fn tidy(&mut self) {
        for s in &mut self.shards {
            s.prepare();
        }
        // Groups canceled while unsynced leave stale handles that the next dispatch
        // drops; with catch-up paused or every job slot busy that can take a while:
        // drop them here once they are most of the list (amortized O(1) each).
        if self.unsynced.len() > 64 && self.unsynced.len() > 2 * self.live_unsynced_hint {
            let groups = &self.groups;
            self.unsynced.retain(|&h| groups.get(h).is_some_and(|g| g.state == State::Unsynced));
            self.live_unsynced_hint = self.unsynced.len();
        }
        #[cfg(all(test, not(loom)))]
        for tx in std::mem::take(&mut self.stats_requests) {
            let _ = tx.send(self.stats());
        }
    }

    /// The internal counts (tests).
    #[cfg(all(test, not(loom)))]
    fn stats(&self) -> NotifierStats {
        NotifierStats {
            ranges: self.shards.iter().map(|s| s.range_count()).sum(),
            pending_index_changes: self.shards.iter().map(|s| s.pending_changes()).sum(),
            groups: self.groups.len(),
            lists: self.lists.len(),
            watchers: self.watchers.len(),
            streams: self.streams.len(),
            stream_slots: self.stream_slots.len(),
            parked: self.parked.len(),
            waiting: self.waiting.len(),
            unsynced: self.unsynced.len(),
            progress_groups: self.progress_groups.len(),
            owed: self.owed.len(),
            synced_groups: self.synced_groups,
            parked_groups: self.parked_groups,
        }
    }

    fn shutdown(&mut self) {
        // Watchers accepted by `watch()` but not yet registered still get their
        // `created` response before the stream ends (see `HubShared::control` for
        // requests that come after this drain).
        fence(Ordering::SeqCst);
        self.hub.drain_stopped();
        let slots: Vec<u32> = self.stream_slots.values().copied().collect();
        for slot in slots {
            self.streams.at(slot).1.shared.send_closed();
        }
    }

    // ----- bookkeeping ---------------------------------------------------------

    fn state_counter(&self, s: State) -> &crate::sync::atomic::AtomicU64 {
        let m = &self.hub.metrics;
        match s {
            State::Synced | State::Parked => &m.synced,
            State::Unsynced | State::CatchingUp => &m.unsynced,
            State::Victim => &m.victims,
        }
    }

    /// Publishes whether commits can reach anybody (see `HubShared::watching`).
    fn update_watching(&self) {
        let on = self.synced_groups + self.parked_groups > 0;
        if self.hub.watching.load(Ordering::Relaxed) != on {
            self.hub.watching.store(on, Ordering::Relaxed);
            // Pairs with the fence in the commit listener: after this, either the
            // listener sees `on` or this thread's next read of `committed_rev` sees
            // the commit (the loop always reads it again before sleeping).
            fence(Ordering::SeqCst);
        }
    }

    /// Takes group `g` out of the waiting index (if it is there under its key).
    fn unindex_waiting(&mut self, g: u32) {
        let (h, gr) = self.groups.at(g);
        if matches!(gr.state, State::Parked | State::Unsynced | State::CatchingUp) {
            let key = (gr.next, gr.stream, gr.range, gr.class);
            if self.waiting.get(&key) == Some(&h) {
                self.waiting.remove(&key);
            }
        }
    }

    /// The group waiting under `key`, if the index names one that still does.
    fn waiting_at(&self, key: &(u64, u32, u32, Class)) -> Option<Handle> {
        let h = *self.waiting.get(key)?;
        let g = self.groups.get(h)?;
        let waits = matches!(g.state, State::Parked | State::Unsynced | State::CatchingUp);
        (waits && (g.next, g.stream, g.range, g.class) == *key).then_some(h)
    }

    /// Puts waiting group `g` in the waiting index, or merges it into the group that
    /// already waits there. Returns the group it ended in.
    fn index_waiting(&mut self, g: u32) -> u32 {
        let (h, gr) = self.groups.at(g);
        let key = (gr.next, gr.stream, gr.range, gr.class);
        if let Some(other) = self.waiting_at(&key) {
            // Same cursor, so compatible states: parked with parked, unsynced with
            // unsynced or catching up (counted alike).
            if other != h {
                self.merge_into(g, other.index);
                return other.index;
            }
        }
        self.waiting.insert(key, h);
        g
    }

    /// Takes group `g` out of where its state keeps it: the waiting index (under its
    /// current cursor), its range's synced groups, the parked count. The caller then
    /// gives it a new state or frees it.
    fn leave_state(&mut self, g: u32) {
        self.unindex_waiting(g);
        let gr = self.groups.at(g).1;
        match gr.state {
            State::Synced => {
                let (range, shard) = (gr.range, self.streams.at(gr.stream).1.shard as usize);
                self.shards[shard].unlink_synced(range, g);
                self.synced_groups -= 1;
            }
            State::Parked => {
                let (h, next) = (self.groups.handle(g), gr.next);
                self.parked.remove(&(next, h));
                self.parked_groups -= 1;
            }
            _ => {}
        }
    }

    /// Moves group `g` from its state to `new` (never to `Synced`: see
    /// `make_synced`), with cursor `next`. Returns the group it ended in (another
    /// that waits at the same cursor may take it in).
    fn set_state(&mut self, g: u32, new: State, next: u64) -> u32 {
        debug_assert!(new != State::Synced);
        self.leave_state(g);
        let (handle, gr) = self.groups.at(g);
        let (old, n, stream) = (gr.state, member_count(&self.lists, gr) as u64, gr.stream);
        self.state_counter(old).fetch_sub(n, Ordering::Relaxed);
        self.state_counter(new).fetch_add(n, Ordering::Relaxed);
        if old == State::Synced {
            self.streams.at_mut(stream).unready += n;
        }
        match new {
            State::Parked => {
                self.parked.insert((next, handle));
                self.parked_groups += 1;
            }
            State::Unsynced => self.unsynced.push(handle),
            State::Victim => self.streams.at_mut(stream).victims.push(handle),
            State::CatchingUp | State::Synced => {}
        }
        let gr = self.groups.at_mut(g);
        gr.state = new;
        gr.next = next;
        let end = if new == State::Victim { g } else { self.index_waiting(g) };
        self.update_watching();
        end
    }

    /// Makes group `g` synced (its cursor must be `notified + 1`): merges it into the
    /// synced group of its stream, range and class if there is one, else links it.
    /// Sends what it owes in progress first. Returns the group it ended in.
    fn make_synced(&mut self, g: u32) -> u32 {
        let (handle, gr) = self.groups.at(g);
        debug_assert!(gr.state != State::Synced);
        let (old, n, stream, range, class) =
            (gr.state, member_count(&self.lists, gr) as u64, gr.stream, gr.range, gr.class);
        let shard = self.streams.at(stream).1.shard as usize;
        // Its owed bookmarks are due now: every event up to `notified` is delivered.
        if let Some(owed) = (!self.owed.is_empty()).then(|| self.owed.remove(&handle)).flatten() {
            self.send_owed(g, owed);
        }
        self.leave_state(g);
        self.state_counter(old).fetch_sub(n, Ordering::Relaxed);
        self.state_counter(State::Synced).fetch_add(n, Ordering::Relaxed);
        self.streams.at_mut(stream).unready -= n;
        let groups = &self.groups;
        let into = self.shards[shard].synced(range).find(|&s| {
            let sg = groups.at(s).1;
            sg.stream == stream && sg.class == class
        });
        let end = match into {
            Some(s) => {
                self.absorb(g, s);
                s
            }
            None => {
                self.shards[shard].link_synced(range, g);
                self.synced_groups += 1;
                let gr = self.groups.at_mut(g);
                gr.state = State::Synced;
                gr.next = self.notified + 1;
                g
            }
        };
        self.update_watching();
        end
    }

    /// Moves every member of group `from` into group `to` (same stream, range and
    /// class; the caller has moved the state counters) and frees `from`'s record.
    fn absorb(&mut self, from: u32, to: u32) {
        let h = self.groups.handle(from);
        let gone = self.groups.remove(h).expect("a live group");
        self.progress_groups.remove(&h);
        self.hub.metrics.groups.fetch_sub(1, Ordering::Relaxed);
        let shared = Arc::clone(&self.streams.at(gone.stream).1.shared);
        let mut ids = lock(&shared.ids);
        match gone.members() {
            Members::One(id) => self.add_to_list(to, id, &mut ids),
            Members::Many(l) => {
                let list = self.make_many(to, &mut ids);
                let moved = self.lists.remove(self.lists.handle(l)).expect("a live list");
                for (id, w) in moved.records() {
                    let pos = self.lists.at_mut(list).push(id, w);
                    let wr = self.watchers.at_mut(w);
                    wr.group = to;
                    wr.pos = pos;
                }
            }
        }
        drop(ids);
        let shard = self.streams.at(gone.stream).1.shard as usize;
        self.shards[shard].release(gone.range);
    }

    /// Gives the lone member of group `g`, if it is alone, a watcher record and the
    /// group a member list (it is about to have company). Returns the list.
    fn make_many(&mut self, g: u32, ids: &mut IdTable) -> u32 {
        match self.groups.at(g).1.members() {
            Members::Many(l) => l,
            Members::One(id) => {
                let w = self.watchers.insert(Watcher { id, group: g, pos: 0 }).index;
                let l = self.lists.insert(MemberList::new([(id, w)])).index;
                self.groups.at_mut(g).set_list(l);
                ids.insert(id, w);
                l
            }
        }
    }

    /// Adds watcher `id` to group `g` with a record of its own (the group gets a
    /// member list first if it was one watcher); `ids` is the stream's id table.
    fn add_to_list(&mut self, g: u32, id: WatchId, ids: &mut IdTable) {
        let list = self.make_many(g, ids);
        let w = self.watchers.insert(Watcher { id, group: g, pos: 0 }).index;
        self.watchers.at_mut(w).pos = self.lists.at_mut(list).push(id, w);
        ids.insert(id, w);
    }

    fn new_group(&mut self, stream: u32, range: u32, class: Class, id: WatchId) -> u32 {
        // Counted as unsynced until moved (by the caller) to its real state.
        let h = self.groups.insert(Group::new(stream, range, class, State::Unsynced, id));
        assert!(h.index < LONE, "fewer than 2^31 groups");
        self.hub.metrics.groups.fetch_add(1, Ordering::Relaxed);
        self.hub.metrics.unsynced.fetch_add(1, Ordering::Relaxed);
        self.streams.at_mut(stream).unready += 1;
        if class.progress_notify() {
            self.progress_groups.insert(h);
        }
        h.index
    }

    /// The group of an id-table entry.
    fn group_of(&self, entry: u32) -> u32 {
        if entry & LONE != 0 {
            entry & !LONE
        } else {
            self.watchers.at(entry).1.group
        }
    }

    /// Removes the watcher of id-table entry `entry` from its group (freeing the group
    /// with its last member) and drops its record. The caller frees the id.
    fn remove_watcher(&mut self, entry: u32) {
        let g = self.group_of(entry);
        let gr = self.groups.at(g).1;
        let (state, stream, last) = (gr.state, gr.stream, member_count(&self.lists, gr) == 1);
        self.state_counter(state).fetch_sub(1, Ordering::Relaxed);
        self.hub.metrics.watchers.fetch_sub(1, Ordering::Relaxed);
        if state != State::Synced {
            self.streams.at_mut(stream).unready -= 1;
        }
        let mut id = None;
        if entry & LONE == 0 {
            let wr = self.watchers.remove(self.watchers.handle(entry)).expect("a live watcher");
            id = Some(wr.id);
            if !last {
                let Members::Many(l) = self.groups.at(g).1.members() else { unreachable!("a record is in a list") };
                if let Some(moved) = self.lists.at_mut(l).swap_remove(wr.pos) {
                    self.watchers.at_mut(moved).pos = wr.pos;
                }
            }
        }
        if last {
            self.free_group(g);
        } else if !self.owed.is_empty() {
            if let (Some(Owed::Ids(owed)), Some(id)) = (self.owed.get_mut(&self.groups.handle(g)), id) {
                owed.retain(|i| *i != id);
            }
        }
    }

    /// Frees a group whose members are gone (or were moved elsewhere).
    fn free_group(&mut self, g: u32) {
        self.leave_state(g);
        let (handle, gr) = self.groups.at(g);
        let (stream, range) = (gr.stream, gr.range);
        let shard = self.streams.at(stream).1.shard as usize;
        self.owed.remove(&handle);
        self.progress_groups.remove(&handle);
        self.hub.metrics.groups.fetch_sub(1, Ordering::Relaxed);
        if let Some(Members::Many(l)) = self.groups.remove(handle).map(|g| g.members()) {
            self.lists.remove(self.lists.handle(l));
        }
        self.shards[shard].release(range);
        self.update_watching();
    }

    /// `(id, id-table entry)` of every member of group `g`.
    fn entries(&self, g: u32) -> Vec<(WatchId, u32)> {
        match self.groups.at(g).1.members() {
            Members::One(id) => vec![(id, LONE | g)],
            Members::Many(l) => self.lists.at(l).1.records().collect(),
        }
    }

    /// Cancels every watcher of group `g` with `last(id)` as its final response.
    fn cancel_group(&mut self, g: u32, last: impl Fn(WatchId) -> WatchResponse) {
        let members = self.entries(g);
        let stream = Arc::clone(&self.streams.at(self.groups.at(g).1.stream).1.shared);
        for (id, entry) in members {
            self.remove_watcher(entry);
            finish(&stream, id, last(id));
        }
    }

    // ----- control requests ----------------------------------------------------

    fn take_controls(&mut self) -> bool {
        // A bounded number per turn, so that revisions keep flowing under a storm
        // of requests.
        let mut n = 0;
        while n < 4096 {
            let Some(c) = self.hub.controls.pop() else { break };
            n += 1;
            match c {
                Control::OpenStream(s) => self.open_stream(s),
                Control::Register(r) => self.register(*r),
                Control::Cancel { stream, id, .. } => self.cancel(stream, id),
                Control::Progress { stream, id, _owed } => {
                    // Later progress-all requests must make a request of their own
                    // from here on: the answer below may reach the consumer before
                    // `_owed` is dropped, and a request it makes then must not be
                    // merged into one already answered.
                    _owed.taken();
                    // Answer at or after every revision committed before the request
                    // was made: those were committed before it was taken, but this
                    // turn may have notified before they were (a put, then a
                    // progress request, must see a bookmark at or after the put).
                    let target = self.hub.store.current_revision();
                    while self.notified < target && self.notify_committed() {}
                    self.progress(stream, id)
                }
                Control::Retain { stream, keep, reason, .. } => self.retain(stream, keep, &reason),
                Control::CloseStream { stream } => self.close_stream(stream),
                Control::CatchupDone(r) => self.catchup_done(r),
                Control::InjectPanic => panic!("injected notifier panic (WatchHub::inject_notifier_panic)"),
                #[cfg(all(test, not(loom)))]
                Control::Stats(tx) => self.stats_requests.push(tx),
            }
        }
        self.recent_controls |= n > 0;
        n > 0
    }

    fn open_stream(&mut self, s: Arc<StreamShared>) {
        self.hub.metrics.streams.fetch_add(1, Ordering::Relaxed);
        let shard = (s.id % self.shards.len() as u64) as u32;
        let id = s.id;
        let slot = self.streams.insert(StreamEntry { shared: s, shard, unready: 0, victims: Vec::new() });
        self.stream_slots.insert(id, slot.index);
    }

    fn register(&mut self, r: Registration) {
        let Some(&slot) = self.stream_slots.get(&r.stream.id) else { return };
        let shared = Arc::clone(&self.streams.at(slot).1.shared);
        shared.send_control(WatchResponse::created(r.id, r.created_rev));
        let compact = self.hub.store.compact_revision();
        if r.min_rev < compact || r.min_rev == BEFORE_HISTORY {
            // Created, then canceled: its start is gone (etcd: compact_revision set;
            // -1 for a negative start on a store never compacted).
            let compact = if compact == 0 { NEVER_COMPACTED } else { compact };
            finish(&shared, r.id, compacted_response(r.id, self.notified, compact));
            return;
        }
        self.hub.metrics.watchers.fetch_add(1, Ordering::Relaxed);
        let shard = self.streams.at(slot).1.shard as usize;
        let range = self.shards[shard].intern(r.range);
        let ready = self.notified + 1;
        // Join an existing group where one has the same future: the synced group of
        // this range and class, or a parked one with the same start.
        let groups = &self.groups;
        let existing = if r.min_rev == ready {
            self.shards[shard].synced(range).find(|&g| {
                let gr = groups.at(g).1;
                gr.stream == slot && gr.class == r.class
            })
        } else {
            self.waiting_at(&(r.min_rev, slot, range, r.class)).map(|h| h.index)
        };
        match existing {
            Some(g) => {
                self.shards[shard].release(range); // the group holds the reference
                self.add_to_list(g, r.id, &mut lock(&shared.ids));
                let state = self.groups.at(g).1.state;
                self.state_counter(state).fetch_add(1, Ordering::Relaxed);
                if state != State::Synced {
                    self.streams.at_mut(slot).unready += 1;
                }
            }
            None => {
                let g = self.new_group(slot, range, r.class, r.id);
                lock(&shared.ids).insert(r.id, LONE | g);
                if r.min_rev == ready {
                    self.make_synced(g);
                } else if r.min_rev > ready {
                    self.set_state(g, State::Parked, r.min_rev);
                } else {
                    self.set_state(g, State::Unsynced, r.min_rev);
                }
            }
        }
    }

    /// The id-table entry of `id` on stream `slot`, if registered.
    fn entry_of(&self, slot: u32, id: WatchId) -> Option<u32> {
        let shared = &self.streams.at(slot).1.shared;
        lock(&shared.ids).get(id).filter(|&e| e != PENDING)
    }

    fn cancel(&mut self, stream: u64, id: WatchId) {
        let Some(&slot) = self.stream_slots.get(&stream) else { return };
        let shared = Arc::clone(&self.streams.at(slot).1.shared);
        // One hold of the id lock: find the record, answer, free the id.
        let mut ids = lock(&shared.ids);
        let Some(entry) = ids.get(id).filter(|&e| e != PENDING) else { return };
        self.remove_watcher(entry);
        shared.send_canceled(id, self.notified);
        ids.remove(id);
    }

    /// Cancels each registered watcher of `stream` that `keep` refuses, given its
    /// range as the client sent it, with `reason`. One hold of the id lock, as in
    /// `cancel`: a client cannot cancel and reuse an id while it is being judged.
    fn retain(&mut self, stream: u64, mut keep: Keep, reason: &str) {
        let Some(&slot) = self.stream_slots.get(&stream) else { return };
        let entry = self.streams.at(slot).1;
        let (shared, shard) = (Arc::clone(&entry.shared), entry.shard as usize);
        let mut ids = lock(&shared.ids);
        let live: Vec<(WatchId, u32)> = ids.iter().filter(|&(_, e)| e != PENDING).collect();
        for (id, e) in live {
            let range = &self.shards[shard].range(self.groups.at(self.group_of(e)).1.range).range;
            let (key, end) = range.as_sent();
            if keep(id, key, end) {
                continue;
            }
            self.remove_watcher(e);
            shared.send_control(canceled_response(id, self.notified, reason));
            ids.remove(id);
        }
    }

    fn close_stream(&mut self, stream: u64) {
        let Some(slot) = self.stream_slots.remove(&stream) else { return };
        let shared = Arc::clone(&self.streams.at(slot).1.shared);
        let entries = lock(&shared.ids).drain();
        for (_, e) in entries {
            if e != PENDING {
                self.remove_watcher(e);
            }
        }
        self.streams.remove(self.streams.handle(slot));
        self.hub.metrics.streams.fetch_sub(1, Ordering::Relaxed);
        shared.send_closed();
    }

    /// Sends what group `g` owes in progress, at `notified`.
    fn send_owed(&self, g: u32, owed: Owed) {
        let gr = self.groups.at(g).1;
        let shared = &self.streams.at(gr.stream).1.shared;
        let ids = match owed {
            Owed::All => member_ids(&self.lists, gr),
            Owed::Ids(v) if v.is_empty() => return,
            Owed::Ids(v) => v.into(),
        };
        shared.send_progress(self.notified, ids);
    }

    fn owe(&mut self, g: u32, id: Option<WatchId>) {
        let h = self.groups.handle(g);
        match (self.owed.get_mut(&h), id) {
            (Some(Owed::All), _) => {}
            (Some(Owed::Ids(v)), Some(id)) => {
                if !v.contains(&id) {
                    v.push(id);
                }
            }
            (_, None) => {
                self.owed.insert(h, Owed::All);
            }
            (None, Some(id)) => {
                self.owed.insert(h, Owed::Ids(vec![id]));
            }
        }
    }

    fn progress(&mut self, stream: u64, id: Option<WatchId>) {
        let Some(&slot) = self.stream_slots.get(&stream) else { return };
        #[cfg(not(argus_bug = "progress-ahead"))]
        let rev = self.notified;
        // Seeded bug: bookmarks the store's revision, which the notifier may not have
        // delivered yet.
        #[cfg(argus_bug = "progress-ahead")]
        let rev = self.hub.store.current_revision();
        let entry = self.streams.at(slot).1;
        let shared = Arc::clone(&entry.shared);
        match id {
            None => {
                if entry.unready == 0 {
                    shared.send_control(WatchResponse::control(-1, rev));
                    return;
                }
                // Not every watcher is synced: answer each synced group now, the
                // others as soon as they are synced.
                let entries: Vec<u32> = lock(&shared.ids).iter().map(|(_, e)| e).filter(|&e| e != PENDING).collect();
                let groups: HashSet<u32> = entries.into_iter().map(|e| self.group_of(e)).collect();
                for g in groups {
                    let gr = self.groups.at(g).1;
                    if gr.state == State::Synced {
                        shared.send_progress(rev, member_ids(&self.lists, gr));
                    } else {
                        self.owe(g, None);
                    }
                }
            }
            Some(id) => {
                let Some(entry) = self.entry_of(slot, id) else { return };
                let g = self.group_of(entry);
                if self.groups.at(g).1.state == State::Synced {
                    shared.send_progress(rev, Ids::One(id));
                } else {
                    self.owe(g, Some(id));
                }
            }
        }
    }

    fn take_retries(&mut self) -> bool {
        let mut any = false;
        while let Some(stream) = self.hub.retry.pop() {
            any = true;
            let Some(&slot) = self.stream_slots.get(&stream.id) else { continue };
            let victims = std::mem::take(&mut self.streams.at_mut(slot).victims);
            for h in victims {
                if let Some(g) = self.groups.get(h).filter(|g| g.state == State::Victim) {
                    let next = g.next;
                    self.set_state(h.index, State::Unsynced, next);
                }
            }
        }
        any
    }

    // ----- fan-out -------------------------------------------------------------

    /// Synced groups reached by the parked ones whose start is `rev`.
    fn promote_parked(&mut self, rev: u64) {
        while let Some(&(start, h)) = self.parked.first() {
            if start > rev {
                return;
            }
            // `make_synced` takes it out of `parked` (it leaves the parked state).
            debug_assert!(self.groups.get(h).is_some_and(|g| g.state == State::Parked));
            self.make_synced(h.index);
        }
    }

    /// Processes committed revisions after `notified` (at most a bounded number per
    /// call, so control requests stay responsive). Returns whether it did any.
    fn notify_committed(&mut self) -> bool {
        let committed = self.hub.store.current_revision();
        if committed <= self.notified {
            return false;
        }
        let upto = committed.min(self.notified + 1024);
        for s in &mut self.shards {
            s.prepare();
        }
        let reader = self.hub.store.log().reader();
        let mut prev_reader = self.hub.store.log().reader();
        while self.notified < upto {
            self.promote_parked(self.notified + 1);
            // Up to the next parked start (promotion changes who is reached).
            let to = self.parked.first().map_or(upto, |&(n, _)| upto.min(n - 1));
            if self.synced_groups == 0 {
                // Nobody can be reached before then: skip those revisions unread.
                self.notified = self.notified.max(to);
                continue;
            }
            let mut recs: Vec<RecordRef<'_>> = Vec::new();
            for item in reader.records(self.notified + 1, to) {
                let r = match item {
                    Ok((_, r)) => r,
                    Err(e) => {
                        // The revision cannot be fanned out: every synced watcher
                        // would miss it, so each is canceled with the reason rather
                        // than skipped past it or left waiting. Nobody else is owed
                        // these revisions (parked groups start after `to`; unsynced
                        // ones read the log themselves and are canceled there).
                        tracing::error!(error = %e, "notifier cannot read the log; canceling the synced watchers");
                        self.cancel_synced(&format!("cannot read the log: {e}"));
                        recs.clear();
                        break;
                    }
                };
                if recs.last().is_some_and(|p| p.main != r.main) {
                    self.notify_revision(&mut prev_reader, &recs);
                    recs.clear();
                }
                recs.push(r);
            }
            if !recs.is_empty() {
                self.notify_revision(&mut prev_reader, &recs);
            }
            // Revisions without records cannot exist after the first, but keep
            // `notified` at what was read even so.
            self.notified = self.notified.max(to);
        }
        self.hold.set(self.notified + 1);
        self.hub.metrics.notified_revision.store(self.notified, Ordering::Relaxed);
        true
    }

    /// Cancels every synced group with `reason` as `cancel_reason`.
    fn cancel_synced(&mut self, reason: &str) {
        let synced: Vec<u32> = self.groups.indices().filter(|&g| self.groups.at(g).1.state == State::Synced).collect();
        let rev = self.notified;
        for g in synced {
            self.cancel_group(g, |id| canceled_response(id, rev, reason));
        }
    }

    fn notify_revision(&mut self, prev_reader: &mut LogReader, recs: &[RecordRef<'_>]) {
        let rev = recs[0].main;
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        for shard in self.shards.iter().filter(|s| s.is_active()) {
            for (i, r) in recs.iter().enumerate() {
                let kind = event_kind(r);
                shard.for_each_synced(r.key, |g| {
                    let gr = self.groups.at(g).1;
                    if gr.class.passes(kind) {
                        hits.push(Hit { stream: gr.stream, group: g, event: i as u32 });
                    }
                });
            }
        }
        if hits.is_empty() {
            self.hits = hits;
            self.notified = rev;
            return;
        }
        let with_prev = hits.iter().any(|h| self.groups.at(h.group).1.class.prev_kv());
        let batch = Arc::new(batch_from_records(&self.hub.store, prev_reader, recs, with_prev));
        hits.sort_unstable();
        // One run of hits per stream.
        let runs: Vec<&[Hit]> = hits.chunk_by(|a, b| a.stream == b.stream).collect();
        let parallel = runs.len() > 1 && hits.len() >= self.hub.opts.parallel_match_threshold;
        let (groups, lists, streams) = (&self.groups, &self.lists, &self.streams);
        let n_events = recs.len();
        let sent =
            self.hub.pool.par_map(&runs, parallel, |run| send_run(groups, lists, streams, &batch, n_events, run));
        self.notified = rev;
        for s in sent {
            match s {
                Sent::Accepted { progress_groups } => {
                    for g in progress_groups {
                        self.groups.at_mut(g).set_sent_since_tick(true);
                    }
                }
                Sent::Refused { stream, groups } => {
                    for g in groups {
                        self.set_state(g, State::Victim, rev);
                    }
                    self.streams.at(stream).1.shared.mark_victims();
                }
            }
        }
        self.hits = hits;
    }

    // ----- catch-up ------------------------------------------------------------

    /// Sends out catch-up jobs for unsynced groups. Returns whether it did any.
    fn dispatch_catchup(&mut self) -> bool {
        if self.hub.opts.catchup_paused || self.jobs_in_flight >= self.max_jobs || self.unsynced.is_empty() {
            return false;
        }
        let compact = self.hub.store.compact_revision();
        let mut ready: Vec<(u64, u32)> = Vec::new(); // (next, group)
        for h in std::mem::take(&mut self.unsynced) {
            let Some(g) = self.groups.get(h).filter(|g| g.state == State::Unsynced) else { continue };
            let next = g.next;
            if next < compact {
                let notified = self.notified;
                self.cancel_group(h.index, |id| compacted_response(id, notified, compact));
            } else if next > self.notified {
                self.make_synced(h.index);
            } else {
                ready.push((next, h.index));
            }
        }
        if ready.is_empty() {
            return false;
        }
        // In cursor order. No two of them agree on cursor, stream, range and class:
        // the waiting index made such groups one when the second arrived.
        ready.sort_unstable();
        let free = self.max_jobs - self.jobs_in_flight;
        let per_job = ready.len().div_ceil(free).clamp(1, self.hub.opts.catchup_batch.max(1));
        let mut chunks = ready.chunks(per_job);
        for chunk in chunks.by_ref().take(free) {
            let min_next = chunk[0].0;
            let target = self.notified.min(min_next.saturating_add(self.hub.opts.catchup_round_revisions - 1));
            let mut groups = Vec::with_capacity(chunk.len());
            for &(next, g) in chunk {
                if self.set_state(g, State::CatchingUp, next) != g {
                    continue; // joined a group already in a job at the same cursor
                }
                let (h, gr) = self.groups.at(g);
                let shard = self.streams.at(gr.stream).1.shard as usize;
                let range = self.shards[shard].range(gr.range).range.clone();
                groups.push(JobGroup { group: h, range, class: gr.class, next });
            }
            if groups.is_empty() {
                continue;
            }
            let job = CatchupJob {
                groups,
                target,
                max_revs: self.hub.opts.response_max_revisions,
                max_bytes: self.hub.opts.response_max_bytes,
            };
            self.jobs_in_flight += 1;
            let hub = Arc::clone(&self.hub);
            self.hub.catchup_pool.spawn(move || {
                let result = catchup::run(&hub.store, job);
                hub.control(Control::CatchupDone(result));
            });
        }
        // Groups beyond the free jobs wait for the next round.
        for chunk in chunks {
            for &(_, g) in chunk {
                self.unsynced.push(self.groups.handle(g));
            }
        }
        true
    }

    /// Moves every member of unsynced group `from` into group `to` (same stream,
    /// range, class, state and cursor) and frees `from`.
    fn merge_into(&mut self, from: u32, to: u32) {
        self.leave_state(from);
        let h = self.groups.handle(from);
        if let Some(owed) = self.owed.remove(&h) {
            // Bookmarks owed to `from`'s watchers become owed to them by id in `to`.
            let ids: Vec<WatchId> = match owed {
                Owed::All => member_id_list(&self.lists, self.groups.at(from).1).to_vec(),
                Owed::Ids(v) => v,
            };
            for id in ids {
                self.owe(to, Some(id));
            }
        }
        self.absorb(from, to);
    }

    fn catchup_done(&mut self, result: CatchupResult) {
        self.jobs_in_flight -= 1;
        for (h, outcome) in result.outcomes {
            // Only the group the job was made for: a group canceled meanwhile may have
            // left its slot to a new group, which the generation tells apart.
            #[cfg(not(argus_bug = "stale-handle"))]
            let live = self.groups.get(h).is_some_and(|g| g.state == State::CatchingUp);
            // Seeded bug: trusts the slot index alone, so a job's result for a group
            // canceled meanwhile reaches whichever group took its slot.
            #[cfg(argus_bug = "stale-handle")]
            let live = self.groups.any_at(h.index).is_some_and(|g| g.state == State::CatchingUp);
            #[cfg(argus_bug = "stale-handle")]
            let h = if live { self.groups.handle(h.index) } else { h };
            if !live {
                continue;
            }
            let g = h.index;
            match outcome {
                Outcome::Compacted => {
                    let (compact, notified) = (self.hub.store.compact_revision(), self.notified);
                    self.cancel_group(g, |id| compacted_response(id, notified, compact));
                }
                Outcome::Caught { revisions, cuts, next } => self.deliver_caught(g, revisions, cuts, next),
                Outcome::Failed(reason) => {
                    // Never past what was not read: canceled, with the reason.
                    let notified = self.notified;
                    self.cancel_group(g, |id| canceled_response(id, notified, &reason));
                }
            }
        }
    }

    fn deliver_caught(&mut self, g: u32, revisions: Vec<RevisionEvents>, cuts: Vec<u32>, next: u64) {
        let gr = self.groups.at(g).1;
        let shared = Arc::clone(&self.streams.at(gr.stream).1.shared);
        let (prev_kv, ids) = (gr.class.prev_kv(), member_ids(&self.lists, gr));
        let all: Arc<[RevisionEvents]> = revisions.into();
        let mut start = 0usize;
        let mut stalled_at = None;
        for &end in &cuts {
            let end = end as usize;
            let part = Part::run(ids.clone(), prev_kv, Arc::clone(&all), start, end);
            if shared.try_send(Delivery::new(vec![part])).is_err() {
                stalled_at = Some(all[start].batch.revision);
                break;
            }
            self.groups.at_mut(g).set_sent_since_tick(true);
            start = end;
        }
        match stalled_at {
            Some(first) => {
                self.set_state(g, State::Victim, first);
                shared.mark_victims();
            }
            None => {
                #[cfg(not(argus_bug = "early-handoff"))]
                let caught_up = next == self.notified + 1;
                // Seeded bug: joins the synced index one revision early, so the
                // revision in between is never delivered to it.
                #[cfg(argus_bug = "early-handoff")]
                let caught_up = next + 1 >= self.notified + 1;
                if caught_up {
                    // At `next`: `make_synced` sets the cursor to `notified + 1`.
                    self.make_synced(g);
                } else {
                    self.set_state(g, State::Unsynced, next);
                }
            }
        }
    }

    // ----- periodic progress ---------------------------------------------------

    fn tick_progress(&mut self) {
        let now = Instant::now();
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.hub.opts.progress_interval;
        let rev = self.notified;
        for &h in &self.progress_groups {
            let Some(g) = self.groups.get_mut(h) else { continue };
            let sent = g.sent_since_tick();
            g.set_sent_since_tick(false);
            if g.state != State::Synced || sent {
                continue; // not eligible, or it had events this interval
            }
            let g = self.groups.get(h).expect("live");
            self.streams.at(g.stream).1.shared.send_progress(rev, member_ids(&self.lists, g));
        }
    }
}

/// Builds and queues the delivery of one revision to one stream (`run`: its hits,
/// sorted by group then event). Runs on the notifier or, for revisions reaching
/// many groups, on the engine's threads in parallel (read-only access).
fn send_run(
    groups: &Slab<Group>,
    lists: &Slab<MemberList>,
    streams: &Slab<StreamEntry>,
    batch: &Arc<RevisionBatch>,
    n_events: usize,
    run: &[Hit],
) -> Sent {
    let stream = run[0].stream;
    let mut parts = Vec::new();
    let mut in_item = Vec::new();
    let mut progress_groups = Vec::new();
    for these in run.chunk_by(|a, b| a.group == b.group) {
        let group = these[0].group;
        let g = groups.at(group).1;
        let selection = if these.len() == n_events { None } else { Some(these.iter().map(|h| h.event).collect()) };
        let ev = RevisionEvents { batch: Arc::clone(batch), selection };
        parts.push(Part::one(member_ids(lists, g), g.class.prev_kv(), ev));
        in_item.push(group);
        if g.class.progress_notify() {
            progress_groups.push(group);
        }
    }
    let shared = &streams.at(stream).1.shared;
    match shared.try_send(Delivery::new(parts)) {
        Ok(()) => Sent::Accepted { progress_groups },
        Err(_) => Sent::Refused { stream, groups: in_item },
    }
}
