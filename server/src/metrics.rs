//! Prometheus `/metrics` in the text exposition format, with the engine's counters
//! named like etcd's `etcd_debugging_mvcc_*` where the meaning is the same.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use argus_engine::store::Store;
use argus_engine::watch::WatchHub;
use axum::routing::get;
use axum::Router;

use crate::watch::{WatchLimits, WatchStats};

/// The metrics page: every counter with its HELP and TYPE lines.
pub fn render(
    store: &Store,
    hub: &WatchHub,
    data_dir: &std::path::Path,
    stats: &WatchStats,
    limits: &WatchLimits,
) -> String {
    let m = hub.metrics();
    let n = |v: usize| v as u64;
    let lessor = store.lessor().stats();
    let rows: [(&str, &str, &str, u64); 25] = [
        ("etcd_debugging_mvcc_watcher_total", "gauge", "Total number of watchers.", m.watchers),
        ("etcd_debugging_mvcc_watch_stream_total", "gauge", "Total number of watch streams.", m.streams),
        (
            "etcd_debugging_mvcc_slow_watcher_total",
            "gauge",
            "Total number of unsynced slow watchers (victims).",
            m.victims,
        ),
        (
            "etcd_debugging_mvcc_pending_events_total",
            "gauge",
            "Total number of pending events to be sent.",
            m.pending_events,
        ),
        (
            "etcd_debugging_mvcc_events_total",
            "counter",
            "Total number of events sent by this member.",
            m.events_delivered,
        ),
        ("etcd_debugging_mvcc_current_revision", "gauge", "The current revision of store.", store.current_revision()),
        (
            "etcd_debugging_mvcc_compact_revision",
            "gauge",
            "The revision of the last compaction in store.",
            store.compact_revision(),
        ),
        (
            "etcd_mvcc_db_total_size_in_bytes",
            "gauge",
            "Total size of the underlying database physically allocated in bytes.",
            super::maintenance::dir_size(data_dir),
        ),
        ("argus_watch_synced_watchers", "gauge", "Watchers in the synced state.", m.synced),
        ("argus_watch_unsynced_watchers", "gauge", "Watchers waiting for or in catch-up.", m.unsynced),
        ("argus_watch_notified_revision", "gauge", "Last revision the notifier has fanned out.", m.notified_revision),
        (
            "argus_watch_groups",
            "gauge",
            "Watcher groups (watchers of one stream with the same range, filters and position share one).",
            m.groups,
        ),
        ("argus_store_index_entries", "gauge", "Retained key-index entries.", store.index_entries() as u64),
        ("argus_lease_leases", "gauge", "Live leases.", lessor.leases as u64),
        ("argus_lease_attached_keys", "gauge", "Keys attached to a live lease.", lessor.attached_keys as u64),
        (
            "argus_lease_wheel_entries",
            "gauge",
            "Entries of the lease expiry wheel (one per live lease, plus the stale ones keep-alives left, which go when \
             their tick comes).",
            lessor.wheel_entries as u64,
        ),
        (
            "argus_watch_engine_healthy",
            "gauge",
            "1 while the watch engine's notifier runs, 0 once it failed (see Maintenance.Status errors).",
            u64::from(hub.failure().is_none()),
        ),
        (
            "argus_watch_owed_control_responses",
            "gauge",
            "Control responses (created, canceled, progress) owed by every watch stream: requested and not yet \
             handled, or queued and not yet sent.",
            m.owed_responses,
        ),
        (
            "argus_server_watch_streams",
            "gauge",
            "Watch streams open (counted against --max-streams).",
            n(stats.streams.load(Ordering::Relaxed)),
        ),
        (
            "argus_server_max_watch_streams",
            "gauge",
            "Most watch streams open at once (--max-streams).",
            n(limits.max_streams),
        ),
        (
            "argus_server_watch_streams_refused_total",
            "counter",
            "Watch streams refused for --max-streams.",
            stats.streams_refused.load(Ordering::Relaxed),
        ),
        (
            "argus_server_watchers",
            "gauge",
            "Watchers on open watch streams (counted against --max-watchers).",
            n(stats.watchers.load(Ordering::Relaxed)),
        ),
        ("argus_server_max_watchers", "gauge", "Most watchers at once (--max-watchers).", n(limits.max_watchers)),
        (
            "argus_server_watchers_refused_total",
            "counter",
            "Watch creates refused for --max-watchers.",
            stats.watchers_refused.load(Ordering::Relaxed),
        ),
        (
            "argus_server_watch_streams_overflowed_total",
            "counter",
            "Watch streams gone that the engine closed (RESOURCE_EXHAUSTED) for owing their client too many control responses.",
            stats.overflowed.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
}

/// The `/metrics` router.
pub fn router(
    store: Store,
    hub: Arc<WatchHub>,
    data_dir: PathBuf,
    stats: Arc<WatchStats>,
    limits: WatchLimits,
    mirror: Option<Arc<crate::mirror::Mirror>>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (store, hub, dir, stats) = (store.clone(), Arc::clone(&hub), data_dir.clone(), Arc::clone(&stats));
            let mirror = mirror.clone();
            async move {
                let mut page = render(&store, &hub, &dir, &stats, &limits);
                if let Some(m) = mirror {
                    page.push_str(&render_mirror(&store, &m));
                }
                ([("content-type", "text/plain; version=0.0.4")], page)
            }
        }),
    )
}

