//! A checker of watch guarantees: given what was written ([`History`]) and what one
//! watcher received ([`Observed`]), [`check`] lists every way the responses break
//! etcd's watch contract, in the spirit of etcd's robustness validator
//! (`tests/robustness/validate/watch.go`), strengthened where the full history
//! allows it.
//!
//! The guarantees ([`Check`]):
//!
//! * **Filter**: every event is in the watched key range and passes the filters.
//! * **Ordered**: event revisions never decrease.
//! * **Unique**: no event (revision, key) is delivered twice.
//! * **Atomic**: a revision's events arrive in one response, all of them.
//! * **Bookmarkable**: a progress notification at `R` promises no later event at or
//!   below `R`, and progress revisions never go back.
//! * **Resumable**: a watch from `start_revision` begins with the first matching
//!   event at or after it.
//! * **Reliable**: no matching event is missed or invented between where the watch
//!   starts and the last revision it proved it reached.
//! * **IsCreate**: a PUT looks like a create exactly when the key was absent.
//! * **PrevKv**: `prev_kv` is the key's state before the event, and only when asked.
//!
//! plus **Payload** (each event's key-value equals the one written) and
//! **Lifecycle** (`created` first, nothing after `canceled`, no foreign responses).
//!
//! The revision of an event is the revision of the [`RevisionEvents`] batch that
//! carries it; its `kv.mod_revision` is checked against it by **Payload**.
//!
//! ```ignore
//! let mut history = History::new();
//! history.record_writes(2, &[(b"a", Some(b"1"))]);
//! let observed = Observed { request, watch_id, responses };
//! check::assert_clean(&history, &[observed]);
//! ```
//!
//! [`RevisionEvents`]: crate::watch::RevisionEvents

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::error::Result;
use crate::log::record::RecordKind;
use crate::log::LogReader;
use crate::store::KeyValue;
use crate::watch::{Event, EventKind, WatchId, WatchRequest, WatchResponse};

/// One change of a key's state, as the history keeps it per key.
#[derive(Clone, Debug)]
struct KeyEntry {
    rev: u64,
    /// The state after the change; `None` after a delete.
    kv: Option<KeyValue>,
}

/// What was written: every revision's events in order, and every key's state at any
/// revision. Built by a test as it writes ([`History::record`],
/// [`History::record_writes`]) or from a store's log ([`History::from_log`]).
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Events per revision, `sub` = position, `prev_kv` = `None`.
    revisions: BTreeMap<u64, Vec<Event>>,
    /// State changes per key, in revision order (a revision changes a key once).
    keys: BTreeMap<Vec<u8>, Vec<KeyEntry>>,
    /// First revision whose events are known (earlier events are not checked
    /// against the history).
    known_from: u64,
    /// [`History::state_at`] is exact for revisions `>= state_from`.
    state_from: u64,
    /// Last revision the history knows.
    last: u64,
    /// Compaction floor: previous states below it may be missing from `prev_kv`.
    compacted: u64,
}

impl History {
    /// An empty history of a store that starts empty: every revision is known, from
    /// the first, and has no events until recorded.
    pub fn new() -> Self {
        History { known_from: 1, ..Default::default() }
    }

