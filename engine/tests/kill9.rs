//! A real `kill -9`: a child process (this test binary run again, with
//! `ARGUS_KILL9_DIR` set, as the ignored test `kill9_child_writer`) opens a store
//! with `fsync=always` (one round `batch`) on real files and writes in a loop, puts
//! and multi-event txns, printing `ACK <op> <revision>` after each acknowledged
//! write. The parent reads a few hundred acknowledgements, SIGKILLs the child,
//! reopens the store and checks that every acknowledged revision is there and
//! readable with the right contents, that at most the one write in flight at the
//! kill went further, and that the store takes new writes. Three rounds on the
//! same directory, each child recovering what the previous one left.
//!
//! Prints its seed; `ARGUS_SEED=<seed>` replays the same operations (the kill
//! points depend on timing).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::log::{FileStorage, FsyncPolicy};
use argus_engine::store::{prefix_end, Compare, CompareOp, CompareTarget, PutLease, Store, StoreOptions, TxnOp};
use common::{check_history, k, Limits, Model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR_ENV: &str = "ARGUS_KILL9_DIR";
const SEED_ENV: &str = "ARGUS_KILL9_SEED";
const START_ENV: &str = "ARGUS_KILL9_START";
const POLICY_ENV: &str = "ARGUS_KILL9_POLICY";

fn opts(policy: FsyncPolicy) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.log.fsync = policy;
    // Small segments, so that kills also land around segment rolls.
    o.log.segment_size = 16 << 10;
    o.log.batch_delay = Duration::from_micros(300);
    o.max_txn_ops = 8;
    o.max_request_bytes = 4096;
    o
}

/// The child's `i`-th write: deterministic in (seed, i); every one writes.
fn child_op(seed: u64, i: usize) -> (Vec<Compare>, Vec<TxnOp>, Vec<TxnOp>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut val = |j: usize| -> Vec<u8> {
        let pad = rng.random_range(0..300);
        format!("{i}.{j}:").bytes().chain((0..pad).map(|p| (p * 7 + i) as u8)).collect()
    };
    let put = |key: String, value: Vec<u8>| TxnOp::Put {
        key: key.into_bytes(),
        value,
        prev_kv: false,
        lease: PutLease::None,
    };
    match i % 10 {
        0..8 => (Vec::new(), vec![put(format!("k{}", (i * 7) % 20), val(0))], Vec::new()),
        8 => {
            let c = vec![Compare::new(b"k0".to_vec(), CompareOp::Greater, CompareTarget::Version(1))];
            let success = vec![
                put(format!("a{}", i % 3), val(0)),
                put("b".into(), val(1)),
                TxnOp::DeleteRange { key: b"k3".to_vec(), range_end: Vec::new(), prev_kv: false },
                put("c".into(), val(2)),
            ];
            let failure = vec![put(format!("a{}", i % 3), val(0)), put("d".into(), val(1))];
            (c, success, failure)
        }
        _ => {
            let success = vec![
                TxnOp::DeleteRange { key: b"k1".to_vec(), range_end: prefix_end(b"k1"), prev_kv: false },
                put("marker".into(), val(0)),
            ];
            (Vec::new(), success, Vec::new())
        }
    }
}

/// The child: writes until killed (or a minute passes).
#[test]
#[ignore = "child process of kill9_loses_no_acknowledged_write, which runs it with --ignored"]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        println!("kill9_child_writer only does something as the child of kill9_loses_no_acknowledged_write");
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let start: usize = std::env::var(START_ENV).unwrap().parse().unwrap();
    let policy: FsyncPolicy = std::env::var(POLICY_ENV).unwrap().parse().unwrap();
    let store = Store::open(&dir, opts(policy)).expect("child: open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nOPEN {}", store.current_revision()).unwrap();
    out.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in start.. {
        if Instant::now() > deadline {
            writeln!(out, "TIMEOUT").unwrap();
            out.flush().unwrap();
            std::process::exit(3);
        }
        let (c, s, f) = child_op(seed, i);
        match store.txn(&c, &s, &f) {
            Ok(r) => writeln!(out, "ACK {i} {}", r.revision).unwrap(),
            Err(e) => {
                writeln!(out, "ERR {i} {e}").unwrap();
                out.flush().unwrap();
                std::process::exit(2);
            }
        }
        out.flush().unwrap();
    }
}

