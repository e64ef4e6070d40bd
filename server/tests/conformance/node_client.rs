//! A client library in another language against real etcd 3.4 and against Argus:
//! Node's `etcd3` npm package (pinned in `server/tests/js/package.json`, installed
//! by `npm ci` from the committed lock file) runs `server/tests/js/lease_watch.mjs`
//! against each server: leases granted, keys put under them, a prefix watcher with
//! prev_kv, keep-alives past the TTL, a revocation and an expiry (each one revision
//! of DELETEs), time-to-live, the lease list, transactions comparing a key's lease,
//! `getAll().prefix()` and a watcher replaying it all from revision 2. The two
//! transcripts it prints are compared exactly; the normalizations (lease IDs, the
//! seconds left of a live lease, header identities, etcd's map orders) are made and
//! documented in the script.
//!
//! Needs `node` and `npm` (`scripts/test.sh` installs them and runs `npm ci`; the
//! test runs `npm ci` itself when `node_modules` is missing). Without `node` the test
//! says so and passes without running: it is the only test that needs it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Argus, ChildGuard, Etcd, PATIENCE};

/// The npm project of the script.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("js")
}

/// Whether `node` runs here.
fn node_installed() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the locked packages unless they are there (`scripts/test.sh` has
/// normally done it).
fn ensure_packages(dir: &Path) {
    if dir.join("node_modules").join("etcd3").join("package.json").exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("node is installed but npm could not run ({e}); scripts/test.sh installs both"));
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one run of the script printed.
struct Run {
    stdout: String,
    stderr: String,
    status: std::process::ExitStatus,
}

/// Runs `node lease_watch.mjs <endpoint>`, killing it if it runs past `limit`.
fn run_script(dir: &Path, endpoint: &str, limit: Duration) -> Run {
    let mut child = Command::new("node")
        .arg("lease_watch.mjs")
        .arg(endpoint)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let (mut out, mut err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let mut child = ChildGuard(child);
    // Drained in threads: the transcript is larger than a pipe's buffer.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill();
            panic!(
                "the node script against {endpoint} ran past {limit:?}; its stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run { stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader"), status }
}

/// The step named `name` of a transcript.
fn step<'a>(transcript: &'a Value, name: &str) -> &'a Value {
    transcript["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == name))
        .unwrap_or_else(|| panic!("no step {name:?} in the transcript"))
}

/// The keys deleted at `revision` according to the watch step.
fn deleted_at(transcript: &Value, revision: &str) -> Vec<String> {
    let revisions = step(transcript, "watch")["revisions"].as_array().expect("revisions");
    let at = revisions.iter().find(|r| r["revision"] == revision).expect("the revision in the watch");
    at["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "Delete")
        .map(|e| e["kv"]["key"].as_str().expect("key").to_string())
        .collect()
}

/// The etcd3 npm client's lease and watch scenario prints the same transcript
/// against Argus as against real etcd 3.4.
#[test]
fn node_etcd3_client_leases_and_watches_match_etcd() {
    if !node_installed() {
        eprintln!(
            "SKIPPED node_etcd3_client_leases_and_watches_match_etcd: `node` is not installed \
             (scripts/test.sh installs node and npm)"
        );
        return;
    }
    let dir = js_dir();
    ensure_packages(&dir);
    let etcd = std::thread::spawn(Etcd::start);
    let argus = Argus::start();
    let etcd = etcd.join().expect("etcd start");
    let limit = 3 * PATIENCE;
    let (re, ra) = std::thread::scope(|s| {
        let he = s.spawn(|| run_script(&dir, &etcd.endpoint, limit));
        let ha = s.spawn(|| run_script(&dir, argus.endpoint(), limit));
        (he.join().expect("etcd side"), ha.join().expect("argus side"))
    });
    for (server, r) in [("etcd", &re), ("argus", &ra)] {
        assert!(
            r.status.success(),
            "the scenario failed against {server} ({}):\n{}\n---- transcript so far ----\n{}",
            r.status,
            r.stderr,
            r.stdout
        );
    }
    crate::etcdctl::assert_same("etcd3 (Node) lease and watch transcript", &re.stdout, &ra.stdout);

    // The scenario did what it is meant to (on both, since they are equal): a
    // check that the transcript is not vacuous.
    let t: Value = serde_json::from_str(&ra.stdout).expect("the transcript is JSON");
    assert_eq!(step(&t, "start")["header"]["revision"], "1", "both servers start at revision 1");
    let revoked = deleted_at(&t, "16");
    assert_eq!(revoked, ["/nl/a1", "/nl/a2", "/nl/b3", "/nl/t-a1", "/nl/t-b1", "/nl/t-missing", "/nl/t-plain"]);
    assert_eq!(deleted_at(&t, "17"), ["/nl/b1", "/nl/b2"], "the expiry: one revision");
    assert_eq!(deleted_at(&t, "18"), ["/nl/d1"]);
    let watch = step(&t, "watch");
    assert_eq!(watch["split_revisions"], Value::Array(vec![]), "no revision split over responses");
    assert_eq!(step(&t, "watch from revision 2")["same_as_live"], true);
    let kept = step(&t, "kept alive past the TTL");
    for lease in ["a", "b", "c"] {
        assert_eq!(kept[lease]["at_least"]["reached"], true, "keep-alives of {lease}");
    }
    assert_eq!(kept["a"]["ttls"], serde_json::json!(["3"]));
    assert_eq!(kept["c"]["ttls"], serde_json::json!(["2"]), "a 1 s lease is granted etcd's minimum, 2 s");
    assert_eq!(step(&t, "expired")["time_to_live_b"]["TTL"], "-1");
    assert_eq!(step(&t, "leases")["leases"], serde_json::json!(["L4"]));
    let txns = step(&t, "txn lease compare")["txns"].as_array().expect("txns");
    let succeeded: Vec<bool> = txns.iter().map(|x| x["succeeded"].as_bool().expect("succeeded")).collect();
    assert_eq!(succeeded, [true, false, true, true, true]);
}
