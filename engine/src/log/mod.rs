//! The revision log: an append-only sequence of segment files holding every event
//! of every revision, read zero-copy through read-only memory maps.
//!
//! Data flow of one append (writes are serialized by the store):
//! 1. [`RevisionLog::append`] encodes the revision's records, writes them after the
//!    last record of the active segment (rolling to a new segment when they do not
//!    fit) and queues the revision for commit;
//! 2. [`RevisionLog::wait_durable`] returns once the revision is committed: at once
//!    under [`FsyncPolicy::Never`], after one shared fsync under `Always` and `Batch`
//!    (group commit, in `commit.rs`: one writer at a time syncs everything queued,
//!    then wakes exactly the writers it made durable and hands its role to one
//!    writer whose revision came in meanwhile; [`RevisionLog::commit_stats`] counts
//!    the groups);
//! 3. commit publishes, in revision order, the segment's committed length and then
//!    `committed_rev`, both with `Release`. Readers load `committed_rev` with
//!    `Acquire` and never look past it.
//!
//! A write or fsync error poisons the log: the revision that failed and every later
//! one are never published (nor, once the log is poisoned, any revision not yet
//! published), and later appends fail with [`Error::Poisoned`].
//! Mappings are never remapped or truncated; compaction removes whole segments from
//! the list, and readers holding the old list keep reading them.

mod commit;
pub mod record;
mod segment;
pub mod storage;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use commit::{CommitStats, GROUP_SIZE_BOUNDS};
use record::{RecordData, RecordKind, RecordRef, FILE_HEADER, SEGMENT_MAGIC, SNAPSHOT_MAGIC};
use segment::Segment;
pub use storage::{CrashMode, FileStorage, MemStorage, Storage, StorageFile};

use crate::error::{Error, Result};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Arc, Mutex, SwapCell, Weak};

/// When an appended revision is made durable before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging; writers waiting at the same time share one fsync.
    Always,
    /// Like `Always`, but the fsync waits for more writers to share it: in slices of
    /// an eighth of `LogOptions::batch_delay`, until a slice brings nobody new, the
    /// delay has passed, or `batch_bytes` are pending.
    Batch,
    /// Acknowledge once written to the page cache; only segment seals and snapshots
    /// are fsynced. A crash may lose acknowledged writes, never corrupt older ones.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!("unknown fsync policy {other:?} (expected always, batch or never)")),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Never => "never",
        })
    }
}

/// Settings of the log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Size a new segment file is created with (a revision larger than this gets a
    /// segment of its own, as large as it needs).
    pub segment_size: u64,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Longest wait for company before a `Batch` fsync.
    pub batch_delay: Duration,
    /// Pending bytes that start a `Batch` fsync without waiting.
    pub batch_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: 64 << 20,
            fsync: FsyncPolicy::Always,
            batch_delay: Duration::from_millis(2),
            batch_bytes: 1 << 20,
        }
    }
}

/// Where a record lives: file number and byte offset, packed in a `u64`
/// (24 bits of file number, 40 bits of offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc(pub u64);

impl Loc {
    pub(crate) fn new(file_no: u32, offset: u64) -> Loc {
        debug_assert!(offset < (1 << 40) && file_no < (1 << 24));
        Loc(((file_no as u64) << 40) | offset)
    }
    /// The number of the file (unique in the log while it is open).
    pub fn file_no(self) -> u32 {
        (self.0 >> 40) as u32
    }
    /// The byte offset in that file.
    pub fn offset(self) -> u64 {
        self.0 & ((1 << 40) - 1)
    }
}

/// One event to append (the log fills in revisions and flags).
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// PUT or DELETE.
    pub kind: RecordKind,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for DELETE).
    pub value: &'a [u8],
    /// Create revision of the key's generation (0 for DELETE).
    pub create_revision: u64,
    /// Version after this event (0 for DELETE).
    pub version: u64,
}

/// A record copied out of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Main revision.
    pub main: u64,
    /// Sub revision.
    pub sub: u32,
    /// Kind.
    pub kind: RecordKind,
    /// Create revision.
    pub create_revision: u64,
    /// Mod revision.
    pub mod_revision: u64,
    /// Version.
    pub version: u64,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

impl From<RecordRef<'_>> for OwnedRecord {
    fn from(r: RecordRef<'_>) -> Self {
        OwnedRecord {
            main: r.main,
            sub: r.sub,
            kind: r.kind,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
            key: r.key.to_vec(),
            value: r.value.to_vec(),
        }
    }
}

