//! Prometheus `/metrics` in the text exposition format, with the engine's counters
//! named like etcd's `etcd_debugging_mvcc_*` where the meaning is the same.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;

use argus_engine::store::Store;
use argus_engine::watch::WatchHub;
use axum::routing::get;
use axum::Router;

/// The metrics page: every counter with its HELP and TYPE lines.
pub fn render(store: &Store, hub: &WatchHub, data_dir: &std::path::Path) -> String {
    let m = hub.metrics();
    let rows: [(&str, &str, &str, u64); 14] = [
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
            super::other::dir_size(data_dir),
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
        (
            "argus_watch_engine_healthy",
            "gauge",
            "1 while the watch engine's notifier runs, 0 once it failed (see Maintenance.Status errors).",
            u64::from(hub.failure().is_none()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
}

/// The `/metrics` router.
pub fn router(store: Store, hub: Arc<WatchHub>, data_dir: PathBuf) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (store, hub, dir) = (store.clone(), Arc::clone(&hub), data_dir.clone());
            async move { ([("content-type", "text/plain; version=0.0.4")], render(&store, &hub, &dir)) }
        }),
    )
}
