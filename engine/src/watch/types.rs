//! Requests and responses of the watch API, shaped like etcd's `WatchCreateRequest`
//! and `WatchResponse`, with events shared between watchers instead of copied.

use crate::store::KeyValue;
use crate::sync::Arc;

/// Identifier of a watcher, unique within its stream (etcd's `watch_id`).
pub type WatchId = i64;

/// The [`WatchResponse::compact_revision`] of a watcher canceled because its start
/// revision, a negative one, lies before a history that was never compacted. etcd
/// answers -1 there (the compaction revision of an etcd store never compacted), and
/// this value is -1 on the wire, as every `compact_revision` is sent (`as i64`).
pub const NEVER_COMPACTED: u64 = u64::MAX;

/// The first revision a watcher with a negative start may receive, as the notifier
/// is told: no revision is 0, so it is before any history, compacted or not, and the
/// watcher is created and then canceled as compacted.
pub(crate) const BEFORE_HISTORY: u64 = 0;

/// Kind of an event (etcd's `mvccpb.Event.EventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was put.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key after the change; for DELETE the key with `mod_revision` set to the
    /// deletion revision and everything else zero, as etcd.
    pub kv: KeyValue,
    /// The key before the change, when computed (see [`RevisionBatch::has_prev_kv`]);
    /// `None` when the key did not exist or its previous state was compacted.
    pub prev_kv: Option<KeyValue>,
    /// Sub revision: position in its revision.
    pub sub: u32,
}

impl Event {
    /// Approximate bytes of the event on the wire (key, value, prev value, framing).
    pub fn approx_size(&self) -> usize {
        32 + self.kv.key.len()
            + self.kv.value.len()
            + self.prev_kv.as_ref().map_or(0, |p| 32 + p.key.len() + p.value.len())
    }
}

/// Every event of one revision, built once and shared (`Arc`) by every watcher it
/// reaches.
#[derive(Debug, PartialEq, Eq)]
pub struct RevisionBatch {
    /// The main revision.
    pub revision: u64,
    /// Its events in sub-revision order.
    pub events: Vec<Event>,
    /// Whether `prev_kv` was computed for these events.
    pub has_prev_kv: bool,
    /// Approximate encoded size in bytes (keys, values, prev values, overhead).
    pub size: usize,
    /// Memo of a consumer's serialized form of the events, without (`[0]`) and with
    /// (`[1]`) prev_kv: the gRPC server encodes a revision's events once here and
    /// reuses the bytes (or slices of them, for a selection) for every watcher.
    pub encoded: [std::sync::OnceLock<EncodedEvents>; 2],
}

/// The serialized events of one revision, as a consumer encoded them once for all
/// watchers (see [`RevisionBatch::encoded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvents {
    /// Every event's bytes, back to back, in sub-revision order.
    pub bytes: bytes::Bytes,
    /// `ends[i]`: where event `i`'s bytes end (event `i` is
    /// `bytes[ends[i-1]..ends[i]]`, with `ends[-1]` = 0).
    pub ends: Box<[u32]>,
}

impl EncodedEvents {
    /// The bytes of event `i`.
    pub fn event(&self, i: usize) -> bytes::Bytes {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.bytes.slice(start..self.ends[i] as usize)
    }

    /// The byte range of event `i` in [`EncodedEvents::bytes`].
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }
}

impl RevisionBatch {
    /// A batch of `events` (all of main revision `revision`, in sub order).
    pub fn new(revision: u64, events: Vec<Event>, has_prev_kv: bool) -> Self {
        let size = events.iter().map(Event::approx_size).sum();
        RevisionBatch { revision, events, has_prev_kv, size, encoded: Default::default() }
    }
}

/// The events of one revision that one watcher receives: the shared batch and
/// which of its events pass the watcher's key range and filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionEvents {
    /// The shared batch.
    pub batch: Arc<RevisionBatch>,
    /// Indices into `batch.events`; `None` means all of them.
    pub selection: Option<Arc<[u32]>>,
}

