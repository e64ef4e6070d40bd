//! Watch streams: many watchers multiplexed on one queue, like an etcd gRPC stream.
//!
//! The queue is lock-free (crossbeam's `SegQueue`, which allocates its blocks on
//! first use and frees them as it drains) with an atomic waker: the notifier pushes
//! and wakes, the consumer pops, and neither ever waits for the other or takes a
//! lock that the other holds. It carries, in one FIFO order, control responses
//! (created, canceled, progress) and event deliveries, which count against the
//! stream's bound in messages and in bytes (atomic counters). A delivery that finds
//! the bound reached is refused with [`Full`], and the notifier turns the groups it
//! was for into victims.
//!
//! Control responses are owed, not refused: the stream counts what it owes its
//! consumer (requests on their way to the notifier, and control responses queued and
//! not yet received), so that a consumer that takes requests from a client can stop
//! taking them while it owes too much (the server does: see
//! [`WatchReceiver::owed_responses`]). A progress request for every watcher made
//! while another one waits for the notifier adds nothing: the notifier answers that
//! one after this call, which covers both. Past an optional bound
//! ([`WatchController::set_max_owed_responses`]: responses the engine makes without
//! any request, periodic progress notifications for example, still pile up for a
//! consumer that never receives) the stream overflows: it is closed, and
//! [`WatchReceiver::overflowed`] says why it ended.
//!
//! Wake-up protocol (modelled with loom): the producer pushes, then wakes the
//! registered waker; the consumer pops, and only when the queue is empty registers
//! its waker and pops once more before it sleeps. Whatever the interleaving, either
//! the second pop finds the item or the producer's wake finds the waker.
//!
//! Victim retry protocol (modelled with loom): after making victims, the notifier
//! sets `has_victims` and then re-checks for room; the consumer, after every
//! receive, checks `has_victims` and room. Whichever of them sees both clears the
//! flag with a swap and pushes the stream onto the hub's retry queue, so a drained
//! stream is retried exactly once per victim episode and never forgotten.
//!
//! One delivery carries one revision's shared events (or one catch-up run's) and the
//! ids of every watcher of this stream they reach, group by group; nothing in the
//! engine is per watcher.

use super::delivery::{Delivery, Expansion, Ids, Item};
use super::group::Class;
use super::hub::{Control, HubShared};
use super::index::KeyRange;
use super::types::{WatchId, WatchRequest, WatchResponse, BEFORE_HISTORY};
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{lock, Arc, AtomicWaker, Mutex, Queue};

/// A delivery refused because the stream is at its bound; hands the delivery back.
#[derive(Debug)]
pub(crate) struct Full<T>(pub(crate) T);

/// What the queue holds. Kept small (responses boxed): the queue's blocks hold 31
/// entries each.
pub(crate) enum Queued {
    Response(Box<WatchResponse>),
    /// A plain `canceled` response (the common one: no reason, no compaction).
    Canceled {
        id: WatchId,
        revision: u64,
    },
    Events {
        delivery: Delivery,
        bytes: usize,
        events: u64,
    },
    Progress {
        revision: u64,
        ids: Ids,
    },
    /// The stream is closed: the receiver answers `None` from here on.
    Closed,
}

/// What the stream's id table says of an id: claimed by `watch()` and not yet
/// registered by the notifier.
pub(crate) const PENDING: u32 = u32::MAX - 1;
/// Tag of an entry naming the group record of a watcher alone in its group (an
/// entry without it names a watcher record).
pub(crate) const LONE: u32 = 1 << 31;
/// A free slot of the dense window.
const EMPTY: u32 = u32::MAX;

/// The stream's watch ids and, once registered, each one's record in the notifier
/// (`LONE | group` or a watcher record). Claimed by `watch()`, filled in and freed
/// by the notifier, always under the stream's `ids` lock.
///
/// Layout: ids that `watch()` assigns (1, 2, 3, ...) fill a dense window, 4 bytes an
/// id; ids a client chose elsewhere, and those of a window that became mostly
/// empty, are in a hash map.
#[derive(Default)]
pub(crate) struct IdTable {
    /// `dense[i]` is the entry of id `base + i`.
    base: WatchId,
    dense: std::collections::VecDeque<u32>,
    in_dense: usize,
    sparse: hashbrown::HashMap<WatchId, u32>,
}

