//! Catch-up: serving unsynced watchers (started in the past, or victims that fell
//! behind) from the log.
//!
//! The notifier takes unsynced watchers in batches of at most
//! `WatchOptions::catchup_batch`, grouped by next revision, and runs each batch as
//! one job on rayon's pool; batches run in parallel. A job reads the mapped log once
//! over `[min next revision, target]` (`target` is the notifier's position when the
//! job was made, so it is committed and fixed), builds each revision's events once
//! as an `Arc`'d [`RevisionBatch`] shared by every watcher of the batch, and cuts
//! each watcher's events into responses of at most `response_max_revisions`
//! revisions or `response_max_bytes` bytes, never splitting a revision.
//!
//! The job only computes; the notifier delivers the responses, so all of a watcher's
//! sends stay on one thread and in order. Delivery moves the watcher's cursor to
//! `target + 1`; if the notifier has not moved on since, the watcher joins the
//! synced index right there, at the notifier's position: no revision is skipped or
//! sent twice at the hand-off.

use super::notify::batch_from_records;
use super::types::{RevisionBatch, RevisionEvents, WatchResponse};
use super::watcher::WatcherCore;
use crate::store::Store;
use crate::sync::Arc;

/// What decides which events a watcher selects: key, range end, filters.
type SelectionKey<'a> = (&'a [u8], &'a Option<super::interval::RangeEnd>, bool, bool);

pub(crate) struct CatchupJob {
    /// Watchers with their next revision, in next-revision order.
    pub(crate) watchers: Vec<(Arc<WatcherCore>, u64)>,
    /// Last revision to read.
    pub(crate) target: u64,
    pub(crate) max_revs: usize,
    pub(crate) max_bytes: usize,
}

pub(crate) enum Outcome {
    /// Responses to deliver, after which the watcher's next revision is `next`.
    Caught { responses: Vec<WatchResponse>, next: u64 },
    /// Its next revision is no longer in the log.
    Compacted,
}

pub(crate) struct CatchupResult {
    pub(crate) outcomes: Vec<(Arc<WatcherCore>, Outcome)>,
}

struct Building {
    responses: Vec<WatchResponse>,
    current: Option<WatchResponse>,
    revs: usize,
    bytes: usize,
}

pub(crate) fn run(store: &Store, job: CatchupJob) -> CatchupResult {
    let reader = store.log().reader();
    let target = job.target.min(reader.committed_rev());
    // Revisions below the compaction revision are gone; every later one is in the
    // log (compaction keeps the segment holding it). The log itself may start after
    // an uncompacted revision only when that revision has no events (a fresh store's
    // revision 1), so reading from `reader.first_rev()` skips nothing.
    let first_available = store.compact_revision();
    let from = job.watchers.iter().map(|(_, n)| *n).min().unwrap_or(target + 1);
    let with_prev = job.watchers.iter().any(|(w, _)| w.prev_kv);
    let mut state: Vec<Building> =
        job.watchers.iter().map(|_| Building { responses: Vec::new(), current: None, revs: 0, bytes: 0 }).collect();
    let compacted: Vec<bool> = job.watchers.iter().map(|(_, n)| *n < first_available).collect();

    let read_from = from.max(first_available).max(reader.first_rev());
    let mut by_selection: std::collections::HashMap<SelectionKey<'_>, Vec<usize>> = std::collections::HashMap::new();
    for (i, (w, _)) in job.watchers.iter().enumerate() {
        by_selection.entry((&w.key, &w.end, w.filters.no_put, w.filters.no_delete)).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_selection.into_values().collect();
    // Events own their bytes (one copy per revision, shared by every watcher of the
    // batch); prev_kv lookups use a second view so the scan can keep borrowing `reader`.
    let mut prev_reader = store.log().reader();
    let mut pending: Vec<crate::log::OwnedRecord> = Vec::new();
    let mut flush = |pending: &mut Vec<crate::log::OwnedRecord>| {
        if pending.is_empty() {
            return;
        }
        let batch = Arc::new(batch_from_records(store, &mut prev_reader, pending.drain(..), with_prev));
        // Watchers with the same range and filters select the same events: match
        // once per group (a hundred watchers on one prefix cost one match).
        for members in &groups {
            let mut selected: Option<Option<RevisionEvents>> = None;
            for &i in members {
                let (w, next) = &job.watchers[i];
                if compacted[i] || batch.revision < *next || batch.revision < w.min_rev {
                    continue;
                }
                if let Some(ev) = selected.get_or_insert_with(|| select(&batch, w)) {
                    push(&mut state[i], ev.clone(), w, job.max_revs, job.max_bytes);
                }
            }
        }
    };
    if read_from <= target {
        for item in reader.records(read_from, target) {
            let Ok((_, r)) = item else { break };
            if pending.last().is_some_and(|p| p.main != r.main) {
                flush(&mut pending);
            }
            pending.push(crate::log::OwnedRecord::from(r));
        }
        flush(&mut pending);
    }
    let outcomes = job
        .watchers
        .into_iter()
        .zip(state)
        .zip(compacted)
        .map(|(((w, next), mut b), compacted)| {
            if compacted {
                return (w, Outcome::Compacted);
            }
            if let Some(c) = b.current.take() {
                b.responses.push(c);
            }
            // A member whose cursor is past the target got nothing and keeps it.
            (w, Outcome::Caught { responses: b.responses, next: next.max(target + 1) })
        })
        .collect();
    CatchupResult { outcomes }
}

/// The events of `batch` that watcher `w` receives, if any.
pub(crate) fn select(batch: &Arc<RevisionBatch>, w: &WatcherCore) -> Option<RevisionEvents> {
    // `picked` is allocated only once an event does not match: the common case
    // (every event of the revision matches) allocates nothing.
    let mut picked: Option<Vec<u32>> = None;
    let mut any = false;
    for (i, e) in batch.events.iter().enumerate() {
        let hit = w.contains(&e.kv.key) && w.filters.pass(e.kind);
        match (&mut picked, hit) {
            (Some(p), true) => p.push(i as u32),
            (Some(_), false) => {}
            (None, true) => {}
            (None, false) => picked = Some((0..i as u32).collect()),
        }
        any |= hit;
    }
    if !any {
        return None;
    }
    Some(RevisionEvents { batch: Arc::clone(batch), selection: picked.map(Into::into) })
}

fn push(b: &mut Building, ev: RevisionEvents, w: &WatcherCore, max_revs: usize, max_bytes: usize) {
    let size = ev.size();
    let full = b.current.is_some() && (b.revs >= max_revs || b.bytes + size > max_bytes);
    if full {
        if let Some(c) = b.current.take() {
            b.responses.push(c);
        }
    }
    let rev = ev.batch.revision;
    let cur = b.current.get_or_insert_with(|| {
        let mut r = WatchResponse::control(w.id, rev);
        r.prev_kv = w.prev_kv;
        r
    });
    if cur.events.is_empty() {
        b.revs = 0;
        b.bytes = 0;
    }
    cur.revision = rev;
    cur.events.push(ev);
    b.revs += 1;
    b.bytes += size;
}
