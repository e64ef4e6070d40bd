//! Watcher groups: the unit every stage of the engine works on.
//!
//! A group is the set of watchers of one stream that share a key range, a delivery
//! class (filters, `prev_kv`, `progress_notify`) and a delivery state with its cursor.
//! Such watchers receive exactly the same responses, so the engine matches, queues,
//! catches up and accounts for them once, and a consumer expands a group into
//! per-watcher responses only at the last byte. Thousands of Kubernetes-style
//! watchers on one prefix of one stream are one group; watchers on distinct keys are
//! groups of one, which cost no allocation for their member list.
//!
//! Records are fixed-size and live in [`Slab`](super::slab::Slab)s owned by the
//! notifier: a [`Watcher`] names its group by slab index and knows its position in
//! the group's member list, so a cancel is O(1) (swap-remove, and the watcher moved
//! into the hole gets its new position).
//!
//! Invariants (kept by the notifier, the only owner):
//! - a watcher is in exactly one group, at `members[pos]`;
//! - at most one `Synced` group exists per (stream, range, class): a group that
//!   becomes synced merges into it;
//! - the id snapshot handed to deliveries ([`Members::ids`]) equals the member list at
//!   the time it is taken; any change of membership drops it first.

use std::sync::OnceLock;

use super::delivery::Ids;
use super::types::{EventKind, Filters, WatchId};
use crate::sync::Arc;

/// What decides, besides the key range, which responses a watcher receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Class(u8);

impl Class {
    const NO_PUT: u8 = 1;
    const NO_DELETE: u8 = 2;
    const PREV_KV: u8 = 4;
    const PROGRESS: u8 = 8;

    pub(crate) fn new(filters: Filters, prev_kv: bool, progress_notify: bool) -> Class {
        let mut c = 0;
        if filters.no_put {
            c |= Self::NO_PUT;
        }
        if filters.no_delete {
            c |= Self::NO_DELETE;
        }
        if prev_kv {
            c |= Self::PREV_KV;
        }
        if progress_notify {
            c |= Self::PROGRESS;
        }
        Class(c)
    }

    /// Whether an event of `kind` passes the filters.
    pub(crate) fn passes(self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => self.0 & Self::NO_PUT == 0,
            EventKind::Delete => self.0 & Self::NO_DELETE == 0,
        }
    }

    pub(crate) fn prev_kv(self) -> bool {
        self.0 & Self::PREV_KV != 0
    }

    pub(crate) fn progress_notify(self) -> bool {
        self.0 & Self::PROGRESS != 0
    }

    /// The part of the class that decides which events are selected (filters only).
    pub(crate) fn filters(self) -> u8 {
        self.0 & (Self::NO_PUT | Self::NO_DELETE)
    }
}

/// Where a group is in its life (see `notify.rs` for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In the index: receives every matching revision as the notifier fans it out.
    Synced,
    /// Starts in the future (`next > notified + 1`): joins the index when the
    /// notifier reaches `next - 1`.
    Parked,
    /// Behind (`next <= notified`): waiting for a catch-up job.
    Unsynced,
    /// A catch-up job is reading its revisions.
    CatchingUp,
    /// Its stream was full: waits, holding only `next`, until the stream drains.
    Victim,
}

/// The members of a group, in a fixed order that deliveries snapshot.
pub(crate) enum Members {
    One { id: WatchId, watcher: u32 },
    Many(Box<Many>),
}

pub(crate) struct Many {
    ids: Vec<WatchId>,
    watchers: Vec<u32>,
    /// The ids as last handed out; dropped on any change, rebuilt on demand (from a
    /// shared reference: parallel matchers may build it).
    snapshot: OnceLock<Arc<[WatchId]>>,
}

impl Members {
    pub(crate) fn len(&self) -> usize {
        match self {
            Members::One { .. } => 1,
            Members::Many(m) => m.ids.len(),
        }
    }

    /// Appends a watcher; returns its position.
    pub(crate) fn push(&mut self, id: WatchId, watcher: u32) -> u32 {
        match self {
            Members::One { id: id0, watcher: w0 } => {
                let many = Many { ids: vec![*id0, id], watchers: vec![*w0, watcher], snapshot: OnceLock::new() };
                *self = Members::Many(Box::new(many));
                1
            }
            Members::Many(m) => {
                m.snapshot = OnceLock::new();
                m.ids.push(id);
                m.watchers.push(watcher);
                (m.ids.len() - 1) as u32
            }
        }
    }

