//! The one place engine code takes its concurrency primitives from.
//!
//! Every atomic, `Arc`, lock and thread in the engine is imported from here, never
//! from `std` directly, so that building with `RUSTFLAGS="--cfg loom"` swaps them
//! for loom's instrumented versions and the loom models in `loom-tests/` explore
//! the real engine code. A plain `cargo build` uses `std` unchanged.

// `Arc`, `Weak` and `OnceLock` are std's in every build; see below for why that is
// sound under loom.
pub(crate) use std::sync::{Arc, OnceLock, Weak};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
}

// `Arc` stays std's under loom: loom's `Arc` cannot hold unsized values (`dyn
// Storage`, `[u32]`) nor downgrade, and the engine never relies on a reference count
// for synchronization; every hand-off goes through the atomics and locks below,
// which loom does model. `Weak` follows from `Arc` (it is what `Arc::downgrade`
// gives). Loom 0.7 has no `OnceLock`; std's is used under loom too. The engine's
// `OnceLock`s (a group's id snapshot, a revision's encoded events) are caches whose
// value is a pure function of data already published to every thread that reads
// them (through the atomics and locks loom does model), so whichever thread fills
// one, the others read the same value: loom losing sight of its internal
// synchronization hides no interleaving that could change an outcome.
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) mod atomic {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// One of the engine's own worker pools (rayon): the watch hub has one for
/// parallel fan-out and one for catch-up jobs (see `WatchHub`); their threads are
/// named `argus-engine-<tag>N` so that profiles and the benchmark's CPU split can
/// tell engine work from the server's (and the two pools apart).
///
/// Under loom there are no pool threads: `par_map` runs in order on the caller, and
/// `spawn` queues the job for the model to run ([`Pool::run_queued`]), on whichever
/// loom thread the model chooses.
pub(crate) struct Pool {
    #[cfg(not(loom))]
    pool: rayon::ThreadPool,
    #[cfg(loom)]
    queued: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Pool {
    /// A pool of `threads` threads (0: one per core) named `argus-engine-<tag>N`
    /// (Linux keeps 15 bytes of a thread name: keep `tag` short).
    pub(crate) fn new(threads: usize, tag: &'static str) -> Pool {
        #[cfg(not(loom))]
        {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |i| format!("argus-engine-{tag}{i}"))
                .build()
                .expect("start the engine's worker threads");
            Pool { pool }
        }
        #[cfg(loom)]
        {
            let _ = (threads, tag);
            Pool { queued: Mutex::new(Vec::new()) }
        }
    }

    /// Threads in the pool.
    pub(crate) fn threads(&self) -> usize {
        #[cfg(not(loom))]
        {
            self.pool.current_num_threads()
        }
        #[cfg(loom)]
        {
            2
        }
    }

    /// Runs `f` on every item, in parallel on the pool when `parallel`, and returns
    /// the results in item order.
    pub(crate) fn par_map<T: Sync, R: Send>(
        &self,
        items: &[T],
        parallel: bool,
        f: impl Fn(&T) -> R + Sync + Send,
    ) -> Vec<R> {
        #[cfg(not(loom))]
        {
            if parallel && items.len() > 1 {
                use rayon::prelude::*;
                return self.pool.install(|| items.par_iter().map(f).collect());
            }
        }
        let _ = parallel;
        items.iter().map(f).collect()
    }

    /// Runs `job` in the background.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        #[cfg(not(loom))]
        {
            self.pool.spawn(job);
        }
        #[cfg(loom)]
        {
            lock(&self.queued).push(Box::new(job));
        }
    }

    /// Takes the jobs spawned so far (loom models run them where they choose).
    #[cfg(loom)]
    pub(crate) fn take_queued(&self) -> Vec<Box<dyn FnOnce() + Send>> {
        std::mem::take(&mut *lock(&self.queued))
    }
}

