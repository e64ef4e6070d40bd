//! The hash of the MVCC state up to a revision (etcd's `HashKV`), and of all of it
//! (etcd's `Hash`): a CRC-32C, as etcd's, over the state at the compaction revision
//! and every event after it (ARCHITECTURE.md, "The KV hash", defines the bytes).
//!
//! It depends only on the history and the compaction revision, never on where the
//! records lie in which files: two stores given the same writes and compacted at
//! the same revision answer the same hash, and so does one store after a restart
//! or a restore. A write after `rev` does not change `hash_kv(rev)`; a compaction
//! changes what it covers (the base state moves up), which is why the compaction
//! revision is returned with it, as etcd does.

use super::Store;
use crate::error::{Error, Result};
use crate::log::record::{RecordKind, RecordRef};
use crate::log::LogReader;

/// The answer of [`Store::hash_kv`] and [`Store::hash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// The CRC-32C.
    pub hash: u32,
    /// The revision hashed up to.
    pub revision: u64,
    /// The compaction revision the hash starts from (0: never compacted).
    pub compact_revision: u64,
    /// The store's revision when the hash was taken (etcd's header revision).
    pub current_revision: u64,
}

/// A running CRC-32C of the encoding in ARCHITECTURE.md.
struct Hasher {
    crc: u32,
    /// The fixed-size part of one entry, reused.
    head: Vec<u8>,
}

impl Hasher {
    fn new(compact_revision: u64) -> Hasher {
        Hasher { crc: crc32c::crc32c(&compact_revision.to_le_bytes()), head: Vec::with_capacity(48) }
    }

    /// Adds one key state or event.
    fn add(&mut self, r: &RecordRef<'_>) -> Result<()> {
        let kind: u8 = match r.kind {
            RecordKind::Put => 0,
            RecordKind::Delete => 1,
            // Leases are no part of the MVCC state HashKV covers (`Store::hash` adds
            // the live ones).
            RecordKind::LeaseGrant | RecordKind::LeaseRevoke | RecordKind::Auth => return Ok(()),
            RecordKind::End => {
                return Err(Error::Corrupt {
                    file: "revision log".into(),
                    offset: 0,
                    reason: format!("END record at revision {} among events", r.main),
                })
            }
        };
        self.head.clear();
        self.head.push(kind);
        self.head.extend_from_slice(&r.mod_revision.to_le_bytes());
        self.head.extend_from_slice(&r.sub.to_le_bytes());
        self.head.extend_from_slice(&r.create_revision.to_le_bytes());
        self.head.extend_from_slice(&r.version.to_le_bytes());
        self.head.extend_from_slice(&r.lease.to_le_bytes());
        self.head.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, &self.head);
        self.crc = crc32c::crc32c_append(self.crc, r.key);
        self.crc = crc32c::crc32c_append(self.crc, &(r.value.len() as u32).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, r.value);
        Ok(())
    }
}

impl Store {
    /// The hash of the MVCC state up to `revision` (0: the current revision), as
    /// etcd's `HashKV`: over the keys live at the compaction revision, then every
    /// event of the revisions after it up to `revision`. Reads one consistent view
    /// of the log, lock-free; the work is proportional to what it hashes.
    ///
    /// # Errors
    ///
    /// As etcd: [`Error::Compacted`] if `revision` is at or below the compaction
    /// revision (the state there is no longer told apart from the events before
    /// it), [`Error::FutureRevision`] if above the current revision;
    /// [`Error::Corrupt`] if a record read fails its check.
    pub fn hash_kv(&self, revision: u64) -> Result<KvHash> {
        let reader = self.inner.log.reader();
        let current = reader.committed_rev();
        let compact = reader.snapshot_rev();
        if revision > 0 && revision <= compact {
            return Err(Error::Compacted { requested: revision, compact_revision: compact });
        }
        if revision > current {
            return Err(Error::FutureRevision { requested: revision, current });
        }
        let rev = if revision == 0 { current } else { revision };
        let hash = hash_view(&reader, compact, rev)?;
        Ok(KvHash { hash, revision: rev, compact_revision: compact, current_revision: current })
    }

    /// The hash of everything the store holds (etcd's `Hash`): the bytes of
    /// [`Store::hash_kv`] at the current revision, then every live lease (ID and TTL,
    /// in ID order), as etcd's covers its lease bucket too.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if a record read fails its check.
    pub fn hash(&self) -> Result<KvHash> {
        let reader = self.inner.log.reader();
        let current = reader.committed_rev();
        let compact = reader.snapshot_rev();
        let mut hash = hash_view(&reader, compact, current)?;
        for (id, ttl) in self.inner.leases.grants() {
            hash = crc32c::crc32c_append(hash, &id.to_le_bytes());
            hash = crc32c::crc32c_append(hash, &ttl.to_le_bytes());
        }
        Ok(KvHash { hash, revision: current, compact_revision: compact, current_revision: current })
    }
}

