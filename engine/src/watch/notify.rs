//! The notifier: the one thread that owns watcher state and follows the store's
//! `committed_rev`, off the write path.
//!
//! Loop: take control requests (register, cancel, progress, stream open/close,
//! finished catch-up jobs) and victim retries; then, for each revision after
//! `notified` up to `committed_rev`, in order: build one immutable
//! [`RevisionBatch`] (prev_kv computed once per event, only if a synced watcher
//! asked), match it against every index shard (in parallel on rayon when the index
//! is large), and queue one fan-out delivery per (stream, selection); then dispatch
//! catch-up jobs; then periodic progress; then sleep on the doorbell, which commits,
//! control requests, retries and finished jobs ring.
//!
//! State machine of a watcher, changed only here:
//! `Synced` (in the index, `core.synced`), `Unsynced` (cursor `next`, waiting for a
//! job), `CatchingUp` (a job holds it), `Victim` (cursor `next`, waiting for its
//! stream to drain), and gone (canceled). Invariants:
//! - a `Synced` watcher has received every matching revision up to `notified`;
//! - every other watcher has received every matching revision below `next`, and
//!   nothing at or after it;
//! - a watcher becomes `Synced` only when `next == notified + 1`, so the hand-off
//!   skips and repeats nothing; a delivery that finds the stream full leaves the
//!   watcher a `Victim` with `next` = the first revision it did not get.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::catchup::{self, CatchupJob, CatchupResult, Outcome};
use super::hub::{Control, HubShared};
use super::index::Change;
use super::stream::{StreamItem, StreamShared};
use super::types::{Event, EventKind, RevisionBatch, WatchId, WatchResponse};
use super::watcher::WatcherCore;
use crate::log::record::RecordKind;
use crate::log::{LogReader, OwnedRecord};
use crate::store::{KeyValue, Store};
use crate::sync::atomic::Ordering;
use crate::sync::{lock, Arc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Synced,
    Unsynced,
    CatchingUp,
    Victim,
}

struct WatcherState {
    core: Arc<WatcherCore>,
    status: Status,
    /// Next revision to deliver (meaningful when not `Synced`).
    next: u64,
}

struct StreamEntry {
    shared: Arc<StreamShared>,
    watchers: HashMap<WatchId, u64>,
}

pub(crate) struct Notifier {
    hub: Arc<HubShared>,
    notified: u64,
    watchers: HashMap<u64, WatcherState>,
    /// Watchers in `Unsynced` (waiting for a catch-up job): the notifier's turns
    /// visit only these, never every watcher.
    unsynced: HashSet<u64>,
    /// Watchers that asked for periodic progress.
    progress_notify: HashSet<u64>,
    /// Watchers owed a deferred progress response.
    owed_progress: HashSet<u64>,
    streams: HashMap<u64, StreamEntry>,
    prev_kv_synced: usize,
    jobs_in_flight: usize,
    max_jobs: usize,
    next_tick: Instant,
    /// Keeps a compaction from deleting revisions not yet fanned out.
    hold: crate::log::RetentionHold,
}

/// Builds the shared batch of one revision from its records (all of one main
/// revision, in sub order).
pub(crate) fn batch_from_records(
    store: &Store,
    reader: &mut LogReader,
    records: impl Iterator<Item = OwnedRecord>,
    with_prev: bool,
) -> RevisionBatch {
    let mut revision = 0;
    let events = records
        .map(|r| {
            revision = r.main;
            let (kind, kv) = match r.kind {
                RecordKind::Delete => {
                    (EventKind::Delete, KeyValue { key: r.key, mod_revision: r.main, ..KeyValue::default() })
                }
                _ => (
                    EventKind::Put,
                    KeyValue {
                        key: r.key,
                        value: r.value,
                        create_revision: r.create_revision,
                        mod_revision: r.main,
                        version: r.version,
                    },
                ),
            };
            let prev_kv = if with_prev { store.kv_before(reader, &kv.key, r.main) } else { None };
            Event { kind, kv, prev_kv, sub: r.sub }
        })
        .collect();
    RevisionBatch::new(revision, events, with_prev)
}

/// One delivery to queue: a stream, the shared events, the watchers they reach.
struct Delivery {
    stream: Arc<StreamShared>,
    events: super::types::RevisionEvents,
    watchers: Vec<Arc<WatcherCore>>,
}

