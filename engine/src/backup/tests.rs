//! Backups round trip through files, at one consistent cut whatever runs beside
//! them, and every damaged or foreign file is refused before anything is written.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::log::LogOptions;
use crate::store::{KeyValue, RangeOptions};

/// Small segments, so a short history spans several and compaction deletes some.
fn opts() -> StoreOptions {
    StoreOptions {
        log: LogOptions { segment_size: 32 << 10, ..LogOptions::default() },
        max_request_bytes: 4 << 10,
        max_key_bytes: 4 << 10,
        max_value_bytes: 4 << 10,
        ..StoreOptions::default()
    }
}

/// Writes `n` revisions: puts of ~600-byte values over 9 keys, a delete every 7th.
fn write(s: &Store, n: u32, tag: &str) {
    for i in 0..n {
        let key = format!("/b/{}", i % 9);
        if i % 7 == 6 {
            s.delete_range(key.as_bytes(), b"", false).unwrap();
        } else {
            s.put(key.as_bytes(), format!("{tag}-{i}-{}", "x".repeat(600)).as_bytes()).unwrap();
        }
    }
}

fn all_keys(s: &Store, rev: u64) -> Vec<KeyValue> {
    s.range(b"\0", b"\0", RangeOptions { revision: rev, ..Default::default() }).unwrap().kvs
}

fn backup_bytes(s: &Store) -> (Vec<u8>, BackupSummary) {
    let mut b = s.backup().unwrap();
    let summary = b.summary().clone();
    let mut out = Vec::new();
    b.read_to_end(&mut out).unwrap();
    (out, summary)
}

/// Asserts `restored` holds `orig`'s state and history from the compaction
/// revision up to `rev`.
fn assert_same_history(orig: &Store, restored: &Store, rev: u64) {
    let compact = restored.compact_revision();
    for r in compact.max(1)..=rev {
        assert_eq!(all_keys(orig, r), all_keys(restored, r), "keys at revision {r}");
        if r > compact {
            assert_eq!(orig.hash_kv(r).unwrap().hash, restored.hash_kv(r).unwrap().hash, "hash at {r}");
        }
    }
}

#[test]
fn a_backup_restores_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("orig"), opts()).unwrap();
    write(&s, 150, "a");
    s.compact(60).unwrap();
    write(&s, 40, "b");
    let (bytes, summary) = backup_bytes(&s);
    // The shape FORMAT.md promises, and etcdctl's check: 32 more than blocks.
    assert_eq!(bytes.len() as u64, summary.body_len + 32);
    assert_eq!(bytes.len() % 512, 32);
    assert_eq!(&bytes[..8], b"ARGUSBAK");
    assert_eq!(bytes[bytes.len() - 32..], Sha256::digest(&bytes[..bytes.len() - 32])[..]);
    assert_eq!((summary.revision, summary.compact_revision), (s.current_revision(), 60));
    assert_eq!(summary.files[0].0, "snap-00000000000000000060.snap");
    assert!(summary.files.len() > 3, "several segments: {:?}", summary.files);
    assert!(summary.files[1..].iter().all(|(n, _)| n.starts_with("seg-")));
    let path = dir.path().join("backup.db");
    fs::write(&path, &bytes).unwrap();
    assert_eq!(verify(&path).unwrap(), summary);

    let target = dir.path().join("restored");
    let restored = restore(&path, &target, opts()).unwrap();
    assert_eq!(restored.summary, summary);
    let r = restored.store;
    assert_eq!((r.current_revision(), r.compact_revision()), (s.current_revision(), 60));
    assert_same_history(&s, &r, s.current_revision());
    assert_eq!(r.hash_kv(0).unwrap().hash, s.hash_kv(0).unwrap().hash);
    // The restored store goes on: the same writes give the same hashes.
    write(&s, 30, "c");
    write(&r, 30, "c");
    assert_same_history(&s, &r, s.current_revision());
    // And reopens.
    drop(r);
    let r = Store::open(&target, opts()).unwrap();
    assert_same_history(&s, &r, s.current_revision());
}