/// A base snapshot file published to readers.
pub(crate) struct SnapshotFile {
    pub(crate) file_no: u32,
    pub(crate) rev: u64,
    map: storage::Mapping,
    len: u64,
}

impl SnapshotFile {
    fn record_at(&self, offset: u64) -> Option<RecordRef<'_>> {
        // SAFETY: a snapshot file is complete and fsynced before it is opened and is
        // never written again.
        let bytes = unsafe { self.map.bytes(offset as usize, (self.len - offset) as usize) }?;
        record::decode(bytes).ok().map(|(r, _)| r)
    }
}

/// The files a reader may look at; replaced as a whole (copy on write).
pub(crate) struct FileSet {
    segments: Vec<Arc<Segment>>,
    /// Base snapshots, oldest first: during a compaction the previous one stays until
    /// every index entry has moved to the new one (`drop_before`).
    snapshots: Vec<Arc<SnapshotFile>>,
}

impl FileSet {
    fn snapshot_for(&self, file_no: u32) -> Option<&Arc<SnapshotFile>> {
        self.snapshots.iter().find(|s| s.file_no == file_no)
    }
}

struct WriterState {
    active: Arc<Segment>,
    write_off: u64,
    last_rev: u64,
    next_file_no: u32,
    buf: Vec<u8>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    opts: LogOptions,
    files: SwapCell<FileSet>,
    committed_rev: AtomicU64,
    writer: Mutex<WriterState>,
    /// The group commit's state (see the `commit` module).
    sync: Mutex<commit::SyncState>,
    poisoned: AtomicBool,
    poison_reason: Mutex<String>,
    /// Called after every publish of `committed_rev` (the watch notifier's doorbell).
    listeners: Mutex<Vec<CommitListener>>,
    /// Revisions readers still need (see [`RetentionHold`]).
    holds: Mutex<Vec<Weak<AtomicU64>>>,
}

/// Keeps the log from deleting segments at or after a revision, whatever the
/// compaction revision: the watch notifier holds one at its next revision, so a
/// compaction that runs ahead of it cannot delete events it has yet to deliver.
/// Segments it held back go at a later compaction (or reopen).
pub struct RetentionHold(Arc<AtomicU64>);

impl RetentionHold {
    /// Moves the hold to `rev`.
    pub fn set(&self, rev: u64) {
        self.0.store(rev, Ordering::Release);
    }
}

/// A callback run after `committed_rev` advances; it must be quick and not block.
pub type CommitListener = Arc<dyn Fn() + Send + Sync>;

/// The append-only, memory-mapped revision log.
///
/// # Examples
///
/// ```
/// use argus_engine::log::{RevisionLog, LogOptions, MemStorage, Event, record::RecordKind};
/// use std::sync::Arc;
///
/// let (log, _recovered) = RevisionLog::open(Arc::new(MemStorage::new()), LogOptions::default()).unwrap();
/// let ticket = log.append(2, &[Event { kind: RecordKind::Put, key: b"a", value: b"1",
///     create_revision: 2, version: 1 }], |_locs| {}).unwrap();
/// log.wait_durable(ticket).unwrap();
/// assert_eq!(log.committed_rev(), 2);
/// let snap = log.reader();
/// let recs: Vec<_> = snap.records(2, 2).map(|r| r.unwrap().1.key.to_vec()).collect();
/// assert_eq!(recs, vec![b"a".to_vec()]);
/// ```
#[derive(Clone)]
pub struct RevisionLog {
    inner: Arc<Inner>,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Compaction revision from the newest snapshot (0: none).
    pub compact_rev: u64,
    /// Last complete revision in the log.
    pub last_rev: u64,
    /// Bytes of torn tail overwritten with zeros.
    pub torn_bytes: u64,
    /// Files deleted as leftovers (temporary snapshots, compacted segments, empty tails).
    pub removed_files: Vec<String>,
}

/// Proof that a revision was appended; pass it to [`RevisionLog::wait_durable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an appended revision is not acknowledged until wait_durable returns"]
pub struct Ticket {
    /// The appended main revision.
    pub rev: u64,
}

fn segment_name(first_rev: u64) -> String {
    format!("seg-{first_rev:020}.log")
}

pub(crate) fn snapshot_name(rev: u64) -> String {
    format!("snap-{rev:020}.snap")
}

fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

fn corrupt(storage: &dyn Storage, name: &str, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt { file: storage.path(name), offset, reason: reason.into() }
}

