//! The one place engine code takes its concurrency primitives from.
//!
//! Every atomic, `Arc`, lock and thread in the engine is imported from here, never
//! from `std` directly, so that building with `RUSTFLAGS="--cfg loom"` swaps them
//! for loom's instrumented versions and the loom models in `loom-tests/` explore
//! the real engine code. A plain `cargo build` uses `std` unchanged.

#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
}

// `Arc` stays std's under loom: loom's `Arc` cannot hold unsized values (`dyn
// Storage`, `[u32]`) nor downgrade, and the engine never relies on a reference count
// for synchronization; every hand-off goes through the atomics and locks below,
// which loom does model.
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) mod atomic {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
}

/// Locks `m`, recovering the guard if another thread panicked while holding it.
///
/// The engine's mutexes guard state that every holder leaves consistent before any
/// call that can panic, so a poisoned lock carries no torn state.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// An atomically replaceable `Arc<T>`: readers take a snapshot without locking,
/// a writer publishes a new value. `arc-swap` in normal builds; under loom a
/// `RwLock<Arc<T>>`, which loom can see.
pub(crate) struct SwapCell<T> {
    #[cfg(not(loom))]
    inner: arc_swap::ArcSwap<T>,
    #[cfg(loom)]
    inner: loom::sync::RwLock<Arc<T>>,
}

impl<T> SwapCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        #[cfg(not(loom))]
        {
            SwapCell { inner: arc_swap::ArcSwap::new(value) }
        }
        #[cfg(loom)]
        {
            SwapCell { inner: loom::sync::RwLock::new(value) }
        }
    }

    /// A snapshot of the current value (acquire).
    pub(crate) fn load(&self) -> Arc<T> {
        #[cfg(not(loom))]
        {
            self.inner.load_full()
        }
        #[cfg(loom)]
        {
            Arc::clone(&self.inner.read().unwrap())
        }
    }

    /// Publishes `value` (release): a later `load` sees it and everything written before.
    pub(crate) fn store(&self, value: Arc<T>) {
        #[cfg(not(loom))]
        {
            self.inner.store(value)
        }
        #[cfg(loom)]
        {
            *self.inner.write().unwrap() = value;
        }
    }
}

/// Runs `f` on every item, in parallel on rayon's pool when `parallel`, and
/// returns the results in item order. Under loom, sequentially (rayon's threads are
/// not loom threads).
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], parallel: bool, f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    #[cfg(not(loom))]
    {
        if parallel && items.len() > 1 {
            use rayon::prelude::*;
            return items.par_iter().map(f).collect();
        }
    }
    let _ = parallel;
    items.iter().map(f).collect()
}

/// Runs `job` in the background (rayon's pool); under loom, at once on this thread.
pub(crate) fn spawn_job(job: impl FnOnce() + Send + 'static) {
    #[cfg(not(loom))]
    {
        rayon::spawn(job);
    }
    #[cfg(loom)]
    {
        job();
    }
}

/// A wake-up signal for one waiting thread: `ring` sets it, `wait` consumes it.
#[derive(Default)]
pub(crate) struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    pub(crate) fn ring(&self) {
        let mut r = lock(&self.rung);
        if !*r {
            *r = true;
            self.cv.notify_one();
        }
    }

    /// Waits until rung or `timeout` passes; returns whether it was rung.
    pub(crate) fn wait(&self, timeout: std::time::Duration) -> bool {
        let mut r = lock(&self.rung);
        if !*r {
            r = match self.cv.wait_timeout(r, timeout) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        std::mem::replace(&mut *r, false)
    }
}