#[test]
fn fresh_and_never_compacted_stores_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("orig"), opts()).unwrap();
    let (bytes, summary) = backup_bytes(&s);
    assert_eq!((summary.revision, summary.compact_revision, summary.files.len()), (1, 0, 1));
    let path = dir.path().join("fresh.db");
    fs::write(&path, &bytes).unwrap();
    let r = restore(&path, &dir.path().join("r1"), opts()).unwrap().store;
    assert_eq!((r.current_revision(), r.compact_revision()), (1, 0));
    assert_eq!(r.put(b"/a", b"1").unwrap().revision, 2);

    write(&s, 100, "n");
    let (bytes, summary) = backup_bytes(&s);
    assert_eq!(summary.compact_revision, 0);
    assert!(summary.files.iter().all(|(n, _)| n.starts_with("seg-")));
    fs::write(&path, &bytes).unwrap();
    let r = restore(&path, &dir.path().join("r2"), opts()).unwrap().store;
    assert_same_history(&s, &r, s.current_revision());
}

/// The cut is one moment: a writer running beside the backup, and a compaction
/// that deletes the files the stream is still copying, change nothing in it.
#[test]
fn the_cut_is_consistent_beside_writes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("orig"), opts()).unwrap();
    write(&s, 80, "a");
    s.compact(30).unwrap();
    let stop = AtomicBool::new(false);
    let (bytes, summary, hashes) = std::thread::scope(|t| {
        let writer = t.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                s.put(format!("/w/{}", i % 5).as_bytes(), format!("w{i}-{}", "y".repeat(900)).as_bytes()).unwrap();
                i += 1;
            }
        });
        // Let the writer get going, so the cut lands among its writes.
        while s.current_revision() < 120 {
            std::thread::yield_now();
        }
        let mut b = s.backup().unwrap();
        let summary = b.summary().clone();
        // Hash everything the cut holds before the compaction changes the base.
        let rev = summary.revision;
        while s.current_revision() < rev {
            std::thread::yield_now();
        }
        let hashes: Vec<u32> = (31..=rev).map(|r| s.hash_kv(r).unwrap().hash).collect();
        let keys = all_keys(&s, rev);
        // Read the first few KiB, then compact past the whole cut: the segments it
        // lists are deleted (and more written) while the stream still reads them.
        let mut bytes = vec![0u8; 4096];
        b.read_exact(&mut bytes).unwrap();
        while s.current_revision() < rev + 60 {
            std::thread::yield_now();
        }
        s.compact(rev + 50).unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        b.read_to_end(&mut bytes).unwrap();
        (bytes, summary, (hashes, keys))
    });
    let first_seg = &summary.files[1].0;
    assert!(!dir.path().join("orig").join(first_seg).exists(), "compaction deleted {first_seg} behind the stream");
    let path = dir.path().join("b.db");
    fs::write(&path, &bytes).unwrap();
    let r = restore(&path, &dir.path().join("r"), opts()).unwrap().store;
    let rev = summary.revision;
    assert_eq!((r.current_revision(), r.compact_revision()), (rev, 30));
    let (hashes, keys) = hashes;
    assert_eq!((31..=rev).map(|x| r.hash_kv(x).unwrap().hash).collect::<Vec<_>>(), hashes);
    assert_eq!(all_keys(&r, rev), keys);
}

/// A backup file made by `f` from a valid one, with its SHA-256 recomputed when
/// `rehash` (to reach the checks behind the checksum).
fn damaged(good: &[u8], rehash: bool, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = good.to_vec();
    f(&mut b);
    if rehash {
        let n = b.len() - 32;
        let sum = Sha256::digest(&b[..n]);
        b[n..].copy_from_slice(&sum);
    }
    b
}

fn reseal_at(b: &mut [u8], block: usize) {
    let blk: &mut [u8; BLOCK] = (&mut b[block..block + BLOCK]).try_into().unwrap();
    seal(blk);
}