impl RevisionLog {
    /// Opens the log in `storage`, recovering it (see `engine/FORMAT.md`, Recovery).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when a record other than a torn tail fails its checks,
    /// [`Error::Io`] on I/O failure, [`Error::InvalidOptions`] for bad options.
    pub fn open(storage: Arc<dyn Storage>, opts: LogOptions) -> Result<(RevisionLog, Recovered)> {
        if opts.segment_size < 4096 || opts.segment_size >= (1 << 40) {
            return Err(Error::InvalidOptions(format!(
                "segment size {} must be between 4 KiB and 1 TiB",
                opts.segment_size
            )));
        }
        let mut rec = Recovered::default();
        let names = storage.list().map_err(|e| Error::io("list data directory", e))?;
        let mut seg_names: Vec<(u64, String)> = Vec::new();
        let mut snaps: Vec<(u64, String)> = Vec::new();
        for name in names {
            if let Some(r) = parse_name(&name, "seg-", ".log") {
                seg_names.push((r, name));
            } else if let Some(r) = parse_name(&name, "snap-", ".snap") {
                snaps.push((r, name));
            } else if parse_name(&name, "snap-", ".tmp").is_some() {
                storage.remove(&name).map_err(|e| Error::io(format!("remove {name}"), e))?;
                rec.removed_files.push(name);
            }
        }
        seg_names.sort();
        snaps.sort();
        let mut next_file_no: u32 = 1;

        // The newest snapshot fixes the compaction revision; older ones are leftovers.
        let snapshot = match snaps.pop() {
            Some((rev, name)) => {
                let s = open_snapshot(&*storage, &name, rev, next_file_no)?;
                next_file_no += 1;
                rec.compact_rev = rev;
                Some(Arc::new(s))
            }
            None => None,
        };
        for (_, name) in snaps {
            storage.remove(&name).map_err(|e| Error::io(format!("remove {name}"), e))?;
            rec.removed_files.push(name);
        }

        // Segments wholly below the compaction revision are leftovers of a compaction
        // that a crash interrupted.
        let mut keep: Vec<(u64, String)> = Vec::new();
        for (i, (first, name)) in seg_names.iter().enumerate() {
            let next_first = seg_names.get(i + 1).map(|(f, _)| *f);
            if next_first.is_some_and(|nf| nf - 1 < rec.compact_rev) {
                storage.remove(name).map_err(|e| Error::io(format!("remove {name}"), e))?;
                rec.removed_files.push(name.clone());
            } else {
                keep.push((*first, name.clone()));
            }
        }

        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut expect_rev: Option<u64> = None;
        let mut last_rev = rec.compact_rev.max(1);
        let mut end_off = FILE_HEADER as u64;
        let count = keep.len();
        for (i, (first, name)) in keep.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let file = storage.open(&name).map_err(|e| Error::io(format!("open {name}"), e))?;
            let map = file.map().map_err(|e| Error::io(format!("map {name}"), e))?;
            // SAFETY: no writer exists during recovery.
            let head = unsafe { map.bytes(0, FILE_HEADER.min(map.len())) }.unwrap_or(&[]);
            if is_last && head.iter().all(|&b| b == 0) {
                // Created but never synced before a crash: nothing in it was acknowledged.
                drop(map);
                storage.remove(&name).map_err(|e| Error::io(format!("remove {name}"), e))?;
                rec.removed_files.push(name);
                continue;
            }
            let hdr_rev =
                record::decode_file_header(head, SEGMENT_MAGIC).map_err(|r| corrupt(&*storage, &name, 0, r))?;
            if hdr_rev != first {
                return Err(corrupt(
                    &*storage,
                    &name,
                    16,
                    format!("header says first revision {hdr_rev}, file name says {first}"),
                ));
            }
            if let Some(e) = expect_rev {
                if first != e {
                    return Err(corrupt(
                        &*storage,
                        &name,
                        0,
                        format!("gap in the log: segment starts at revision {first}, expected {e}"),
                    ));
                }
            } else if first > rec.compact_rev.max(1) + 1 {
                return Err(corrupt(
                    &*storage,
                    &name,
                    0,
                    format!(
                        "first segment starts at revision {first}, but revisions after {} are missing",
                        rec.compact_rev.max(1)
                    ),
                ));
            }
            let seg = Segment::new(next_file_no, first, name.clone(), file, map);
            next_file_no += 1;
            let scan = scan_segment(&*storage, &seg, is_last)?;
            if scan.torn_bytes > 0 {
                tracing::warn!(file = %name, offset = scan.end, bytes = scan.torn_bytes, "truncating torn tail");
                let zeros = vec![0u8; scan.torn_bytes as usize];
                seg.file
                    .write_at(scan.end, &zeros)
                    .and_then(|()| seg.file.sync())
                    .map_err(|e| Error::io(format!("truncate torn tail of {name}"), e))?;
                rec.torn_bytes += scan.torn_bytes;
            }
            seg.publish(scan.end);
            if scan.last_rev != 0 {
                last_rev = last_rev.max(scan.last_rev);
                expect_rev = Some(scan.last_rev + 1);
            } else {
                expect_rev = Some(first);
            }
            end_off = scan.end;
            segments.push(Arc::new(seg));
        }

