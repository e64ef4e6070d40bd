//! Requests and responses of the watch API, shaped like etcd's `WatchCreateRequest`
//! and `WatchResponse`, with events shared between watchers instead of copied.

use crate::store::KeyValue;
use crate::sync::{Arc, OnceLock};

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
///
/// The events are kept compactly: each event's fields (varints) and bytes (key,
/// value, previous value) back to back in a few large shared chunks, with one
/// 4-byte offset per event, instead of an [`Event`] (about 160 bytes) plus three
/// allocations per event. [`RevisionBatch::events`] and [`RevisionBatch::event`]
/// hand out borrowed views ([`EventRef`]); [`EventRef::to_event`] copies one out.
pub struct RevisionBatch {
    /// The main revision.
    pub revision: u64,
    /// Whether `prev_kv` was computed for these events.
    pub has_prev_kv: bool,
    /// Approximate encoded size in bytes (keys, values, prev values, overhead).
    pub size: usize,
    /// Memo of a consumer's serialized form of the events, without (`[0]`) and with
    /// (`[1]`) prev_kv: the gRPC server encodes a revision's events once here and
    /// reuses the bytes (or slices of them, for a selection) for every watcher.
    pub encoded: [OnceLock<EncodedEvents>; 2],
    events: Arena,
}

impl std::fmt::Debug for RevisionBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionBatch")
            .field("revision", &self.revision)
            .field("has_prev_kv", &self.has_prev_kv)
            .field("size", &self.size)
            .field("events", &self.events().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for RevisionBatch {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision
            && self.has_prev_kv == other.has_prev_kv
            && self.size == other.size
            && self.encoded == other.encoded
            && self.len() == other.len()
            && self.events().eq(other.events())
    }
}

impl Eq for RevisionBatch {}

/// A borrowed key-value of a [`RevisionBatch`] (the fields of [`KeyValue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Revision that created the key's current generation.
    pub create_revision: u64,
    /// Revision of the key's last change.
    pub mod_revision: u64,
    /// Puts since creation.
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl<'a> KvRef<'a> {
    /// A copy that owns its bytes.
    pub fn to_kv(&self) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

impl<'a> From<&'a KeyValue> for KvRef<'a> {
    fn from(kv: &'a KeyValue) -> Self {
        KvRef {
            key: &kv.key,
            value: &kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// A borrowed event of a [`RevisionBatch`] (the fields of [`Event`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key after the change (see [`Event::kv`]).
    pub kv: KvRef<'a>,
    /// The key before the change, when computed (see [`Event::prev_kv`]).
    pub prev_kv: Option<KvRef<'a>>,
    /// Sub revision: position in its revision.
    pub sub: u32,
}

impl<'a> EventRef<'a> {
    /// A copy that owns its bytes.
    pub fn to_event(&self) -> Event {
        Event { kind: self.kind, kv: self.kv.to_kv(), prev_kv: self.prev_kv.map(|p| p.to_kv()), sub: self.sub }
    }

    /// Approximate bytes of the event on the wire (as [`Event::approx_size`]).
    pub fn approx_size(&self) -> usize {
        approx_size(&self.kv, self.prev_kv.as_ref())
    }
}

impl<'a> From<&'a Event> for EventRef<'a> {
    fn from(e: &'a Event) -> Self {
        EventRef { kind: e.kind, kv: (&e.kv).into(), prev_kv: e.prev_kv.as_ref().map(Into::into), sub: e.sub }
    }
}

fn approx_size(kv: &KvRef<'_>, prev: Option<&KvRef<'_>>) -> usize {
    32 + kv.key.len() + kv.value.len() + prev.map_or(0, |p| 32 + p.key.len() + p.value.len())
}

/// A revision's events in a few chunks: every event's encoding lies wholly in one
/// chunk; `starts[i]` is where event `i` begins in its chunk, `firsts[c]` the first
/// event of chunk `c`.
///
/// An event's encoding: a flags byte (`DELETE`, `PREV`, `PREV_KEY`, `LEASE`,
/// `PREV_LEASE`), varints of sub, create, mod and version, with `LEASE` the lease
/// (its 64 bits as a varint), the key and the value (varint length, bytes); with
/// `PREV`, varints of the previous create, mod and version, with `PREV_LEASE` the
/// previous lease, with `PREV_KEY` the previous key (else it is the key), and the
/// previous value.
#[derive(Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    starts: Vec<u32>,
    firsts: Vec<u32>,
}

