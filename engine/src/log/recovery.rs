//! Opening the log: which files are current, which are leftovers of an interrupted
//! compaction or roll, and where the last segment's valid records end (FORMAT.md,
//! Recovery).

use super::record::{self, RecordKind, FILE_HEADER, SEGMENT_MAGIC};
use super::segment::Segment;
use super::snapshot::open_snapshot;
use super::{
    commit, corrupt, create_segment, parse_name, FileSet, Inner, LogOptions, RevisionLog, Storage, WriterState,
};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::storage::StorageFile;
use crate::error::{Error, Result};
use crate::sync::atomic::{AtomicBool, AtomicU64};
use crate::sync::{Arc, Mutex, SwapCell};

/// Records recovery dropped from the end of the last segment: never acknowledged
/// (FORMAT.md, Recovery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTail {
    /// The segment file.
    pub file: PathBuf,
    /// Where the log now ends in it.
    pub offset: u64,
    /// The revisions whose records were there, whole or in part.
    pub revisions: RangeInclusive<u64>,
    /// Bytes overwritten with zeros.
    pub bytes: u64,
    /// Why they could not be kept.
    pub reason: String,
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
    /// What was dropped from the end of the log, if anything.
    pub dropped: Option<DroppedTail>,
    /// Files deleted as leftovers (temporary snapshots, compacted segments, empty tails).
    pub removed_files: Vec<String>,
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
            } else if parse_name(&name, "snap-", ".tmp").is_some() || parse_name(&name, "seg-", ".tmp").is_some() {
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
            // Recovery reads with pread, never through a mapping: pages of the
            // file that were never written may be unbacked, and on a full tmpfs
            // touching one through a mapping is SIGBUS.
            let bytes = read_whole(&*file).map_err(|e| Error::io(format!("read {name}"), e))?;
            let head = &bytes[..FILE_HEADER.min(bytes.len())];
            if is_last && head.iter().all(|&b| b == 0) {
                // Created but never synced before a crash: nothing in it was acknowledged.
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
            let scan = scan_segment(&*storage, &name, first, &bytes, is_last)?;
            drop(bytes);
            let map = file.map().map_err(|e| Error::io(format!("map {name}"), e))?;
            let seg = Segment::new(next_file_no, first, name.clone(), file, map);
            next_file_no += 1;
            for &(rev, off) in &scan.revision_starts {
                seg.note_revision_start(rev, off);
            }
            if let Some(d) = scan.dropped {
                tracing::warn!(
                    file = %d.file.display(),
                    offset = d.offset,
                    revisions = %format!("{}..={}", d.revisions.start(), d.revisions.end()),
                    count = d.revisions.end() - d.revisions.start() + 1,
                    bytes = d.bytes,
                    reason = %d.reason,
                    "dropping unacknowledged revisions from the end of the log"
                );
                let zeros = vec![0u8; d.bytes as usize];
                seg.file
                    .write_at(scan.end, &zeros)
                    .and_then(|()| seg.file.sync())
                    .map_err(|e| Error::io(format!("truncate torn tail of {name}"), e))?;
                rec.torn_bytes += d.bytes;
                rec.dropped = Some(d);
            }
            seg.set_written(scan.end);
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
                let seg = create_segment(&*storage, next_file_no, last_rev + 1, opts.segment_size, None)?;
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
}

/// The whole content of `file`, read with `pread` in 1 MiB pieces.
fn read_whole(file: &dyn StorageFile) -> std::io::Result<Vec<u8>> {
    let len = file.len() as usize;
    let mut out = vec![0u8; len];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        file.read_at((i << 20) as u64, chunk)?;
    }
    Ok(out)
}

struct Scan {
    /// Where the log ends: after the last record of the last complete revision.
    end: u64,
    last_rev: u64,
    /// (revision, offset of its first record), for the sparse index.
    revision_starts: Vec<(u64, u64)>,
    dropped: Option<DroppedTail>,
}

/// The sector size of the "unwritten" rule below: the unit a disk persists whole.
const SECTOR: usize = 512;

/// Whether the record at `off` shows an unwritten part: some piece of it that lies
/// within one 512-byte sector is all zeros. The record's extent is its length field
/// when that is plausible, else its first 8 bytes (the length field read as zero,
/// or garbage, is itself the sign).
fn has_unwritten_sector(bytes: &[u8], off: usize) -> bool {
    let plausible = record::peek_len(&bytes[off..])
        .filter(|&l| l >= record::RECORD_HEADER && l.is_multiple_of(8) && off + l <= bytes.len());
    let end = off + plausible.unwrap_or(8).min(bytes.len() - off);
    let mut start = off;
    while start < end {
        let piece_end = (start / SECTOR + 1) * SECTOR;
        let piece = &bytes[start..piece_end.min(end)];
        if piece.iter().all(|&b| b == 0) {
            return true;
        }
        start = piece_end;
    }
    false
}

