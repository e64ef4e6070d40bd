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
//! published), and later appends fail with [`Error::Poisoned`]. A full disk is not
//! such an error: segments are preallocated (`fallocate`), so it shows when a
//! segment is created, before anything of the revision is written; the append
//! fails with [`Error::NoSpace`], nothing changes, and the next append tries again.
//! Mappings are never remapped or truncated; compaction removes whole segments from
//! the list, and readers holding the old list keep reading them.

mod commit;
mod cut;
mod options;
mod reader;
pub mod record;
mod recovery;
mod segment;
mod snapshot;
pub mod storage;
#[cfg(test)]
mod tests;

pub use commit::{CommitStats, GROUP_SIZE_BOUNDS};
pub use options::{FsyncPolicy, LogOptions};
pub use reader::{LogReader, Records};
use record::{RecordData, RecordKind, RecordRef, FILE_HEADER, SEGMENT_MAGIC};
pub use recovery::{DroppedTail, Recovered};
use segment::Segment;
use snapshot::SnapshotFile;
pub use storage::{CrashMode, FileStorage, MemStorage, Storage, StorageFile};

use crate::error::{Error, Result};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Arc, Mutex, SwapCell, Weak};

/// The largest encode buffer the writer keeps between appends.
const KEEP_ENCODE_BUFFER: usize = 1 << 20;

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
    /// The key's lease after this event (PUT; 0: none).
    pub lease: i64,
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
///     create_revision: 2, version: 1, lease: 0 }], |_locs| {}).unwrap();
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