impl IdTable {
    fn slot(&self, id: WatchId) -> Option<usize> {
        let i = id.checked_sub(self.base)?;
        (i >= 0 && (i as u64) < self.dense.len() as u64).then_some(i as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.in_dense + self.sparse.len()
    }

    pub(crate) fn get(&self, id: WatchId) -> Option<u32> {
        match self.slot(id) {
            Some(i) => Some(self.dense[i]).filter(|&v| v != EMPTY),
            None => self.sparse.get(&id).copied(),
        }
    }

    pub(crate) fn contains(&self, id: WatchId) -> bool {
        self.get(id).is_some()
    }

    /// Sets the entry of `id` (new or not).
    pub(crate) fn insert(&mut self, id: WatchId, v: u32) {
        debug_assert!(v != EMPTY);
        if let Some(i) = self.slot(id) {
            if self.dense[i] == EMPTY {
                self.in_dense += 1;
            }
            self.dense[i] = v;
            return;
        }
        if self.sparse.contains_key(&id) {
            self.sparse.insert(id, v);
            return;
        }
        if self.dense.is_empty() {
            self.base = id;
        }
        if Some(id) == self.base.checked_add(self.dense.len() as WatchId) {
            self.dense.push_back(v);
            self.in_dense += 1;
        } else {
            self.sparse.insert(id, v);
        }
    }

    pub(crate) fn remove(&mut self, id: WatchId) -> Option<u32> {
        let Some(i) = self.slot(id) else { return self.sparse.remove(&id) };
        let v = std::mem::replace(&mut self.dense[i], EMPTY);
        if v == EMPTY {
            return None;
        }
        self.in_dense -= 1;
        while self.dense.front() == Some(&EMPTY) {
            self.dense.pop_front();
            self.base += 1;
        }
        while self.dense.back() == Some(&EMPTY) {
            self.dense.pop_back();
        }
        if self.dense.len() > 64 && self.in_dense * 4 < self.dense.len() {
            // Mostly holes (one old watcher among many canceled ones): keep the few
            // live ids in the map instead.
            for (i, v) in std::mem::take(&mut self.dense).into_iter().enumerate() {
                if v != EMPTY {
                    self.sparse.insert(self.base + i as WatchId, v);
                }
            }
            self.in_dense = 0;
        }
        if self.dense.capacity() > 4 * self.dense.len().max(16) {
            self.dense.shrink_to(self.dense.len() * 2);
        }
        Some(v)
    }

    /// Every `(id, entry)`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (WatchId, u32)> + '_ {
        let base = self.base;
        let dense =
            self.dense.iter().enumerate().filter(|(_, v)| **v != EMPTY).map(move |(i, v)| (base + i as WatchId, *v));
        dense.chain(self.sparse.iter().map(|(k, v)| (*k, *v)))
    }

    /// Takes every `(id, entry)` out.
    pub(crate) fn drain(&mut self) -> Vec<(WatchId, u32)> {
        let all: Vec<(WatchId, u32)> = self.iter().collect();
        *self = IdTable::default();
        all
    }
}

/// The part of a stream shared by its owner, the notifier and matchers.
pub(crate) struct StreamShared {
    pub(crate) id: u64,
    queue: Queue<Queued>,
    waker: AtomicWaker,
    msgs: AtomicUsize,
    bytes: AtomicUsize,
    cap_msgs: usize,
    cap_bytes: usize,
    pub(crate) has_victims: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) ids: Mutex<IdTable>,
    next_id: AtomicU64,
    hub: Option<Arc<HubShared>>,
    /// Control responses owed to the consumer: requests on their way to the notifier
    /// ([`InFlight`]) and control responses queued and not yet received.
    owed: AtomicUsize,
    /// The most control responses the queue takes while `owed` is at or above it the
    /// stream overflows (`usize::MAX`: no bound).
    max_owed: AtomicUsize,
    /// A progress request for every watcher is on its way to the notifier.
    progress_asked: AtomicBool,
    /// The stream was closed because it owed more than `max_owed`.
    overflowed: AtomicBool,
}

impl StreamShared {
    pub(crate) fn new(id: u64, cap_msgs: usize, cap_bytes: usize, hub: Option<Arc<HubShared>>) -> Arc<StreamShared> {
        Arc::new(StreamShared {
            id,
            queue: Queue::new(),
            waker: AtomicWaker::new(),
            msgs: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            cap_msgs: cap_msgs.max(1),
            cap_bytes: cap_bytes.max(1),
            has_victims: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ids: Mutex::new(IdTable::default()),
            next_id: AtomicU64::new(0),
            hub,
            owed: AtomicUsize::new(0),
            max_owed: AtomicUsize::new(usize::MAX),
            progress_asked: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        })
    }