const DELETE: u8 = 1;
const PREV: u8 = 2;
const PREV_KEY: u8 = 4;
const LEASE: u8 = 8;
const PREV_LEASE: u8 = 16;

/// Largest chunk allocated for events that each fit in less (a larger event gets a
/// chunk of its own size).
const CHUNK_MAX: usize = 1 << 20;

fn varint_len(v: u64) -> usize {
    // 7 bits per byte; 0 takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_len(b: &[u8]) -> usize {
    varint_len(b.len() as u64) + b.len()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Bytes of one event's encoding in an [`Arena`].
fn encoded_len(e: &EventRef<'_>) -> usize {
    let kv = &e.kv;
    let mut n = 1
        + varint_len(u64::from(e.sub))
        + varint_len(kv.create_revision)
        + varint_len(kv.mod_revision)
        + varint_len(kv.version)
        + bytes_len(kv.key)
        + bytes_len(kv.value);
    if kv.lease != 0 {
        n += varint_len(kv.lease as u64);
    }
    if let Some(p) = &e.prev_kv {
        n += varint_len(p.create_revision) + varint_len(p.mod_revision) + varint_len(p.version) + bytes_len(p.value);
        if p.key != kv.key {
            n += bytes_len(p.key);
        }
        if p.lease != 0 {
            n += varint_len(p.lease as u64);
        }
    }
    n
}

fn encode(out: &mut Vec<u8>, e: &EventRef<'_>) {
    let kv = &e.kv;
    let mut flags = if e.kind == EventKind::Delete { DELETE } else { 0 };
    if kv.lease != 0 {
        flags |= LEASE;
    }
    if let Some(p) = &e.prev_kv {
        flags |= PREV;
        if p.key != kv.key {
            flags |= PREV_KEY;
        }
        if p.lease != 0 {
            flags |= PREV_LEASE;
        }
    }
    out.push(flags);
    put_varint(out, u64::from(e.sub));
    put_varint(out, kv.create_revision);
    put_varint(out, kv.mod_revision);
    put_varint(out, kv.version);
    if flags & LEASE != 0 {
        put_varint(out, kv.lease as u64);
    }
    put_bytes(out, kv.key);
    put_bytes(out, kv.value);
    if let Some(p) = &e.prev_kv {
        put_varint(out, p.create_revision);
        put_varint(out, p.mod_revision);
        put_varint(out, p.version);
        if flags & PREV_LEASE != 0 {
            put_varint(out, p.lease as u64);
        }
        if flags & PREV_KEY != 0 {
            put_bytes(out, p.key);
        }
        put_bytes(out, p.value);
    }
}

/// Reads what [`encode`] wrote (the arena's own bytes: well formed by construction).
struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.buf[self.at];
        self.at += 1;
        b
    }

    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn bytes(&mut self) -> &'a [u8] {
        let n = self.varint() as usize;
        let b = &self.buf[self.at..self.at + n];
        self.at += n;
        b
    }

    fn event(&mut self) -> EventRef<'a> {
        let flags = self.byte();
        let sub = self.varint() as u32;
        let (create_revision, mod_revision, version) = (self.varint(), self.varint(), self.varint());
        let lease = if flags & LEASE != 0 { self.varint() as i64 } else { 0 };
        let key = self.bytes();
        let value = self.bytes();
        let kv = KvRef { key, value, create_revision, mod_revision, version, lease };
        let prev_kv = (flags & PREV != 0).then(|| {
            let (create_revision, mod_revision, version) = (self.varint(), self.varint(), self.varint());
            let lease = if flags & PREV_LEASE != 0 { self.varint() as i64 } else { 0 };
            let key = if flags & PREV_KEY != 0 { self.bytes() } else { key };
            KvRef { key, value: self.bytes(), create_revision, mod_revision, version, lease }
        });
        let kind = if flags & DELETE != 0 { EventKind::Delete } else { EventKind::Put };
        EventRef { kind, kv, prev_kv, sub }
    }
}

impl Arena {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn chunk_of(&self, i: usize) -> usize {
        self.firsts.partition_point(|&f| f as usize <= i) - 1
    }