/// Validates a segment's records (FORMAT.md, Recovery) from its bytes, read with
/// `pread`: where its records end, its last complete revision, where each revision
/// starts, and what to drop from the end of the last segment.
fn scan_segment(storage: &dyn Storage, name: &str, first_rev: u64, bytes: &[u8], is_last: bool) -> Result<Scan> {
    let mut off = FILE_HEADER;
    let mut rev_start = off; // offset of the first record of the revision being read
    let mut expect_main = first_rev;
    let mut expect_sub = 0u32;
    let mut last_complete = 0u64;
    let mut complete_end = off;
    let mut revision_starts = Vec::new();
    let bad = loop {
        if off >= bytes.len() {
            break None;
        }
        match record::decode(&bytes[off..]) {
            // A lease record between two revisions (FORMAT.md, Lease records).
            Ok((r, n))
                if r.kind.is_lease()
                    && r.last
                    && r.sub == 0
                    && expect_sub == 0
                    && r.main + 1 == expect_main
                    && record::lease_op(&r).is_some() =>
            {
                off += n;
                complete_end = off;
            }
            // An auth record between two revisions (FORMAT.md, Auth records). It
            // was written whole (its CRC holds), so a value that does not decode is
            // corruption, never a torn write.
            Ok((r, n))
                if r.kind == RecordKind::Auth
                    && r.last
                    && r.sub == 0
                    && expect_sub == 0
                    && r.main + 1 == expect_main
                    && r.key.is_empty() =>
            {
                if let Err(why) = crate::auth::record::decode_change(r.value) {
                    return Err(corrupt(storage, name, off as u64, format!("auth record does not decode: {why}")));
                }
                off += n;
                complete_end = off;
            }
            Ok((r, n)) => {
                let in_order = !matches!(r.kind, RecordKind::End)
                    && !r.kind.is_between_revisions()
                    && r.main == expect_main
                    && r.sub == expect_sub;
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
                    revision_starts.push((r.main, rev_start as u64));
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
        return Ok(Scan { end: complete_end as u64, last_rev: last_complete, revision_starts, dropped: None });
    }
    let (bad_off, reason) = bad.unwrap_or((complete_end, "revision without its LAST record".to_string()));
    if !is_last {
        return Err(corrupt(storage, name, bad_off as u64, format!("in a sealed segment: {reason}")));
    }
    // Only the unsealed tail may hold records that were never made durable. Look
    // for valid records of revisions after the torn one (main = last complete + 1,
    // whose records may lie beyond a hole, since one revision is one write).
    let torn_rev = last_complete.max(first_rev.saturating_sub(1)) + 1;
    let mut later: Option<(usize, u64)> = None; // first offset, highest revision
    let mut probe = off.max(bad_off + 8).next_multiple_of(8);
    while probe + record::RECORD_HEADER <= bytes.len() {
        if let Some(l) = record::peek_len(&bytes[probe..]) {
            if l >= record::RECORD_HEADER && l.is_multiple_of(8) && probe + l <= bytes.len() {
                if let Ok((r, _)) = record::decode(&bytes[probe..]) {
                    if r.main > torn_rev && r.kind != RecordKind::End && !r.kind.is_between_revisions() {
                        let first = later.map_or(probe, |(f, _)| f);
                        later = Some((first, later.map_or(r.main, |(_, m)| m.max(r.main))));
                    }
                }
            }
        }
        probe += 8;
    }
    let reason = match later {
        None => format!("torn write of the last revision ({reason})"),
        // Valid records after a record with an unwritten sector: the pages of an
        // unsynced group were persisted out of order. Every acknowledged revision
        // was fsynced together with everything before it, so nothing from the
        // unwritten sector on was acknowledged.
        Some((at, max)) if has_unwritten_sector(bytes, bad_off) => format!(
            "unwritten bytes at offset {bad_off} ({reason}); records of revisions up to {max} from offset {at} \
             were written after them and never made durable with them"
        ),
        Some((at, max)) => {
            return Err(corrupt(
                storage,
                name,
                bad_off as u64,
                format!("{reason}, but a valid record of revision {max} follows at offset {at}"),
            ))
        }
    };
    let last_dropped = later.map_or(torn_rev, |(_, max)| max);
    let nonzero_end = bytes.iter().rposition(|&b| b != 0).map_or(tail_start, |p| p + 1).max(tail_start);
    let dropped = (nonzero_end > tail_start).then(|| DroppedTail {
        file: storage.path(name),
        offset: tail_start as u64,
        revisions: torn_rev..=last_dropped,
        bytes: (nonzero_end - tail_start) as u64,
        reason,
    });
    Ok(Scan { end: tail_start as u64, last_rev: last_complete, revision_starts, dropped })
}