    /// One more control response owed.
    fn owe(&self) {
        self.owed.fetch_add(1, Ordering::AcqRel);
        if let Some(h) = &self.hub {
            h.metrics.owed_responses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One owed control response received (or a request handled).
    fn paid(&self) {
        self.owed.fetch_sub(1, Ordering::AcqRel);
        if let Some(h) = &self.hub {
            h.metrics.owed_responses.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Read with a read-modify-write: the consumer registers its waker, then reads
    /// this; an [`InFlight`] request decrements it, then wakes (see
    /// `retry_if_drained` for why both sides use read-modify-writes).
    fn owed_now(&self) -> usize {
        self.owed.fetch_add(0, Ordering::AcqRel)
    }

    /// Queues a control response, counted as owed; past the bound the stream
    /// overflows instead.
    fn push_control(&self, q: Queued) {
        let before = self.owed.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_owed.load(Ordering::Relaxed) || self.overflowed.load(Ordering::Acquire) {
            self.owed.fetch_sub(1, Ordering::AcqRel);
            self.overflow();
            return;
        }
        if let Some(h) = &self.hub {
            h.metrics.owed_responses.fetch_add(1, Ordering::Relaxed);
        }
        self.push(q);
    }

    /// Closes the stream for owing too much: nothing more is queued but its end, and
    /// the receiver learns why ([`WatchReceiver::overflowed`]).
    fn overflow(&self) {
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            if !self.closed.swap(true, Ordering::AcqRel) {
                if let Some(h) = &self.hub {
                    h.control(Control::CloseStream { stream: self.id });
                }
            }
            self.waker.wake();
        }
    }

    fn push(&self, q: Queued) {
        self.queue.push(q);
        self.waker.wake();
    }

    /// Queues an event delivery if the bound allows; an empty stream always takes
    /// one delivery, however large, so that progress is always possible. It counts
    /// [`Delivery::queued_bytes`] against the byte bound.
    pub(crate) fn try_send(&self, delivery: Delivery) -> Result<(), Full<Delivery>> {
        let (bytes, events) = (delivery.queued_bytes(), delivery.event_count());
        let prev_msgs = self.msgs.fetch_add(1, Ordering::SeqCst);
        let prev_bytes = self.bytes.fetch_add(bytes, Ordering::SeqCst);
        let over = prev_msgs >= self.cap_msgs || (prev_msgs > 0 && prev_bytes + bytes > self.cap_bytes);
        if over || self.closed.load(Ordering::Acquire) {
            self.msgs.fetch_sub(1, Ordering::SeqCst);
            self.bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Err(Full(delivery));
        }
        if let Some(h) = &self.hub {
            h.metrics.pending_events.fetch_add(events, Ordering::Relaxed);
        }
        self.push(Queued::Events { delivery, bytes, events });
        Ok(())
    }

    /// Queues a control response, owed until received (see `push_control`).
    pub(crate) fn send_control(&self, resp: WatchResponse) {
        self.push_control(Queued::Response(Box::new(resp)));
    }

    /// Queues watcher `id`'s plain `canceled` response (see `send_control`).
    pub(crate) fn send_canceled(&self, id: WatchId, revision: u64) {
        self.push_control(Queued::Canceled { id, revision });
    }

    /// Queues a progress notification at `revision` for every watcher in `ids` (see
    /// `send_control`).
    pub(crate) fn send_progress(&self, revision: u64, ids: Ids) {
        self.push_control(Queued::Progress { revision, ids });
    }

    /// Reads the counters with read-modify-writes, not loads: see `retry_if_drained`.
    fn has_room_for_retry(&self) -> bool {
        self.msgs.fetch_add(0, Ordering::AcqRel) <= self.cap_msgs / 2
            && self.bytes.fetch_add(0, Ordering::AcqRel) <= self.cap_bytes / 2
    }

    /// Called by the notifier after it made victims of this stream's groups.
    pub(crate) fn mark_victims(self: &Arc<Self>) {
        self.has_victims.swap(true, Ordering::AcqRel);
        // Seeded bug: without this re-check, a consumer that drained the stream just
        // before the flag was set never retries it, and the victims starve.
        #[cfg(not(argus_bug = "lost-victim-retry"))]
        self.retry_if_drained();
    }

    /// The two sides of the victim hand-off each write one location and then read the
    /// other's (notifier: flag, then counters; consumer: counters, then flag): the
    /// store-buffering shape. With acquire/release loads both sides may read stale
    /// values and the wake-up is lost (loom found exactly that in its model of this
    /// code); SeqCst loads would forbid it, but loom models SeqCst as AcqRel and so
    /// cannot check it. Every access here is a read-modify-write instead: whichever
    /// side comes second in a location's modification order reads the other's write
    /// and synchronizes with it, so at least one side sees both the flag and the room,
    /// under AcqRel already, and loom can prove it.
    fn retry_if_drained(self: &Arc<Self>) {
        if self.has_victims.fetch_or(false, Ordering::AcqRel)
            && self.has_room_for_retry()
            && self.has_victims.swap(false, Ordering::AcqRel)
        {
            if let Some(h) = &self.hub {
                h.retry.push(Arc::clone(self));
                h.doorbell.ring();
            }
        }
    }

    fn consumed(self: &Arc<Self>, bytes: usize, events: u64) {
        self.msgs.fetch_sub(1, Ordering::SeqCst);
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
        if let Some(h) = &self.hub {
            h.metrics.pending_events.fetch_sub(events, Ordering::Relaxed);
        }
        self.retry_if_drained();
    }

    /// Tells the receiver that nothing more will come.
    pub(crate) fn send_closed(&self) {
        self.push(Queued::Closed);
    }
}

impl Drop for StreamShared {
    /// What is still queued leaves the hub's gauges with the stream.
    fn drop(&mut self) {
        let Some(h) = &self.hub else { return };
        while let Some(q) = self.queue.pop() {
            match q {
                Queued::Events { events, .. } => {
                    h.metrics.pending_events.fetch_sub(events, Ordering::Relaxed);
                }
                Queued::Response(_) | Queued::Canceled { .. } | Queued::Progress { .. } => {
                    h.metrics.owed_responses.fetch_sub(1, Ordering::Relaxed);
                }
                Queued::Closed => {}
            }
        }
    }
}

/// A request on its way to the notifier, owed by its stream until the notifier has
/// handled it (the responses it made, if any, are queued and owed by then); the
/// notifier drops it when done, which wakes the consumer (a request may make no
/// response at all, and the consumer may be waiting for the count to go down).
pub(crate) struct InFlight {
    stream: Arc<StreamShared>,
    /// A progress request for every watcher (later ones are answered with it).
    progress_all: bool,
}

impl InFlight {
    fn new(stream: &Arc<StreamShared>, progress_all: bool) -> InFlight {
        stream.owe();
        InFlight { stream: Arc::clone(stream), progress_all }
    }
}

impl InFlight {
    /// The notifier took the request: a progress-all request made from now on is a
    /// request of its own (this one's answer is computed after this point, so it
    /// covers only those made before).
    pub(crate) fn taken(&self) {
        if self.progress_all {
            self.stream.progress_asked.store(false, Ordering::Release);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.taken();
        self.stream.paid();
        self.stream.waker.wake();
    }
}

/// Why a watch request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// `watch_id` is already used by a live watcher of this stream.
    #[error("watch id {0} is already in use on this stream")]
    DuplicateId(WatchId),
    /// `range_end` is not above `key` (and neither empty nor `"\0"`).
    #[error("watcher range is empty: range end must be greater than key")]
    EmptyRange,
    /// The key is empty.
    #[error("key is not provided")]
    EmptyKey,
    /// The stream already has `WatchOptions::max_watchers_per_stream` watchers.
    #[error("too many watchers on this stream (limit {0})")]
    TooManyWatchers(usize),
    /// The stream was closed.
    #[error("the watch stream is closed")]
    Closed,
    /// No live watcher has this id.
    #[error("no watcher with id {0} on this stream")]
    UnknownId(WatchId),
}

/// The sending half of a watch stream: creates and cancels watchers, asks for
/// progress. Cheap to clone.
#[derive(Clone)]
pub struct WatchController {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) hub: Arc<HubShared>,
    pub(crate) _guard: Arc<CloseGuard>,
}

/// Closes the stream when the last handle of either half is dropped.
pub(crate) struct CloseGuard {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) hub: Arc<HubShared>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.hub.control(Control::CloseStream { stream: self.shared.id });
        }
    }
}

