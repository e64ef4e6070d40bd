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
//! notifier. A watcher alone in its group has no record of its own (the group's is
//! enough); a member of a larger group has a [`Watcher`] record that names its group
//! by slab index and knows its position in the group's member list, so a cancel is
//! O(1) (swap-remove, and the watcher moved into the hole gets its new position).
//!
//! Invariants (kept by the notifier, the only owner):
//! - a watcher is in exactly one group: alone, or at `members[pos]` of its record;
//! - at most one `Synced` group exists per (stream, range, class): a group that
//!   becomes synced merges into it;
//! - the id snapshot handed to deliveries ([`Members::ids`]) equals the member list at
//!   the time it is taken; any change of membership drops it first.

use super::delivery::Ids;
use super::slab::Slab;
use super::types::{EventKind, Filters, WatchId};
use crate::sync::{Arc, OnceLock};

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

/// The member list of a group of more than one watcher, in a fixed order that
/// deliveries snapshot. Each member has a [`Watcher`] record that knows its
/// position here, so removing one is O(1).
pub(crate) struct MemberList {
    ids: Vec<WatchId>,
    watchers: Vec<u32>,
    /// The ids as last handed out; dropped on any change, rebuilt on demand (from a
    /// shared reference: parallel matchers may build it).
    snapshot: OnceLock<Arc<[WatchId]>>,
}

impl MemberList {
    pub(crate) fn new(members: impl IntoIterator<Item = (WatchId, u32)>) -> MemberList {
        let (ids, watchers) = members.into_iter().unzip();
        MemberList { ids, watchers, snapshot: OnceLock::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Appends a watcher; returns its position.
    pub(crate) fn push(&mut self, id: WatchId, watcher: u32) -> u32 {
        self.snapshot = OnceLock::new();
        self.ids.push(id);
        self.watchers.push(watcher);
        (self.ids.len() - 1) as u32
    }

    /// Removes the member at `pos`. Returns the watcher moved into `pos`, if any,
    /// which must learn its new position.
    pub(crate) fn swap_remove(&mut self, pos: u32) -> Option<u32> {
        self.snapshot = OnceLock::new();
        let pos = pos as usize;
        self.ids.swap_remove(pos);
        self.watchers.swap_remove(pos);
        if self.ids.len() * 4 < self.ids.capacity() && self.ids.capacity() > 16 {
            self.ids.shrink_to(self.ids.len() * 2);
            self.watchers.shrink_to(self.watchers.len() * 2);
        }
        self.watchers.get(pos).copied()
    }

    pub(crate) fn id_list(&self) -> &[WatchId] {
        &self.ids
    }

    /// `(id, watcher record)` of every member, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (WatchId, u32)> + '_ {
        self.ids.iter().copied().zip(self.watchers.iter().copied())
    }

    /// The ids, shared: copied once per change of membership and then shared by
    /// every delivery.
    pub(crate) fn ids(&self) -> Ids {
        Ids::Many(Arc::clone(self.snapshot.get_or_init(|| self.ids.as_slice().into())))
    }
}

/// Who is in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Members {
    /// One watcher: the group record is its record (the common case of watchers on
    /// distinct keys costs no other record and no allocation).
    One(WatchId),
    /// More: the index of their [`MemberList`] in the notifier's list slab.
    Many(u32),
}

/// A group record (see the module doc): 32 bytes, its generation in what would
/// otherwise be padding.
pub(crate) struct Group {
    /// The next revision it is owed (meaningful unless `Synced`).
    pub(crate) next: u64,
    /// The lone member's id, or the index of the member list (see `flags`).
    member: i64,
    /// The stream's slot in the notifier's stream slab.
    pub(crate) stream: u32,
    /// The range's slot in the stream's index shard.
    pub(crate) range: u32,
    gen: u32,
    pub(crate) class: Class,
    pub(crate) state: State,
    flags: u8,
}

const MANY: u8 = 1;
const SENT: u8 = 2;

impl Group {
    pub(crate) fn new(stream: u32, range: u32, class: Class, state: State, id: WatchId) -> Group {
        Group { next: 0, member: id, stream, range, gen: 0, class, state, flags: 0 }
    }

