//! One segment of the revision log: a preallocated file, mapped once, appended to
//! by the single writer and read lock-free by anyone holding an `Arc` to it.
//!
//! Invariants:
//! - `committed_len` only grows; bytes below it are complete records of complete
//!   revisions and are never written again. It is stored with `Release` after the
//!   bytes are written (and synced, under a durable fsync policy), so a reader that
//!   loads it with `Acquire` may read everything below it.
//! - `written_len` only grows; bytes below it are complete records (of revisions
//!   that may not be committed yet) and are never written again. The writer
//!   stores it with `Release` after writing them and before their locations are
//!   handed out, so the store's writer can read its own uncommitted records
//!   (`RevisionLog::read_written`) without a lock.
//! - the sparse index maps a revision to the offset of its first record, one entry
//!   at least every [`SPARSE_STRIDE`] bytes; entries are published with `Release` on
//!   `sparse_len` and entries for revisions not yet committed are never chosen by a
//!   reader, whose target revision is at most the committed one.

use super::record::{self, RecordRef};
use super::storage::{Mapping, StorageFile};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::Arc;

/// Bytes between two sparse index entries, at most.
pub(crate) const SPARSE_STRIDE: u64 = 4096;

pub(crate) struct Segment {
    /// Number of the file, unique in the log; part of a record's [`super::Loc`].
    pub(crate) file_no: u32,
    pub(crate) first_rev: u64,
    pub(crate) name: String,
    pub(crate) file: Arc<dyn StorageFile>,
    map: Mapping,
    committed_len: AtomicU64,
    written_len: AtomicU64,
    sparse_rev: Box<[AtomicU64]>,
    sparse_off: Box<[AtomicU64]>,
    sparse_len: AtomicUsize,
    /// Offset of the last sparse entry; written by the writer only.
    last_sparse_off: AtomicU64,
}

impl Segment {
    pub(crate) fn new(file_no: u32, first_rev: u64, name: String, file: Arc<dyn StorageFile>, map: Mapping) -> Segment {
        let slots = (map.len() as u64 / SPARSE_STRIDE + 2) as usize;
        Segment {
            file_no,
            first_rev,
            name,
            file,
            map,
            committed_len: AtomicU64::new(record::FILE_HEADER as u64),
            written_len: AtomicU64::new(record::FILE_HEADER as u64),
            sparse_rev: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            sparse_off: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            sparse_len: AtomicUsize::new(0),
            last_sparse_off: AtomicU64::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    pub(crate) fn committed_len(&self) -> u64 {
        self.committed_len.load(Ordering::Acquire)
    }

    /// Bytes below this are complete records, never written again.
    pub(crate) fn written_len(&self) -> u64 {
        self.written_len.load(Ordering::Acquire)
    }

    /// Notes that bytes up to `len` are written (writer only, growing).
    pub(crate) fn set_written(&self, len: u64) {
        self.written_len.store(len, Ordering::Release);
    }

    /// Publishes bytes up to `len`: complete revisions, never written again.
    pub(crate) fn publish(&self, len: u64) {
        self.committed_len.store(len, Ordering::Release);
    }

    /// Notes that revision `rev` starts at `offset` (writer only, in offset order).
    pub(crate) fn note_revision_start(&self, rev: u64, offset: u64) {
        let n = self.sparse_len.load(Ordering::Relaxed);
        let last = self.last_sparse_off.load(Ordering::Relaxed);
        if n > 0 && offset < last + SPARSE_STRIDE {
            return;
        }
        if n >= self.sparse_rev.len() {
            return; // cannot happen with the slot count above; lookups still scan.
        }
        self.sparse_rev[n].store(rev, Ordering::Relaxed);
        self.sparse_off[n].store(offset, Ordering::Relaxed);
        self.last_sparse_off.store(offset, Ordering::Relaxed);
        self.sparse_len.store(n + 1, Ordering::Release);
    }

    /// Offset from which a scan finds the first record of revision `rev` (or later).
    pub(crate) fn seek(&self, rev: u64) -> u64 {
        let n = self.sparse_len.load(Ordering::Acquire);
        // Binary search for the last entry whose revision is <= rev.
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.sparse_rev[mid].load(Ordering::Relaxed) <= rev {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            record::FILE_HEADER as u64
        } else {
            self.sparse_off[lo - 1].load(Ordering::Relaxed)
        }
    }

    /// The committed bytes `[offset, committed_len)`.
    pub(crate) fn committed_from(&self, offset: u64) -> &[u8] {
        let end = self.committed_len();
        if offset >= end {
            return &[];
        }
        // SAFETY: bytes below committed_len are never written again (module invariant)
        // and committed_len never exceeds the mapping length.
        unsafe { self.map.bytes(offset as usize, (end - offset) as usize) }.unwrap_or(&[])
    }

    /// The record at `offset`, if it lies in the committed part and decodes.
    pub(crate) fn record_at(&self, offset: u64) -> Option<RecordRef<'_>> {
        record::decode(self.committed_from(offset)).ok().map(|(r, _)| r)
    }

    /// Bytes `[offset, end)`.
    ///
    /// # Safety
    ///
    /// No write to those bytes may happen while the slice lives.
    pub(crate) unsafe fn bytes_upto(&self, offset: u64, end: u64) -> Option<&[u8]> {
        let len = end.checked_sub(offset)?;
        // SAFETY: forwarded to the caller; `Mapping::bytes` checks the bounds.
        unsafe { self.map.bytes(offset as usize, len as usize) }
    }
}

/// Reads of published bytes through the segment, beside the writer (also run
/// under Miri by `scripts/miri.sh`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{RecordData, RecordKind};
    use crate::log::storage::{MemStorage, Storage};

    #[test]
    fn published_records_are_read_back_and_nothing_past_them() {
        let s = MemStorage::new();
        let file = s.create("seg", 8192).unwrap();
        let map = file.map().unwrap();
        let seg = Segment::new(1, 2, "seg".into(), Arc::clone(&file), map);
        let mut off = record::FILE_HEADER as u64;
        for rev in 2..40u64 {
            let mut buf = Vec::new();
            let value = vec![b'v'; rev as usize];
            record::encode(
                &RecordData {
                    main: rev,
                    sub: 0,
                    kind: RecordKind::Put,
                    last: true,
                    create_revision: 2,
                    mod_revision: rev,
                    version: rev - 1,
                    lease: 0,
                    key: b"k",
                    value: &value,
                },
                &mut buf,
            );
            file.write_at(off, &buf).unwrap();
            seg.note_revision_start(rev, off);
            seg.set_written(off + buf.len() as u64);
            assert!(seg.record_at(off).is_none(), "revision {rev} is not published yet");
            seg.publish(off + buf.len() as u64);
            let r = seg.record_at(off).expect("published");
            assert_eq!((r.main, r.value.len()), (rev, rev as usize));
            assert!(seg.seek(rev) <= off);
            off += buf.len() as u64;
        }
        assert_eq!(seg.written_len(), off);
        assert!(seg.committed_from(off).is_empty());
        assert!(seg.committed_from(u64::MAX).is_empty());
        // SAFETY: everything below the written length is written and never again.
        assert!(unsafe { seg.bytes_upto(record::FILE_HEADER as u64, seg.written_len()) }.is_some());
        // SAFETY: a reversed range makes no slice.
        assert!(unsafe { seg.bytes_upto(off, 10) }.is_none());
    }
}
