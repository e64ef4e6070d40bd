//! The watch hub: one per store; owns the notifier thread and hands out streams.

use std::time::Duration;

use super::group::Class;
use super::index::KeyRange;
use super::stream::{CloseGuard, InFlight, StreamShared, WatchController, WatchReceiver, WatchStream};
use super::types::WatchId;
use super::victims::RetryQueue;
use crate::store::Store;
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Arc, Doorbell, Mutex, Pool, Queue};

/// Settings of the watch engine.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Event deliveries a stream may hold before its watchers become victims
    /// (etcd's `chanBufLen` is 128).
    pub stream_capacity: usize,
    /// Bytes of events a stream may hold before its watchers become victims.
    pub stream_max_bytes: usize,
    /// Most watchers on one stream.
    pub max_watchers_per_stream: usize,
    /// Most watchers caught up by one batch (etcd's `maxWatchersPerSync`).
    pub catchup_batch: usize,
    /// Most revisions one catch-up round reads for a batch.
    pub catchup_round_revisions: u64,
    /// Most revisions in one catch-up response (etcd's `watchBatchMaxRevs`).
    pub response_max_revisions: usize,
    /// Most bytes in one catch-up response (a single larger revision is sent whole).
    pub response_max_bytes: usize,
    /// Interval of periodic progress notifications for `progress_notify` watchers.
    pub progress_interval: Duration,
    /// Shards of the watcher index (streams are spread over them).
    pub index_shards: usize,
    /// Groups of watchers one revision reaches from which its deliveries are built
    /// and queued in parallel on the engine's threads.
    pub parallel_match_threshold: usize,
    /// Threads of each of the engine's two pools (`argus-engine-fN`: parallel
    /// fan-out of live revisions; `argus-engine-cN`: catch-up jobs); 0: one per
    /// core. Two pools so that a live revision's fan-out never queues behind a
    /// round of catch-up jobs.
    pub engine_threads: usize,
    /// Runs no catch-up job, so watchers that start in the past stay unsynced: for
    /// benchmarks of the unsynced state (etcd's `UnsyncedCancel` keeps its sync
    /// loop off the same way). Never set it in a server.
    pub catchup_paused: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            stream_capacity: 128,
            stream_max_bytes: 16 << 20,
            max_watchers_per_stream: 1 << 20,
            catchup_batch: 512,
            catchup_round_revisions: 4096,
            response_max_revisions: 1000,
            response_max_bytes: 2 << 20,
            progress_interval: Duration::from_secs(600),
            index_shards: 16,
            parallel_match_threshold: 256,
            engine_threads: 0,
            catchup_paused: false,
        }
    }
}

/// Counters of the watch engine (named after etcd's `etcd_debugging_mvcc_*`).
#[derive(Default, Debug)]
pub struct WatchMetrics {
    /// Live watchers (`watcher_total`).
    pub watchers: AtomicU64,
    /// Open streams (`watch_stream_total`).
    pub streams: AtomicU64,
    /// Watchers in the synced state.
    pub synced: AtomicU64,
    /// Watchers waiting for or in catch-up.
    pub unsynced: AtomicU64,
    /// Watchers whose stream was full (`slow_watcher_total`).
    pub victims: AtomicU64,
    /// Live groups: watchers of one stream with the same range, filters and
    /// position share one (at most as many as watchers).
    pub groups: AtomicU64,
    /// Events queued on streams and not yet received (`pending_events_total`).
    pub pending_events: AtomicU64,
    /// Events handed to consumers (`events_total`).
    pub events_delivered: AtomicU64,
    /// Control responses owed by every stream: requested and not yet handled by the
    /// notifier, or queued and not yet received (see
    /// [`WatchReceiver::owed_responses`](super::WatchReceiver::owed_responses)).
    pub owed_responses: AtomicU64,
    /// Revisions the notifier has processed.
    pub notified_revision: AtomicU64,
    /// Turns of the notifier loop that found work (a commit to fan out, a request,
    /// a retry, a finished job).
    pub notifier_turns: AtomicU64,
}