    pub(crate) fn members(&self) -> Members {
        if self.flags & MANY != 0 {
            Members::Many(self.member as u32)
        } else {
            Members::One(self.member)
        }
    }

    /// Makes it a group whose members are list `list`.
    pub(crate) fn set_list(&mut self, list: u32) {
        self.member = i64::from(list);
        self.flags |= MANY;
    }

    /// Events were queued for it since the last periodic progress tick.
    pub(crate) fn sent_since_tick(&self) -> bool {
        self.flags & SENT != 0
    }

    pub(crate) fn set_sent_since_tick(&mut self, on: bool) {
        if on {
            self.flags |= SENT;
        } else {
            self.flags &= !SENT;
        }
    }
}

impl super::slab::Record for Group {
    fn gen(&self) -> u32 {
        self.gen
    }
    fn set_gen(&mut self, gen: u32) {
        self.gen = gen;
    }
}

/// A watcher record: which group it is in and where (members of groups of more
/// than one only). Never named by a handle kept across a change, so it has no
/// generation.
pub(crate) struct Watcher {
    pub(crate) id: WatchId,
    pub(crate) group: u32,
    pub(crate) pos: u32,
}

impl super::slab::Record for Watcher {}
impl super::slab::Record for MemberList {}

/// Watchers in group `g` (`lists`: the notifier's member lists).
pub(crate) fn member_count(lists: &Slab<MemberList>, g: &Group) -> usize {
    match g.members() {
        Members::One(_) => 1,
        Members::Many(l) => lists.at(l).1.len(),
    }
}

/// The ids of group `g`, shared (see [`MemberList::ids`]).
pub(crate) fn member_ids(lists: &Slab<MemberList>, g: &Group) -> Ids {
    match g.members() {
        Members::One(id) => Ids::One(id),
        Members::Many(l) => lists.at(l).1.ids(),
    }
}

/// The ids of group `g`, in order.
pub(crate) fn member_id_list<'a>(lists: &'a Slab<MemberList>, g: &'a Group) -> &'a [WatchId] {
    match g.members() {
        Members::One(_) => std::slice::from_ref(&g.member),
        Members::Many(l) => lists.at(l).1.id_list(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_remove_reports_the_moved_member_and_snapshots_follow_changes() {
        let mut m = MemberList::new([(10, 0), (11, 1)]);
        assert_eq!(m.push(12, 2), 2);
        let before = m.ids();
        assert_eq!(&*before, &[10, 11, 12]);
        // Removing position 0 moves the last member (watcher 2) into it.
        assert_eq!(m.swap_remove(0), Some(2));
        assert_eq!(m.records().collect::<Vec<_>>(), vec![(12, 2), (11, 1)]);
        assert_eq!(&*m.ids(), &[12, 11]);
        assert_eq!(&*before, &[10, 11, 12], "a snapshot already handed out never changes");
        // Removing the last position moves nobody.
        assert_eq!(m.swap_remove(1), None);
        assert_eq!(m.id_list(), &[12]);
    }

    #[test]
    fn a_group_is_one_watcher_or_a_list() {
        let mut g = Group::new(1, 2, Class::new(Filters::default(), false, true), State::Unsynced, -7);
        assert_eq!(g.members(), Members::One(-7));
        g.set_sent_since_tick(true);
        g.set_list(5);
        assert_eq!(g.members(), Members::Many(5));
        assert!(g.sent_since_tick());
        g.set_sent_since_tick(false);
        assert!(!g.sent_since_tick() && g.class.progress_notify());
    }

    #[test]
    fn class_filters() {
        let c = Class::new(Filters { no_put: true, no_delete: false }, true, false);
        assert!(!c.passes(EventKind::Put) && c.passes(EventKind::Delete) && c.prev_kv() && !c.progress_notify());
        assert_eq!(c.filters(), Class::new(Filters { no_put: true, no_delete: false }, false, true).filters());
    }

    #[test]
    fn records_are_small() {
        // The memory goal (at most 100 bytes per idle watcher) rests on these.
        assert_eq!(std::mem::size_of::<Option<Group>>(), 32);
        assert_eq!(std::mem::size_of::<Option<Watcher>>(), 24);
    }
}