    fn event_in(&self, chunk: usize, i: usize) -> EventRef<'_> {
        Decoder { buf: &self.chunks[chunk], at: self.starts[i] as usize }.event()
    }
}

/// Builds a [`RevisionBatch`] event by event, into chunks that are never moved:
/// the chunks hold what they will keep (a chunk is sized from `hint`, the bytes
/// expected, and from what is written so far, at most [`CHUNK_MAX`] unless one
/// event needs more), so a huge revision costs no growing copy.
pub(crate) struct BatchBuilder {
    revision: u64,
    has_prev_kv: bool,
    size: usize,
    hint: usize,
    written: usize,
    arena: Arena,
}

impl BatchBuilder {
    /// A builder for `events` events of about `hint` encoded bytes.
    pub(crate) fn new(revision: u64, has_prev_kv: bool, events: usize, hint: usize) -> Self {
        let arena = Arena { chunks: Vec::new(), starts: Vec::with_capacity(events), firsts: Vec::new() };
        BatchBuilder { revision, has_prev_kv, size: 0, hint, written: 0, arena }
    }

    /// Bytes event `e` takes in a batch (for hints).
    pub(crate) fn event_len(e: &EventRef<'_>) -> usize {
        encoded_len(e)
    }

    /// Appends event `e`.
    pub(crate) fn push(&mut self, e: &EventRef<'_>) {
        let need = encoded_len(e);
        let a = &mut self.arena;
        let fits = a.chunks.last().is_some_and(|c| c.capacity() - c.len() >= need);
        if !fits {
            let cap = need.max(self.hint.saturating_sub(self.written).max(self.written).min(CHUNK_MAX));
            // Chunks are made here, just before an event is written to them, so
            // none is left empty.
            a.chunks.push(Vec::with_capacity(cap));
            a.firsts.push(u32::try_from(a.starts.len()).expect("a revision has fewer than 2^32 events"));
        }
        let c = a.chunks.last_mut().expect("a chunk");
        a.starts.push(u32::try_from(c.len()).expect("a chunk holds less than 4 GiB"));
        encode(c, e);
        debug_assert_eq!(c.len() - *a.starts.last().expect("pushed") as usize, need);
        self.written += need;
        self.size += e.approx_size();
    }