impl Notifier {
    pub(crate) fn new(hub: Arc<HubShared>) -> Self {
        let notified = hub.store.current_revision();
        hub.metrics.notified_revision.store(notified, Ordering::Relaxed);
        #[cfg(not(loom))]
        let max_jobs = rayon::current_num_threads().max(1);
        #[cfg(loom)]
        let max_jobs = 1;
        let next_tick = Instant::now() + hub.opts.progress_interval;
        let hold = hub.store.log().hold_from(notified + 1);
        Notifier {
            hold,
            hub,
            notified,
            watchers: HashMap::new(),
            unsynced: HashSet::new(),
            progress_notify: HashSet::new(),
            owed_progress: HashSet::new(),
            streams: HashMap::new(),
            prev_kv_synced: 0,
            jobs_in_flight: 0,
            max_jobs,
            next_tick,
        }
    }

    pub(crate) fn run(mut self) {
        while !self.hub.stop.load(Ordering::Acquire) {
            if !self.step() {
                let wait = self.next_tick.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
                self.hub.doorbell.wait(wait);
            }
        }
        self.shutdown();
    }

    /// One turn of the loop, without waiting. Returns whether it did anything.
    pub(crate) fn step(&mut self) -> bool {
        // Revisions first, so that a progress request answers as late as possible.
        let mut busy = self.notify_committed();
        busy |= self.take_controls();
        busy |= self.take_retries();
        busy |= self.dispatch_catchup();
        self.tick_progress();
        busy
    }

    fn shutdown(&mut self) {
        // Watchers accepted by `watch()` but not yet registered still get their
        // `created` response before the stream ends.
        for c in std::mem::take(&mut *lock(&self.hub.controls)) {
            if let Control::Register(core, created_rev) = c {
                core.stream.send_control(WatchResponse::created(core.id, created_rev));
            }
        }
        for (_, s) in self.streams.drain() {
            s.shared.send_closed();
        }
    }

    fn take_controls(&mut self) -> bool {
        let controls = std::mem::take(&mut *lock(&self.hub.controls));
        let any = !controls.is_empty();
        for c in controls {
            match c {
                Control::OpenStream(s) => {
                    self.hub.metrics.streams.fetch_add(1, Ordering::Relaxed);
                    self.streams.insert(s.id, StreamEntry { shared: s, watchers: HashMap::new() });
                }
                Control::Register(core, created_rev) => self.register(core, created_rev),
                Control::Cancel { stream, id } => self.cancel(stream, id),
                Control::Progress { stream, id } => self.progress(stream, id),
                Control::CloseStream { stream } => self.close_stream(stream),
                Control::CatchupDone(r) => self.catchup_done(r),
            }
        }
        any
    }

    fn set_status(&mut self, uid: u64, status: Status) {
        let m = &self.hub.metrics;
        let Some(w) = self.watchers.get_mut(&uid) else { return };
        let old = w.status;
        if old == status {
            return;
        }
        let counter = |s: Status| match s {
            Status::Synced => &m.synced,
            Status::Unsynced | Status::CatchingUp => &m.unsynced,
            Status::Victim => &m.victims,
        };
        counter(old).fetch_sub(1, Ordering::Relaxed);
        counter(status).fetch_add(1, Ordering::Relaxed);
        w.status = status;
        if old == Status::Unsynced {
            self.unsynced.remove(&uid);
        }
        if status == Status::Unsynced {
            self.unsynced.insert(uid);
        }
        if old == Status::Synced {
            w.core.set_synced(false);
            if w.core.prev_kv {
                self.prev_kv_synced -= 1;
            }
            self.hub.index.queue(Change::Remove(Arc::clone(&w.core)));
        }
        if status == Status::Synced {
            if w.core.prev_kv {
                self.prev_kv_synced += 1;
            }
            self.hub.index.queue(Change::Add(Arc::clone(&w.core)));
            w.core.set_synced(true);
        }
    }

