//! Base snapshots: compaction writes the live keys at its revision into one file
//! (FORMAT.md, Base snapshot), publishes it to readers, and later drops the segments
//! and snapshots that everything has moved past.

use super::record::{self, RecordData, RecordKind, RecordRef, FILE_HEADER, SNAPSHOT_MAGIC};
use super::{corrupt, parse_name, snapshot_name, storage, FileSet, Loc, RevisionLog, Storage};
use crate::error::{Error, Result};
use crate::sync::atomic::Ordering;
use crate::sync::{lock, Arc};

/// A base snapshot file published to readers.
pub(crate) struct SnapshotFile {
    pub(crate) file_no: u32,
    pub(crate) rev: u64,
    map: storage::Mapping,
    len: u64,
}

impl SnapshotFile {
    /// Length of the file in bytes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn record_at(&self, offset: u64) -> Option<RecordRef<'_>> {
        // SAFETY: a snapshot file is complete and fsynced before it is opened and is
        // never written again.
        let bytes = unsafe { self.map.bytes(offset as usize, (self.len - offset) as usize) }?;
        record::decode(bytes).ok().map(|(r, _)| r)
    }
}

impl RevisionLog {
    /// Writes and fsyncs the base snapshot for compaction revision `rev` from
    /// `records` (every live key at `rev`, in key order, each a record with its own
    /// revisions) and `leases` (every lease that exists now: ID and TTL, in ID
    /// order) and `auth` (the value of the AUTH record holding the whole auth
    /// state, FORMAT.md, Auth records; `None`: none written), publishes it to
    /// readers, and returns the new [`Loc`] of each record in order.
    pub(crate) fn write_snapshot<'a>(
        &self,
        rev: u64,
        records: impl Iterator<Item = RecordData<'a>>,
        leases: &[(i64, i64)],
        auth: Option<&[u8]>,
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
        for &(id, ttl) in leases {
            let value = record::lease_grant_value(id, ttl);
            record::encode(&RecordData::lease_record(rev, RecordKind::LeaseGrant, &value), &mut buf);
        }
        if let Some(value) = auth {
            record::encode(&RecordData::lease_record(rev, RecordKind::Auth, value), &mut buf);
        }
        record::encode(
            &RecordData {
                main: rev,
                sub: 0,
                kind: RecordKind::End,
                last: true,
                create_revision: 0,
                mod_revision: rev,
                version: 0,
                lease: 0,
                key: b"",
                value: &count.to_le_bytes(),
            },
            &mut buf,
        );
        let name = snapshot_name(rev);
        let tmp = format!("snap-{rev:020}.tmp");
        let io = |what: &str, e: std::io::Error| {
            if super::is_no_space(&e) {
                Error::NoSpace(format!("{what} {tmp} ({} bytes): {e}", buf.len()))
            } else {
                Error::io(format!("{what} {tmp}"), e)
            }
        };
        let file = storage.create(&tmp, buf.len() as u64).map_err(|e| io("create", e))?;
        let written =
            file.write_at(0, &buf).map_err(|e| io("write", e)).and_then(|()| file.sync().map_err(|e| io("fsync", e)));
        drop(file);
        if let Err(e) = written {
            // The compaction has not happened; leave no half file behind.
            let _ = storage.remove(&tmp);
            return Err(e);
        }
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

pub(super) fn open_snapshot(storage: &dyn Storage, name: &str, rev: u64, file_no: u32) -> Result<SnapshotFile> {
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
            Ok((r, n)) if r.kind == RecordKind::LeaseGrant && record::lease_op(&r).is_some() => off += n,
            Ok((r, n)) if r.kind == RecordKind::Auth => {
                if let Err(why) = crate::auth::record::decode_state(r.value) {
                    return Err(corrupt(storage, name, off as u64, format!("auth record does not decode: {why}")));
                }
                off += n;
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