        if !segments.is_empty() && expect_rev.is_some_and(|e| e <= rec.compact_rev) {
            // The log ends before the snapshot's revision: under `fsync=never` a crash
            // lost records the snapshot already holds. Every revision left in these
            // segments is at or below the snapshot, so they go, and the log goes on
            // from the snapshot's revision.
            tracing::warn!(compact_rev = rec.compact_rev, "log ends before the base snapshot; restarting it there");
            for seg in segments.drain(..) {
                storage.remove(&seg.name).map_err(|e| Error::io(format!("remove {}", seg.name), e))?;
                rec.removed_files.push(seg.name.clone());
            }
        }
        let inner_storage = Arc::clone(&storage);
        let (active, write_off) = match segments.last() {
            Some(s) => (Arc::clone(s), end_off),
            None => {
                let seg = create_segment(&*storage, next_file_no, last_rev + 1, opts.segment_size)?;
                next_file_no += 1;
                let seg = Arc::new(seg);
                segments.push(Arc::clone(&seg));
                (seg, FILE_HEADER as u64)
            }
        };
        rec.last_rev = last_rev;
        let inner = Inner {
            storage: inner_storage,
            opts,
            files: SwapCell::new(Arc::new(FileSet { segments, snapshots: snapshot.into_iter().collect() })),
            committed_rev: AtomicU64::new(last_rev),
            writer: Mutex::new(WriterState { active, write_off, last_rev, next_file_no, buf: Vec::new() }),
            sync: Mutex::new(commit::SyncState::new()),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(String::new()),
            listeners: Mutex::new(Vec::new()),
            holds: Mutex::new(Vec::new()),
        };
        Ok((RevisionLog { inner: Arc::new(inner) }, rec))
    }

    /// The options the log runs with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.opts
    }

    /// The last revision readers may see: complete and, under a durable policy, synced.
    pub fn committed_rev(&self) -> u64 {
        self.inner.committed_rev.load(Ordering::Acquire)
    }

    /// Whether an earlier failure made the log refuse writes.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self, reason: String) -> Error {
        tracing::error!(%reason, "revision log poisoned");
        let mut r = lock(&self.inner.poison_reason);
        if r.is_empty() {
            *r = reason.clone();
        }
        self.inner.poisoned.store(true, Ordering::Release);
        Error::Poisoned(r.clone())
    }

    fn poisoned_error(&self) -> Error {
        Error::Poisoned(lock(&self.inner.poison_reason).clone())
    }

    /// Appends revision `rev` with `events` (in sub-revision order). `rev` must be the
    /// previous appended revision + 1 and `events` non-empty: the store guarantees both
    /// and calls this with its write lock held. `before_commit` runs with the
    /// records' locations after they are written and before the revision can be
    /// published: whatever readers must find at that revision goes in there.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] after an earlier failure; a write error poisons the log.
    ///
    /// # Panics
    ///
    /// If `rev` does not follow the last appended revision or `events` is empty.
    pub fn append(&self, rev: u64, events: &[Event<'_>], before_commit: impl FnOnce(&[Loc])) -> Result<Ticket> {
        assert!(!events.is_empty(), "a revision has at least one event");
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        let inner = &*self.inner;
        let mut w = lock(&inner.writer);
        assert_eq!(rev, w.last_rev + 1, "revisions are appended in order");
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let mut offsets = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            offsets.push(buf.len() as u64);
            record::encode(
                &RecordData {
                    main: rev,
                    sub: i as u32,
                    kind: e.kind,
                    last: i + 1 == events.len(),
                    create_revision: e.create_revision,
                    mod_revision: rev,
                    version: e.version,
                    key: e.key,
                    value: e.value,
                },
                &mut buf,
            );
        }
        let len = buf.len() as u64;
        let written = self.write_locked(&mut w, rev, &buf);
        w.buf = buf;
        let (seg, start) = written?;
        let locs: Vec<Loc> = offsets.into_iter().map(|o| Loc::new(seg.file_no, start + o)).collect();
        // Whatever must be in place when readers can see the revision (the store's
        // index entries) is done before it can be published.
        before_commit(&locs);
        self.queue_commit(rev, seg, start + len, len);
        Ok(Ticket { rev })
    }

    /// The record at `loc`, copied, whether or not it is committed yet: for the
    /// store's writer, which must see its own earlier writes before they are durable.
    pub fn read_written(&self, loc: Loc) -> Option<OwnedRecord> {
        let w = lock(&self.inner.writer);
        let files = self.inner.files.load();
        let no = loc.file_no();
        if let Some(s) = files.snapshot_for(no) {
            return s.record_at(loc.offset()).map(OwnedRecord::from);
        }
        let i = files.segments.binary_search_by_key(&no, |s| s.file_no).ok()?;
        let seg = &files.segments[i];
        let end = if Arc::ptr_eq(seg, &w.active) { w.write_off } else { seg.capacity() };
        // SAFETY: bytes below the active segment's write offset, and all bytes of a
        // sealed segment, are never written again; the writer lock is held, so no
        // append races with this read.
        let bytes = unsafe { seg.bytes_upto(loc.offset(), end) }?;
        record::decode(bytes).ok().map(|(r, _)| OwnedRecord::from(r))
    }

    /// Writes one revision's bytes after the last record; returns the segment and
    /// the offset they start at. Nothing is published yet.
    fn write_locked(&self, w: &mut WriterState, rev: u64, bytes: &[u8]) -> Result<(Arc<Segment>, u64)> {
        let len = bytes.len() as u64;
        if w.write_off + len > w.active.capacity() {
            self.roll(w, rev, len)?;
        }
        let seg = Arc::clone(&w.active);
        let off = w.write_off;
        // Seeded bug: publishes the revision before its bytes are written.
        #[cfg(argus_bug = "publish-before-write")]
        if self.inner.opts.fsync == FsyncPolicy::Never {
            seg.publish(off + len);
            self.publish_committed(rev);
        }
        if let Err(e) = seg.file.write_at(off, bytes) {
            return Err(self.poison(format!("write to {} at offset {off}: {e}", seg.name)));
        }
        seg.note_revision_start(rev, off);
        w.write_off = off + len;
        w.last_rev = rev;
        Ok((seg, off))
    }

    fn publish_committed(&self, rev: u64) {
        self.inner.committed_rev.store(rev, Ordering::Release);
        for l in lock(&self.inner.listeners).iter() {
            l();
        }
    }

    /// A hold on every revision from `rev` on (see [`RetentionHold`]).
    pub fn hold_from(&self, rev: u64) -> RetentionHold {
        let h = Arc::new(AtomicU64::new(rev));
        let mut holds = lock(&self.inner.holds);
        holds.retain(|w| w.strong_count() > 0);
        holds.push(Arc::downgrade(&h));
        RetentionHold(h)
    }

    /// Registers `f` to run after every advance of `committed_rev`.
    pub fn add_commit_listener(&self, f: CommitListener) {
        lock(&self.inner.listeners).push(f);
    }

    /// Seals the active segment (fsync) and starts a new one at `rev`.
    fn roll(&self, w: &mut WriterState, rev: u64, need: u64) -> Result<()> {
        let inner = &*self.inner;
        if let Err(e) = w.active.file.sync() {
            return Err(self.poison(format!("fsync of {} when sealing it: {e}", w.active.name)));
        }
        let size = inner.opts.segment_size.max((FILE_HEADER as u64 + need).next_multiple_of(4096));
        let seg = match create_segment(&*inner.storage, w.next_file_no, rev, size) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(self.poison(format!("create segment for revision {rev}: {e}"))),
        };
        w.next_file_no += 1;
        let old = inner.files.load();
        let mut segments = old.segments.clone();
        segments.push(Arc::clone(&seg));
        inner.files.store(Arc::new(FileSet { segments, snapshots: old.snapshots.clone() }));
        w.active = seg;
        w.write_off = FILE_HEADER as u64;
        Ok(())
    }

    /// Makes everything written so far durable (used at shutdown under `Never`).
    ///
    /// # Errors
    ///
    /// I/O errors of the fsync (which also poison the log).
    pub fn flush(&self) -> Result<()> {
        let w = lock(&self.inner.writer);
        if let Err(e) = w.active.file.sync() {
            return Err(self.poison(format!("fsync of {}: {e}", w.active.name)));
        }
        Ok(())
    }

    /// A consistent read view of every committed record.
    pub fn reader(&self) -> LogReader {
        let committed = self.committed_rev();
        let files = self.inner.files.load();
        LogReader { files, committed }
    }

    /// The first revision whose events the log still holds.
    pub fn first_rev(&self) -> u64 {
        self.inner.files.load().segments.first().map_or(1, |s| s.first_rev)
    }

    /// Writes and fsyncs the base snapshot for compaction revision `rev` from
    /// `records` (every live key at `rev`, in key order, each a record with its own
    /// revisions), publishes it to readers, and returns the new [`Loc`] of each
    /// record in order.
    pub(crate) fn write_snapshot<'a>(
        &self,
        rev: u64,
        records: impl Iterator<Item = RecordData<'a>>,
    ) -> Result<Vec<Loc>> {
        let inner = &*self.inner;
        let storage = &*inner.storage;
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&record::encode_file_header(SNAPSHOT_MAGIC, rev));
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(buf.len() as u64);
            record::encode(&r, &mut buf);
        }
        let count = offsets.len() as u64;
        record::encode(
            &RecordData {
                main: rev,
                sub: 0,
                kind: RecordKind::End,
                last: true,
                create_revision: 0,
                mod_revision: rev,
                version: 0,
                key: b"",
                value: &count.to_le_bytes(),
            },
            &mut buf,
        );
        let name = snapshot_name(rev);
        let tmp = format!("snap-{rev:020}.tmp");
        let io = |what: &str, e| Error::io(format!("{what} {tmp}"), e);
        let file = storage.create(&tmp, buf.len() as u64).map_err(|e| io("create", e))?;
        file.write_at(0, &buf).map_err(|e| io("write", e))?;
        file.sync().map_err(|e| io("fsync", e))?;
        drop(file);
        storage.rename(&tmp, &name).map_err(|e| io("rename", e))?;
        storage.sync_dir().map_err(|e| io("sync directory after", e))?;
        // The file set is replaced under the writer lock, like every change of it,
        // so a segment roll racing this publish cannot lose either update.
        let mut w = lock(&inner.writer);
        let file_no = w.next_file_no;
        w.next_file_no += 1;
        let snap = Arc::new(open_snapshot(storage, &name, rev, file_no)?);
        let old = inner.files.load();
        let mut snapshots = old.snapshots.clone();
        snapshots.push(snap);
        inner.files.store(Arc::new(FileSet { segments: old.segments.clone(), snapshots }));
        drop(w);
        Ok(offsets.into_iter().map(|o| Loc::new(file_no, o)).collect())
    }

    /// After a snapshot at `rev` is installed and every reference to older records
    /// has moved to it: drops segments wholly below `rev` and older snapshots.
    pub(crate) fn drop_before(&self, rev: u64) -> Result<()> {
        let inner = &*self.inner;
        let _w = lock(&inner.writer); // excludes a concurrent roll
        let held = lock(&inner.holds).iter().filter_map(|w| w.upgrade()).map(|h| h.load(Ordering::Acquire)).min();
        let seg_floor = held.map_or(rev, |h| h.min(rev));
        let old = inner.files.load();
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for (i, s) in old.segments.iter().enumerate() {
            let next_first = old.segments.get(i + 1).map(|n| n.first_rev);
            if next_first.is_some_and(|nf| nf - 1 < seg_floor) {
                drop.push(s.name.clone());
            } else {
                keep.push(Arc::clone(s));
            }
        }
        let snapshots = old.snapshots.iter().filter(|s| s.rev >= rev).cloned().collect();
        inner.files.store(Arc::new(FileSet { segments: keep, snapshots }));
        let storage = &*inner.storage;
        let names = storage.list().map_err(|e| Error::io("list data directory", e))?;
        for n in names {
            if parse_name(&n, "snap-", ".snap").is_some_and(|r| r < rev) {
                drop.push(n);
            }
        }
        for n in &drop {
            storage.remove(n).map_err(|e| Error::io(format!("remove {n}"), e))?;
        }
        storage.sync_dir().map_err(|e| Error::io("sync data directory", e))?;
        Ok(())
    }
}