    fn register(&mut self, core: Arc<WatcherCore>, created_rev: u64) {
        let Some(entry) = self.streams.get_mut(&core.stream.id) else { return };
        entry.shared.send_control(WatchResponse::created(core.id, created_rev));
        let compact = self.hub.store.compact_revision();
        if core.min_rev < compact {
            // Created, then canceled: its start is gone (etcd: compact_revision set).
            Self::finish(&core, compacted_response(core.id, self.notified, compact));
            return;
        }
        entry.watchers.insert(core.id, core.uid);
        let m = &self.hub.metrics;
        m.watchers.fetch_add(1, Ordering::Relaxed);
        let uid = core.uid;
        let next = core.min_rev;
        // Counted as unsynced first; set_status moves the counter.
        m.unsynced.fetch_add(1, Ordering::Relaxed);
        if core.progress_notify {
            self.progress_notify.insert(uid);
        }
        self.watchers.insert(uid, WatcherState { core, status: Status::Unsynced, next });
        self.unsynced.insert(uid);
        if next > self.notified {
            // From now or the future: synced at once; matchers skip revisions below
            // its start.
            self.set_status(uid, Status::Synced);
        }
    }

    fn remove_watcher(&mut self, uid: u64) -> Option<WatcherState> {
        let status = self.watchers.get(&uid)?.status;
        if status == Status::Synced {
            self.set_status(uid, Status::Unsynced);
        }
        let w = self.watchers.remove(&uid)?;
        self.unsynced.remove(&uid);
        self.progress_notify.remove(&uid);
        self.owed_progress.remove(&uid);
        let m = &self.hub.metrics;
        m.unsynced.fetch_sub(u64::from(matches!(w.status, Status::Unsynced | Status::CatchingUp)), Ordering::Relaxed);
        m.victims.fetch_sub(u64::from(w.status == Status::Victim), Ordering::Relaxed);
        m.watchers.fetch_sub(1, Ordering::Relaxed);
        Some(w)
    }

    /// Queues a watcher's last response and frees its id, atomically with respect to
    /// `watch()` (which takes the same lock to claim an id and queue `created`): a
    /// client that has seen `canceled` can reuse the id at once, and a new watcher
    /// with that id is `created` only after the old one's `canceled`.
    fn finish(core: &WatcherCore, last: WatchResponse) {
        let mut ids = lock(&core.stream.ids);
        core.stream.send_control(last);
        ids.remove(&core.id);
    }

    fn cancel(&mut self, stream: u64, id: WatchId) {
        let Some(entry) = self.streams.get_mut(&stream) else { return };
        let Some(uid) = entry.watchers.remove(&id) else { return };
        if let Some(w) = self.remove_watcher(uid) {
            let mut r = WatchResponse::control(id, self.notified);
            r.canceled = true;
            Self::finish(&w.core, r);
        }
    }

    fn close_stream(&mut self, stream: u64) {
        let Some(entry) = self.streams.remove(&stream) else { return };
        for (_, uid) in entry.watchers {
            if let Some(w) = self.remove_watcher(uid) {
                lock(&w.core.stream.ids).remove(&w.core.id);
            }
        }
        self.hub.metrics.streams.fetch_sub(1, Ordering::Relaxed);
        entry.shared.send_closed();
    }

    /// Whether a progress response at `notified` may be sent for this watcher: it is
    /// synced and its start is not in the future.
    fn eligible(&self, w: &WatcherState) -> bool {
        w.status == Status::Synced && w.core.min_rev <= self.notified + 1
    }

    fn progress(&mut self, stream: u64, id: Option<WatchId>) {
        let Some(entry) = self.streams.get(&stream) else { return };
        let shared = Arc::clone(&entry.shared);
        #[cfg(not(feature = "bug-progress-ahead"))]
        let rev = self.notified;
        // Seeded bug: bookmarks the store's revision, which the notifier may not have
        // delivered yet.
        #[cfg(feature = "bug-progress-ahead")]
        let rev = self.hub.store.current_revision();
        match id {
            None => {
                let uids: Vec<u64> = entry.watchers.values().copied().collect();
                if uids.iter().all(|u| self.watchers.get(u).is_some_and(|w| self.eligible(w))) {
                    shared.send_control(WatchResponse::control(-1, rev));
                    return;
                }
                for uid in uids {
                    self.progress_for(uid, rev);
                }
            }
            Some(id) => {
                if let Some(&uid) = entry.watchers.get(&id) {
                    self.progress_for(uid, rev);
                }
            }
        }
    }

