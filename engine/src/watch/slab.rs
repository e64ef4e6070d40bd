//! A slab of fixed-size records addressed by `u32` handles, with a generation
//! against reuse.
//!
//! Algorithm. Records live in one `Vec` of slots; a free slot holds the index of the
//! next free slot, so insertion and removal are O(1) and never move a live record.
//! Each slot carries a generation that is bumped when its record is removed, and a
//! [`Handle`] names a slot *and* the generation it was issued at.
//!
//! Invariants:
//! - a live record's index never changes while it lives, so anything may keep its
//!   index (`u32`, 4 bytes) instead of a pointer;
//! - [`Slab::get`] with a handle answers `None` once that record has been removed,
//!   even if the slot now holds a newer record: whoever keeps a handle across a
//!   point where the owner may remove and reuse it (a catch-up job running on
//!   another thread, say) checks it with the generation, never with the index alone;
//! - only the slab's single owner (the notifier) mutates it; handles are plain data.

/// Names one record of a [`Slab`]: its slot and the generation it was issued at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Handle {
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

enum Slot<T> {
    Live { gen: u32, value: T },
    Free { gen: u32, next: u32 },
}

/// No next free slot.
const NONE: u32 = u32::MAX;

pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: u32,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: NONE, len: 0 }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; returns its handle.
    pub(crate) fn insert(&mut self, value: T) -> Handle {
        self.len += 1;
        if self.free != NONE {
            let index = self.free;
            let slot = &mut self.slots[index as usize];
            let Slot::Free { gen, next } = *slot else { unreachable!("the free list holds only free slots") };
            self.free = next;
            *slot = Slot::Live { gen, value };
            return Handle { index, gen };
        }
        let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 records");
        assert!(index != NONE, "fewer than 2^32 - 1 records");
        self.slots.push(Slot::Live { gen: 0, value });
        Handle { index, gen: 0 }
    }

    /// Removes the record `h` names, if it is still live.
    pub(crate) fn remove(&mut self, h: Handle) -> Option<T> {
        let slot = self.slots.get_mut(h.index as usize)?;
        match slot {
            Slot::Live { gen, .. } if *gen == h.gen => {}
            _ => return None,
        }
        let next_gen = h.gen.wrapping_add(1);
        let old = std::mem::replace(slot, Slot::Free { gen: next_gen, next: self.free });
        self.free = h.index;
        self.len -= 1;
        match old {
            Slot::Live { value, .. } => Some(value),
            Slot::Free { .. } => unreachable!(),
        }
    }

    /// The record `h` names, if it is still live.
    pub(crate) fn get(&self, h: Handle) -> Option<&T> {
        match self.slots.get(h.index as usize)? {
            Slot::Live { gen, value } if *gen == h.gen => Some(value),
            _ => None,
        }
    }

    /// The record `h` names, if it is still live.
    pub(crate) fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        match self.slots.get_mut(h.index as usize)? {
            Slot::Live { gen, value } if *gen == h.gen => Some(value),
            _ => None,
        }
    }

    /// The live record at `index`, whatever its generation (only the seeded
    /// stale-handle bug of the loom twin uses this).
    #[cfg(feature = "bug-stale-handle")]
    pub(crate) fn any_at(&self, index: u32) -> Option<&T> {
        match self.slots.get(index as usize)? {
            Slot::Live { value, .. } => Some(value),
            Slot::Free { .. } => None,
        }
    }

    /// The live record at `index` and its handle (for owners that keep bare
    /// indices of records they know to be live).
    pub(crate) fn at(&self, index: u32) -> (Handle, &T) {
        match &self.slots[index as usize] {
            Slot::Live { gen, value } => (Handle { index, gen: *gen }, value),
            Slot::Free { .. } => panic!("slot {index} is not live"),
        }
    }

    /// The live record at `index`.
    pub(crate) fn at_mut(&mut self, index: u32) -> &mut T {
        match &mut self.slots[index as usize] {
            Slot::Live { value, .. } => value,
            Slot::Free { .. } => panic!("slot {index} is not live"),
        }
    }

    /// The handle of the live record at `index`.
    pub(crate) fn handle(&self, index: u32) -> Handle {
        self.at(index).0
    }

    /// Live records.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_removed_handle_never_reaches_the_record_that_reuses_its_slot() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(b.index, a.index, "the slot is reused");
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
    }

    /// Random inserts and removals against a map of live handles: every live handle
    /// reads its own value, every removed one reads nothing.
    #[test]
    fn agrees_with_a_map_of_live_handles() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("slab seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut s = Slab::default();
        let mut live: Vec<(Handle, u64)> = Vec::new();
        let mut dead: Vec<Handle> = Vec::new();
        for i in 0..20_000u64 {
            if !live.is_empty() && rng.random_bool(0.45) {
                let (h, v) = live.swap_remove(rng.random_range(0..live.len()));
                assert_eq!(s.remove(h), Some(v), "seed {seed}");
                dead.push(h);
            } else {
                live.push((s.insert(i), i));
            }
            if i % 997 == 0 {
                for &(h, v) in &live {
                    assert_eq!(s.get(h), Some(&v), "seed {seed}");
                }
                for &h in &dead {
                    assert_eq!(s.get(h), None, "seed {seed}");
                }
                assert_eq!(s.len(), live.len());
            }
        }
    }
}