/// A multi-producer queue with no lock: crossbeam's `SegQueue` (lock-free, grows and
/// frees its blocks as it fills and drains); under loom a `Mutex<VecDeque>`, which
/// loom can see.
pub(crate) struct Queue<T> {
    #[cfg(not(loom))]
    q: crossbeam_queue::SegQueue<T>,
    #[cfg(loom)]
    q: Mutex<std::collections::VecDeque<T>>,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue { q: Default::default() }
    }

    pub(crate) fn push(&self, v: T) {
        #[cfg(not(loom))]
        self.q.push(v);
        #[cfg(loom)]
        lock(&self.q).push_back(v);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(not(loom))]
        {
            self.q.pop()
        }
        #[cfg(loom)]
        {
            lock(&self.q).pop_front()
        }
    }
}

/// One registered waker, woken without a lock (`atomic-waker`; loom's model of it
/// under loom).
#[derive(Default)]
pub(crate) struct AtomicWaker {
    #[cfg(not(loom))]
    inner: atomic_waker::AtomicWaker,
    #[cfg(loom)]
    inner: loom::future::AtomicWaker,
}

impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker { inner: Default::default() }
    }

    /// Registers `waker` to be woken by the next [`AtomicWaker::wake`].
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        #[cfg(not(loom))]
        self.inner.register(waker);
        #[cfg(loom)]
        self.inner.register_by_ref(waker);
    }

    /// Wakes the registered waker, if any (and forgets it).
    pub(crate) fn wake(&self) {
        self.inner.wake();
    }
}

/// Thread parking, for the blocking receive of a stream.
pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use loom::thread::{current, park, Thread};
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, park, park_timeout, Thread};
}

/// A [`std::task::Waker`] that unparks one thread (a blocking receiver).
pub(crate) struct ThreadWaker(pub(crate) thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A wake-up signal for one thread (the notifier): `ring` sets it and unparks the
/// thread if it sleeps, `wait` consumes it. No lock: one atomic swap per ring, and a
/// futex wake only when the thread actually sleeps.
///
/// Protocol: the state is `IDLE`, `RUNG` or `SLEEPING`. The waiter announces
/// `SLEEPING` with a compare-exchange from `IDLE` (failing only if a ring came in,
/// which it then consumes), parks, and on waking swaps the state back to `IDLE`; a
/// ring swaps in `RUNG` and unparks only if it replaced `SLEEPING`. Every access is
/// a read-modify-write, so a ring is never lost between the waiter's check and its
/// park (and a spurious unpark only costs one extra turn).
pub(crate) struct Doorbell {
    state: atomic::AtomicUsize,
    sleeper: OnceLock<thread::Thread>,
}

const IDLE: usize = 0;
const RUNG: usize = 1;
const SLEEPING: usize = 2;

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell { state: atomic::AtomicUsize::new(IDLE), sleeper: OnceLock::new() }
    }
}

impl Doorbell {
    pub(crate) fn ring(&self) {
        if self.state.swap(RUNG, atomic::Ordering::AcqRel) == SLEEPING {
            if let Some(t) = self.sleeper.get() {
                t.unpark();
            }
        }
    }

    /// Waits until rung or `timeout` passes; returns whether it was rung. Only one
    /// thread may wait on a doorbell, always the same one.
    #[cfg(not(loom))]
    pub(crate) fn wait(&self, timeout: std::time::Duration) -> bool {
        use atomic::Ordering::AcqRel;
        let me = self.sleeper.get_or_init(thread::current);
        debug_assert_eq!(me.id(), std::thread::current().id(), "one waiter per doorbell");
        if self.state.compare_exchange(IDLE, SLEEPING, AcqRel, atomic::Ordering::Acquire).is_err() {
            // Rung since the last wait.
            self.state.swap(IDLE, AcqRel);
            return true;
        }
        thread::park_timeout(timeout);
        self.state.swap(IDLE, AcqRel) == RUNG
    }

    /// Spins (without sleeping) for at most `limit` while the bell is not rung;
    /// returns whether it was rung meanwhile (the ring stays for `wait` to take).
    #[cfg(not(loom))]
    pub(crate) fn spin(&self, limit: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            for _ in 0..64 {
                if self.state.load(atomic::Ordering::Acquire) == RUNG {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                return false;
            }
        }
    }

    /// Consumes a pending ring without waiting (loom models step the notifier by
    /// hand, so nothing ever sleeps on the doorbell there).
    #[cfg(loom)]
    pub(crate) fn take(&self) -> bool {
        self.state.swap(IDLE, atomic::Ordering::AcqRel) == RUNG
    }
}