    /// Removes the member at `pos` (a group never becomes empty this way: the caller
    /// frees a group whose last member goes). Returns the watcher moved into `pos`,
    /// if any, which must learn its new position.
    pub(crate) fn swap_remove(&mut self, pos: u32) -> Option<u32> {
        let Members::Many(m) = self else { panic!("the last member of a group is removed with the group") };
        m.snapshot = OnceLock::new();
        let pos = pos as usize;
        m.ids.swap_remove(pos);
        m.watchers.swap_remove(pos);
        let moved = m.watchers.get(pos).copied();
        if m.ids.len() == 1 {
            *self = Members::One { id: m.ids[0], watcher: m.watchers[0] };
        } else if m.ids.len() * 4 < m.ids.capacity() && m.ids.capacity() > 16 {
            m.ids.shrink_to(m.ids.len() * 2);
            m.watchers.shrink_to(m.watchers.len() * 2);
        }
        moved
    }

    /// Moves every member of `other` to the end of `self`; calls `moved(watcher,
    /// new position)` for each.
    pub(crate) fn append(&mut self, other: Members, mut moved: impl FnMut(u32, u32)) {
        for (id, w) in other.iter() {
            let pos = self.push(id, w);
            moved(w, pos);
        }
    }

    /// `(id, watcher)` of every member, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (WatchId, u32)> + '_ {
        let (ids, ws): (&[WatchId], &[u32]) = match self {
            Members::One { id, watcher } => (std::slice::from_ref(id), std::slice::from_ref(watcher)),
            Members::Many(m) => (&m.ids, &m.watchers),
        };
        ids.iter().copied().zip(ws.iter().copied())
    }

    /// The ids, shared: a group of one needs no allocation, a larger group is copied
    /// once per change of membership and then shared by every delivery.
    pub(crate) fn ids(&self) -> Ids {
        match self {
            Members::One { id, .. } => Ids::One(*id),
            Members::Many(m) => Ids::Many(Arc::clone(m.snapshot.get_or_init(|| m.ids.as_slice().into()))),
        }
    }
}

/// A group record (see the module doc).
pub(crate) struct Group {
    /// The stream's slot in the notifier's stream slab.
    pub(crate) stream: u32,
    /// The range's slot in the stream's index shard.
    pub(crate) range: u32,
    pub(crate) class: Class,
    pub(crate) state: State,
    /// Events were queued for it since the last periodic progress tick.
    pub(crate) sent_since_tick: bool,
    /// The next revision it is owed (meaningful unless `Synced`).
    pub(crate) next: u64,
    pub(crate) members: Members,
}

/// A watcher record: which group it is in and where.
pub(crate) struct Watcher {
    pub(crate) id: WatchId,
    pub(crate) group: u32,
    pub(crate) pos: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_remove_reports_the_moved_member_and_snapshots_follow_changes() {
        let mut m = Members::One { id: 10, watcher: 0 };
        assert_eq!(m.ids(), Ids::One(10));
        assert_eq!(m.push(11, 1), 1);
        assert_eq!(m.push(12, 2), 2);
        let before = m.ids();
        assert_eq!(&*before, &[10, 11, 12]);
        // Removing position 0 moves the last member (watcher 2) into it.
        assert_eq!(m.swap_remove(0), Some(2));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(12, 2), (11, 1)]);
        assert_eq!(&*m.ids(), &[12, 11]);
        assert_eq!(&*before, &[10, 11, 12], "a snapshot already handed out never changes");
        // Removing the last position moves nobody; one member left is inline again.
        assert_eq!(m.swap_remove(1), None);
        assert!(matches!(m, Members::One { id: 12, watcher: 2 }));
        let mut other = Members::One { id: 20, watcher: 5 };
        other.push(21, 6);
        let mut moved = Vec::new();
        m.append(other, |w, p| moved.push((w, p)));
        assert_eq!(moved, vec![(5, 1), (6, 2)]);
        assert_eq!(&*m.ids(), &[12, 20, 21]);
    }

    #[test]
    fn class_filters() {
        let c = Class::new(Filters { no_put: true, no_delete: false }, true, false);
        assert!(!c.passes(EventKind::Put) && c.passes(EventKind::Delete) && c.prev_kv() && !c.progress_notify());
        assert_eq!(c.filters(), Class::new(Filters { no_put: true, no_delete: false }, false, true).filters());
    }
}