fn create_segment(storage: &dyn Storage, file_no: u32, first_rev: u64, size: u64) -> Result<Segment> {
    let name = segment_name(first_rev);
    let io = |what: &str, e| Error::io(format!("{what} {name}"), e);
    let file = storage.create(&name, size).map_err(|e| io("create", e))?;
    file.write_at(0, &record::encode_file_header(SEGMENT_MAGIC, first_rev)).map_err(|e| io("write header of", e))?;
    file.sync().map_err(|e| io("fsync", e))?;
    storage.sync_dir().map_err(|e| io("sync directory after creating", e))?;
    let map = file.map().map_err(|e| io("map", e))?;
    Ok(Segment::new(file_no, first_rev, name.clone(), file, map))
}

fn open_snapshot(storage: &dyn Storage, name: &str, rev: u64, file_no: u32) -> Result<SnapshotFile> {
    let file = storage.open(name).map_err(|e| Error::io(format!("open {name}"), e))?;
    let map = file.map().map_err(|e| Error::io(format!("map {name}"), e))?;
    let len = map.len() as u64;
    // SAFETY: a snapshot is never written after its rename.
    let bytes = unsafe { map.bytes(0, map.len()) }.unwrap_or(&[]);
    let hdr = record::decode_file_header(bytes, SNAPSHOT_MAGIC).map_err(|r| corrupt(storage, name, 0, r))?;
    if hdr != rev {
        return Err(corrupt(storage, name, 16, format!("header says revision {hdr}, name says {rev}")));
    }
    let mut off = FILE_HEADER;
    let mut count = 0u64;
    loop {
        match record::decode(&bytes[off..]) {
            Ok((r, n)) if r.kind == RecordKind::End => {
                let mut c = [0u8; 8];
                if r.value.len() != 8 {
                    return Err(corrupt(storage, name, off as u64, "END record without a count"));
                }
                c.copy_from_slice(r.value);
                if u64::from_le_bytes(c) != count {
                    return Err(corrupt(storage, name, off as u64, "END count does not match the records"));
                }
                let _ = n;
                break;
            }
            Ok((r, n)) => {
                if r.kind != RecordKind::Put || r.mod_revision > rev {
                    return Err(corrupt(
                        storage,
                        name,
                        off as u64,
                        "snapshot record is not a PUT at or below its revision",
                    ));
                }
                count += 1;
                off += n;
            }
            Err(e) => return Err(corrupt(storage, name, off as u64, e.to_string())),
        }
    }
    Ok(SnapshotFile { file_no, rev, map, len })
}