    /// Records the events of `revision`, in order. `mod_revision` is set to
    /// `revision`, and a DELETE's key-value is reduced to its key (as etcd's DELETE
    /// events); `create_revision`, `version` and `value` of PUTs are taken as given.
    ///
    /// # Panics
    ///
    /// If `revision` is not above every revision recorded so far.
    pub fn record(&mut self, revision: u64, events: impl IntoIterator<Item = (EventKind, KeyValue)>) {
        assert!(
            revision > self.last,
            "History::record: revision {revision} is not after the last recorded revision {}",
            self.last
        );
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, (kind, mut kv))| {
                kv.mod_revision = revision;
                if kind == EventKind::Delete {
                    kv = KeyValue { key: kv.key, mod_revision: revision, ..Default::default() };
                }
                Event { kind, kv, prev_kv: None, sub: i as u32 }
            })
            .collect();
        self.push_revision(revision, events, true);
    }

    /// Records `revision` as the store would apply `writes`: `(key, Some(value))`
    /// puts (create revision and version follow from the key's state), `(key, None)`
    /// deletes (skipped when the key is absent, as etcd makes no event for it).
    ///
    /// # Panics
    ///
    /// As [`History::record`].
    pub fn record_writes<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, revision: u64, writes: &[(K, Option<V>)]) {
        let events: Vec<(EventKind, KeyValue)> = writes
            .iter()
            .filter_map(|(key, value)| {
                let key = key.as_ref();
                let prev = self.get_at(key, revision.saturating_sub(1));
                match value {
                    Some(v) => {
                        let (create_revision, version) =
                            prev.map_or((revision, 1), |p| (p.create_revision, p.version + 1));
                        let kv = KeyValue {
                            key: key.to_vec(),
                            value: v.as_ref().to_vec(),
                            create_revision,
                            mod_revision: revision,
                            version,
                            lease: 0,
                        };
                        Some((EventKind::Put, kv))
                    }
                    None => prev.map(|_| (EventKind::Delete, KeyValue { key: key.to_vec(), ..Default::default() })),
                }
            })
            .collect();
        self.record(revision, events);
    }

    /// The history of revisions `from ..= to` (clamped to what `reader` holds) of a
    /// store's log. The key states before `from` are read too (from the base
    /// snapshot and earlier records), so [`History::state_at`] is exact from the
    /// snapshot's revision on; the compaction floor is set to that revision.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Corrupt`] if the log cannot be read.
    pub fn from_log(reader: &LogReader, from: u64, to: u64) -> Result<History> {
        let snap = reader.snapshot_rev();
        let mut h = History::new();
        for (_, r) in reader.snapshot_records() {
            let kv = KeyValue {
                key: r.key.to_vec(),
                value: r.value.to_vec(),
                create_revision: r.create_revision,
                mod_revision: r.mod_revision,
                version: r.version,
                lease: r.lease,
            };
            h.keys.entry(kv.key.clone()).or_default().push(KeyEntry { rev: r.mod_revision, kv: Some(kv) });
        }
        h.state_from = snap.max(reader.first_rev().saturating_sub(1));
        h.compacted = snap;
        h.known_from = from.max(h.state_from + 1);
        let to = to.min(reader.committed_rev());
        h.last = to;
        let mut current: Option<(u64, Vec<Event>)> = None;
        for item in reader.records(h.state_from + 1, to) {
            let (_, r) = item?;
            let kind = match r.kind {
                RecordKind::Put => EventKind::Put,
                RecordKind::Delete => EventKind::Delete,
                RecordKind::End | RecordKind::LeaseGrant | RecordKind::LeaseRevoke | RecordKind::Auth => continue,
            };
            let kv = match kind {
                EventKind::Put => KeyValue {
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                    create_revision: r.create_revision,
                    mod_revision: r.main,
                    version: r.version,
                    lease: r.lease,
                },
                EventKind::Delete => KeyValue { key: r.key.to_vec(), mod_revision: r.main, ..Default::default() },
            };
            let event = Event { kind, kv, prev_kv: None, sub: r.sub };
            match &mut current {
                Some((rev, events)) if *rev == r.main => events.push(event),
                _ => {
                    if let Some((rev, events)) = current.take() {
                        h.push_revision(rev, events, rev >= h.known_from);
                    }
                    current = Some((r.main, vec![event]));
                }
            }
        }
        if let Some((rev, events)) = current {
            h.push_revision(rev, events, rev >= h.known_from);
        }
        Ok(h)
    }

    fn push_revision(&mut self, revision: u64, events: Vec<Event>, keep_events: bool) {
        for e in &events {
            let kv = (e.kind == EventKind::Put).then(|| e.kv.clone());
            self.keys.entry(e.kv.key.clone()).or_default().push(KeyEntry { rev: revision, kv });
        }
        if keep_events {
            self.revisions.insert(revision, events);
        }
        self.last = self.last.max(revision);
    }

    /// Sets the compaction floor: an event at revision `r` with `r - 1 < rev` may
    /// lack `prev_kv`.
    pub fn set_compacted(&mut self, rev: u64) {
        self.compacted = rev;
    }

    /// The compaction floor.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// First revision whose events the history knows.
    pub fn first_revision(&self) -> u64 {
        self.known_from
    }

    /// Last revision the history knows.
    pub fn last_revision(&self) -> u64 {
        self.last
    }

    /// The events of `revision` (empty if it has none or is unknown).
    pub fn events_at(&self, revision: u64) -> &[Event] {
        self.revisions.get(&revision).map_or(&[], Vec::as_slice)
    }

    /// The state of `key` after every revision `<= rev`.
    pub fn get_at(&self, key: &[u8], rev: u64) -> Option<&KeyValue> {
        let entries = self.keys.get(key)?;
        let i = entries.partition_point(|e| e.rev <= rev);
        entries.get(i.checked_sub(1)?)?.kv.as_ref()
    }

    /// Every live key and its state after applying every revision `<= rev`. Exact
    /// for revisions at or above the snapshot a log history started from.
    pub fn state_at(&self, rev: u64) -> BTreeMap<Vec<u8>, KeyValue> {
        self.keys.keys().filter_map(|k| self.get_at(k, rev).map(|kv| (k.clone(), kv.clone()))).collect()
    }

    /// The events of revisions `from ..= to` the watch `request` matches (key range
    /// and filters), in order.
    pub fn events_matching(&self, request: &WatchRequest, from: u64, to: u64) -> Vec<&Event> {
        if from > to {
            return Vec::new();
        }
        self.revisions
            .range(from..=to)
            .flat_map(|(_, events)| events.iter())
            .filter(|e| request_matches(request, e.kind, &e.kv.key))
            .collect()
    }

    fn event(&self, revision: u64, key: &[u8]) -> Option<&Event> {
        self.events_at(revision).iter().find(|e| e.kv.key == key)
    }

    fn knows_events_at(&self, revision: u64) -> bool {
        revision >= self.known_from && revision <= self.last
    }

    fn knows_state_at(&self, revision: u64) -> bool {
        revision >= self.state_from
    }
}

/// Whether `key` is in the range of `request` (empty `range_end`: the key itself;
/// `"\0"`: every key from it; otherwise `[key, range_end)`).
pub fn in_range(request: &WatchRequest, key: &[u8]) -> bool {
    if request.range_end.is_empty() {
        key == request.key.as_slice()
    } else if request.range_end == [0] {
        key >= request.key.as_slice()
    } else {
        key >= request.key.as_slice() && key < request.range_end.as_slice()
    }
}

/// Whether `request` matches an event of `kind` on `key` (range and filters).
pub fn request_matches(request: &WatchRequest, kind: EventKind, key: &[u8]) -> bool {
    in_range(request, key) && request.filters.pass(kind)
}

