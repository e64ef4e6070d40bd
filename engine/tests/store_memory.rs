//! Heap the store itself allocates while it deletes a large range (issue #10: a
//! DeleteRange over 200k keys peaked at 185 MB of server memory).
//!
//! A counting global allocator records the peak of live heap bytes above the level
//! before the call. The log lives in real files (mapped, not heap), so what is
//! counted is the store's and the log's transient buffers plus the index entries the
//! delete adds (which stay). Allocation is deterministic here: one thread does all
//! the work (`FsyncPolicy::Never`: no syncer thread wakes), and this file holds one
//! test so no other test allocates meanwhile.
//!
//! Figures: `cargo test -p argus-engine --test store_memory -- --nocapture`.

#[path = "common/counting.rs"]
mod counting;

use counting::{LIVE, PEAK};

use std::sync::atomic::Ordering;

use argus_engine::log::FsyncPolicy;
use argus_engine::store::{KeyValue, PutLease, Store, StoreOptions, TxnOp};

/// Peak heap bytes above the starting level while `f` runs, and the bytes still
/// held after it.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    (r, peak, kept)
}

const KEYS: usize = 200_000;

fn key(i: usize) -> Vec<u8> {
    format!("/registry/pods/k{i:08}").into_bytes()
}

/// Puts the 200k keys (24 bytes each, 100-byte values) in txns of 100 puts.
fn fill(store: &Store) {
    for first in (0..KEYS).step_by(100) {
        let ops: Vec<TxnOp> = (first..first + 100)
            .map(|i| TxnOp::Put { key: key(i), value: vec![b'v'; 100], prev_kv: false, lease: PutLease::None })
            .collect();
        store.txn(&[], &ops, &[]).unwrap();
    }
}

#[test]
fn delete_range_of_200k_keys_peaks_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never;
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    fill(&store);
    let entries_before = store.index_entries();
    let (d, peak, kept) = measure(|| store.delete_range(b"/registry/pods/", b"/registry/pods0", false).unwrap());
    assert_eq!(d.deleted, KEYS as u64);
    assert_eq!(store.index_entries(), entries_before + KEYS);
    drop(d);
    drop(store);
    // A fresh store for the second figure, so that neither starts with buffers
    // the first left behind (the log no longer keeps a huge encode buffer).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    fill(&store);
    let (d, peak_prev, _) = measure(|| store.delete_range(b"/registry/pods/", b"/registry/pods0", true).unwrap());
    assert_eq!(d.prev_kvs.len(), KEYS);
    // The answer itself: one KeyValue with its key and value per key.
    let answer = KEYS * (std::mem::size_of::<KeyValue>() + 24 + 100);
    println!(
        "delete_range of {KEYS} keys: peak {:.1} MB ({} B/key), kept {:.1} MB ({} B/key: index entries); \
         with prev_kv: peak {:.1} MB ({} B/key; the answer itself is {:.1} MB)",
        peak as f64 / 1e6,
        peak / KEYS,
        kept as f64 / 1e6,
        kept / KEYS,
        peak_prev as f64 / 1e6,
        peak_prev / KEYS,
        answer as f64 / 1e6,
    );
    // Guards, not targets: measured after issue #10's fixes, 368 and 587 B/key
    // (the index keeps about 120; the log's encode buffer, about 85, is released
    // after the call, so the fresh second store pays for it again). Before them:
    // 422, and 598 measured on a store that still held the first call's buffer.
    assert!(peak / KEYS <= 480, "delete_range peaked at {} B/key", peak / KEYS);
    assert!(peak_prev / KEYS <= 630, "delete_range with prev_kv peaked at {} B/key", peak_prev / KEYS);
}