struct Scan {
    end: u64,
    last_rev: u64,
    torn_bytes: u64,
}

/// Validates a segment's records and builds its sparse index (FORMAT.md, Recovery).
fn scan_segment(storage: &dyn Storage, seg: &Segment, is_last: bool) -> Result<Scan> {
    // SAFETY: recovery runs before any writer exists.
    let bytes = unsafe { seg.whole() };
    let mut off = FILE_HEADER;
    let mut rev_start = off; // offset of the first record of the revision being read
    let mut expect_main = seg.first_rev;
    let mut expect_sub = 0u32;
    let mut last_complete = 0u64;
    let mut complete_end = off;
    let bad = loop {
        if off >= bytes.len() {
            break None;
        }
        match record::decode(&bytes[off..]) {
            Ok((r, n)) => {
                let in_order = r.kind != RecordKind::End && r.main == expect_main && r.sub == expect_sub;
                if !in_order {
                    break Some((
                        off,
                        format!(
                            "record revision {}.{} out of order (expected {expect_main}.{expect_sub})",
                            r.main, r.sub
                        ),
                    ));
                }
                if expect_sub == 0 {
                    rev_start = off;
                }
                off += n;
                if r.last {
                    seg.note_revision_start(r.main, rev_start as u64);
                    last_complete = r.main;
                    complete_end = off;
                    expect_main += 1;
                    expect_sub = 0;
                } else {
                    expect_sub += 1;
                }
            }
            Err(record::DecodeError::Empty) => {
                if bytes[off..].iter().all(|&b| b == 0) {
                    break None;
                }
                break Some((off, "zero length field followed by nonzero bytes".to_string()));
            }
            Err(e) => break Some((off, e.to_string())),
        }
    };
    // An incomplete revision at the end is torn, like a bad record there.
    let tail_start = complete_end;
    let has_tail = bad.is_some() || off != complete_end;
    if !has_tail {
        return Ok(Scan { end: complete_end as u64, last_rev: last_complete, torn_bytes: 0 });
    }
    let (bad_off, reason) = bad.unwrap_or((complete_end, "revision without its LAST record".to_string()));
    if !is_last {
        return Err(corrupt(storage, &seg.name, bad_off as u64, format!("in a sealed segment: {reason}")));
    }
    // Torn tail or corruption in the middle: look for any later valid record of a
    // revision after the last complete one.
    // Records of the torn revision itself (main = last complete + 1) may lie after
    // the first bad byte, since one revision is one write: only a valid record of a
    // later revision proves that good data follows bad, i.e. corruption.
    let mut probe = off.max(bad_off + 8).next_multiple_of(8);
    while probe + record::RECORD_HEADER <= bytes.len() {
        if let Some(l) = record::peek_len(&bytes[probe..]) {
            if l >= record::RECORD_HEADER && l.is_multiple_of(8) && probe + l <= bytes.len() {
                if let Ok((r, _)) = record::decode(&bytes[probe..]) {
                    if r.main > last_complete + 1 && r.kind != RecordKind::End {
                        return Err(corrupt(
                            storage,
                            &seg.name,
                            bad_off as u64,
                            format!("{reason}, but a valid record of revision {} follows at offset {probe}", r.main),
                        ));
                    }
                }
            }
        }
        probe += 8;
    }
    let nonzero_end = bytes.iter().rposition(|&b| b != 0).map_or(tail_start, |p| p + 1).max(tail_start);
    Ok(Scan { end: tail_start as u64, last_rev: last_complete, torn_bytes: (nonzero_end - tail_start) as u64 })
}

