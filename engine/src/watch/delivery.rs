//! What a watch stream hands its consumer: [`Item`]s, most of them [`Delivery`]s
//! that carry one revision's (or one catch-up run's) shared events together with the
//! ids of every watcher of the stream they reach.
//!
//! A delivery is never expanded into per-watcher objects by the engine. It is a list
//! of [`Part`]s; a part is *one* response body shared by every watcher in its
//! [`Ids`]: the same events (whole revisions, in order), the same header revision,
//! the same `prev_kv` choice. A consumer that writes bytes (the gRPC server) walks
//! the ids and writes, per watcher, only what differs (its watch id); a consumer that
//! wants etcd's per-watcher view calls [`Part::response_for`] or uses
//! [`WatchReceiver::recv`](super::WatchReceiver::recv), which does that for it.
//!
//! Invariants a consumer may rely on:
//! - every watcher's responses arrive in revision order and never split a revision;
//! - a watcher appears at most once per delivery, and in at most one part of it;
//! - a part's events are those of [`Part::revisions`], in order, and its header
//!   revision ([`Part::revision`]) is the last of them;
//! - a watcher's `created` response precedes every delivery naming it, and its
//!   `canceled` response follows every one.

use super::types::{Event, RevisionEvents, WatchId, WatchResponse};
use crate::sync::Arc;

/// The watch ids a [`Part`] (or a group progress notification) is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ids {
    /// A single watcher (the common case of watchers on distinct keys: no allocation).
    One(WatchId),
    /// Many watchers, shared by every delivery made while the set did not change.
    Many(Arc<[WatchId]>),
}

impl Ids {
    /// The ids, in no particular order.
    pub fn as_slice(&self) -> &[WatchId] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl std::ops::Deref for Ids {
    type Target = [WatchId];

    fn deref(&self) -> &[WatchId] {
        self.as_slice()
    }
}

impl From<Vec<WatchId>> for Ids {
    fn from(v: Vec<WatchId>) -> Ids {
        match v.as_slice() {
            [one] => Ids::One(*one),
            _ => Ids::Many(v.into()),
        }
    }
}

/// The revisions of one response: one revision (synced delivery), or a run of a
/// shared list (catch-up: one list per job and watcher group, cut into responses
/// without copying).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Revisions {
    One(RevisionEvents),
    Run { all: Arc<[RevisionEvents]>, start: u32, end: u32 },
}

impl Revisions {
    fn as_slice(&self) -> &[RevisionEvents] {
        match self {
            Revisions::One(r) => std::slice::from_ref(r),
            Revisions::Run { all, start, end } => &all[*start as usize..*end as usize],
        }
    }
}

/// One response body shared by every watcher in [`Part::ids`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub(crate) ids: Ids,
    pub(crate) prev_kv: bool,
    pub(crate) revisions: Revisions,
}

impl Part {
    /// A part carrying one revision's selected events.
    pub(crate) fn one(ids: Ids, prev_kv: bool, events: RevisionEvents) -> Part {
        Part { ids, prev_kv, revisions: Revisions::One(events) }
    }

    /// A part carrying revisions `start..end` of a shared run (the engine cuts a
    /// catch-up run into responses this way; consumers' tests build parts with it).
    ///
    /// # Panics
    ///
    /// If `start..end` is empty or not within `all`.
    pub fn run(ids: Ids, prev_kv: bool, all: Arc<[RevisionEvents]>, start: usize, end: usize) -> Part {
        assert!(start < end && end <= all.len(), "a part has revisions {start}..{end} of {}", all.len());
        Part { ids, prev_kv, revisions: Revisions::Run { all, start: start as u32, end: end as u32 } }
    }

    /// The watchers that each receive this response.
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Whether these watchers asked for `prev_kv` (consumers leave
    /// [`Event::prev_kv`] out otherwise).
    pub fn prev_kv(&self) -> bool {
        self.prev_kv
    }

    /// The response's events, revision by revision, in order.
    pub fn revisions(&self) -> &[RevisionEvents] {
        self.revisions.as_slice()
    }

    /// The response's header revision: its last revision.
    pub fn revision(&self) -> u64 {
        self.revisions().last().map_or(0, |r| r.batch.revision)
    }

    /// Events in the response (per watcher).
    pub fn event_count(&self) -> usize {
        self.revisions().iter().map(RevisionEvents::len).sum()
    }

    /// Approximate bytes of the response's events (per watcher).
    pub fn size(&self) -> usize {
        self.revisions().iter().map(RevisionEvents::size).sum()
    }

    /// The events, each with `prev_kv` only if asked for (copies; for tests and the
    /// per-watcher view).
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        let prev = self.prev_kv;
        self.revisions().iter().flat_map(|r| r.iter()).map(move |mut e| {
            if !prev {
                e.prev_kv = None;
            }
            e.to_event()
        })
    }