/// A point-in-time copy of [`WatchMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`WatchMetrics::watchers`].
    pub watchers: u64,
    /// See [`WatchMetrics::streams`].
    pub streams: u64,
    /// See [`WatchMetrics::synced`].
    pub synced: u64,
    /// See [`WatchMetrics::unsynced`].
    pub unsynced: u64,
    /// See [`WatchMetrics::victims`].
    pub victims: u64,
    /// See [`WatchMetrics::groups`].
    pub groups: u64,
    /// See [`WatchMetrics::pending_events`].
    pub pending_events: u64,
    /// See [`WatchMetrics::events_delivered`].
    pub events_delivered: u64,
    /// See [`WatchMetrics::owed_responses`].
    pub owed_responses: u64,
    /// See [`WatchMetrics::notified_revision`].
    pub notified_revision: u64,
    /// See [`WatchMetrics::notifier_turns`].
    pub notifier_turns: u64,
}

impl WatchMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            watchers: r(&self.watchers),
            streams: r(&self.streams),
            synced: r(&self.synced),
            unsynced: r(&self.unsynced),
            victims: r(&self.victims),
            groups: r(&self.groups),
            pending_events: r(&self.pending_events),
            events_delivered: r(&self.events_delivered),
            owed_responses: r(&self.owed_responses),
            notified_revision: r(&self.notified_revision),
            notifier_turns: r(&self.notifier_turns),
        }
    }
}

/// A watcher accepted by `watch()`, for the notifier to register.
pub(crate) struct Registration {
    pub(crate) stream: Arc<StreamShared>,
    pub(crate) id: WatchId,
    pub(crate) range: KeyRange,
    pub(crate) class: Class,
    /// First revision it may receive.
    pub(crate) min_rev: u64,
    /// The header revision of its `created` response.
    pub(crate) created_rev: u64,
    /// Owed by its stream until registered.
    pub(crate) _owed: InFlight,
}

/// The predicate of [`Control::Retain`]: watch id, key and `range_end` as sent.
pub(crate) type Keep = Box<dyn FnMut(WatchId, &[u8], &[u8]) -> bool + Send>;

/// A request to the notifier. `_owed`: a client's request is owed by its stream
/// until the notifier drops it.
pub(crate) enum Control {
    Register(Box<Registration>),
    Cancel {
        stream: u64,
        id: WatchId,
        _owed: InFlight,
    },
    Progress {
        stream: u64,
        id: Option<WatchId>,
        _owed: InFlight,
    },
    /// Cancels the stream's watchers that `keep` refuses (see
    /// [`WatchController::retain`](super::WatchController::retain)).
    Retain {
        stream: u64,
        keep: Keep,
        reason: String,
        _owed: InFlight,
    },
    OpenStream(Arc<StreamShared>),
    CloseStream {
        stream: u64,
    },
    CatchupDone(super::catchup::CatchupResult),
    /// Panics in the notifier (see [`WatchHub::inject_notifier_panic`]).
    InjectPanic,
    /// Reports the notifier's internal counts at the end of its turn (tests).
    #[cfg(all(test, not(loom)))]
    Stats(std::sync::mpsc::Sender<super::notify::NotifierStats>),
}

/// State shared by the hub handle, its streams and the notifier thread.
pub(crate) struct HubShared {
    pub(crate) store: Store,
    pub(crate) opts: WatchOptions,
    /// Requests for the notifier: a lock-free queue (callers of `watch`, `cancel`
    /// and the rest never contend with the notifier's drain).
    pub(crate) controls: Queue<Control>,
    pub(crate) doorbell: Doorbell,
    pub(crate) retry: RetryQueue,
    pub(crate) metrics: WatchMetrics,
    pub(crate) stop: AtomicBool,
    pub(crate) next_stream: AtomicU64,
    /// Parallel fan-out of live revisions (`Pool::par_map` from the notifier).
    pub(crate) pool: Pool,
    /// Catch-up jobs: a pool of their own, so that a revision's parallel fan-out,
    /// which the notifier waits for, never queues behind a round of catch-up jobs
    /// (each may read thousands of revisions).
    pub(crate) catchup_pool: Pool,
    /// Why the notifier stopped working, once it has (see [`WatchHub::failure`]).
    pub(crate) failure: Mutex<Option<String>>,
    pub(crate) failed: AtomicBool,
    /// Whether any group is synced or parked, i.e. whether committed revisions can
    /// reach anybody: while it is false, commits do not ring the notifier's doorbell
    /// (a hub with no watchers costs a writer nothing). Written by the notifier only.
    pub(crate) watching: AtomicBool,
}