#[test]
fn damaged_files_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("orig"), opts()).unwrap();
    write(&s, 120, "a");
    s.compact(50).unwrap();
    write(&s, 10, "b");
    let (good, summary) = backup_bytes(&s);
    let n = good.len();
    let snap_len = summary.files[0].1 as usize;
    let seg_entry = 512 + 512 + snap_len.next_multiple_of(512);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "truncated"),
        ("half the header", good[..300].to_vec(), "truncated"),
        ("cut inside a segment", good[..seg_entry + 700].to_vec(), "truncated"),
        ("no trailer", good[..n - 32].to_vec(), "truncated"),
        ("half the trailer", good[..n - 16].to_vec(), "truncated"),
        ("bytes after it", damaged(&good, false, |b| b.extend_from_slice(b"more")), "follow the end"),
        ("a flipped bit in the header", damaged(&good, false, |b| b[20] ^= 1), "header block fails its checksum"),
        ("a flipped bit in an entry", damaged(&good, false, |b| b[512 + 9] ^= 4), "fails its checksum"),
        ("a flipped bit in the snapshot", damaged(&good, false, |b| b[1024 + 100] ^= 0x10), "SHA-256"),
        ("a flipped bit in a segment", damaged(&good, false, |b| b[seg_entry + 512 + 77] ^= 2), "SHA-256"),
        ("a flipped bit in the trailer", damaged(&good, false, |b| b[n - 5] ^= 1), "SHA-256"),
        ("padding that is not zeros", damaged(&good, true, |b| b[1024 + snap_len] = 1), "padding"),
        ("an etcd snapshot", damaged(&good, true, |b| b[..8].copy_from_slice(&[0; 8])), "ARGUSBAK"),
        (
            "a name that leaves the directory",
            damaged(&good, true, |b| {
                b[512 + 18..512 + 18 + 4].copy_from_slice(b"../x");
                reseal_at(b, 512);
            }),
            "not the next file",
        ),
        (
            "segments out of order",
            damaged(&good, true, |b| {
                b[seg_entry + 18..seg_entry + 22].copy_from_slice(b"seg-");
                b[seg_entry + 22..seg_entry + 42].copy_from_slice(b"99999999999999999999");
                reseal_at(b, seg_entry);
            }),
            "not the next file",
        ),
        (
            "another format version",
            damaged(&good, true, |b| {
                b[8] = 2;
                reseal_at(b, 0);
            }),
            "version 2",
        ),
    ];
    // A backup cut short by a whole block also fails (its length is checked).
    cases.push(("a block short", good[..n - 512].to_vec(), "truncated"));
    for (i, (what, bytes, expect)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.db"));
        fs::write(&path, &bytes).unwrap();
        let target = dir.path().join(format!("t{i}"));
        let err = restore(&path, &target, opts()).expect_err(what);
        let msg = err.to_string();
        assert!(matches!(err, BackupError::Invalid { .. }), "{what}: {msg}");
        assert!(msg.contains(expect), "{what}: {msg:?} does not say {expect:?}");
        assert!(!target.exists(), "{what}: the target directory was created");
        // An existing empty directory stays empty.
        fs::create_dir(&target).unwrap();
        assert!(restore(&path, &target, opts()).is_err(), "{what}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{what}: files were written");
    }
    // The good one still restores.
    let path = dir.path().join("good.db");
    fs::write(&path, &good).unwrap();
    restore(&path, &dir.path().join("ok"), opts()).unwrap();
}

#[test]
fn a_non_empty_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("orig"), opts()).unwrap();
    write(&s, 5, "a");
    let (bytes, _) = backup_bytes(&s);
    let path = dir.path().join("b.db");
    fs::write(&path, &bytes).unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("notes.txt"), b"mine").unwrap();
    let err = restore(&path, &target, opts()).unwrap_err();
    assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    assert_eq!(fs::read(target.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
    // A store's own directory, in use, is not empty either.
    let err = restore(&path, &dir.path().join("orig"), opts()).unwrap_err();
    assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
}