impl RevisionEvents {
    /// The selected events, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        let all = self.selection.is_none();
        let n = if all { self.batch.events.len() } else { self.selection.as_ref().map_or(0, |s| s.len()) };
        (0..n).map(move |i| match &self.selection {
            None => &self.batch.events[i],
            Some(s) => &self.batch.events[s[i] as usize],
        })
    }

    /// Number of selected events.
    pub fn len(&self) -> usize {
        self.selection.as_ref().map_or(self.batch.events.len(), |s| s.len())
    }

    /// Whether no event is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes of the selected events.
    pub fn size(&self) -> usize {
        match &self.selection {
            None => self.batch.size,
            Some(_) => self.iter().map(Event::approx_size).sum(),
        }
    }
}

/// One response on a watch stream (etcd's `WatchResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponse {
    /// The watcher; `-1` for a stream-wide progress response.
    pub watch_id: WatchId,
    /// Header revision. For a progress response (no events, not created or
    /// canceled): every matching event up to it has been delivered.
    pub revision: u64,
    /// The watcher was created (first response of every watcher).
    pub created: bool,
    /// The watcher was canceled (last response of a watcher).
    pub canceled: bool,
    /// Set when canceled because its next revision was compacted: the compaction
    /// revision, or [`NEVER_COMPACTED`] for a negative start on a store never
    /// compacted.
    pub compact_revision: u64,
    /// Why it was canceled.
    pub cancel_reason: String,
    /// Events, whole revisions in order.
    pub events: Vec<RevisionEvents>,
    /// Whether the watcher asked for `prev_kv`; consumers drop `Event::prev_kv`
    /// otherwise.
    pub prev_kv: bool,
}

impl WatchResponse {
    pub(crate) fn control(watch_id: WatchId, revision: u64) -> Self {
        WatchResponse {
            watch_id,
            revision,
            created: false,
            canceled: false,
            compact_revision: 0,
            cancel_reason: String::new(),
            events: Vec::new(),
            prev_kv: false,
        }
    }

    /// A watcher's `created` response.
    pub(crate) fn created(watch_id: WatchId, revision: u64) -> Self {
        WatchResponse { created: true, ..Self::control(watch_id, revision) }
    }

    /// Whether this is a progress notification (bookmark).
    pub fn is_progress(&self) -> bool {
        !self.created && !self.canceled && self.events.is_empty()
    }

    /// Every event of the response in order, each with `prev_kv` only if asked for.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.iter().flat_map(|r| r.iter()).map(move |e| {
            let mut e = e.clone();
            if !self.prev_kv {
                e.prev_kv = None;
            }
            e
        })
    }

    /// Number of events.
    pub fn event_count(&self) -> usize {
        self.events.iter().map(RevisionEvents::len).sum()
    }

    /// Approximate size in bytes, for stream accounting.
    pub fn size(&self) -> usize {
        64 + self.cancel_reason.len() + self.events.iter().map(RevisionEvents::size).sum::<usize>()
    }
}

/// Which event kinds a watcher skips (etcd's `FilterType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Skip PUT events.
    pub no_put: bool,
    /// Skip DELETE events.
    pub no_delete: bool,
}

impl Filters {
    /// Whether an event of `kind` passes.
    pub fn pass(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// A request to create a watcher (etcd's `WatchCreateRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// The key, or the start of the range.
    pub key: Vec<u8>,
    /// Empty: just `key`; `"\0"`: every key `>= key`; otherwise the exclusive end
    /// (see [`crate::store::prefix_end`] for prefixes).
    pub range_end: Vec<u8>,
    /// 0: from the next revision; past: catch up from it; future: wait for it;
    /// negative: before any history (created, then canceled as compacted, as etcd
    /// does; see [`WatchController::watch`](super::WatchController::watch)).
    pub start_revision: i64,
    /// Event filters.
    pub filters: Filters,
    /// Include each event's previous key-value.
    pub prev_kv: bool,
    /// Send periodic progress notifications when idle.
    pub progress_notify: bool,
    /// 0: assign one; otherwise the id to use (unique within the stream).
    pub watch_id: WatchId,
}

impl WatchRequest {
    /// A watch on one key from the next revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        WatchRequest { key: key.into(), ..Default::default() }
    }

    /// A watch on every key starting with `prefix`, from the next revision.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = crate::store::prefix_end(&key);
        WatchRequest { key, range_end, ..Default::default() }
    }

    /// Sets the start revision.
    pub fn from_revision(mut self, rev: i64) -> Self {
        self.start_revision = rev;
        self
    }

    /// Asks for previous key-values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}