    /// The batch.
    pub(crate) fn finish(mut self) -> RevisionBatch {
        let a = &mut self.arena;
        if let Some(c) = a.chunks.last_mut() {
            // A last chunk mostly unused gives its room back (one copy of at most
            // a chunk).
            if c.capacity() - c.len() > c.len() / 4 {
                c.shrink_to_fit();
            }
        }
        a.starts.shrink_to_fit();
        RevisionBatch {
            revision: self.revision,
            has_prev_kv: self.has_prev_kv,
            size: self.size,
            encoded: Default::default(),
            events: self.arena,
        }
    }
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
        let refs = events.iter().map(EventRef::from);
        let hint = refs.clone().map(|e| encoded_len(&e)).sum();
        let mut b = BatchBuilder::new(revision, has_prev_kv, events.len(), hint);
        for e in refs {
            b.push(&e);
        }
        b.finish()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it has no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event `i` (in sub-revision order).
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn event(&self, i: usize) -> EventRef<'_> {
        assert!(i < self.len(), "event {i} of a batch of {}", self.len());
        self.events.event_in(self.events.chunk_of(i), i)
    }

    /// Every event, in sub-revision order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + Clone + '_ {
        let a = &self.events;
        let mut chunk = 0;
        (0..a.len()).map(move |i| {
            while a.firsts.get(chunk + 1).is_some_and(|&f| f as usize <= i) {
                chunk += 1;
            }
            a.event_in(chunk, i)
        })
    }

    /// Heap bytes the events take (chunks and offsets; not the memo).
    pub fn heap_bytes(&self) -> usize {
        let a = &self.events;
        a.chunks.iter().map(Vec::capacity).sum::<usize>()
            + 4 * (a.starts.capacity() + a.firsts.capacity())
            + std::mem::size_of::<Vec<u8>>() * a.chunks.capacity()
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
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> + '_ {
        let (all, picked) = match &self.selection {
            None => (Some(self.batch.events()), None),
            Some(s) => (None, Some(s.iter().map(|&i| self.batch.event(i as usize)))),
        };
        all.into_iter().flatten().chain(picked.into_iter().flatten())
    }

    /// Number of selected events.
    pub fn len(&self) -> usize {
        self.selection.as_ref().map_or(self.batch.len(), |s| s.len())
    }

    /// Whether no event is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes of the selected events.
    pub fn size(&self) -> usize {
        match &self.selection {
            None => self.batch.size,
            Some(_) => self.iter().map(|e| e.approx_size()).sum(),
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
    /// Why it was canceled; empty for a compaction (`compact_revision` says it, as
    /// in etcd 3.4) and for a cancel the client asked for.
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
        self.events.iter().flat_map(|r| r.iter()).map(move |mut e| {
            if !self.prev_kv {
                e.prev_kv = None;
            }
            e.to_event()
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

#[cfg(test)]
mod batch_tests {
    use super::*;

    fn kv(key: &[u8], value: Vec<u8>, rev: u64) -> KeyValue {
        let lease = if rev.is_multiple_of(3) { -(rev as i64) } else { (rev % 5) as i64 * 0x694d_7c3b_3f5c };
        KeyValue { key: key.to_vec(), value, create_revision: rev / 2, mod_revision: rev, version: rev % 7, lease }
    }

    /// Events of every shape: puts and deletes, with and without prev_kv, a prev
    /// key that differs, empty and huge values, large revisions (multi-byte
    /// varints), enough bytes for several chunks, and one event larger than a chunk.
    fn events() -> Vec<Event> {
        let mut v = Vec::new();
        for i in 0..30_000u64 {
            let key = format!("k{i:06}").into_bytes();
            let value = vec![b'a' + (i % 26) as u8; (i % 90) as usize];
            let prev = match i % 4 {
                0 => None,
                1 => Some(kv(&key, vec![1; 3], i << 40)),
                2 => Some(kv(b"other", Vec::new(), 0)),
                _ => Some(kv(&key, vec![2; 1000], u64::MAX)),
            };
            let kind = if i % 3 == 0 { EventKind::Delete } else { EventKind::Put };
            v.push(Event { kind, kv: kv(&key, value, i * 1_000_003), prev_kv: prev, sub: i as u32 });
        }
        let big = vec![7u8; CHUNK_MAX + 10];
        v.insert(
            12_345,
            Event { kind: EventKind::Put, kv: kv(b"big", big.clone(), 9), prev_kv: Some(kv(b"big", big, 8)), sub: 0 },
        );
        v
    }

    #[test]
    fn a_batch_gives_back_every_event_as_built() {
        let ev = events();
        let b = RevisionBatch::new(5, ev.clone(), true);
        assert!(b.events.chunks.len() > 2, "several chunks: {}", b.events.chunks.len());
        assert_eq!(b.len(), ev.len());
        let back: Vec<Event> = b.events().map(|e| e.to_event()).collect();
        assert_eq!(back, ev);
        for i in [0, 1, 12_344, 12_345, 12_346, ev.len() - 1] {
            assert_eq!(b.event(i).to_event(), ev[i], "event {i}");
        }
        assert_eq!(b.size, ev.iter().map(Event::approx_size).sum::<usize>());
        let sel: Arc<[u32]> = vec![3, 12_345, 29_000].into();
        let re = RevisionEvents { batch: Arc::new(b), selection: Some(sel) };
        let picked: Vec<Event> = re.iter().map(|e| e.to_event()).collect();
        assert_eq!(picked, vec![ev[3].clone(), ev[12_345].clone(), ev[29_000].clone()]);
        assert_eq!(re.size(), picked.iter().map(Event::approx_size).sum::<usize>());
    }

    #[test]
    fn small_batches_take_what_they_hold() {
        let e = Event { kind: EventKind::Put, kv: kv(b"key", vec![1; 10], 3), prev_kv: None, sub: 0 };
        let b = RevisionBatch::new(3, vec![e.clone()], false);
        assert_eq!(b.events.chunks.len(), 1);
        assert_eq!(b.events.chunks[0].capacity(), b.events.chunks[0].len());
        assert_eq!(b.event(0).to_event(), e);
        let empty = RevisionBatch::new(3, Vec::new(), false);
        assert!(empty.is_empty());
        assert_eq!(empty.events().count(), 0);
    }
}