/// Where a lease record was written; pass it to [`RevisionLog::sync_lease_record`].
#[must_use = "a lease record is not durable until sync_lease_record returns"]
pub struct LeaseWrite(Arc<Segment>);

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
    /// The path of file `name` of the log, as errors name it.
    pub(crate) fn path_of(&self, name: &str) -> std::path::PathBuf {
        self.inner.storage.path(name)
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
                    lease: e.lease,
                    key: e.key,
                    value: e.value,
                },
                &mut buf,
            );
        }
        let len = buf.len() as u64;
        let written = self.write_locked(&mut w, rev, &buf);
        // The buffer is kept for the next revision, but not at the size of a rare
        // huge one (a DeleteRange of 200k keys left 17 MB behind for good).
        if buf.capacity() > KEEP_ENCODE_BUFFER {
            buf = Vec::new();
        }
        w.buf = buf;
        let (seg, start) = written?;
        let locs: Vec<Loc> = offsets.into_iter().map(|o| Loc::new(seg.file_no, start + o)).collect();
        // Whatever must be in place when readers can see the revision (the store's
        // index entries) is done before it can be published.
        before_commit(&locs);
        self.queue_commit(rev, seg, start + len, len);
        Ok(Ticket { rev })
    }

    /// Appends a lease record (FORMAT.md, Lease records) after the last appended
    /// revision: `Some(ttl)` a grant of lease `id`, `None` its revoke. Returns the
    /// segment it went to; the caller that must acknowledge it durably passes that to
    /// [`RevisionLog::sync_lease_record`] (outside any lock). Readers never see a
    /// lease record (they read revisions); it becomes part of the committed bytes
    /// with the next revision, and opening the log finds it either way.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], [`Error::NoSpace`]; a write error poisons the log.
    pub fn append_lease(&self, id: i64, ttl: Option<i64>) -> Result<LeaseWrite> {
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        let grant;
        let revoke;
        let (kind, value): (RecordKind, &[u8]) = match ttl {
            Some(ttl) => {
                grant = record::lease_grant_value(id, ttl);
                (RecordKind::LeaseGrant, &grant)
            }
            None => {
                revoke = id.to_le_bytes();
                (RecordKind::LeaseRevoke, &revoke)
            }
        };
        self.append_between(kind, value)
    }

    /// Appends an auth record (FORMAT.md, Auth records) with `value`, after the
    /// last revision, under the writer lock (so it is ordered with every revision).
    /// The caller makes it durable with [`RevisionLog::sync_auth_record`] before
    /// acknowledging the change.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], [`Error::NoSpace`]; a write error poisons the log.
    pub fn append_auth(&self, value: &[u8]) -> Result<LeaseWrite> {
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        self.append_between(RecordKind::Auth, value)
    }

    /// Makes an auth record appended by [`RevisionLog::append_auth`] durable,
    /// whatever the fsync policy (auth changes are rare and must survive a crash
    /// once acknowledged). Holds no lock while it syncs.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if the fsync fails (which poisons the log).
    pub fn sync_auth_record(&self, written: LeaseWrite) -> Result<()> {
        if let Err(e) = written.0.file.sync() {
            return Err(self.poison(format!("fsync of {} for an auth record: {e}", written.0.name)));
        }
        Ok(())
    }

    /// Appends one record that sits between revisions (lease or auth).
    fn append_between(&self, kind: RecordKind, value: &[u8]) -> Result<LeaseWrite> {
        let mut w = lock(&self.inner.writer);
        let mut buf = Vec::with_capacity(record::encoded_len(0, value.len()));
        record::encode(&RecordData::lease_record(w.last_rev, kind, value), &mut buf);
        let len = buf.len() as u64;
        if w.write_off + len > w.active.capacity() {
            let next = w.last_rev + 1;
            self.roll(&mut w, next, len)?;
        }
        let seg = Arc::clone(&w.active);
        let off = w.write_off;
        if let Err(e) = seg.file.write_at(off, &buf) {
            if is_no_space(&e) {
                return Err(Error::NoSpace(format!("write to {} at offset {off}: {e}", seg.name)));
            }
            return Err(self.poison(format!("write to {} at offset {off}: {e}", seg.name)));
        }
        seg.set_written(off + len);
        w.write_off = off + len;
        Ok(LeaseWrite(seg))
    }

    /// Makes a lease record appended by [`RevisionLog::append_lease`] durable
    /// (nothing under `fsync=never`). Holds no lock while it syncs.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if the fsync fails (which poisons the log).
    pub fn sync_lease_record(&self, written: LeaseWrite) -> Result<()> {
        if self.inner.opts.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        if let Err(e) = written.0.file.sync() {
            return Err(self.poison(format!("fsync of {} for a lease record: {e}", written.0.name)));
        }
        Ok(())
    }

    /// The record at `loc`, copied, whether or not it is committed yet: for the
    /// store's writer, which must see its own earlier writes before they are
    /// durable. Takes no lock: it reads below the segment's written length, which
    /// the writer publishes after the bytes and before `before_commit` hands out
    /// their locations.
    pub fn read_written(&self, loc: Loc) -> Option<OwnedRecord> {
        let files = self.inner.files.load();
        let no = loc.file_no();
        if let Some(s) = files.snapshot_for(no) {
            return s.record_at(loc.offset()).map(OwnedRecord::from);
        }
        let i = files.segments.binary_search_by_key(&no, |s| s.file_no).ok()?;
        let seg = &files.segments[i];
        // SAFETY: bytes below a segment's written length are complete records that
        // are never written again (segment.rs).
        let bytes = unsafe { seg.bytes_upto(loc.offset(), seg.written_len()) }?;
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
            if is_no_space(&e) {
                // (A file system that cannot preallocate.) Nothing is published and
                // the write offset stays: the next revision overwrites these bytes,
                // and until then they lie after the last record, a torn tail.
                return Err(Error::NoSpace(format!("write to {} at offset {off}: {e}", seg.name)));
            }
            return Err(self.poison(format!("write to {} at offset {off}: {e}", seg.name)));
        }
        seg.note_revision_start(rev, off);
        seg.set_written(off + len);
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

    /// Seals the active segment (fsync) and starts a new one at `rev`, large enough
    /// for `need` bytes of records.
    ///
    /// A segment is named after its first revision, so when the active segment
    /// holds no revision yet (it was created for `rev` itself: a fresh log, or a tail
    /// that recovery emptied; it may hold lease records) the new one would have its
    /// name. It *replaces* it instead: a larger one holding the same lease records
    /// is created under the name, and the file set lists only the new one. (Creating it beside the old one
    /// truncated the mapped file and listed one file twice, and a later compaction
    /// unlinked it behind both entries: every write after it was lost.) The larger
    /// file is made under a temporary name and renamed over the empty one, so a full
    /// disk or a crash leaves the old one in place.
    fn roll(&self, w: &mut WriterState, rev: u64, need: u64) -> Result<()> {
        let inner = &*self.inner;
        let replace = w.last_rev < w.active.first_rev;
        // A replacement starts with the replaced segment's lease records.
        let carried = if replace { w.write_off - FILE_HEADER as u64 } else { 0 };
        let size = inner.opts.segment_size.max((FILE_HEADER as u64 + carried + need).next_multiple_of(4096));
        let mut carry = Vec::new();
        if replace {
            debug_assert_eq!(
                w.active.first_rev, rev,
                "an active segment without revisions was created for the next one"
            );
            // Its lease records (below the written length: complete, never rewritten).
            carry.resize((w.write_off - FILE_HEADER as u64) as usize, 0);
            if let Err(e) = w.active.file.read_at(FILE_HEADER as u64, &mut carry) {
                return Err(self.poison(format!("read back the lease records of {}: {e}", w.active.name)));
            }
        } else if let Err(e) = w.active.file.sync() {
            return Err(self.poison(format!("fsync of {} when sealing it: {e}", w.active.name)));
        }
        let seg = match create_segment(&*inner.storage, w.next_file_no, rev, size, replace.then_some(&carry[..])) {
            Ok(s) => Arc::new(s),
            // A full disk refuses this revision and changes nothing: the active
            // segment is as it was, and the next write tries again.
            Err(Error::NoSpace(why)) => return Err(Error::NoSpace(why)),
            Err(e) => return Err(self.poison(format!("create segment for revision {rev}: {e}"))),
        };
        w.next_file_no += 1;
        let old = inner.files.load();
        let mut segments = old.segments.clone();
        if replace {
            segments.retain(|s| !Arc::ptr_eq(s, &w.active));
        }
        segments.push(Arc::clone(&seg));
        debug_assert!(
            segments.windows(2).all(|p| p[0].first_rev < p[1].first_rev),
            "live segments have distinct first revisions, hence distinct names"
        );
        inner.files.store(Arc::new(FileSet { segments, snapshots: old.snapshots.clone() }));
        w.active = seg;
        w.write_off = FILE_HEADER as u64 + carry.len() as u64;
        w.active.set_written(w.write_off);
        Ok(())
    }

    /// Makes the next appended revision `rev` on a log that holds no revision and
    /// no lease record yet (a fresh one, or one whose only segment recovery made
    /// after a snapshot): a mirror's log starts at the revision its upstream cluster
    /// is at (FORMAT.md, Mirrored logs). The last revision becomes `rev - 1` and is
    /// published as committed, whether or not revisions below it exist: the caller
    /// has written a base snapshot at `rev - 1` or `rev` first (recovery refuses a
    /// first segment more than one revision after the snapshot's).
    ///
    /// The empty active segment is replaced by `seg-<rev>.log`: the old file is
    /// removed first and the new one created after it, so a crash in between
    /// leaves no segment (recovery makes one) rather than two whose revisions do
    /// not follow.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUpstream`] if the log holds a revision or a lease record, or
    /// `rev` is not after its last revision; [`Error::Poisoned`]; I/O errors (a
    /// failure to create the new segment poisons the log: it has none left).
    pub fn start_at(&self, rev: u64) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        let inner = &*self.inner;
        let mut w = lock(&inner.writer);
        let files = inner.files.load();
        let empty = w.last_rev < w.active.first_rev
            && w.write_off == FILE_HEADER as u64
            && files.segments.len() == 1
            && Arc::ptr_eq(&files.segments[0], &w.active);
        if !empty {
            return Err(Error::InvalidUpstream(format!(
                "the log cannot start at revision {rev}: it already holds records (last revision {})",
                w.last_rev
            )));
        }
        if rev <= w.last_rev {
            return Err(Error::InvalidUpstream(format!(
                "the log cannot start at revision {rev}: it is at revision {} already",
                w.last_rev
            )));
        }
        if rev != w.active.first_rev {
            let old = Arc::clone(&w.active);
            inner.storage.remove(&old.name).map_err(|e| Error::io(format!("remove {}", old.name), e))?;
            if let Err(e) = inner.storage.sync_dir() {
                return Err(self.poison(format!("sync directory after removing {}: {e}", old.name)));
            }
            let seg = match create_segment(&*inner.storage, w.next_file_no, rev, inner.opts.segment_size, None) {
                Ok(s) => Arc::new(s),
                Err(e) => return Err(self.poison(format!("create segment for revision {rev}: {e}"))),
            };
            w.next_file_no += 1;
            inner
                .files
                .store(Arc::new(FileSet { segments: vec![Arc::clone(&seg)], snapshots: files.snapshots.clone() }));
            w.active = seg;
            w.write_off = FILE_HEADER as u64;
        }
        w.last_rev = rev - 1;
        self.publish_committed(rev - 1);
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
}

