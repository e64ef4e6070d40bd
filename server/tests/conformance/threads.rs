//! The `argus` binary's threads are named for their work: the runtime's workers
//! `argus-io` (connections, gRPC framing, Watch streams), the KV calls' blocking
//! pool `argus-kv`, the watch engine's `argus-notifier`. The benchmark harness splits
//! server CPU by these names.

use crate::common::{connect, ArgusProcess};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The runtime's workers are `argus-io` and the KV calls' blocking threads
/// `argus-kv` (the benchmark harness splits server CPU by these names).
#[test]
fn threads_are_named_for_their_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ArgusProcess::start(dir.path(), &["--fsync", "never"]);
    let pid = server.pid();
    let ep = server.endpoint();
    runtime().block_on(async {
        let mut kv = connect(&ep).await;
        kv.put("k", "v", None).await.expect("put");
    });
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "argus-io"), "{names:?}");
    assert!(names.iter().any(|n| n == "argus-kv"), "{names:?}");
    assert!(names.iter().any(|n| n == "argus-notifier"), "{names:?}");
}
