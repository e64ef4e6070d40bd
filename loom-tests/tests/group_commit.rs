//! Loom models of the revision log's group commit (`engine/src/log/commit.rs`): the
//! syncer role, the per-writer wake-ups and the hand-off of the role, on the
//! engine's own code over `MemStorage` under `FsyncPolicy::Always`.
//!
//! Run with `scripts/loom.sh group_commit`. Twins (see `models.rs`): with
//! `argus_bug = "early-wake"` the syncer tells every sleeping writer its revision is
//! durable, including one whose revision arrived during the fsync, and the models'
//! durability check fails; with `argus_bug = "lost-handoff"` the role is never
//! handed on, so a writer whose revision arrived during an fsync sleeps forever,
//! and loom reports the deadlock.
#![cfg(loom)]

use std::sync::Arc;

use argus_engine::log::record::{self, RecordKind};
use argus_engine::log::{Event, FsyncPolicy, LogOptions, MemStorage, RevisionLog};
use loom::sync::Mutex;
use loom::thread;

mod common;
use common::model;

/// The one segment of a fresh log (its first revision is 2).
const SEGMENT: &str = "seg-00000000000000000002.log";

/// A writer as the store does it: takes the next revision and appends it under one
/// lock (`last` holds the last appended revision), then waits for durability
/// outside it. When `wait_durable` returns Ok, the revision's record must be in the
/// storage's durable bytes and the revision published.
fn write_one(log: &RevisionLog, storage: &MemStorage, last: &Mutex<u64>) -> u64 {
    let (ticket, offset) = {
        let mut last = last.lock().unwrap();
        let rev = *last + 1;
        let v = rev.to_le_bytes();
        let ev =
            [Event { kind: RecordKind::Put, key: b"k", value: &v, create_revision: 2, version: rev - 1, lease: 0 }];
        let mut offset = 0;
        let ticket = log.append(rev, &ev, |locs| offset = locs[0].offset()).unwrap();
        *last = rev;
        (ticket, offset as usize)
    };
    log.wait_durable(ticket).unwrap();
    let rev = ticket.rev;
    assert!(log.committed_rev() >= rev, "revision {rev} acknowledged before it was published");
    let durable = storage.read_durable(SEGMENT).expect("the segment exists");
    let rec = record::decode(&durable[offset..]).ok().map(|(r, _)| (r.main, r.last));
    assert_eq!(rec, Some((rev, true)), "revision {rev} acknowledged before it was durable");
    rev
}

/// `writers` writers (the model's main thread is the last of them) each write one
/// revision; every one returns (a writer asleep for good is a loom deadlock) and
/// the log ends committed at the last revision.
fn writers_race(writers: usize) {
    model(move || {
        let storage = MemStorage::new();
        let opts = LogOptions { fsync: FsyncPolicy::Always, segment_size: 4096, ..LogOptions::default() };
        let (log, _) = RevisionLog::open(Arc::new(storage.clone()), opts).unwrap();
        let last = Arc::new(Mutex::new(1u64));
        let others: Vec<_> = (1..writers)
            .map(|_| {
                let (log, storage, last) = (log.clone(), storage.clone(), Arc::clone(&last));
                thread::spawn(move || write_one(&log, &storage, &last))
            })
            .collect();
        let mut revs = vec![write_one(&log, &storage, &last)];
        revs.extend(others.into_iter().map(|t| t.join().unwrap()));
        revs.sort_unstable();
        let want: Vec<u64> = (2..2 + writers as u64).collect();
        assert_eq!(revs, want, "each writer got its own revision");
        assert_eq!(log.committed_rev(), 1 + writers as u64, "committed_rev ends at the last revision");
        let stats = log.commit_stats();
        assert_eq!(stats.revisions, writers as u64, "every revision counted once: {stats:?}");
        assert!(stats.fsyncs <= stats.revisions, "{stats:?}");
    });
}

/// Model 1: two writers. The second may append while the first syncs: it must
/// sleep until a round covers it (the first hands it the role) and not be told
/// durable by the first round.
#[test]
#[cfg_attr(argus_bug = "early-wake", should_panic(expected = "acknowledged before it was"))]
#[cfg_attr(argus_bug = "lost-handoff", should_panic(expected = "deadlock"))]
fn group_commit_two_writers() {
    writers_race(2);
}

/// Model 2: three writers: two may arrive during one fsync and share the next,
/// which exactly one of them runs, and a third role holder may follow.
#[test]
#[cfg_attr(argus_bug = "early-wake", should_panic(expected = "acknowledged before it was"))]
#[cfg_attr(argus_bug = "lost-handoff", should_panic(expected = "deadlock"))]
fn group_commit_three_writers() {
    writers_race(3);
}