impl HubShared {
    pub(crate) fn control(&self, c: Control) {
        self.controls.push(c);
        // Store-buffering with the notifier's last drain (it stops, then drains): with
        // the fences, either this sees `stop` and drains what is left itself, or the
        // notifier's drain sees the request. Nothing is lost in between.
        fence(Ordering::SeqCst);
        if self.stop.load(Ordering::Relaxed) {
            self.drain_stopped();
        } else {
            self.doorbell.ring();
        }
    }

    /// Answers the requests left after the engine stopped: an accepted watch still
    /// gets its `created` response (and, if the engine failed, its `canceled` with
    /// the reason), and a stream opened too late to be registered (the notifier's
    /// last act closes only registered ones) its end; nothing else is done.
    pub(crate) fn drain_stopped(&self) {
        let failure = self.failure();
        while let Some(c) = self.controls.pop() {
            match c {
                Control::Register(r) => {
                    r.stream.send_control(super::types::WatchResponse::created(r.id, r.created_rev));
                    if let Some(why) = &failure {
                        let mut ids = lock(&r.stream.ids);
                        r.stream.send_control(failed_response(r.id, r.created_rev, why));
                        ids.remove(r.id);
                    }
                }
                Control::OpenStream(s) => s.send_closed(),
                _ => {}
            }
        }
    }

    /// Why the notifier failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.failure).clone()
    }

    /// Records that the notifier failed (`why`) and stops the engine: watches are
    /// refused from now on.
    pub(crate) fn fail(&self, why: String) {
        tracing::error!(reason = %why, "the watch engine's notifier failed; every watch is canceled");
        *lock(&self.failure) = Some(why);
        self.failed.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
    }
}

/// The last response of a watcher whose engine failed: canceled, with the reason.
pub(crate) fn failed_response(id: WatchId, rev: u64, why: &str) -> super::types::WatchResponse {
    let mut r = super::types::WatchResponse::control(id, rev);
    r.canceled = true;
    r.cancel_reason = format!("watch engine failed: {why}");
    r
}

/// The health of a [`WatchHub`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchHealth {
    /// The notifier runs.
    Healthy,
    /// The notifier failed (panicked) and is gone: every watcher was canceled with
    /// the reason, every stream ended, and new watches are refused. The engine does
    /// not recover; a server should report it and exit.
    Failed(String),
}