impl WatchController {
    /// Creates a watcher; its `created` response (header revision: the store's
    /// revision at this call) is queued before any of its events.
    ///
    /// # Errors
    ///
    /// [`WatchError`] for a duplicate id, an empty key or range, too many watchers,
    /// or a closed stream. A start revision below the compaction revision is not an
    /// error here: the watcher is created and then canceled with `compact_revision`
    /// set, as etcd does; so is a negative one (with [`NEVER_COMPACTED`] on a store
    /// never compacted), except -1 on a store never compacted, which is no earlier
    /// than etcd's compaction revision of such a store (-1): that watcher starts with
    /// the next revision (etcd's, at its first sync a moment later).
    ///
    /// [`NEVER_COMPACTED`]: super::NEVER_COMPACTED
    pub fn watch(&self, req: WatchRequest) -> Result<WatchId, WatchError> {
        if self.shared.closed.load(Ordering::Acquire) || self.hub.stop.load(Ordering::Acquire) {
            return Err(WatchError::Closed);
        }
        if req.key.is_empty() {
            return Err(WatchError::EmptyKey);
        }
        let range = match crate::range::KeySpan::parse(&req.key, &req.range_end) {
            Err(_) => return Err(WatchError::EmptyKey),
            Ok(crate::range::KeySpan::One(k)) => KeyRange::exact(k),
            Ok(crate::range::KeySpan::From(k)) => KeyRange::from_key(k),
            Ok(crate::range::KeySpan::Between(k, e)) => KeyRange::bounded(k, e),
            Ok(crate::range::KeySpan::Empty) => return Err(WatchError::EmptyRange),
        };
        // The id is claimed, and the registration queued, under the ids lock, which the
        // notifier also holds while it queues a watcher's last response and frees its
        // id: `created` of a reused id always follows the old watcher's `canceled`.
        let mut ids = lock(&self.shared.ids);
        if ids.len() >= self.hub.opts.max_watchers_per_stream {
            return Err(WatchError::TooManyWatchers(self.hub.opts.max_watchers_per_stream));
        }
        let id = if req.watch_id != 0 {
            if ids.contains(req.watch_id) {
                return Err(WatchError::DuplicateId(req.watch_id));
            }
            req.watch_id
        } else {
            loop {
                let cand = self.shared.next_id.fetch_add(1, Ordering::Relaxed) as WatchId + 1;
                if !ids.contains(cand) {
                    break cand;
                }
            }
        };
        ids.insert(id, PENDING);
        let current = self.hub.store.current_revision();
        let min_rev = match req.start_revision {
            0 => current + 1,
            -1 if self.hub.store.compact_revision() == 0 => current + 1,
            s if s < 0 => BEFORE_HISTORY,
            s => s as u64,
        };
        // The notifier queues `created` when it registers the watcher, so that every
        // response it queued before (a stream-wide progress, say) comes first and
        // cannot be taken to cover this watcher.
        self.hub.control(Control::Register(Box::new(super::hub::Registration {
            stream: Arc::clone(&self.shared),
            id,
            range,
            class: Class::new(req.filters, req.prev_kv, req.progress_notify),
            min_rev,
            created_rev: current,
            _owed: InFlight::new(&self.shared, false),
        })));
        drop(ids);
        Ok(id)
    }

    /// Cancels watcher `id`; its `canceled` response follows its last event.
    ///
    /// # Errors
    ///
    /// [`WatchError::UnknownId`] when no live watcher has that id.
    pub fn cancel(&self, id: WatchId) -> Result<(), WatchError> {
        if !lock(&self.shared.ids).contains(id) {
            return Err(WatchError::UnknownId(id));
        }
        self.hub.control(Control::Cancel { stream: self.shared.id, id, _owed: InFlight::new(&self.shared, false) });
        Ok(())
    }

    /// Asks for a progress response for watcher `id`: sent once every event of it up
    /// to the response's revision has been delivered.
    pub fn request_progress(&self, id: WatchId) {
        let owed = InFlight::new(&self.shared, false);
        self.hub.control(Control::Progress { stream: self.shared.id, id: Some(id), _owed: owed });
    }

    /// Asks for progress of every watcher of the stream: one response with id `-1`
    /// when all are synced, else one per watcher, each as soon as it is synced (an
    /// unsynced watcher never withholds the others' bookmarks). While an earlier such
    /// request waits for the notifier, this one adds nothing: the notifier answers
    /// that one after this call, so its answer is as recent as this one's would be.
    /// (It stops waiting when the notifier takes it, before it answers, so a request
    /// made after the answer arrived is never merged into it.)
    pub fn request_progress_all(&self) {
        if self.shared.progress_asked.swap(true, Ordering::AcqRel) {
            return;
        }
        let owed = InFlight::new(&self.shared, true);
        self.hub.control(Control::Progress { stream: self.shared.id, id: None, _owed: owed });
    }

