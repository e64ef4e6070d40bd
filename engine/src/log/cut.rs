//! A consistent cut of the log's files, for a backup (FORMAT.md, Backup stream),
//! and the bytes those files hold in records.

use super::storage::StorageFile;
use super::{snapshot_name, RevisionLog};
use crate::error::{Error, Result};
use crate::sync::{lock, Arc};

/// One file of a [`Cut`].
pub(crate) struct CutFile {
    /// Its name in the data directory.
    pub(crate) name: String,
    /// An open handle: the file's bytes stay readable through it even if a
    /// compaction deletes the file after the cut.
    pub(crate) file: Arc<dyn StorageFile>,
    /// Bytes of it that belong to the cut, from offset 0. Never written again.
    pub(crate) len: u64,
}

/// The files that rebuild the store, each up to where it ended at one moment.
pub(crate) struct Cut {
    /// The base snapshot (if any) first, then the segments in revision order.
    pub(crate) files: Vec<CutFile>,
    /// The writer's last revision at the cut: the last complete revision the
    /// segments hold.
    pub(crate) last_rev: u64,
    /// The base snapshot's revision (0: none).
    pub(crate) compact_rev: u64,
}

impl RevisionLog {
    /// Takes a consistent cut (FORMAT.md, Backup stream, The consistent cut): under
    /// the writer lock, so no revision is half-written, after an fsync of the active
    /// segment, so every byte below the lengths taken is durable. The bytes below
    /// them are never written again, so they can be read later without the lock.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] (the fsync failing poisons the log), I/O errors opening
    /// the base snapshot.
    pub(crate) fn cut(&self) -> Result<Cut> {
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        let inner = &*self.inner;
        let w = lock(&inner.writer);
        if let Err(e) = w.active.file.sync() {
            return Err(self.poison(format!("fsync of {} for a backup: {e}", w.active.name)));
        }
        // The file set changes only under the writer lock (rolls, snapshot
        // publication, drop_before), so what it lists exists on disk now.
        let set = inner.files.load();
        let mut files = Vec::with_capacity(set.segments.len() + 1);
        let compact_rev = set.snapshots.last().map_or(0, |s| s.rev);
        if compact_rev != 0 {
            let name = snapshot_name(compact_rev);
            let file = inner.storage.open(&name).map_err(|e| Error::io(format!("open {name} for a backup"), e))?;
            files.push(CutFile { name, len: file.len(), file });
        }
        for (i, seg) in set.segments.iter().enumerate() {
            // As recovery: a segment wholly below the snapshot is a leftover (kept
            // for a lagging watcher) that a restored store does not need.
            let next_first = set.segments.get(i + 1).map(|n| n.first_rev);
            if next_first.is_some_and(|nf| nf - 1 < compact_rev) {
                continue;
            }
            files.push(CutFile { name: seg.name.clone(), file: Arc::clone(&seg.file), len: seg.written_len() });
        }
        Ok(Cut { files, last_rev: w.last_rev, compact_rev })
    }

    /// Bytes of records (file headers included) in the files the log reads now:
    /// every segment up to its written length and every base snapshot. Less than the
    /// files take on disk: segments are preallocated.
    pub fn bytes_in_use(&self) -> u64 {
        let set = self.inner.files.load();
        let segments: u64 = set.segments.iter().map(|s| s.written_len()).sum();
        let snapshots: u64 = set.snapshots.iter().map(|s| s.len()).sum();
        segments + snapshots
    }
}