    /// The response as watcher `id` sees it (etcd's per-watcher `WatchResponse`).
    pub fn response_for(&self, id: WatchId) -> WatchResponse {
        let mut r = WatchResponse::control(id, self.revision());
        r.events = self.revisions().to_vec();
        r.prev_kv = self.prev_kv;
        r
    }
}

/// Event responses for many watchers of one stream: every watcher in every part
/// receives that part's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub(crate) parts: Vec<Part>,
}

impl Delivery {
    /// A delivery of `parts`.
    ///
    /// # Panics
    ///
    /// If `parts` is empty.
    pub fn new(parts: Vec<Part>) -> Delivery {
        assert!(!parts.is_empty(), "a delivery has at least one part");
        Delivery { parts }
    }

    /// The parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Per-watcher responses it stands for.
    pub fn response_count(&self) -> usize {
        self.parts.iter().map(|p| p.ids.len()).sum()
    }

    /// Per-watcher events it stands for (each part's events times its watchers).
    pub fn event_count(&self) -> u64 {
        self.parts.iter().map(|p| p.event_count() as u64 * p.ids.len() as u64).sum()
    }

    /// What it counts against a stream's byte bound: each part's event bytes once
    /// (shared by its watchers) and 8 bytes per watcher id.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.size() + 8 * p.ids.len()).sum()
    }
}

/// One thing a watch stream yields, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A response to one watcher (`created`, `canceled`, a progress notification,
    /// or events), or a stream-wide progress notification (watch id `-1`).
    Response(WatchResponse),
    /// Event responses for many watchers at once.
    Events(Delivery),
    /// A progress notification at `revision` for every watcher in `ids`: every
    /// event of theirs up to `revision` has been delivered.
    Progress {
        /// The header revision.
        revision: u64,
        /// The watchers.
        ids: Ids,
    },
}

impl Item {
    /// Per-watcher responses it stands for.
    pub fn response_count(&self) -> usize {
        match self {
            Item::Response(_) => 1,
            Item::Events(d) => d.response_count(),
            Item::Progress { ids, .. } => ids.len(),
        }
    }
}

/// Walks an item's per-watcher responses one at a time, building each only when
/// asked (the per-watcher view of [`WatchReceiver::recv`](super::WatchReceiver::recv)).
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    item: Option<Item>,
    part: usize,
    at: usize,
}

impl Expansion {
    pub(crate) fn start(item: Item) -> Expansion {
        Expansion { item: Some(item), part: 0, at: 0 }
    }

    /// The next per-watcher response, if any is left.
    pub(crate) fn next_response(&mut self) -> Option<WatchResponse> {
        loop {
            match self.item.as_ref()? {
                Item::Response(_) => {
                    let Some(Item::Response(r)) = self.item.take() else { unreachable!() };
                    return Some(r);
                }
                Item::Progress { revision, ids } => {
                    if let Some(&id) = ids.get(self.at) {
                        self.at += 1;
                        return Some(WatchResponse::control(id, *revision));
                    }
                    self.item = None;
                }
                Item::Events(d) => {
                    let Some(p) = d.parts.get(self.part) else {
                        self.item = None;
                        continue;
                    };
                    if let Some(&id) = p.ids.get(self.at) {
                        self.at += 1;
                        return Some(p.response_for(id));
                    }
                    self.part += 1;
                    self.at = 0;
                }
            }
        }
    }

    /// Whether nothing is left.
    pub(crate) fn is_done(&self) -> bool {
        self.item.is_none()
    }

    /// The rest of a partly walked item as an item of its own (when a consumer
    /// switches from per-watcher responses to items mid-item).
    pub(crate) fn take_rest(&mut self) -> Option<Item> {
        let item = self.item.take()?;
        let (part, at) = (self.part, self.at);
        *self = Expansion::default();
        Some(match item {
            Item::Response(r) => Item::Response(r),
            Item::Progress { revision, ids } => {
                let rest: Vec<WatchId> = ids[at..].to_vec();
                if rest.is_empty() {
                    return None;
                }
                Item::Progress { revision, ids: rest.into() }
            }
            Item::Events(d) => {
                let mut parts: Vec<Part> = Vec::new();
                for (i, p) in d.parts.into_iter().enumerate().skip(part) {
                    if i == part && at > 0 {
                        let rest: Vec<WatchId> = p.ids[at.min(p.ids.len())..].to_vec();
                        if !rest.is_empty() {
                            parts.push(Part { ids: rest.into(), ..p });
                        }
                    } else {
                        parts.push(p);
                    }
                }
                if parts.is_empty() {
                    return None;
                }
                Item::Events(Delivery::new(parts))
            }
        })
    }
}