    /// Cancels every watcher of the stream for which `keep(id, key, range_end)` is
    /// false, with `reason` in its `canceled` response (which follows its last
    /// event). `key` and `range_end` are the watcher's range as it was asked for
    /// (an empty `range_end` is one key, `"\0"` every key from `key` on).
    ///
    /// The stream keeps nothing per watcher for this: `keep` runs on the notifier
    /// thread, over the watchers registered before this call (later ones are not
    /// judged), holding the stream's id lock, so no id is canceled and reused while
    /// it runs. Keep it short: the notifier fans out no revision meanwhile. (The
    /// server re-checks permissions with it when the auth state changes.)
    pub fn retain<F>(&self, reason: impl Into<String>, keep: F)
    where
        F: FnMut(WatchId, &[u8], &[u8]) -> bool + Send + 'static,
    {
        let owed = InFlight::new(&self.shared, false);
        let reason = reason.into();
        self.hub.control(Control::Retain { stream: self.shared.id, keep: Box::new(keep), reason, _owed: owed });
    }

    /// Control responses this stream owes its consumer: see
    /// [`WatchReceiver::owed_responses`].
    pub fn owed_responses(&self) -> usize {
        self.shared.owed_now()
    }

    /// Bounds the control responses the stream may owe: one more than `max` queued
    /// closes it instead ([`WatchReceiver::overflowed`]). No bound unless set. A
    /// consumer that stops taking requests at a lower bound (see
    /// [`WatchReceiver::owed_responses`]) reaches this one only when responses made
    /// without a request (compaction cancels, periodic and owed progress
    /// notifications) pile up for a receiver that takes nothing.
    pub fn set_max_owed_responses(&self, max: usize) {
        self.shared.max_owed.store(max, Ordering::Relaxed);
    }

    /// Closes the stream: every watcher is removed; nothing more is queued.
    pub fn close(&self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.hub.control(Control::CloseStream { stream: self.shared.id });
        }
    }
}

/// The receiving half of a watch stream.
///
/// Two views of the same FIFO: [`WatchReceiver::recv_item`] and its siblings hand
/// out [`Item`]s (a delivery names every watcher it reaches, with the events shared:
/// what a server that writes bytes wants), and [`WatchReceiver::recv`] and its
/// siblings hand out one etcd-style [`WatchResponse`] per watcher, built from those
/// items one at a time. Mixing them is allowed: an item that the per-watcher view
/// has started is handed on as the rest of it.
pub struct WatchReceiver {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) expanded: Expansion,
    pub(crate) done: bool,
    pub(crate) hub: Arc<HubShared>,
    pub(crate) _guard: Arc<CloseGuard>,
}

impl WatchReceiver {
    /// Accounts for a dequeued entry and turns it into an item (`None`: closed).
    fn take(&mut self, q: Queued) -> Option<Item> {
        Some(match q {
            Queued::Closed => {
                self.done = true;
                return None;
            }
            Queued::Response(r) => {
                self.shared.paid();
                Item::Response(*r)
            }
            Queued::Canceled { id, revision } => {
                self.shared.paid();
                let mut r = WatchResponse::control(id, revision);
                r.canceled = true;
                Item::Response(r)
            }
            Queued::Progress { revision, ids } => {
                self.shared.paid();
                Item::Progress { revision, ids }
            }
            Queued::Events { delivery, bytes, events } => {
                self.hub.metrics.events_delivered.fetch_add(events, Ordering::Relaxed);
                self.shared.consumed(bytes, events);
                Item::Events(delivery)
            }
        })
    }

    /// The rest of an item the per-watcher view started, if any.
    fn rest(&mut self) -> Option<Item> {
        if self.expanded.is_done() {
            None
        } else {
            self.expanded.take_rest()
        }
    }

    /// The next item if one is queued.
    pub fn try_recv_item(&mut self) -> Option<Item> {
        if let Some(i) = self.rest() {
            return Some(i);
        }
        if self.done {
            return None;
        }
        let q = self.shared.queue.pop()?;
        self.take(q)
    }