/// What one watcher received: its request, its id, and in order every response of
/// its stream addressed to it. Stream-wide progress responses (`watch_id == -1`)
/// may be included where they arrived; they count for the watcher between its
/// `created` and `canceled` responses and are ignored elsewhere.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The create request.
    pub request: WatchRequest,
    /// The id the watcher was given.
    pub watch_id: WatchId,
    /// Its responses in arrival order.
    pub responses: Vec<WatchResponse>,
}

impl Observed {
    /// Splits the responses of one stream into one [`Observed`] per watcher of
    /// `watchers` (`(id, request)`), copying each stream-wide progress response to
    /// every watcher created and not canceled when it arrived. Responses of ids not
    /// in `watchers` are dropped.
    pub fn split_stream(watchers: &[(WatchId, WatchRequest)], responses: &[WatchResponse]) -> Vec<Observed> {
        let mut out: Vec<Observed> = watchers
            .iter()
            .map(|(id, request)| Observed { request: request.clone(), watch_id: *id, responses: Vec::new() })
            .collect();
        let mut open = vec![false; out.len()];
        for resp in responses {
            if resp.watch_id == -1 {
                for (o, &is_open) in out.iter_mut().zip(&open) {
                    if is_open {
                        o.responses.push(resp.clone());
                    }
                }
                continue;
            }
            if let Some(i) = out.iter().position(|o| o.watch_id == resp.watch_id) {
                if resp.created {
                    open[i] = true;
                }
                if resp.canceled {
                    open[i] = false;
                }
                out[i].responses.push(resp.clone());
            }
        }
        out
    }
}

/// The guarantee a [`Violation`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// An event outside the key range or rejected by the filters.
    Filter,
    /// Event revisions went backwards.
    Ordered,
    /// An event was delivered twice.
    Unique,
    /// A revision was split across responses, or a response lacked some of the
    /// watcher's events of a revision it included.
    Atomic,
    /// An event at or below an earlier progress revision, or a progress revision
    /// below an earlier progress or event revision.
    Bookmarkable,
    /// A watch from a start revision did not begin at the first matching event.
    Resumable,
    /// A matching event was missed, or an event was delivered that was not written
    /// (or before the watch's start).
    Reliable,
    /// A PUT's version/create revision disagree with whether the key existed.
    IsCreate,
    /// A wrong, missing or unrequested `prev_kv`.
    PrevKv,
    /// An event's kind, key-value or sub revision differs from what was written.
    Payload,
    /// Responses out of the watcher's life: before `created`, after `canceled`,
    /// a second `created`, another watcher's id, a stream-wide response with events.
    Lifecycle,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee.
    pub check: Check,
    /// Of which watcher.
    pub watch_id: WatchId,
    /// What was seen and what was expected.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watch {}: {}: {}", self.watch_id, self.check, self.detail)
    }
}

/// One event as the client saw it.
struct Seen {
    /// Revision of the batch that carried it.
    rev: u64,
    /// Index of the response.
    resp: usize,
    /// The event, `prev_kv` stripped unless the response asked for it.
    event: Event,
}

fn show(key: &[u8]) -> String {
    format!("\"{}\"", key.escape_ascii())
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Put => "PUT",
        EventKind::Delete => "DELETE",
    }
}

fn describe(kind: EventKind, key: &[u8], rev: u64) -> String {
    format!("{} {}@{}", kind_name(kind), show(key), rev)
}

