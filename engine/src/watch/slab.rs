//! A slab of fixed-size records addressed by `u32` handles, with a generation
//! against reuse.
//!
//! Algorithm. Records live in one `Vec` of slots; free slots are kept on a free list,
//! so insertion and removal are O(1) and never move a live record. A record that
//! handles may outlive carries the generation it was stored at (from a counter of
//! the slab), and a [`Handle`] names a slot *and* that generation. A slab keeps the
//! capacity it grew to (a free slot is reused before it grows again) until it is
//! empty, when it gives everything back.
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

/// A record kept in a [`Slab`]. Records that handles may outlive keep the
/// generation they were stored at (in what is usually padding); records never
/// named by a handle kept across a change keep none (every generation is 0).
pub(crate) trait Record {
    fn gen(&self) -> u32 {
        0
    }
    fn set_gen(&mut self, _gen: u32) {}
}

/// Layout: `slots[i]` is the record (an `Option`, which costs nothing for records
/// with a niche), and `free` the free slots (only while free). Generations come from
/// one counter per slab, so a record stored in a reused slot never has the
/// generation of the one before (unless 2^32 records were stored in between while a
/// handle was kept: handles live for the length of a catch-up job).
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    next_gen: u32,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), next_gen: 0, len: 0 }
    }
}

impl<T: Record> Slab<T> {
    /// Stores `value`; returns its handle.
    pub(crate) fn insert(&mut self, mut value: T) -> Handle {
        self.len += 1;
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        value.set_gen(gen);
        let gen = value.gen();
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            debug_assert!(slot.is_none(), "the free list holds only free slots");
            *slot = Some(value);
            return Handle { index, gen };
        }
        let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 records");
        self.slots.push(Some(value));
        Handle { index, gen }
    }

    /// Removes the record `h` names, if it is still live.
    pub(crate) fn remove(&mut self, h: Handle) -> Option<T> {
        let slot = self.slots.get_mut(h.index as usize)?;
        if slot.as_ref()?.gen() != h.gen {
            return None;
        }
        let value = slot.take();
        self.free.push(h.index);
        self.len -= 1;
        if self.len == 0 {
            // Empty: give everything back (generations come from the counter, so no
            // old handle matches what is stored next).
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        value
    }

    /// The record `h` names, if it is still live.
    pub(crate) fn get(&self, h: Handle) -> Option<&T> {
        self.slots.get(h.index as usize)?.as_ref().filter(|v| v.gen() == h.gen)
    }

    /// The record `h` names, if it is still live.
    pub(crate) fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        self.slots.get_mut(h.index as usize)?.as_mut().filter(|v| v.gen() == h.gen)
    }

    /// The live record at `index`, whatever its generation (only the seeded
    /// stale-handle bug of the loom twin uses this).
    #[cfg(argus_bug = "stale-handle")]
    pub(crate) fn any_at(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.as_ref()
    }

    /// The live record at `index` and its handle (for owners that keep bare
    /// indices of records they know to be live).
    pub(crate) fn at(&self, index: u32) -> (Handle, &T) {
        match &self.slots[index as usize] {
            Some(v) => (Handle { index, gen: v.gen() }, v),
            None => panic!("slot {index} is not live"),
        }
    }

    /// The live record at `index`.
    pub(crate) fn at_mut(&mut self, index: u32) -> &mut T {
        match &mut self.slots[index as usize] {
            Some(v) => v,
            None => panic!("slot {index} is not live"),
        }
    }

    /// The handle of the live record at `index`.
    pub(crate) fn handle(&self, index: u32) -> Handle {
        self.at(index).0
    }

    /// Indices of the live records, in slot order.
    pub(crate) fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i as u32)
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

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    struct R(u64, u32);

    impl Record for R {
        fn gen(&self) -> u32 {
            self.1
        }
        fn set_gen(&mut self, gen: u32) {
            self.1 = gen;
        }
    }

    #[test]
    fn a_removed_handle_never_reaches_the_record_that_reuses_its_slot() {
        let mut s: Slab<R> = Slab::default();
        let a = s.insert(R(1, 0));
        assert_eq!(s.remove(a).map(|r| r.0), Some(1));
        let b = s.insert(R(2, 0));
        assert_eq!(b.index, a.index, "the slot is reused");
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b).map(|r| r.0), Some(2));
        assert_eq!(s.len(), 1);
    }

    /// Random inserts and removals against a map of live handles: every live handle
    /// reads its own value, every removed one reads nothing.
    #[test]
    fn agrees_with_a_map_of_live_handles() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("slab seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut s: Slab<R> = Slab::default();
        let mut live: Vec<(Handle, u64)> = Vec::new();
        let mut dead: Vec<Handle> = Vec::new();
        for i in 0..20_000u64 {
            // Phases of mostly removals (down to empty, now and then) reuse slots.
            let p_remove = if (i / 2000) % 3 == 2 { 0.9 } else { 0.45 };
            if !live.is_empty() && rng.random_bool(p_remove) {
                let (h, v) = live.swap_remove(rng.random_range(0..live.len()));
                assert_eq!(s.remove(h).map(|r| r.0), Some(v), "seed {seed}");
                dead.push(h);
            } else {
                live.push((s.insert(R(i, 0)), i));
            }
            if i % 997 == 0 {
                for &(h, v) in &live {
                    assert_eq!(s.get(h).map(|r| r.0), Some(v), "seed {seed}");
                }
                for &h in &dead {
                    assert_eq!(s.get(h), None, "seed {seed}");
                }
                assert_eq!(s.len(), live.len());
            }
        }
    }
}