/// The watch engine of one store: a notifier thread that follows the store's
/// committed revision and fans each revision out to the watchers of every stream.
///
/// Dropping the hub stops the notifier; streams then receive nothing more.
pub struct WatchHub {
    shared: Arc<HubShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatchHub {
    /// Starts the watch engine on `store`.
    pub fn new(store: Store, opts: WatchOptions) -> WatchHub {
        let (mut hub, notifier) = Self::without_thread(store, opts);
        let thread = std::thread::Builder::new()
            .name("argus-notifier".into())
            .spawn(move || notifier.run_guarded())
            .expect("spawn the notifier thread");
        hub.thread = Some(thread);
        hub
    }

    fn without_thread(store: Store, opts: WatchOptions) -> (WatchHub, super::notify::Notifier) {
        let shared = Arc::new(HubShared {
            pool: Pool::new(opts.engine_threads, "f"),
            catchup_pool: Pool::new(opts.engine_threads, "c"),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            store: store.clone(),
            opts,
            controls: Queue::new(),
            doorbell: Doorbell::default(),
            retry: RetryQueue::new(),
            metrics: WatchMetrics::default(),
            stop: AtomicBool::new(false),
            next_stream: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&shared);
        store.log().add_commit_listener(Arc::new(move || {
            if let Some(s) = weak.upgrade() {
                // Store-buffering with the notifier (it writes `watching`, then reads
                // `committed_rev`; the log wrote `committed_rev` before calling this):
                // the fences make at least one side see the other's write, so a
                // commit that lands as the first watcher syncs is never missed.
                fence(Ordering::SeqCst);
                if s.watching.load(Ordering::Relaxed) {
                    s.doorbell.ring();
                }
            }
        }));
        let notifier = super::notify::Notifier::new(Arc::clone(&shared));
        (WatchHub { shared, thread: None }, notifier)
    }

    /// A hub whose notifier runs only when the caller steps it (loom models drive
    /// the real notifier code this way, on a loom thread).
    #[cfg(loom)]
    pub fn manual(store: Store, opts: WatchOptions) -> (WatchHub, ManualNotifier) {
        let (hub, notifier) = Self::without_thread(store, opts);
        (hub, ManualNotifier(notifier))
    }

    /// Opens a new stream.
    pub fn stream(&self) -> WatchStream {
        let id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let shared = StreamShared::new(
            id,
            self.shared.opts.stream_capacity,
            self.shared.opts.stream_max_bytes,
            Some(Arc::clone(&self.shared)),
        );
        self.shared.control(Control::OpenStream(Arc::clone(&shared)));
        let guard = Arc::new(CloseGuard { shared: Arc::clone(&shared), hub: Arc::clone(&self.shared) });
        let ctl =
            WatchController { shared: Arc::clone(&shared), hub: Arc::clone(&self.shared), _guard: Arc::clone(&guard) };
        let rx = WatchReceiver {
            shared,
            expanded: Default::default(),
            done: false,
            hub: Arc::clone(&self.shared),
            _guard: guard,
        };
        WatchStream::new(ctl, rx)
    }

    /// Stops the engine: every stream receives what was already queued for it and
    /// then ends (its receiver answers `None`); new watches are refused with
    /// [`WatchError::Closed`](super::WatchError::Closed). For a server's graceful
    /// stop: open watch streams would otherwise never end. Dropping the hub does the
    /// same and also waits for the notifier thread.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.doorbell.ring();
    }

    /// Whether [`WatchHub::shutdown`] was called (or the hub is being dropped).
    pub fn is_shut_down(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Whether the notifier runs, or why it failed. A failed engine has canceled
    /// every watcher (`cancel_reason` names the failure), ended every stream and
    /// refuses new watches; it does not recover.
    pub fn health(&self) -> WatchHealth {
        match self.shared.failure() {
            None => WatchHealth::Healthy,
            Some(why) => WatchHealth::Failed(why),
        }
    }

    /// Why the notifier failed, if it did (see [`WatchHub::health`]).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Makes the notifier panic at its next turn: a fault-injection hook for tests
    /// of the failure path (health, canceled watchers, ended streams). Never call it
    /// in a server.
    #[doc(hidden)]
    pub fn inject_notifier_panic(&self) {
        self.shared.control(Control::InjectPanic);
    }

    /// The notifier's internal counts (records, index ranges, pending index
    /// changes), as of the end of a turn after this call.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn notifier_stats(&self) -> super::notify::NotifierStats {
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared.control(Control::Stats(tx));
        rx.recv_timeout(Duration::from_secs(30)).expect("the notifier answers within 30 s")
    }

    /// The engine's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The store watched.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The options in force.
    pub fn options(&self) -> &WatchOptions {
        &self.shared.opts
    }
}

/// The notifier of a [`WatchHub::manual`] hub.
#[cfg(loom)]
pub struct ManualNotifier(super::notify::Notifier);

#[cfg(loom)]
impl ManualNotifier {
    /// One turn of the notifier loop, then every catch-up job it started, run here
    /// in order; returns whether it did anything.
    pub fn step(&mut self) -> bool {
        let busy = self.0.step();
        let jobs = self.0.hub().catchup_pool.take_queued();
        let ran = !jobs.is_empty();
        for job in jobs {
            job();
        }
        busy || ran
    }

    /// One turn of the notifier loop; the catch-up jobs it started are left for
    /// [`ManualNotifier::take_jobs`].
    pub fn step_without_jobs(&mut self) -> bool {
        self.0.step()
    }

    /// The catch-up jobs started and not yet run, for a model to run on a thread
    /// of its choosing.
    pub fn take_jobs(&mut self) -> Vec<Box<dyn FnOnce() + Send>> {
        self.0.hub().catchup_pool.take_queued()
    }

    /// Steps until a turn does nothing (at most `limit` turns).
    pub fn settle(&mut self, limit: usize) {
        for _ in 0..limit {
            if !self.step() {
                return;
            }
        }
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.doorbell.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