/// Kills the child if the parent panics before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill9_loses_no_acknowledged_write() {
    let seed = common::seed("kill9_loses_no_acknowledged_write");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let limits = Limits::of(&opts(FsyncPolicy::Always));
    let mut model = Model::new(limits);
    let mut next_op = 0usize;
    let started = Instant::now();
    for round in 0..3 {
        let policy = if round == 1 { FsyncPolicy::Batch } else { FsyncPolicy::Always };
        let ctx = format!("round {round} ({policy})");
        let child = Command::new(&exe)
            .args(["--ignored", "--exact", "kill9_child_writer", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .env(SEED_ENV, seed.to_string())
            .env(START_ENV, next_op.to_string())
            .env(POLICY_ENV, policy.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child writer");
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let target = rng.random_range(150..400);
        let mut acks: Vec<(usize, u64)> = Vec::new();
        let mut opened_at = None;
        let handle = |line: String, acks: &mut Vec<(usize, u64)>, opened_at: &mut Option<u64>| {
            // libtest's "test kill9_child_writer ... " may precede the first line.
            let mut parts = line.split_whitespace().skip_while(|w| !matches!(*w, "OPEN" | "ACK" | "ERR" | "TIMEOUT"));
            match parts.next() {
                Some("OPEN") => *opened_at = Some(parts.next().unwrap().parse().unwrap()),
                Some("ACK") => {
                    let i: usize = parts.next().unwrap().parse().unwrap();
                    let rev: u64 = parts.next().unwrap().parse().unwrap();
                    acks.push((i, rev));
                }
                Some("ERR") | Some("TIMEOUT") => panic!("{ctx}: child: {line}"),
                _ => {} // the test harness's own lines
            }
        };
        while acks.len() < target {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{ctx}: no word from the child ({e}) after {} acks", acks.len()));
            handle(line, &mut acks, &mut opened_at);
        }
        // SIGKILL (Child::kill is SIGKILL on unix) while it writes.
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "{ctx}: the child was killed: {status:?}");
        // Acknowledgements printed before the kill, still in the pipe.
        for line in rx.iter() {
            handle(line, &mut acks, &mut opened_at);
        }
        reader.join().unwrap();

        assert_eq!(opened_at, Some(model.current()), "{ctx}: the child recovered the previous round's state");
        for (n, &(i, rev)) in acks.iter().enumerate() {
            assert_eq!(i, next_op + n, "{ctx}: acknowledgements in op order");
            let (c, s, f) = child_op(seed, i);
            model.txn(&c, &s, &f).unwrap();
            assert_eq!(rev, model.current(), "{ctx}: op {i} acknowledged at revision {rev}");
        }
        next_op += acks.len();
        let last_acked = model.current();

        let storage = FileStorage::open(dir.path()).expect("reopen after kill -9: LOCK released");
        let (store, rec) = Store::open_with_report(Arc::new(storage), opts(FsyncPolicy::Always))
            .unwrap_or_else(|e| panic!("{ctx}: reopen after kill -9: {e}"));
        let r = store.current_revision();
        assert!(r >= last_acked, "{ctx}: acknowledged revision {last_acked} lost (recovered {r})");
        assert!(r <= last_acked + 1, "{ctx}: recovered {r}, but only one write was in flight after {last_acked}");
        if r == last_acked + 1 {
            // The write in flight at the kill reached the disk whole.
            let (c, s, f) = child_op(seed, next_op);
            model.txn(&c, &s, &f).unwrap();
            next_op += 1;
        }
        check_history(&model, &store, &ctx);
        assert_eq!(
            k(store.put(b"parent", format!("round {round}").as_bytes())),
            model.put(b"parent", format!("round {round}").as_bytes(), false)
        );
        println!(
            "{ctx}: {} acks up to revision {last_acked}, recovered {r}, torn bytes {}, {} segments",
            acks.len(),
            rec.torn_bytes,
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seg-"))
                .count()
        );
        drop(store);
        assert!(started.elapsed() < Duration::from_secs(120), "{ctx}: taking too long");
    }
    // Finally everything once more, from a fresh open.
    let store = Store::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    check_history(&model, &store, "final reopen");
}