fn show_kv(kv: Option<&KeyValue>) -> String {
    match kv {
        None => "none".to_string(),
        Some(kv) => format!(
            "{{key {}, value {}, create {}, mod {}, version {}}}",
            show(&kv.key),
            show(&kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
    }
}

/// Checks what one watcher received against `history`; returns every violation
/// found (empty when the watcher kept every guarantee).
pub fn check(history: &History, observed: &Observed) -> Vec<Violation> {
    let req = &observed.request;
    let id = observed.watch_id;
    let mut out = Vec::new();
    let mut report = |check: Check, detail: String| out.push(Violation { check, watch_id: id, detail });

    // Walk the responses: lifecycle, ordering, bookmarks; collect the events.
    let mut seen: Vec<Seen> = Vec::new();
    let mut created: Option<u64> = None;
    let mut canceled: Option<usize> = None;
    let mut last_progress: Option<u64> = None;
    let mut prev_rev: Option<u64> = None;
    let mut max_event_rev: Option<u64> = None;
    let mut reported_early = false;
    for (i, resp) in observed.responses.iter().enumerate() {
        if resp.watch_id == -1 {
            if created.is_none() || canceled.is_some() {
                continue;
            }
            if !resp.is_progress() {
                report(
                    Check::Lifecycle,
                    format!("stream-wide response #{i} (watch_id -1) is not a progress notification"),
                );
                continue;
            }
        } else if resp.watch_id != id {
            report(Check::Lifecycle, format!("response #{i} is for watch {}, not this watcher", resp.watch_id));
            continue;
        }
        if let Some(c) = canceled {
            report(Check::Lifecycle, format!("response #{i} arrived after the canceled response #{c}"));
        }
        if resp.created {
            if created.is_some() {
                report(Check::Lifecycle, format!("response #{i} is a second created response"));
            } else {
                created = Some(resp.revision);
            }
        } else if created.is_none() && !reported_early {
            reported_early = true;
            report(Check::Lifecycle, format!("response #{i} arrived before the created response"));
        }
        for group in &resp.events {
            let rev = group.batch.revision;
            for e in group.iter() {
                let mut event = e.to_event();
                if !resp.prev_kv {
                    event.prev_kv = None;
                }
                let what = describe(event.kind, &event.kv.key, rev);
                if let Some(p) = prev_rev.filter(|&p| rev < p) {
                    report(Check::Ordered, format!("{what} in response #{i} comes after an event at revision {p}"));
                }
                if let Some(p) = last_progress.filter(|&p| rev <= p) {
                    report(
                        Check::Bookmarkable,
                        format!("{what} in response #{i} comes after a progress notification at revision {p}"),
                    );
                }
                prev_rev = Some(rev);
                max_event_rev = max_event_rev.max(Some(rev));
                seen.push(Seen { rev, resp: i, event });
            }
        }
        if resp.canceled && canceled.is_none() {
            canceled = Some(i);
        }
        if resp.is_progress() {
            if let Some(p) = last_progress.filter(|&p| resp.revision < p) {
                report(
                    Check::Bookmarkable,
                    format!("progress notification #{i} at revision {} after one at revision {p}", resp.revision),
                );
            }
            if let Some(e) = max_event_rev.filter(|&e| resp.revision < e) {
                report(
                    Check::Bookmarkable,
                    format!("progress notification #{i} at revision {} after an event at revision {e}", resp.revision),
                );
            }
            last_progress = last_progress.max(Some(resp.revision));
        }
    }

    // Filter.
    for s in &seen {
        let what = describe(s.event.kind, &s.event.kv.key, s.rev);
        if !in_range(req, &s.event.kv.key) {
            report(
                Check::Filter,
                format!(
                    "{what} in response #{} is outside the watched range [{}, {})",
                    s.resp,
                    show(&req.key),
                    show(&req.range_end)
                ),
            );
        }
        if !req.filters.pass(s.event.kind) {
            report(Check::Filter, format!("{what} in response #{} passed the {:?} filters", s.resp, req.filters));
        }
    }

    // Unique.
    let mut first_seen: HashMap<(u64, &[u8]), usize> = HashMap::new();
    for s in &seen {
        if let Some(&first) = first_seen.get(&(s.rev, s.event.kv.key.as_slice())) {
            report(
                Check::Unique,
                format!(
                    "{} delivered again in response #{} (first in response #{first})",
                    describe(s.event.kind, &s.event.kv.key, s.rev),
                    s.resp
                ),
            );
        } else {
            first_seen.insert((s.rev, s.event.kv.key.as_slice()), s.resp);
        }
    }

    // Atomic: no revision continues from the previous response; every response has
    // all the watcher's events of each revision it includes. Per response with
    // events: its first and last event revision, its keys per revision.
    struct RespEvents<'a> {
        first: u64,
        last: u64,
        keys: BTreeMap<u64, BTreeSet<&'a [u8]>>,
    }
    let mut by_resp: BTreeMap<usize, RespEvents<'_>> = BTreeMap::new();
    for s in &seen {
        let entry =
            by_resp.entry(s.resp).or_insert_with(|| RespEvents { first: s.rev, last: s.rev, keys: BTreeMap::new() });
        entry.last = s.rev;
        entry.keys.entry(s.rev).or_default().insert(s.event.kv.key.as_slice());
    }
    let mut prev_last: Option<(usize, u64)> = None;
    for (&i, r) in &by_resp {
        if let Some((j, p)) = prev_last.filter(|&(_, p)| p == r.first) {
            report(Check::Atomic, format!("revision {p} is split between responses #{j} and #{i}"));
        }
        prev_last = Some((i, r.last));
        for (&rev, keys) in &r.keys {
            if !history.knows_events_at(rev) {
                continue;
            }
            let missing: Vec<String> = history
                .events_matching(req, rev, rev)
                .into_iter()
                .filter(|e| !keys.contains(e.kv.key.as_slice()))
                .map(|e| describe(e.kind, &e.kv.key, rev))
                .collect();
            if !missing.is_empty() {
                report(
                    Check::Atomic,
                    format!("response #{i} includes revision {rev} but lacks its events {}", missing.join(", ")),
                );
            }
        }
    }

    // Payload.
    for s in &seen {
        if !history.knows_events_at(s.rev) {
            continue;
        }
        let Some(want) = history.event(s.rev, &s.event.kv.key) else { continue };
        let got = &s.event;
        if got.kind != want.kind || got.kv != want.kv || got.sub != want.sub {
            report(
                Check::Payload,
                format!(
                    "{} in response #{}: got {} {} sub {}, written {} {} sub {}",
                    describe(got.kind, &got.kv.key, s.rev),
                    s.resp,
                    kind_name(got.kind),
                    show_kv(Some(&got.kv)),
                    got.sub,
                    kind_name(want.kind),
                    show_kv(Some(&want.kv)),
                    want.sub
                ),
            );
        }
    }

    // Reliable and Resumable: the range of revisions the watcher vouches for.
    let start = u64::try_from(req.start_revision).unwrap_or(0);
    let first_event = seen.first().map(|s| s.rev);
    let first_rev = if start != 0 {
        Some(start)
    } else {
        match (created, first_event) {
            (Some(c), Some(f)) => Some((c + 1).min(f)),
            (Some(c), None) => Some(c + 1),
            (None, f) => f,
        }
    };
    let last_rev = last_progress.max(max_event_rev);
    if let (Some(first_rev), Some(last_rev)) = (first_rev, last_rev) {
        let from = first_rev.max(history.known_from);
        let to = last_rev.min(history.last);
        let want = history.events_matching(req, from, to);
        let got: HashSet<(u64, &[u8])> = seen.iter().map(|s| (s.rev, s.event.kv.key.as_slice())).collect();
        for w in &want {
            if !got.contains(&(w.kv.mod_revision, w.kv.key.as_slice())) {
                report(
                    Check::Reliable,
                    format!(
                        "missing {} (the watcher vouched for revisions {first_rev}..={last_rev})",
                        describe(w.kind, &w.kv.key, w.kv.mod_revision)
                    ),
                );
            }
        }
        for s in &seen {
            if !request_matches(req, s.event.kind, &s.event.kv.key) || !history.knows_events_at(s.rev) {
                continue;
            }
            let what = describe(s.event.kind, &s.event.kv.key, s.rev);
            if s.rev < first_rev {
                report(
                    Check::Reliable,
                    format!("{what} in response #{} is before the watch's first revision {first_rev}", s.resp),
                );
            } else if history.event(s.rev, &s.event.kv.key).is_none() {
                report(Check::Reliable, format!("{what} in response #{} was never written", s.resp));
            }
        }
        if start != 0 && start >= history.known_from {
            if let Some(w) = history.events_matching(req, start, to).first() {
                let want_id = (w.kv.mod_revision, w.kind, w.kv.key.as_slice());
                let wanted = describe(w.kind, &w.kv.key, w.kv.mod_revision);
                match seen.first() {
                    None => report(
                        Check::Resumable,
                        format!("no event received from start revision {start}; the first should be {wanted}"),
                    ),
                    Some(s) if (s.rev, s.event.kind, s.event.kv.key.as_slice()) != want_id => report(
                        Check::Resumable,
                        format!(
                            "first event from start revision {start} is {}, should be {wanted}",
                            describe(s.event.kind, &s.event.kv.key, s.rev)
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    // IsCreate and PrevKv: against the key's state before the event's revision.
    for s in &seen {
        let Some(before) = s.rev.checked_sub(1) else { continue };
        let known = history.knows_state_at(before) && s.rev <= history.last;
        let prev = history.get_at(&s.event.kv.key, before);
        let what = describe(s.event.kind, &s.event.kv.key, s.rev);
        let kv = &s.event.kv;
        if known && s.event.kind == EventKind::Put {
            let is_create = kv.version == 1 && kv.create_revision == kv.mod_revision;
            if is_create != prev.is_none() {
                report(
                    Check::IsCreate,
                    format!(
                        "{what} in response #{} is {} (version {}, create revision {}) but the key {} at revision {before}",
                        s.resp,
                        if is_create { "a create" } else { "not a create" },
                        kv.version,
                        kv.create_revision,
                        if prev.is_none() { "was absent" } else { "existed" }
                    ),
                );
            }
        }
        let got = s.event.prev_kv.as_ref();
        if !req.prev_kv {
            if got.is_some() {
                report(
                    Check::PrevKv,
                    format!("{what} in response #{} carries prev_kv {} unasked", s.resp, show_kv(got)),
                );
            }
            continue;
        }
        if !known {
            continue;
        }
        match (got, prev) {
            (Some(g), Some(p)) if g != p => report(
                Check::PrevKv,
                format!(
                    "{what} in response #{}: prev_kv {}, the key at revision {before} was {}",
                    s.resp,
                    show_kv(got),
                    show_kv(prev)
                ),
            ),
            (Some(_), None) => report(
                Check::PrevKv,
                format!(
                    "{what} in response #{}: prev_kv {} but the key was absent at revision {before}",
                    s.resp,
                    show_kv(got)
                ),
            ),
            (None, Some(_)) if before >= history.compacted => report(
                Check::PrevKv,
                format!(
                    "{what} in response #{}: prev_kv missing, the key at revision {before} was {}",
                    s.resp,
                    show_kv(prev)
                ),
            ),
            _ => {}
        }
    }
    out
}

/// [`check`] of every watcher, violations concatenated.
pub fn check_all(history: &History, observed: &[Observed]) -> Vec<Violation> {
    observed.iter().flat_map(|o| check(history, o)).collect()
}

/// Panics, listing the first 20 violations and their number, unless every watcher
/// of `observed` kept every guarantee.
///
/// # Panics
///
/// As described.
pub fn assert_clean(history: &History, observed: &[Observed]) {
    let violations = check_all(history, observed);
    if violations.is_empty() {
        return;
    }
    let shown: Vec<String> = violations.iter().take(20).map(|v| format!("  {v}")).collect();
    panic!(
        "{} watch guarantee violation(s) in {} watcher(s){}:\n{}",
        violations.len(),
        observed.len(),
        if violations.len() > 20 { " (first 20)" } else { "" },
        shown.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Arc;
    use crate::watch::{Filters, RevisionBatch, RevisionEvents};

    const ID: WatchId = 7;

    /// rev 2: put a; rev 3: put b, c (txn); rev 4: put a; rev 5: delete b;
    /// rev 6: put b (re-create); rev 7: put z; rev 8: put c.
    fn history() -> History {
        let mut h = History::new();
        h.record_writes(2, &[("a", Some("a1"))]);
        h.record_writes(3, &[("b", Some("b1")), ("c", Some("c1"))]);
        h.record_writes(4, &[("a", Some("a2"))]);
        h.record_writes::<_, &str>(5, &[("b", None)]);
        h.record_writes(6, &[("b", Some("b2"))]);
        h.record_writes(7, &[("z", Some("z1"))]);
        h.record_writes(8, &[("c", Some("c2"))]);
        h
    }

    fn control(rev: u64) -> WatchResponse {
        WatchResponse::control(ID, rev)
    }

    fn created(rev: u64) -> WatchResponse {
        WatchResponse::created(ID, rev)
    }

    fn progress(rev: u64) -> WatchResponse {
        control(rev)
    }

    /// The watcher's events of `rev` as the engine would share them: the whole
    /// batch with prev_kv computed, and a selection.
    fn batch(h: &History, req: &WatchRequest, rev: u64) -> Option<RevisionEvents> {
        let events: Vec<Event> = h
            .events_at(rev)
            .iter()
            .map(|e| Event { prev_kv: h.get_at(&e.kv.key, rev - 1).cloned(), ..e.clone() })
            .collect();
        let selection: Vec<u32> = (0..events.len() as u32)
            .filter(|&i| request_matches(req, events[i as usize].kind, &events[i as usize].kv.key))
            .collect();
        if selection.is_empty() {
            return None;
        }
        let selection = (selection.len() < events.len()).then(|| Arc::from(selection));
        Some(RevisionEvents { batch: Arc::new(RevisionBatch::new(rev, events, true)), selection })
    }

    fn events_resp(req: &WatchRequest, groups: Vec<RevisionEvents>) -> WatchResponse {
        WatchResponse { events: groups, prev_kv: req.prev_kv, ..control(0) }
    }

    /// A correct watcher of `req`: created, one response per revision with
    /// matching events from its start, a final progress notification.
    fn correct(h: &History, req: WatchRequest) -> Observed {
        let start = if req.start_revision > 0 { req.start_revision as u64 } else { 2 };
        let mut responses = vec![created(start - 1)];
        for rev in start..=h.last_revision() {
            if let Some(g) = batch(h, &req, rev) {
                responses.push(events_resp(&req, vec![g]));
            }
        }
        responses.push(progress(h.last_revision()));
        Observed { request: req, watch_id: ID, responses }
    }

    fn checks(h: &History, o: &Observed) -> Vec<Check> {
        let v = check(h, o);
        for x in &v {
            eprintln!("{x}");
        }
        v.iter().map(|v| v.check).collect()
    }

    fn range(key: &str, end: &str) -> WatchRequest {
        WatchRequest { key: key.into(), range_end: end.into(), ..Default::default() }
    }

    /// Replaces the first event of `rev` in the observed responses via `f`.
    fn edit_event(o: &mut Observed, rev: u64, key: &str, f: impl FnOnce(&mut Event)) {
        for resp in &mut o.responses {
            for g in &mut resp.events {
                if g.batch.revision != rev {
                    continue;
                }
                let mut events: Vec<Event> = g.batch.events().map(|e| e.to_event()).collect();
                if let Some(e) = events.iter_mut().find(|e| e.kv.key == key.as_bytes()) {
                    f(e);
                    g.batch = Arc::new(RevisionBatch::new(g.batch.revision, events, g.batch.has_prev_kv));
                    return;
                }
            }
        }
        panic!("no event {key}@{rev}");
    }

    #[test]
    fn correct_watchers_pass() {
        let h = history();
        for req in [
            WatchRequest::key("a"),
            WatchRequest::prefix(""),
            range("a", "c"),
            range("b", "\0").with_prev_kv(),
            range("a", "z").from_revision(4).with_prev_kv(),
            WatchRequest { filters: Filters { no_put: true, no_delete: false }, ..range("a", "\0") },
            WatchRequest::key("b").from_revision(20),
        ] {
            let o = correct(&h, req.clone());
            assert_eq!(checks(&h, &o), vec![], "{req:?}");
        }
    }

    #[test]
    fn filter_catches_out_of_range_and_filtered_events() {
        let h = history();
        let req = range("a", "c");
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        // Revision 3 with c (outside [a, c)) included.
        let all = batch(&h, &WatchRequest::prefix(""), 3).unwrap();
        let i = o.responses.iter().position(|r| r.events.first().is_some_and(|g| g.batch.revision == 3)).unwrap();
        o.responses[i].events = vec![all];
        assert_eq!(checks(&h, &o), vec![Check::Filter]);

        let req = WatchRequest { filters: Filters { no_put: false, no_delete: true }, ..WatchRequest::key("b") };
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        let del = batch(&h, &WatchRequest::key("b"), 5).unwrap();
        o.responses.insert(2, events_resp(&req, vec![del]));
        assert_eq!(checks(&h, &o), vec![Check::Filter]);
    }

    #[test]
    fn ordered_catches_reordered_responses() {
        let h = history();
        let mut o = correct(&h, WatchRequest::prefix(""));
        assert!(checks(&h, &o).is_empty());
        o.responses.swap(2, 3); // revisions 3 and 4
        assert_eq!(checks(&h, &o), vec![Check::Ordered]);
    }

    #[test]
    fn unique_catches_duplicated_event() {
        let h = history();
        let mut o = correct(&h, WatchRequest::key("a"));
        assert!(checks(&h, &o).is_empty());
        let dup = o.responses[2].clone(); // a@4
        o.responses.insert(3, dup);
        let got = checks(&h, &o);
        assert!(got.contains(&Check::Unique), "{got:?}");
        assert!(got.iter().all(|c| matches!(c, Check::Unique | Check::Atomic)), "{got:?}");
    }

    #[test]
    fn atomic_catches_split_and_partial_revisions() {
        let h = history();
        let req = WatchRequest::prefix("");
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        // Revision 3 (b and c) split in two responses.
        let g = batch(&h, &req, 3).unwrap();
        let first = RevisionEvents { batch: g.batch.clone(), selection: Some(Arc::from(vec![0u32])) };
        let second = RevisionEvents { batch: g.batch.clone(), selection: Some(Arc::from(vec![1u32])) };
        o.responses[2] = events_resp(&req, vec![first.clone()]);
        o.responses.insert(3, events_resp(&req, vec![second]));
        assert_eq!(checks(&h, &o), vec![Check::Atomic, Check::Atomic, Check::Atomic]);

        // Two groups of one revision in one response are fine.
        let mut o = correct(&h, req.clone());
        let second = RevisionEvents { batch: g.batch.clone(), selection: Some(Arc::from(vec![1u32])) };
        o.responses[2] = events_resp(&req, vec![first.clone(), second]);
        assert!(checks(&h, &o).is_empty());

        // A response with only part of revision 3 (c dropped).
        let mut o = correct(&h, req.clone());
        o.responses[2] = events_resp(&req, vec![first]);
        let got = checks(&h, &o);
        assert!(got.contains(&Check::Atomic) && got.contains(&Check::Reliable), "{got:?}");
    }

    #[test]
    fn bookmarkable_catches_event_after_higher_progress() {
        let h = history();
        let req = WatchRequest::key("a").with_prev_kv();
        let mut o = correct(&h, req.clone());
        // Progress at 3 before a@4, and stream-wide progress are fine.
        o.responses.insert(2, progress(3));
        o.responses.insert(3, WatchResponse { watch_id: -1, ..progress(3) });
        assert!(checks(&h, &o).is_empty());
        // Progress at 5 before a@4.
        o.responses.insert(4, WatchResponse { watch_id: -1, ..progress(5) });
        assert_eq!(checks(&h, &o), vec![Check::Bookmarkable]);

        // Progress below an earlier event.
        let mut o = correct(&h, req);
        o.responses.insert(3, progress(3)); // after a@4
        assert_eq!(checks(&h, &o), vec![Check::Bookmarkable]);
    }

    #[test]
    fn resumable_catches_wrong_first_event() {
        let h = history();
        let req = WatchRequest::prefix("").from_revision(4);
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        o.responses.remove(1); // a@4
        let got = checks(&h, &o);
        assert!(got.contains(&Check::Resumable), "{got:?}");
        assert!(got.iter().all(|c| matches!(c, Check::Resumable | Check::Reliable)), "{got:?}");

        // Starting too early: first event a@2 instead of a@4.
        let mut o = correct(&h, req.clone());
        o.responses.insert(1, events_resp(&req, vec![batch(&h, &req, 2).unwrap()]));
        let got = checks(&h, &o);
        assert!(got.contains(&Check::Resumable) && got.contains(&Check::Reliable), "{got:?}");
    }

    #[test]
    fn reliable_catches_dropped_event() {
        let h = history();
        let req = WatchRequest::prefix("");
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        o.responses.remove(5); // b@6
        assert_eq!(checks(&h, &o), vec![Check::Reliable]);

        // Without the final progress notification, the last events are not owed.
        let mut o = correct(&h, req.clone());
        o.responses.pop();
        o.responses.pop(); // c@8
        assert!(checks(&h, &o).is_empty());
        // With it they are.
        o.responses.push(progress(8));
        assert_eq!(checks(&h, &o), vec![Check::Reliable]);
        // A watcher canceled for compaction owes nothing after its last event.
        let mut o = correct(&h, req.clone());
        o.responses.truncate(4); // created, 2, 3, 4
        o.responses.push(WatchResponse { canceled: true, compact_revision: 6, ..control(8) });
        assert!(checks(&h, &o).is_empty());
        // A phantom event is caught too.
        let mut o = correct(&h, req.clone());
        edit_event(&mut o, 7, "z", |e| e.kv.key = b"y".to_vec());
        let got = checks(&h, &o);
        assert!(got.contains(&Check::Reliable), "{got:?}");
    }

    #[test]
    fn is_create_catches_wrong_create_flag() {
        let h = history();
        let req = WatchRequest::key("b");
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        // b@6 re-creates b after its delete: pretend it continued the old generation.
        edit_event(&mut o, 6, "b", |e| {
            e.kv.version = 2;
            e.kv.create_revision = 3;
        });
        let got = checks(&h, &o);
        assert!(got.contains(&Check::IsCreate), "{got:?}");
        assert!(got.iter().all(|c| matches!(c, Check::IsCreate | Check::Payload)), "{got:?}");
    }

    #[test]
    fn prev_kv_catches_wrong_missing_and_unasked() {
        let h = history();
        let req = WatchRequest::key("a").with_prev_kv();
        let mut o = correct(&h, req.clone());
        assert!(checks(&h, &o).is_empty());
        edit_event(&mut o, 4, "a", |e| e.prev_kv.as_mut().unwrap().value = b"zz".to_vec());
        assert_eq!(checks(&h, &o), vec![Check::PrevKv]);

        let mut o = correct(&h, req.clone());
        edit_event(&mut o, 4, "a", |e| e.prev_kv = None);
        assert_eq!(checks(&h, &o), vec![Check::PrevKv]);
        // Below the compaction floor a missing prev_kv is allowed.
        let mut compacted = history();
        compacted.set_compacted(4);
        assert!(checks(&compacted, &o).is_empty());

        // prev_kv on a create.
        let mut o = correct(&h, req.clone());
        edit_event(&mut o, 2, "a", |e| e.prev_kv = Some(KeyValue { key: b"a".to_vec(), ..Default::default() }));
        assert_eq!(checks(&h, &o), vec![Check::PrevKv]);

        // Not asked for, but delivered.
        let req = WatchRequest::key("a");
        let mut o = correct(&h, req);
        assert!(checks(&h, &o).is_empty(), "responses strip unasked prev_kv");
        o.responses[2].prev_kv = true;
        assert_eq!(checks(&h, &o), vec![Check::PrevKv]);
    }

    #[test]
    fn payload_and_lifecycle() {
        let h = history();
        let req = WatchRequest::key("a");
        let mut o = correct(&h, req.clone());
        edit_event(&mut o, 4, "a", |e| e.kv.value = b"wrong".to_vec());
        assert_eq!(checks(&h, &o), vec![Check::Payload]);

        let mut o = correct(&h, req.clone());
        o.responses.swap(0, 1);
        assert_eq!(checks(&h, &o), vec![Check::Lifecycle]);

        let mut o = correct(&h, req.clone());
        o.responses.insert(2, WatchResponse { canceled: true, ..control(2) });
        assert_eq!(checks(&h, &o), vec![Check::Lifecycle, Check::Lifecycle]);

        let mut o = correct(&h, req);
        o.responses.push(WatchResponse { watch_id: ID + 1, ..progress(8) });
        assert_eq!(checks(&h, &o), vec![Check::Lifecycle]);
    }

    #[test]
    fn split_stream_routes_stream_progress() {
        let h = history();
        let a = correct(&h, WatchRequest::key("a"));
        let mut b = correct(&h, WatchRequest::key("b"));
        for r in &mut b.responses {
            r.watch_id = ID + 1;
        }
        let mut stream = vec![WatchResponse { watch_id: -1, ..progress(1) }];
        stream.extend(a.responses.iter().cloned());
        stream.push(WatchResponse { watch_id: -1, ..progress(8) });
        stream.extend(b.responses.iter().cloned());
        let split = Observed::split_stream(&[(ID, a.request.clone()), (ID + 1, b.request.clone())], &stream);
        assert_eq!(split[0].responses.len(), a.responses.len() + 1);
        assert_eq!(split[1].responses, b.responses);
        assert_clean(&h, &split);
    }

    #[test]
    #[should_panic(expected = "Reliable")]
    fn assert_clean_panics_with_violations() {
        let h = history();
        let mut o = correct(&h, WatchRequest::key("a"));
        o.responses.remove(1);
        assert_clean(&h, &[o]);
    }

    #[test]
    fn ten_thousand_revisions() {
        let mut h = History::new();
        for rev in 2..10_002u64 {
            let key = format!("k{:03}", rev % 300);
            if rev % 11 == 0 {
                h.record_writes::<_, &str>(rev, &[(key, None)]);
            } else {
                h.record_writes(rev, &[(key, Some("v")), (format!("x{rev}"), Some("w"))]);
            }
        }
        assert_eq!(h.state_at(5_000).len(), h.state_at(5_000).values().filter(|kv| kv.mod_revision <= 5_000).count());
        let started = std::time::Instant::now();
        for req in [WatchRequest::prefix("k").with_prev_kv(), WatchRequest::prefix("").from_revision(100)] {
            let o = correct(&h, req);
            assert_clean(&h, &[o]);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn state_at_and_matching() {
        let h = history();
        let keys = |rev| h.state_at(rev).into_keys().map(|k| String::from_utf8(k).unwrap()).collect::<Vec<_>>();
        assert_eq!(keys(1), Vec::<String>::new());
        assert_eq!(keys(3), ["a", "b", "c"]);
        assert_eq!(keys(5), ["a", "c"]);
        assert_eq!(keys(8), ["a", "b", "c", "z"]);
        let b = h.get_at(b"b", 6).unwrap();
        assert_eq!((b.create_revision, b.mod_revision, b.version), (6, 6, 1));
        let a = h.get_at(b"a", 7).unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version, a.value.as_slice()), (2, 4, 2, &b"a2"[..]));
        assert_eq!(h.events_matching(&range("b", "c"), 1, 8).len(), 3);
        assert_eq!(h.events_matching(&range("b", "c"), 6, 5).len(), 0);
        assert_eq!(h.events_at(5)[0].kv, KeyValue { key: b"b".to_vec(), mod_revision: 5, ..Default::default() });
    }

    #[test]
    fn from_log_matches_the_store() {
        use crate::log::{FsyncPolicy, MemStorage};
        use crate::store::{RangeOptions, Store, StoreOptions};
        let mut opts = StoreOptions::default();
        opts.log.fsync = FsyncPolicy::Never;
        let s = Store::open_storage(Arc::new(MemStorage::new()), opts).unwrap();
        for i in 0..60u32 {
            let k = format!("k{}", i % 7);
            if i % 5 == 4 {
                s.delete_range(k.as_bytes(), b"", false).unwrap();
            } else {
                s.put(k.as_bytes(), format!("v{i}").as_bytes()).unwrap();
            }
            if i == 30 {
                s.compact(s.current_revision() - 3).unwrap();
            }
        }
        let reader = s.log().reader();
        let last = s.current_revision();
        let h = History::from_log(&reader, 0, u64::MAX).unwrap();
        assert_eq!(h.last_revision(), last);
        assert_eq!(h.compacted(), s.compact_revision());
        for rev in s.compact_revision()..=last {
            let want = s.range(b"k", b"l", RangeOptions { revision: rev, ..Default::default() }).unwrap().kvs;
            let got: Vec<KeyValue> = h.state_at(rev).into_values().collect();
            assert_eq!(got, want, "state at {rev}");
        }
        // A partial window knows the events of its revisions only.
        let w = History::from_log(&reader, last - 5, last - 2).unwrap();
        assert_eq!(w.first_revision(), last - 5);
        assert!(w.events_at(last - 6).is_empty() && w.events_at(last - 1).is_empty());
        assert_eq!(w.events_at(last - 3), h.events_at(last - 3));
        assert_eq!(w.state_at(last - 5), h.state_at(last - 5));
    }
}
