//! Lock-free readers: a [`LogReader`] is a consistent view of the committed records
//! (and the base snapshot) that borrows them from the mapped files.

use super::record::{self, RecordKind, RecordRef, FILE_HEADER};
use super::{FileSet, Loc};
use crate::error::{Error, Result};
use crate::sync::Arc;

/// A consistent view of the log: committed records up to a revision, and the base
/// snapshot. Cheap to create; holds the segment list it was made from alive.
pub struct LogReader {
    pub(super) files: Arc<FileSet>,
    pub(super) committed: u64,
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
        Records { reader: self, seg_idx, off, from, to, leases: false, done: from > to }
    }

    /// As [`LogReader::records`], plus every lease and auth record of the view (they sit
    /// between revisions, FORMAT.md): what opening the store replays. The scan
    /// starts at the first segment, so lease records before revision `from` are
    /// returned too (the lease records of every kept segment replayed in order over
    /// the base snapshot's leases give the current leases, FORMAT.md, Snapshot).
    pub fn records_with_leases(&self, from: u64, to: u64) -> Records<'_> {
        let to = to.min(self.committed);
        let from = from.max(self.first_rev());
        Records { reader: self, seg_idx: 0, off: FILE_HEADER as u64, from, to, leases: true, done: false }
    }
}

/// Iterator over committed records; see [`LogReader::records`].
pub struct Records<'a> {
    reader: &'a LogReader,
    seg_idx: usize,
    off: u64,
    from: u64,
    to: u64,
    /// Whether lease and auth records are returned too (else skipped).
    leases: bool,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(Loc, RecordRef<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
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
                        self.done = true;
                        return None;
                    }
                    if r.kind.is_between_revisions() {
                        if self.leases {
                            return Some(Ok((loc, r)));
                        }
                        continue;
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
                    self.done = true;
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
            if r.kind == RecordKind::Put {
                out.push((Loc::new(s.file_no, off), r));
            }
            off += record::encoded_len(r.key.len(), r.value.len()) as u64;
        }
        out
    }

    /// The leases of the base snapshot: ID and TTL (FORMAT.md, Snapshot).
    pub fn snapshot_leases(&self) -> Vec<(i64, i64)> {
        let Some(s) = self.files.snapshots.last() else { return Vec::new() };
        let mut out = Vec::new();
        let mut off = FILE_HEADER as u64;
        while let Some(r) = s.record_at(off) {
            match (r.kind, record::lease_op(&r)) {
                (RecordKind::End, _) => break,
                (RecordKind::LeaseGrant, Some((id, Some(ttl)))) => out.push((id, ttl)),
                _ => {}
            }
            off += record::encoded_len(r.key.len(), r.value.len()) as u64;
        }
        out
    }

    /// The base snapshot's records with their locations, in key order, read as
    /// they are iterated (the lazy form of [`LogReader::snapshot_records`]).
    pub fn snapshot_iter(&self) -> impl Iterator<Item = (Loc, RecordRef<'_>)> + '_ {
        let snap = self.files.snapshots.last();
        let mut off = FILE_HEADER as u64;
        std::iter::from_fn(move || {
            let s = snap?;
            let r = s.record_at(off).filter(|r| r.kind != RecordKind::End)?;
            let loc = Loc::new(s.file_no, off);
            off += record::encoded_len(r.key.len(), r.value.len()) as u64;
            Some((loc, r))
        })
    }

    /// The value of the base snapshot's AUTH record (the whole auth state,
    /// FORMAT.md, Snapshot), if it has one.
    pub fn snapshot_auth(&self) -> Option<&[u8]> {
        let s = self.files.snapshots.last()?;
        let mut off = FILE_HEADER as u64;
        while let Some(r) = s.record_at(off) {
            match r.kind {
                RecordKind::End => break,
                RecordKind::Auth => return Some(r.value),
                _ => {}
            }
            off += record::encoded_len(r.key.len(), r.value.len()) as u64;
        }
        None
    }

    /// The name of the file `loc` lies in (for error reports), if this view holds it.
    pub fn file_name(&self, loc: Loc) -> Option<String> {
        let no = loc.file_no();
        if let Some(s) = self.files.snapshot_for(no) {
            return Some(super::snapshot_name(s.rev));
        }
        let i = self.files.segments.binary_search_by_key(&no, |s| s.file_no).ok()?;
        Some(self.files.segments[i].name.clone())
    }

    /// The compaction revision of the base snapshot (0: none).
    pub fn snapshot_rev(&self) -> u64 {
        self.files.snapshots.last().map_or(0, |s| s.rev)
    }
}
