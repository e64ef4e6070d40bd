//! A global allocator that counts, for the memory measurements of `watch-memory`
//! (kept out of the criterion benchmarks, which it would slow down).
//!
//! It forwards to the system allocator and keeps: bytes live (requested sizes, not
//! the allocator's rounding: RSS shows that), allocations and frees made, live
//! allocations by exact size up to 4 KiB, and live bytes and allocations of larger
//! ones by power of two, so that a difference of two snapshots says which
//! structures the bytes went to.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Largest size counted exactly.
pub const SMALL_MAX: usize = 4096;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static SMALL: [AtomicI64; SMALL_MAX + 1] = [const { AtomicI64::new(0) }; SMALL_MAX + 1];
static LARGE_BYTES: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];
static LARGE_COUNT: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];

/// The counting allocator; install with `#[global_allocator]`.
pub struct Counting;

fn note(size: usize, sign: i64) {
    LIVE.fetch_add(sign * size as i64, Relaxed);
    if sign > 0 {
        ALLOCS.fetch_add(1, Relaxed);
    } else {
        FREES.fetch_add(1, Relaxed);
    }
    if size <= SMALL_MAX {
        SMALL[size].fetch_add(sign, Relaxed);
    } else {
        let b = (usize::BITS - 1 - size.leading_zeros()) as usize;
        LARGE_BYTES[b].fetch_add(sign * size as i64, Relaxed);
        LARGE_COUNT[b].fetch_add(sign, Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the
// counting has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        note(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(layout.size(), -1);
            note(new_size, 1);
        }
        p
    }
}

/// The counters at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Bytes live (requested sizes).
    pub live: i64,
    /// Allocations made so far (reallocations count as one more).
    pub allocs: u64,
    /// Frees made so far.
    pub frees: u64,
    /// Live allocations by exact size (index = size), up to `SMALL_MAX`.
    pub small: Vec<i64>,
    /// Live bytes of larger allocations, by `floor(log2(size))`.
    pub large_bytes: Vec<i64>,
    /// Live larger allocations, by `floor(log2(size))`.
    pub large_count: Vec<i64>,
}

/// Reads every counter (the snapshot's own vectors are allocated first, so they
/// are counted in it).
pub fn snapshot() -> Snapshot {
    let mut s = Snapshot {
        live: 0,
        allocs: 0,
        frees: 0,
        small: vec![0; SMALL_MAX + 1],
        large_bytes: vec![0; 64],
        large_count: vec![0; 64],
    };
    for (i, a) in SMALL.iter().enumerate() {
        s.small[i] = a.load(Relaxed);
    }
    for i in 0..64 {
        s.large_bytes[i] = LARGE_BYTES[i].load(Relaxed);
        s.large_count[i] = LARGE_COUNT[i].load(Relaxed);
    }
    s.live = LIVE.load(Relaxed);
    s.allocs = ALLOCS.load(Relaxed);
    s.frees = FREES.load(Relaxed);
    s
}