/// The hash of `reader`'s base snapshot (at `compact`) and its events up to `rev`.
fn hash_view(reader: &LogReader, compact: u64, rev: u64) -> Result<u32> {
    let mut h = Hasher::new(compact);
    for (_, r) in reader.snapshot_iter() {
        h.add(&r)?;
    }
    for item in reader.records(compact + 1, rev) {
        let (_, r) = item?;
        h.add(&r)?;
    }
    Ok(h.crc)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::{LogOptions, MemStorage};
    use crate::store::StoreOptions;

    fn opts() -> StoreOptions {
        StoreOptions {
            log: LogOptions { segment_size: 2 << 20, ..LogOptions::default() },
            max_request_bytes: 64 << 10,
            ..StoreOptions::default()
        }
    }

    fn open(storage: &Arc<MemStorage>) -> Store {
        Store::open_storage(Arc::clone(storage) as Arc<dyn crate::log::Storage>, opts()).expect("open")
    }

    /// A history with overwrites, deletes, a multi-key txn and a range delete.
    fn write_history(s: &Store, tag: &str) {
        for i in 0..20u32 {
            s.put(format!("/k/{}", i % 7).as_bytes(), format!("{tag}{i}").as_bytes()).unwrap();
            if i % 5 == 4 {
                s.delete_range(format!("/k/{}", i % 3).as_bytes(), b"", false).unwrap();
            }
        }
        s.delete_range(b"/k/5", b"/k/7", false).unwrap();
    }

    #[test]
    fn same_writes_same_hash_and_a_different_write_changes_it() {
        let (a, b) = (open(&Arc::new(MemStorage::new())), open(&Arc::new(MemStorage::new())));
        write_history(&a, "v");
        write_history(&b, "v");
        let (ha, hb) = (a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        assert_eq!(ha, hb);
        assert_eq!(ha.revision, a.current_revision());
        assert_eq!(ha.compact_revision, 0);
        assert_eq!(a.hash().unwrap().hash, ha.hash);
        // Every earlier revision agrees too.
        for rev in 1..=a.current_revision() {
            assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap(), "revision {rev}");
        }
        // A different value at the same revision, or one more write: different.
        let c = open(&Arc::new(MemStorage::new()));
        write_history(&c, "w");
        assert_eq!(c.current_revision(), a.current_revision());
        assert_ne!(c.hash_kv(0).unwrap().hash, ha.hash);
        b.put(b"/k/0", b"more").unwrap();
        assert_ne!(b.hash_kv(0).unwrap().hash, ha.hash);
        // The same write again, as a delete: also different.
        a.delete_range(b"/k/0", b"", false).unwrap();
        assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    }

    #[test]
    fn an_older_revision_keeps_its_hash_as_writes_go_on() {
        let s = open(&Arc::new(MemStorage::new()));
        write_history(&s, "v");
        let rev = s.current_revision();
        let before: Vec<KvHash> = (1..=rev).map(|r| s.hash_kv(r).unwrap()).collect();
        write_history(&s, "x");
        for (r, h) in (1..=rev).zip(&before) {
            let now = s.hash_kv(r).unwrap();
            assert_eq!((now.hash, now.revision, now.compact_revision), (h.hash, h.revision, 0), "revision {r}");
            assert_eq!(now.current_revision, s.current_revision());
        }
        // Each revision's hash differs from the one before (every revision writes).
        assert!(before.windows(2).skip(1).all(|w| w[0].hash != w[1].hash));
    }

    #[test]
    fn restart_keeps_the_hash_with_and_without_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), opts()).unwrap();
        write_history(&s, "v");
        let rev = s.current_revision();
        let all: Vec<u32> = (1..=rev).map(|r| s.hash_kv(r).unwrap().hash).collect();
        drop(s);
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!((1..=rev).map(|r| s.hash_kv(r).unwrap().hash).collect::<Vec<_>>(), all);
        s.compact(10).unwrap();
        let compacted: Vec<u32> = (11..=rev).map(|r| s.hash_kv(r).unwrap().hash).collect();
        assert_ne!(compacted, all[10..], "the base state moved up: the hashes cover other bytes");
        drop(s);
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!((11..=rev).map(|r| s.hash_kv(r).unwrap().hash).collect::<Vec<_>>(), compacted);
        assert_eq!(s.hash_kv(0).unwrap().compact_revision, 10);
    }

    #[test]
    fn compacting_the_same_history_at_the_same_revision_gives_the_same_hash() {
        let (a, b) = (open(&Arc::new(MemStorage::new())), open(&Arc::new(MemStorage::new())));
        write_history(&a, "v");
        write_history(&b, "v");
        // a compacts in two steps, b in one: the state at 12 is the same.
        a.compact(5).unwrap();
        a.compact(12).unwrap();
        b.compact(12).unwrap();
        for rev in 13..=a.current_revision() {
            assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap(), "revision {rev}");
        }
        // A different state at the compaction revision: different hash.
        let c = open(&Arc::new(MemStorage::new()));
        write_history(&c, "v");
        c.compact(11).unwrap();
        assert_ne!(c.hash_kv(0).unwrap().hash, a.hash_kv(0).unwrap().hash);
    }

    #[test]
    fn revisions_out_of_range_fail_as_in_etcd() {
        let s = open(&Arc::new(MemStorage::new()));
        write_history(&s, "v");
        let cur = s.current_revision();
        assert!(
            matches!(s.hash_kv(cur + 1), Err(Error::FutureRevision { requested, current }) if requested == cur + 1 && current == cur)
        );
        s.compact(8).unwrap();
        for rev in [1, 7, 8] {
            assert!(
                matches!(s.hash_kv(rev), Err(Error::Compacted { requested, compact_revision: 8 }) if requested == rev),
                "revision {rev}"
            );
        }
        assert_eq!(s.hash_kv(9).unwrap().compact_revision, 8);
        // A fresh store hashes its empty state at revision 1.
        let fresh = open(&Arc::new(MemStorage::new()));
        let h = fresh.hash_kv(0).unwrap();
        assert_eq!((h.revision, h.compact_revision, h.hash), (1, 0, crc32c::crc32c(&0u64.to_le_bytes())));
    }
}