    /// Answers a progress request for one watcher at `rev`: at once if it is
    /// eligible, else (at the then-notified revision) as soon as it becomes so.
    fn progress_for(&mut self, uid: u64, rev: u64) {
        let Some(w) = self.watchers.get(&uid) else { return };
        if self.eligible(w) {
            w.core.stream.send_control(WatchResponse::control(w.core.id, rev));
        } else {
            self.owed_progress.insert(uid);
        }
    }

    /// Sends a deferred progress response if the watcher owes one and is eligible.
    fn flush_pending_progress(&mut self, uid: u64) {
        let Some(w) = self.watchers.get(&uid) else { return };
        if self.owed_progress.contains(&uid) && self.eligible(w) {
            w.core.stream.send_control(WatchResponse::control(w.core.id, self.notified));
            self.owed_progress.remove(&uid);
        }
    }

    fn take_retries(&mut self) -> bool {
        let mut any = false;
        while let Some(stream) = self.hub.retry.pop() {
            any = true;
            let Some(entry) = self.streams.get(&stream.id) else { continue };
            let uids: Vec<u64> = entry.watchers.values().copied().collect();
            for uid in uids {
                if self.watchers.get(&uid).is_some_and(|w| w.status == Status::Victim) {
                    self.set_status(uid, Status::Unsynced);
                }
            }
        }
        any
    }

    /// Processes committed revisions after `notified` (at most a bounded number per
    /// call, so control requests stay responsive). Returns whether it did any.
    fn notify_committed(&mut self) -> bool {
        let committed = self.hub.store.current_revision();
        if committed <= self.notified {
            return false;
        }
        let upto = committed.min(self.notified + 256);
        let reader = self.hub.store.log().reader();
        let mut prev_reader = self.hub.store.log().reader();
        let mut pending: Vec<OwnedRecord> = Vec::new();
        let from = self.notified + 1;
        let mut records = Vec::new();
        for item in reader.records(from, upto) {
            match item {
                Ok((_, r)) => records.push(OwnedRecord::from(r)),
                Err(e) => {
                    tracing::error!(error = %e, "notifier cannot read the log");
                    return false;
                }
            }
        }
        drop(reader);
        for r in records {
            if pending.last().is_some_and(|p| p.main != r.main) {
                let batch = std::mem::take(&mut pending);
                self.notify_revision(&mut prev_reader, batch);
            }
            pending.push(r);
        }
        if !pending.is_empty() {
            self.notify_revision(&mut prev_reader, pending);
        }
        // Revisions without records cannot exist after the first, but keep
        // `notified` at what was committed even so.
        self.notified = self.notified.max(upto);
        self.hold.set(self.notified + 1);
        self.hub.metrics.notified_revision.store(self.notified, Ordering::Relaxed);
        true
    }