/// Whether an I/O error means the disk (or the file system's quota) is full.
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// Creates, preallocates, heads and syncs segment `seg-<first_rev>.log`. With
/// `replace`, a file of that name exists (an empty segment): the new one is made as
/// `seg-<first_rev>.tmp` and renamed over it. A full disk is [`Error::NoSpace`] and
/// leaves no file behind.
/// Creates segment `first_rev` of `size` bytes. `replace`: it replaces an active
/// segment of that name that holds no revision, whose lease records (these bytes)
/// it starts with; it is made under a temporary name and renamed over the old one.
fn create_segment(
    storage: &dyn Storage,
    file_no: u32,
    first_rev: u64,
    size: u64,
    replace: Option<&[u8]>,
) -> Result<Segment> {
    let name = segment_name(first_rev);
    let made = if replace.is_some() { format!("seg-{first_rev:020}.tmp") } else { name.clone() };
    let io = |what: &str, e: std::io::Error| {
        if is_no_space(&e) {
            Error::NoSpace(format!("{what} {made} ({size} bytes): {e}"))
        } else {
            Error::io(format!("{what} {made}"), e)
        }
    };
    let file = storage.create(&made, size).map_err(|e| io("create", e))?;
    let carry = replace.unwrap_or(&[]);
    let ready = file
        .write_at(0, &record::encode_file_header(SEGMENT_MAGIC, first_rev))
        .and_then(|()| if carry.is_empty() { Ok(()) } else { file.write_at(FILE_HEADER as u64, carry) })
        .map_err(|e| io("write header of", e))
        .and_then(|()| file.sync().map_err(|e| io("fsync", e)));
    if let Err(e) = ready {
        let _ = storage.remove(&made);
        return Err(e);
    }
    if replace.is_some() {
        storage.rename(&made, &name).map_err(|e| io("rename", e))?;
    }
    storage.sync_dir().map_err(|e| io("sync directory after creating", e))?;
    let map = file.map().map_err(|e| io("map", e))?;
    Ok(Segment::new(file_no, first_rev, name.clone(), file, map))
}