/// A consistent view of the log: committed records up to a revision, and the base
/// snapshot. Cheap to create; holds the segment list it was made from alive.
pub struct LogReader {
    files: Arc<FileSet>,
    committed: u64,
}

impl LogReader {
    /// Highest revision this view can read.
    pub fn committed_rev(&self) -> u64 {
        self.committed
    }

    /// First revision this view holds events of.
    pub fn first_rev(&self) -> u64 {
        self.files.segments.first().map_or(self.committed + 1, |s| s.first_rev)
    }

    /// The record at `loc`, if this view holds it.
    pub fn get(&self, loc: Loc) -> Option<RecordRef<'_>> {
        let no = loc.file_no();
        if let Some(s) = self.files.snapshot_for(no) {
            return s.record_at(loc.offset());
        }
        let i = self.files.segments.binary_search_by_key(&no, |s| s.file_no).ok()?;
        self.files.segments[i].record_at(loc.offset())
    }

    /// Every record of main revisions `from ..= to` (clamped to what the view holds),
    /// in order, borrowed from the mapped segments.
    pub fn records(&self, from: u64, to: u64) -> Records<'_> {
        let to = to.min(self.committed);
        let segs = &self.files.segments;
        let from = from.max(self.first_rev());
        // Last segment whose first revision is <= from.
        let seg_idx = segs.partition_point(|s| s.first_rev <= from).saturating_sub(1);
        let off = segs.get(seg_idx).map_or(FILE_HEADER as u64, |s| s.seek(from));
        Records { reader: self, seg_idx, off, from, to }
    }
}