/// A mirror's own rows: where it follows, how far behind, how often it resumed.
pub fn render_mirror(store: &Store, m: &crate::mirror::Mirror) -> String {
    let s = &m.status;
    let applied = store.current_revision();
    let upstream = s.upstream_revision.load(Ordering::Acquire).max(applied);
    let member = s.member.lock().map(|g| g.clone()).unwrap_or_default();
    let rows: [(&str, &str, &str, f64); 9] = [
        (
            "argus_mirror_applied_revision",
            "gauge",
            "The newest cluster revision the mirror has applied.",
            applied as f64,
        ),
        (
            "argus_mirror_upstream_revision",
            "gauge",
            "The newest revision the cluster reported to the mirror.",
            upstream as f64,
        ),
        (
            "argus_mirror_lag_revisions",
            "gauge",
            "Revisions the cluster has and the mirror has not applied.",
            (upstream - applied) as f64,
        ),
        (
            "argus_mirror_lag_seconds",
            "gauge",
            "Seconds since the mirror last had every revision the cluster reported (0 when in step).",
            s.lag_seconds(applied),
        ),
        (
            "argus_mirror_upstream_compact_revision",
            "gauge",
            "The cluster's compaction revision, as last learned.",
            s.upstream_compact_revision.load(Ordering::Acquire) as f64,
        ),
        (
            "argus_mirror_upstream_up",
            "gauge",
            "1 while the mirror's watch on the cluster is open.",
            f64::from(u8::from(s.up.load(Ordering::Acquire))),
        ),
        (
            "argus_mirror_resumes_total",
            "counter",
            "Times the mirror's watch on the cluster was opened again after it broke (member failure, leader loss).",
            s.resumes.load(Ordering::Relaxed) as f64,
        ),
        (
            "argus_mirror_rebootstraps_total",
            "counter",
            "Bootstraps after the cluster compacted past the mirror's applied revision.",
            s.rebootstraps.load(Ordering::Relaxed) as f64,
        ),
        (
            "argus_mirror_compactions_followed_total",
            "counter",
            "Local compactions the mirror made (following the cluster's, or its --retain).",
            s.compactions_followed.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP argus_mirror_upstream_member The etcd member the mirror follows now (label).\n# TYPE argus_mirror_upstream_member gauge\nargus_mirror_upstream_member{{member=\"{member}\"}} 1"
    );
    out
}