    fn notify_revision(&mut self, prev_reader: &mut LogReader, records: Vec<OwnedRecord>) {
        self.hub.index.apply();
        let batch =
            Arc::new(batch_from_records(&self.hub.store, prev_reader, records.into_iter(), self.prev_kv_synced > 0));
        let rev = batch.revision;
        let shards: Vec<usize> = (0..self.hub.index.shard_count()).collect();
        // Parallel matching pays only when the revision reaches many watchers, not
        // merely when many exist (rayon's wake-ups cost more than matching a hundred).
        let candidates: usize = batch.events.iter().map(|e| self.hub.index.candidates(&e.kv.key)).sum();
        let parallel = candidates >= self.hub.opts.parallel_match_threshold;
        let hub = &self.hub;
        let victims_per_shard = crate::sync::par_map(&shards, parallel, |&shard| {
            let deliveries = match_shard(hub, shard, &batch);
            let mut victims = Vec::new();
            for d in deliveries {
                let n = d.events.len();
                let size = d.events.size() + 16 * d.watchers.len();
                let item = StreamItem::Fanout {
                    events: d.events,
                    watchers: d.watchers.iter().map(|w| (w.id, w.prev_kv)).collect(),
                };
                match d.stream.try_send(item, size, n * d.watchers.len()) {
                    Ok(()) => {
                        for w in d.watchers.iter().filter(|w| w.progress_notify) {
                            w.sent_since_tick.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(_) => victims.push((d.stream, d.watchers)),
                }
            }
            victims
        });
        self.notified = rev;
        for (stream, watchers) in victims_per_shard.into_iter().flatten() {
            for w in watchers {
                if self.watchers.get(&w.uid).is_some_and(|s| s.status == Status::Synced) {
                    self.set_status(w.uid, Status::Victim);
                    if let Some(s) = self.watchers.get_mut(&w.uid) {
                        s.next = rev;
                    }
                }
            }
            stream.mark_victims();
        }
    }

    /// Sends out catch-up jobs for unsynced watchers. Returns whether it did any.
    fn dispatch_catchup(&mut self) -> bool {
        if self.jobs_in_flight >= self.max_jobs {
            return false;
        }
        let compact = self.hub.store.compact_revision();
        let mut ready: Vec<(u64, u64)> = Vec::new(); // (next, uid)
        let mut doomed: Vec<u64> = Vec::new();
        let mut hand_off: Vec<u64> = Vec::new();
        for uid in &self.unsynced {
            let Some(w) = self.watchers.get(uid) else { continue };
            if w.next < compact {
                doomed.push(*uid);
            } else if w.next > self.notified {
                hand_off.push(*uid);
            } else {
                ready.push((w.next, *uid));
            }
        }
        for uid in doomed {
            self.cancel_compacted(uid, compact);
        }
        for uid in hand_off {
            self.set_status(uid, Status::Synced);
            self.flush_pending_progress(uid);
        }
        if ready.is_empty() {
            return false;
        }
        ready.sort_unstable();
        let free = self.max_jobs - self.jobs_in_flight;
        let per_batch = ready.len().div_ceil(free).clamp(1, self.hub.opts.catchup_batch.max(1));
        for chunk in ready.chunks(per_batch).take(free) {
            let min_next = chunk[0].0;
            let target = self.notified.min(min_next.saturating_add(self.hub.opts.catchup_round_revisions - 1));
            let mut watchers = Vec::with_capacity(chunk.len());
            for &(next, uid) in chunk {
                if let Some(w) = self.watchers.get(&uid) {
                    watchers.push((Arc::clone(&w.core), next));
                }
                self.set_status(uid, Status::CatchingUp);
            }
            let job = CatchupJob {
                watchers,
                target,
                max_revs: self.hub.opts.response_max_revisions,
                max_bytes: self.hub.opts.response_max_bytes,
            };
            self.jobs_in_flight += 1;
            let hub = Arc::clone(&self.hub);
            crate::sync::spawn_job(move || {
                let result = catchup::run(&hub.store, job);
                hub.control(Control::CatchupDone(result));
            });
        }
        true
    }

    fn cancel_compacted(&mut self, uid: u64, compact: u64) {
        let Some(w) = self.watchers.get(&uid) else { return };
        let (sid, id) = (w.core.stream.id, w.core.id);
        if let Some(e) = self.streams.get_mut(&sid) {
            e.watchers.remove(&id);
        }
        if let Some(w) = self.remove_watcher(uid) {
            Self::finish(&w.core, compacted_response(id, self.notified, compact));
        }
    }

    fn catchup_done(&mut self, result: CatchupResult) {
        self.jobs_in_flight -= 1;
        for (core, outcome) in result.outcomes {
            let uid = core.uid;
            if !self.watchers.get(&uid).is_some_and(|w| w.status == Status::CatchingUp) {
                continue; // canceled meanwhile
            }
            match outcome {
                Outcome::Compacted => {
                    let compact = self.hub.store.compact_revision();
                    self.cancel_compacted(uid, compact);
                }
                Outcome::Caught { responses, next } => {
                    let mut stalled_at = None;
                    for r in responses {
                        let first = r.events.first().map_or(next, |e| e.batch.revision);
                        let n = r.event_count();
                        let size = r.size();
                        if core.stream.try_send(StreamItem::Response(r), size, n).is_err() {
                            stalled_at = Some(first);
                            break;
                        }
                        core.sent_since_tick.store(true, Ordering::Relaxed);
                    }
                    match stalled_at {
                        Some(first) => {
                            self.set_status(uid, Status::Victim);
                            if let Some(w) = self.watchers.get_mut(&uid) {
                                w.next = first;
                            }
                            core.stream.mark_victims();
                        }
                        None => {
                            if let Some(w) = self.watchers.get_mut(&uid) {
                                w.next = next;
                            }
                            #[cfg(not(feature = "bug-early-handoff"))]
                            let caught_up = next == self.notified + 1;
                            // Seeded bug: joins the synced index one revision early,
                            // so the revision in between is never delivered to it.
                            #[cfg(feature = "bug-early-handoff")]
                            let caught_up = next + 1 >= self.notified + 1;
                            if caught_up {
                                self.set_status(uid, Status::Synced);
                                self.flush_pending_progress(uid);
                            } else {
                                self.set_status(uid, Status::Unsynced);
                            }
                        }
                    }
                }
            }
        }
    }

    fn tick_progress(&mut self) {
        let now = Instant::now();
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.hub.opts.progress_interval;
        let rev = self.notified;
        for uid in &self.progress_notify {
            let Some(w) = self.watchers.get(uid) else { continue };
            if !self.eligible(w) {
                continue;
            }
            if w.core.sent_since_tick.swap(false, Ordering::Relaxed) {
                continue; // it had events this interval
            }
            let r = WatchResponse::control(w.core.id, rev);
            let _ = w.core.stream.try_send(StreamItem::Response(r), 64, 0);
        }
        // Watchers whose future start is now reached may owe a deferred bookmark.
        let owed: Vec<u64> = self.owed_progress.iter().copied().collect();
        for uid in owed {
            self.flush_pending_progress(uid);
        }
    }
}

fn compacted_response(id: WatchId, rev: u64, compact: u64) -> WatchResponse {
    let mut r = WatchResponse::control(id, rev);
    r.canceled = true;
    r.compact_revision = compact;
    r.cancel_reason = "required revision has been compacted".into();
    r
}

/// Whether an index hit may receive an event of `kind` at `rev`: the index only
/// says who *may*; the watcher's own state decides.
pub(crate) fn deliverable(w: &WatcherCore, rev: u64, kind: EventKind) -> bool {
    #[cfg(feature = "bug-ignore-synced-flag")]
    let synced = true; // seeded bug: trusts the (possibly stale) index snapshot
    #[cfg(not(feature = "bug-ignore-synced-flag"))]
    let synced = w.is_synced();
    synced && rev >= w.min_rev && w.filters.pass(kind)
}

/// Matches one revision against one shard, grouping watchers by stream and by the
/// events they select.
fn match_shard(hub: &HubShared, shard: usize, batch: &Arc<RevisionBatch>) -> Vec<Delivery> {
    let rev = batch.revision;
    if let [e] = batch.events.as_slice() {
        // One event (the common revision): every hit selects all of it, so hits go
        // straight to their stream's delivery; watchers of one stream tend to sit
        // together in a set, so the last stream is checked before the map.
        let mut out: Vec<Delivery> = Vec::new();
        let mut by_stream: HashMap<u64, usize> = HashMap::new();
        let mut last: Option<(u64, usize)> = None;
        hub.index.for_each_match(shard, &e.kv.key, |w| {
            if !deliverable(w, rev, e.kind) {
                return;
            }
            let sid = w.stream.id;
            let at = match last {
                Some((s, at)) if s == sid => at,
                _ => *by_stream.entry(sid).or_insert_with(|| {
                    out.push(Delivery {
                        stream: Arc::clone(&w.stream),
                        events: super::types::RevisionEvents { batch: Arc::clone(batch), selection: None },
                        watchers: Vec::new(),
                    });
                    out.len() - 1
                }),
            };
            last = Some((sid, at));
            out[at].watchers.push(Arc::clone(w));
        });
        return out;
    }
    let mut hits: HashMap<u64, (Arc<WatcherCore>, Vec<u32>)> = HashMap::new();
    for (i, e) in batch.events.iter().enumerate() {
        hub.index.for_each_match(shard, &e.kv.key, |w| {
            if !deliverable(w, rev, e.kind) {
                return;
            }
            hits.entry(w.uid).or_insert_with(|| (Arc::clone(w), Vec::new())).1.push(i as u32);
        });
    }
    let n = batch.events.len();
    let mut groups: HashMap<(u64, Option<Vec<u32>>), Delivery> = HashMap::new();
    for (_, (w, sel)) in hits {
        let sel = if sel.len() == n { None } else { Some(sel) };
        let key = (w.stream.id, sel.clone());
        groups
            .entry(key)
            .or_insert_with(|| Delivery {
                stream: Arc::clone(&w.stream),
                events: super::types::RevisionEvents { batch: Arc::clone(batch), selection: sel.map(Into::into) },
                watchers: Vec::new(),
            })
            .watchers
            .push(w);
    }
    groups.into_values().collect()
}