/// Iterator over committed records; see [`LogReader::records`].
pub struct Records<'a> {
    reader: &'a LogReader,
    seg_idx: usize,
    off: u64,
    from: u64,
    to: u64,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(Loc, RecordRef<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.from > self.to {
                return None;
            }
            let seg = self.reader.files.segments.get(self.seg_idx)?;
            let bytes = seg.committed_from(self.off);
            if bytes.is_empty() {
                self.seg_idx += 1;
                self.off = FILE_HEADER as u64;
                continue;
            }
            match record::decode(bytes) {
                Ok((r, n)) => {
                    let loc = Loc::new(seg.file_no, self.off);
                    self.off += n as u64;
                    if r.main > self.to {
                        self.from = self.to + 1;
                        return None;
                    }
                    if r.main < self.from {
                        continue;
                    }
                    return Some(Ok((loc, r)));
                }
                Err(e) => {
                    // Committed bytes were verified or written by us: this is memory
                    // or media corruption after open. Report it once and stop.
                    let err = Error::Corrupt { file: seg.name.clone().into(), offset: self.off, reason: e.to_string() };
                    self.from = self.to + 1;
                    return Some(Err(err));
                }
            }
        }
    }
}

impl LogReader {
    /// Records of the base snapshot with their locations, in key order.
    pub fn snapshot_records(&self) -> Vec<(Loc, RecordRef<'_>)> {
        let Some(s) = self.files.snapshots.last() else { return Vec::new() };
        let mut out = Vec::new();
        let mut off = FILE_HEADER as u64;
        while let Some(r) = s.record_at(off) {
            if r.kind == RecordKind::End {
                break;
            }
            out.push((Loc::new(s.file_no, off), r));
            off += record::encoded_len(r.key.len(), r.value.len()) as u64;
        }
        out
    }

    /// The compaction revision of the base snapshot (0: none).
    pub fn snapshot_rev(&self) -> u64 {
        self.files.snapshots.last().map_or(0, |s| s.rev)
    }
}
