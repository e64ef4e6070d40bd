//! Catch-up: serving unsynced groups (started in the past, or victims that fell
//! behind) from the log.
//!
//! The notifier takes unsynced groups in batches of at most
//! `WatchOptions::catchup_batch`, in cursor order, and runs each batch as one job on
//! the engine's pool; batches run in parallel. A job reads the mapped log once over
//! `[smallest cursor, target]` (`target` is the notifier's position when the job was
//! made, so it is committed and fixed). For each revision it decides on the borrowed
//! records which groups select which events (once per distinct range and filters,
//! however many groups and watchers share them) and builds the revision's shared
//! [`RevisionBatch`] only if somebody selected something. Each group's revisions go
//! into one list, cut into responses of at most `response_max_revisions` revisions
//! or `response_max_bytes` bytes, never splitting a revision; the responses are parts
//! of that list, not copies.
//!
//! The job only computes and names each group by a generation-checked handle; the
//! notifier delivers the responses (so all of a group's sends stay on one thread and
//! in order) to the group's watchers *as they are then*, and only if the handle
//! still names the same group: a group canceled while its job ran, whose slot was
//! reused by another group, gets nothing (modelled with loom). Delivery moves the
//! group's cursor to `target + 1`; if the notifier has not moved on since, the group
//! joins the synced index right there, at the notifier's position: no revision is
//! skipped or sent twice at the hand-off.

use std::collections::HashMap;

use super::group::Class;
use super::index::KeyRange;
use super::notify::batch_from_records;
use super::slab::Handle;
use super::types::{EventKind, RevisionBatch, RevisionEvents};
use crate::log::record::{RecordKind, RecordRef};
use crate::store::Store;
use crate::sync::Arc;

/// One group as a job sees it: a copy of what decides its events.
pub(crate) struct JobGroup {
    pub(crate) group: Handle,
    pub(crate) range: KeyRange,
    pub(crate) class: Class,
    /// First revision it is owed.
    pub(crate) next: u64,
}

pub(crate) struct CatchupJob {
    pub(crate) groups: Vec<JobGroup>,
    /// Last revision to read.
    pub(crate) target: u64,
    pub(crate) max_revs: usize,
    pub(crate) max_bytes: usize,
}

pub(crate) enum Outcome {
    /// The group's revisions (`cuts[i]`: end of response `i` in `revisions`), after
    /// which its next revision is `next`.
    Caught { revisions: Vec<RevisionEvents>, cuts: Vec<u32>, next: u64 },
    /// Its next revision is no longer in the log.
    Compacted,
    /// The log could not be read where it needed (the reason): nothing of what
    /// the job read is delivered and the cursor does not move; the notifier
    /// cancels the group with the reason.
    Failed(String),
}

pub(crate) struct CatchupResult {
    pub(crate) outcomes: Vec<(Handle, Outcome)>,
}

#[derive(Default)]
struct Building {
    revisions: Vec<RevisionEvents>,
    cuts: Vec<u32>,
    /// Revisions and bytes in the response being filled.
    revs: usize,
    bytes: usize,
}

impl Building {
    /// Adds one revision; `left` is how many revisions the job may still add (the
    /// list is sized for them at the first push rather than grown step by step).
    fn push(&mut self, ev: RevisionEvents, max_revs: usize, max_bytes: usize, left: u64) {
        if self.revisions.capacity() == 0 {
            self.revisions.reserve(left.min(1 << 16) as usize);
        }
        let size = ev.size();
        if self.revs > 0 && (self.revs >= max_revs || self.bytes + size > max_bytes) {
            self.cuts.push(self.revisions.len() as u32);
            self.revs = 0;
            self.bytes = 0;
        }
        self.revisions.push(ev);
        self.revs += 1;
        self.bytes += size;
    }

    fn finish(mut self) -> (Vec<RevisionEvents>, Vec<u32>) {
        if self.revs > 0 {
            self.cuts.push(self.revisions.len() as u32);
        }
        (self.revisions, self.cuts)
    }
}

pub(crate) fn event_kind(r: &RecordRef<'_>) -> EventKind {
    match r.kind {
        RecordKind::Delete => EventKind::Delete,
        _ => EventKind::Put,
    }
}