    /// Polls for the next item: `Ready(None)` once the stream is closed and empty;
    /// `Pending` registers `cx`'s waker, woken when an item is queued.
    pub fn poll_recv_item(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Item>> {
        use std::task::Poll;
        if let Some(i) = self.rest() {
            return Poll::Ready(Some(i));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(q) = self.shared.queue.pop() {
            return Poll::Ready(self.take(q));
        }
        self.shared.waker.register(cx.waker());
        // Seeded bug: sleeps without looking again after registering, so an item
        // pushed (and a wake that found no waker) in between is never seen.
        #[cfg(not(argus_bug = "lost-wakeup"))]
        if let Some(q) = self.shared.queue.pop() {
            return Poll::Ready(self.take(q));
        }
        Poll::Pending
    }

    /// The next item, awaiting one (runtime-agnostic).
    pub async fn recv_item_async(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| self.poll_recv_item(cx)).await
    }

    /// Whether the stream ended (or will) because the engine was shut down, not
    /// because the stream was closed.
    pub fn engine_shut_down(&self) -> bool {
        self.hub.stop.load(Ordering::Acquire)
    }

    /// Control responses (created, canceled, progress) the stream owes: requested
    /// and not yet handled by the notifier, or queued and not yet received. A
    /// consumer that stops taking requests from its client while this is at a bound
    /// keeps what it holds for the client bounded; a receive, or the notifier
    /// handling a request, wakes a task waiting in
    /// [`WatchReceiver::poll_recv_item`] (which it must be, with an empty queue, for
    /// a request that makes no response to wake it).
    pub fn owed_responses(&self) -> usize {
        self.shared.owed_now()
    }

    /// Whether the stream ended (or will) because it owed more control responses
    /// than its bound ([`WatchController::set_max_owed_responses`]).
    pub fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// Polls on this thread, parking it between polls, until `poll_recv_item` is
    /// ready or `deadline` passes.
    fn block_on_item(&mut self, deadline: Option<std::time::Instant>) -> Option<Item> {
        if let Some(i) = self.try_recv_item() {
            return Some(i);
        }
        if self.done {
            return None;
        }
        // Made per wait, for the thread that waits now (a receiver may move).
        let waker = std::task::Waker::from(Arc::new(crate::sync::ThreadWaker(crate::sync::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        loop {
            if let std::task::Poll::Ready(r) = self.poll_recv_item(&mut cx) {
                return r;
            }
            match deadline {
                None => crate::sync::thread::park(),
                Some(d) => {
                    #[cfg(not(loom))]
                    {
                        let now = std::time::Instant::now();
                        if now >= d {
                            return None;
                        }
                        crate::sync::thread::park_timeout(d - now);
                    }
                    #[cfg(loom)]
                    {
                        let _ = d;
                        return None;
                    }
                }
            }
        }
    }

    /// The next item, waiting for one; `None` once the stream is closed and empty.
    pub fn recv_item(&mut self) -> Option<Item> {
        self.block_on_item(None)
    }

    /// The next item, waiting at most `timeout`.
    pub fn recv_item_timeout(&mut self, timeout: std::time::Duration) -> Option<Item> {
        self.block_on_item(Some(std::time::Instant::now() + timeout))
    }

    /// The next per-watcher response of the current item, else of a new item (items
    /// always stand for at least one response).
    fn next_response(&mut self, get: impl FnOnce(&mut Self) -> Option<Item>) -> Option<WatchResponse> {
        if let Some(r) = self.expanded.next_response() {
            return Some(r);
        }
        let item = get(self)?;
        self.expanded = Expansion::start(item);
        self.expanded.next_response()
    }

    /// The next response, waiting for one; `None` once the stream is closed and empty.
    pub fn recv(&mut self) -> Option<WatchResponse> {
        self.next_response(|s| s.recv_item())
    }

    /// The next response if one is queued.
    pub fn try_recv(&mut self) -> Option<WatchResponse> {
        self.next_response(|s| s.try_recv_item())
    }

    /// The next response, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: std::time::Duration) -> Option<WatchResponse> {
        self.next_response(|s| s.recv_item_timeout(timeout))
    }

    /// The next response, awaiting one (runtime-agnostic).
    pub async fn recv_async(&mut self) -> Option<WatchResponse> {
        if let Some(r) = self.expanded.next_response() {
            return Some(r);
        }
        let item = self.recv_item_async().await?;
        self.expanded = Expansion::start(item);
        self.expanded.next_response()
    }
}

/// A watch stream: a [`WatchController`] and a [`WatchReceiver`] together, like one
/// etcd gRPC Watch stream. [`WatchStream::split`] separates them for use on two
/// threads or tasks.
///
/// # Examples
///
/// ```
/// use argus_engine::store::{Store, StoreOptions};
/// use argus_engine::log::MemStorage;
/// use argus_engine::watch::{WatchHub, WatchOptions, WatchRequest};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let store = Store::open_storage(Arc::new(MemStorage::new()), StoreOptions::default()).unwrap();
/// let hub = WatchHub::new(store.clone(), WatchOptions::default());
/// let mut stream = hub.stream();
/// let id = stream.watch(WatchRequest::prefix("/config/")).unwrap();
/// assert!(stream.recv().unwrap().created);
/// store.put(b"/config/a", b"1").unwrap();
/// let resp = stream.recv_timeout(Duration::from_secs(5)).unwrap();
/// assert_eq!(resp.watch_id, id);
/// assert_eq!(resp.events().next().unwrap().kv.value, b"1");
/// ```
pub struct WatchStream {
    ctl: WatchController,
    rx: WatchReceiver,
}

impl WatchStream {
    pub(crate) fn new(ctl: WatchController, rx: WatchReceiver) -> Self {
        WatchStream { ctl, rx }
    }

    /// Separates the two halves.
    pub fn split(self) -> (WatchController, WatchReceiver) {
        (self.ctl, self.rx)
    }

    /// The controller half.
    pub fn controller(&self) -> &WatchController {
        &self.ctl
    }

    /// See [`WatchController::watch`].
    ///
    /// # Errors
    ///
    /// As [`WatchController::watch`].
    pub fn watch(&self, req: WatchRequest) -> Result<WatchId, WatchError> {
        self.ctl.watch(req)
    }

    /// See [`WatchController::cancel`].
    ///
    /// # Errors
    ///
    /// As [`WatchController::cancel`].
    pub fn cancel(&self, id: WatchId) -> Result<(), WatchError> {
        self.ctl.cancel(id)
    }

    /// See [`WatchController::request_progress`].
    pub fn request_progress(&self, id: WatchId) {
        self.ctl.request_progress(id)
    }

    /// See [`WatchController::request_progress_all`].
    pub fn request_progress_all(&self) {
        self.ctl.request_progress_all()
    }

    /// See [`WatchController::close`].
    pub fn close(&self) {
        self.ctl.close()
    }

    /// See [`WatchReceiver::recv`].
    pub fn recv(&mut self) -> Option<WatchResponse> {
        self.rx.recv()
    }

    /// See [`WatchReceiver::try_recv`].
    pub fn try_recv(&mut self) -> Option<WatchResponse> {
        self.rx.try_recv()
    }

    /// See [`WatchReceiver::recv_timeout`].
    pub fn recv_timeout(&mut self, timeout: std::time::Duration) -> Option<WatchResponse> {
        self.rx.recv_timeout(timeout)
    }

    /// See [`WatchReceiver::recv_async`].
    pub async fn recv_async(&mut self) -> Option<WatchResponse> {
        self.rx.recv_async().await
    }

    /// See [`WatchReceiver::recv_item`].
    pub fn recv_item(&mut self) -> Option<Item> {
        self.rx.recv_item()
    }

    /// See [`WatchReceiver::try_recv_item`].
    pub fn try_recv_item(&mut self) -> Option<Item> {
        self.rx.try_recv_item()
    }

    /// See [`WatchReceiver::recv_item_timeout`].
    pub fn recv_item_timeout(&mut self, timeout: std::time::Duration) -> Option<Item> {
        self.rx.recv_item_timeout(timeout)
    }

    /// See [`WatchReceiver::poll_recv_item`].
    pub fn poll_recv_item(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Item>> {
        self.rx.poll_recv_item(cx)
    }

    /// See [`WatchReceiver::recv_item_async`].
    pub async fn recv_item_async(&mut self) -> Option<Item> {
        self.rx.recv_item_async().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The id table agrees with a map through random claims (mostly sequential, as
    /// `watch()` assigns them, some chosen anywhere) and releases.
    #[test]
    fn id_table_agrees_with_a_map() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("id table seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut t = IdTable::default();
        let mut m: std::collections::BTreeMap<WatchId, u32> = Default::default();
        let mut next = 0;
        for step in 0..50_000u32 {
            let roll = rng.random_range(0..100);
            if roll < 45 {
                next += 1;
                t.insert(next, step);
                m.insert(next, step);
            } else if roll < 50 {
                let id = rng.random_range(-5..200_000);
                t.insert(id, step);
                m.insert(id, step);
            } else if !m.is_empty() {
                // Mostly the oldest or newest, sometimes anywhere.
                let k = match rng.random_range(0..3) {
                    0 => *m.keys().next().unwrap(),
                    1 => *m.keys().next_back().unwrap(),
                    _ => *m.keys().nth(rng.random_range(0..m.len())).unwrap(),
                };
                assert_eq!(t.remove(k), m.remove(&k), "seed {seed}");
                assert_eq!(t.remove(k), None);
            }
            if step % 1000 == 0 {
                assert_eq!(t.len(), m.len(), "seed {seed}");
                let mut all: Vec<_> = t.iter().collect();
                all.sort();
                assert_eq!(all, m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), "seed {seed}");
                for (k, v) in m.iter().take(50) {
                    assert_eq!(t.get(*k), Some(*v));
                }
            }
        }
        assert_eq!(t.drain().len(), m.len());
        assert_eq!(t.len(), 0);
    }

    mod owed {
        use super::super::*;
        use crate::log::{FsyncPolicy, MemStorage};
        use crate::store::{Store, StoreOptions};
        use crate::watch::{WatchHub, WatchOptions, NEVER_COMPACTED};
        use std::time::{Duration, Instant};

        const T: Duration = Duration::from_secs(10);

        fn store() -> Store {
            let mut opts = StoreOptions::default();
            opts.log.fsync = FsyncPolicy::Never;
            Store::open_storage(Arc::new(MemStorage::new()), opts).unwrap()
        }

        fn until(what: &str, mut f: impl FnMut() -> bool) {
            let deadline = Instant::now() + T;
            while !f() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// What a stream owes counts its requests until the notifier has handled
        /// them and their responses until received; the hub's gauge is the sum.
        #[test]
        fn owed_responses_count_requests_then_queued_responses() {
            let st = store();
            let hub = WatchHub::new(st.clone(), WatchOptions::default());
            let mut s = hub.stream();
            let other = hub.stream();
            for i in 0..10 {
                s.watch(WatchRequest::key(format!("k{i}"))).unwrap();
            }
            other.watch(WatchRequest::key("o")).unwrap();
            assert!(s.controller().owed_responses() >= 1);
            until("ten created responses queued", || s.rx.owed_responses() == 10);
            until("the hub's gauge", || hub.metrics().owed_responses == 11);
            for _ in 0..10 {
                assert!(s.recv_timeout(T).unwrap().created);
            }
            // The notifier queues a response, then lets go of its request: a
            // response can be received a moment before its request stops counting.
            until("every created received and its request done", || s.rx.owed_responses() == 0);
            assert_eq!(s.cancel(99), Err(WatchError::UnknownId(99)));
            s.cancel(1).unwrap();
            assert!(s.recv_timeout(T).unwrap().canceled);
            until("the canceled received and its request done", || s.rx.owed_responses() == 0);
            // A stream dropped with responses queued leaves the gauge with them.
            until("other's created", || other.rx.owed_responses() == 1);
            drop(other);
            until("the gauge back to 0", || hub.metrics().owed_responses == 0);
        }

        /// A progress request made as soon as the previous answer arrived is a
        /// request of its own, answered too: the notifier lets go of a request when
        /// it takes it, before it answers. (It let go after answering, so a request
        /// made in between was merged into one already answered and never got an
        /// answer: a consumer waiting for it waited forever; seen in CI under load.)
        #[test]
        fn a_progress_request_made_after_an_answer_is_answered() {
            let st = store();
            let hub = WatchHub::new(st.clone(), WatchOptions::default());
            let mut s = hub.stream();
            s.watch(WatchRequest::key("k")).unwrap();
            assert!(s.recv_timeout(T).unwrap().created);
            for round in 0..200 {
                s.request_progress_all();
                let r = s.recv_timeout(T).expect("an answer");
                assert!(r.is_progress(), "{r:?}");
                // The answer is out, so the request it answered is not waiting any
                // more: the next one is sent, not merged.
                assert!(!s.rx.shared.progress_asked.load(Ordering::Acquire), "round {round}");
            }
        }

        /// Progress requests for every watcher made while one waits for the
        /// notifier are answered with it: never more answers than requests, at least
        /// one, and the last answer comes after the last request, at or after the
        /// revision written before it.
        #[test]
        fn progress_requests_waiting_for_the_notifier_share_one_answer() {
            let st = store();
            let hub = WatchHub::new(st.clone(), WatchOptions::default());
            let mut s = hub.stream();
            s.watch(WatchRequest::key("k")).unwrap();
            assert!(s.recv_timeout(T).unwrap().created);
            for _ in 0..5 {
                st.put(b"x", b"v").unwrap();
            }
            let rev = st.current_revision();
            for _ in 0..10_000 {
                s.request_progress_all();
            }
            // One request at a time waits for the notifier; the others share it. The
            // last request taken is answered at or after `rev`: receive until then.
            until("every request taken", || !s.rx.shared.progress_asked.load(Ordering::Acquire));
            let mut answers = Vec::new();
            while answers.last().is_none_or(|&a| a < rev) {
                let r = s.recv_timeout(T).expect("the answer to the last request");
                assert!(r.is_progress() && r.watch_id == -1, "{r:?}");
                answers.push(r.revision);
            }
            // Then whatever else was answered, until the stream owes nothing.
            until("every request handled", || {
                while let Some(r) = s.try_recv() {
                    assert!(r.is_progress() && r.watch_id == -1, "{r:?}");
                    answers.push(r.revision);
                }
                s.rx.owed_responses() == 0
            });
            assert!(!answers.is_empty() && answers.len() <= 10_000, "{} answers", answers.len());
            assert!(*answers.last().unwrap() >= rev, "{answers:?} for revision {rev}");
            eprintln!("{} answers to 10000 progress requests", answers.len());
        }

        /// A stream that owes more than its bound is closed: what was queued before
        /// is received, then the end, and it says why.
        #[test]
        fn a_stream_past_its_owed_bound_overflows_and_closes() {
            let st = store();
            let hub = WatchHub::new(st.clone(), WatchOptions::default());
            let mut s = hub.stream();
            s.controller().set_max_owed_responses(4);
            s.watch(WatchRequest::key("a")).unwrap();
            assert!(s.recv_timeout(T).unwrap().created);
            for i in 0..8 {
                // The notifier may close the stream before all eight are asked for
                // (it runs beside this thread): the later ones are then refused.
                match s.watch(WatchRequest::key(format!("k{i}"))) {
                    Ok(_) => {}
                    Err(WatchError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let mut created = 0;
            while let Some(r) = s.recv_timeout(T) {
                assert!(r.created, "{r:?}");
                created += 1;
            }
            assert!(created < 8, "{created} created responses for a bound of 4");
            assert!(s.rx.overflowed());
            assert_eq!(s.watch(WatchRequest::key("late")), Err(WatchError::Closed));
            until("the stream gone", || hub.metrics().streams == 0 && hub.metrics().watchers == 0);
        }

        /// A negative start: created, then canceled as compacted with -1 on a store
        /// never compacted (but -1 itself, which watches from the next revision),
        /// with the compaction revision on a compacted one.
        #[test]
        fn a_negative_start_is_created_then_canceled_as_compacted() {
            let st = store();
            let hub = WatchHub::new(st.clone(), WatchOptions::default());
            let mut s = hub.stream();
            let id = s.watch(WatchRequest::key("k").from_revision(-2)).unwrap();
            let c = s.recv_timeout(T).unwrap();
            assert!(c.created && c.watch_id == id && !c.canceled, "{c:?}");
            let x = s.recv_timeout(T).unwrap();
            assert!(x.canceled && x.watch_id == id && x.compact_revision == NEVER_COMPACTED, "{x:?}");
            assert_eq!(x.compact_revision as i64, -1, "etcd's -1 on the wire");
            let live = s.watch(WatchRequest::key("k").from_revision(-1)).unwrap();
            assert!(s.recv_timeout(T).unwrap().created);
            st.put(b"k", b"1").unwrap();
            let e = s.recv_timeout(T).unwrap();
            assert_eq!((e.watch_id, e.event_count(), e.revision), (live, 1, 2), "{e:?}");
            for _ in 0..3 {
                st.put(b"k", b"2").unwrap();
            }
            let _ = s.recv_timeout(T);
            st.compact(4).unwrap();
            let id = s.watch(WatchRequest::key("k").from_revision(-1)).unwrap();
            loop {
                let r = s.recv_timeout(T).unwrap();
                if r.watch_id == id && r.canceled {
                    assert_eq!(r.compact_revision, 4, "{r:?}");
                    break;
                }
            }
        }
    }
}