/// The events of one revision a range and filter selection receives: `None` if
/// none, `Some(None)` if all, else their indices.
fn select(recs: &[RecordRef<'_>], range: &KeyRange, class: Class) -> Option<Option<Arc<[u32]>>> {
    // `picked` is allocated only once an event does not match: the common case
    // (every event of the revision matches) allocates nothing.
    let mut picked: Option<Vec<u32>> = None;
    let mut any = false;
    for (i, r) in recs.iter().enumerate() {
        let hit = range.contains(r.key) && class.passes(event_kind(r));
        match (&mut picked, hit) {
            (Some(p), true) => p.push(i as u32),
            (Some(_), false) => {}
            (None, true) => {}
            (None, false) => picked = Some((0..i as u32).collect()),
        }
        any |= hit;
    }
    any.then(|| picked.map(Into::into))
}

pub(crate) fn run(store: &Store, job: CatchupJob) -> CatchupResult {
    let reader = store.log().reader();
    let target = job.target.min(reader.committed_rev());
    // Revisions below the compaction revision are gone; every later one is in the
    // log (compaction keeps the segment holding it). The log itself may start after
    // an uncompacted revision only when that revision has no events (a fresh store's
    // revision 1), so reading from `reader.first_rev()` skips nothing.
    let first_available = store.compact_revision();
    let compacted: Vec<bool> = job.groups.iter().map(|g| g.next < first_available).collect();
    let from = job.groups.iter().zip(&compacted).filter(|(_, c)| !**c).map(|(g, _)| g.next).min();
    let with_prev = job.groups.iter().any(|g| g.class.prev_kv());
    let mut state: Vec<Building> = job.groups.iter().map(|_| Building::default()).collect();
    let mut read_error: Option<String> = None;

    // Groups with the same range and filters select the same events: decide once
    // per selection (a hundred streams watching one prefix cost one match).
    let mut by_selection: HashMap<(&KeyRange, u8), Vec<usize>> = HashMap::new();
    for (i, g) in job.groups.iter().enumerate() {
        if !compacted[i] {
            by_selection.entry((&g.range, g.class.filters())).or_default().push(i);
        }
    }
    let selections: Vec<(&KeyRange, Class, Vec<usize>)> =
        by_selection.into_iter().map(|((r, _), members)| (r, job.groups[members[0]].class, members)).collect();

    if let Some(from) = from {
        let read_from = from.max(first_available).max(reader.first_rev());
        // prev_kv lookups use a second view so the scan can keep borrowing `reader`.
        let mut prev_reader = store.log().reader();
        let mut recs: Vec<RecordRef<'_>> = Vec::new();
        let mut flush = |recs: &mut Vec<RecordRef<'_>>| {
            let Some(first) = recs.first() else { return };
            let rev = first.main;
            let mut batch: Option<Arc<RevisionBatch>> = None;
            for (range, class, members) in &selections {
                if !members.iter().any(|&i| rev >= job.groups[i].next) {
                    continue;
                }
                let Some(sel) = select(recs, range, *class) else { continue };
                let batch =
                    batch.get_or_insert_with(|| Arc::new(batch_from_records(store, &mut prev_reader, recs, with_prev)));
                for &i in members {
                    if rev >= job.groups[i].next {
                        let ev = RevisionEvents { batch: Arc::clone(batch), selection: sel.clone() };
                        state[i].push(ev, job.max_revs, job.max_bytes, target - rev + 1);
                    }
                }
            }
            recs.clear();
        };
        if read_from <= target {
            for item in reader.records(read_from, target) {
                let r = match item {
                    Ok((_, r)) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "catch-up cannot read the log; canceling the watchers it serves");
                        read_error = Some(format!("cannot read the log: {e}"));
                        recs.clear();
                        break;
                    }
                };
                if recs.last().is_some_and(|p| p.main != r.main) {
                    flush(&mut recs);
                }
                recs.push(r);
            }
            flush(&mut recs);
        }
    }
    let outcomes = job
        .groups
        .into_iter()
        .zip(state)
        .zip(compacted)
        .map(|((g, b), compacted)| {
            if compacted {
                return (g.group, Outcome::Compacted);
            }
            if let Some(reason) = &read_error {
                if g.next <= target {
                    // It needed revisions the job could not read.
                    return (g.group, Outcome::Failed(reason.clone()));
                }
            }
            let (revisions, cuts) = b.finish();
            // A group whose cursor is past the target got nothing and keeps it.
            (g.group, Outcome::Caught { revisions, cuts, next: g.next.max(target + 1) })
        })
        .collect();
    CatchupResult { outcomes }
}
