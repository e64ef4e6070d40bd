//! `kill -9` of the etcd leader while writers run through both mirrors and directly
//! (each direct writer moves to the next member when a write fails). Every write
//! puts a value of its own, and each acknowledged one is recorded with the revision
//! it was acknowledged with. A watcher on each mirror, opened before the writes,
//! must then see every acknowledged write exactly once, at that revision, in
//! revision order, each revision in one response, and nothing etcd's own watch of
//! the same range from the same revision does not show (the two are equal). Every
//! writer, including those writing through a mirror, must get writes acknowledged
//! again after the kill (the mirrors fail over), and the member is restarted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{EtcdCluster, MirrorProcess};
use crate::common::{connect, Collected, Spec, PATIENCE};
use crate::support::{current_revision, revisions, runtime, split_revisions, wait_reached, watch_until};

/// An acknowledged put: revision, key, value.
type Ack = (i64, String, String);

/// What the writers share.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// Per writer, its acknowledged puts.
    acked: Mutex<BTreeMap<String, Vec<Ack>>>,
}

impl Load {
    fn counts(&self) -> BTreeMap<String, usize> {
        self.acked.lock().unwrap().iter().map(|(w, a)| (w.clone(), a.len())).collect()
    }
}

/// Puts unique values under `/l/<name>/` through `endpoints[0]`, moving to the next
/// endpoint when a write fails or takes over 5 s (its outcome is then unknown: it
/// may show up once, never twice), until `stop`.
async fn writer(name: String, endpoints: Vec<String>, load: Arc<Load>) {
    let mut at = 0;
    let mut client = connect(&endpoints[at]).await;
    let mut seq = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = format!("/l/{name}/{}", seq % 5);
        let value = format!("{name}-{seq}");
        match tokio::time::timeout(Duration::from_secs(5), client.put(key.clone(), value.clone(), None)).await {
            Ok(Ok(r)) => {
                let rev = r.header().expect("header").revision();
                load.acked.lock().unwrap().entry(name.clone()).or_default().push((rev, key, value));
                tokio::time::sleep(Duration::from_millis(5)).await; // keep the write count modest
            }
            _ => {
                at = (at + 1) % endpoints.len();
                client = connect(&endpoints[at]).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until every writer has `at_least[w]` acknowledged writes.
async fn wait_acks(load: &Load, at_least: &BTreeMap<String, usize>, what: &str) {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let counts = load.counts();
        if at_least.iter().all(|(w, &n)| counts.get(w).copied().unwrap_or(0) >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: acknowledged writes per writer {counts:?}, wanted {at_least:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn every_write_acknowledged_across_a_leader_kill_reaches_the_mirrors_watchers_once_in_order() {
    let mut cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let rotated = vec![eps[1].clone(), eps[2].clone(), eps[0].clone()];
    let mirrors = [
        MirrorProcess::start(&eps, &dir.path().join("m1"), &[]),
        MirrorProcess::start(&rotated, &dir.path().join("m2"), &[]),
    ];
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let start = current_revision(&mut direct).await + 1;
        let spec = Spec::prefix(1, "/l/").from(start).prev();
        let mut watchers = Vec::new();
        for m in &mirrors {
            watchers.push(Collected::open(&connect(&m.endpoint()).await, std::slice::from_ref(&spec)).await);
        }
        let load = Arc::new(Load::default());
        let mut plan: Vec<(String, Vec<String>)> =
            vec![("d0".into(), eps.clone()), ("d1".into(), vec![eps[2].clone(), eps[0].clone(), eps[1].clone()])];
        for (i, m) in mirrors.iter().enumerate() {
            plan.push((format!("m{i}"), vec![m.endpoint()]));
        }
        let tasks: Vec<_> =
            plan.iter().map(|(n, e)| tokio::spawn(writer(n.clone(), e.clone(), Arc::clone(&load)))).collect();
        wait_acks(&load, &plan.iter().map(|(n, _)| (n.clone(), 10)).collect(), "before the kill").await;

        let leader = cluster.leader().await;
        let before = load.counts();
        tokio::task::block_in_place(|| cluster.kill9(leader));
        eprintln!("killed the leader, member {leader}, after {before:?} acknowledged writes");
        let after: BTreeMap<String, usize> = before.iter().map(|(w, n)| (w.clone(), n + 15)).collect();
        wait_acks(&load, &after, "after the leader's kill (does every mirror forward writes to the new leader?)").await;
        load.stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("writer");
        }
        tokio::task::block_in_place(|| cluster.restart(leader));

        let acked: Vec<Ack> = load.acked.lock().unwrap().values().flatten().cloned().collect();
        let max = acked.iter().map(|a| a.0).max().expect("acknowledged writes");
        eprintln!("{} acknowledged writes, revisions {start}..={max}", acked.len());
        let survivor = eps[(leader + 1) % eps.len()].clone();
        let etcd = watch_until(&survivor, std::slice::from_ref(&spec), max).await;
        let want: Vec<_> = revisions(&etcd, 1).into_iter().filter(|(r, _)| *r <= max).collect();
        for (i, w) in watchers.iter_mut().enumerate() {
            wait_reached(w, &[1], max).await;
            let wire = w.snapshot();
            let got: Vec<_> = revisions(&wire, 1).into_iter().filter(|(r, _)| *r <= max).collect();
            // Every put seen, by its unique value: how many times, and at which revisions.
            let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
            for (rev, events) in &got {
                for e in events {
                    let value = e.split_once('=').map_or("", |(_, v)| v).split(' ').next().unwrap_or("");
                    seen.entry(value.to_string()).or_default().push(*rev);
                }
            }
            for (rev, key, value) in &acked {
                assert_eq!(
                    seen.get(value),
                    Some(&vec![*rev]),
                    "mirror {i}: the write {key}={value} acknowledged at revision {rev} was seen at these revisions"
                );
            }
            let dup: Vec<_> = seen.iter().filter(|(_, revs)| revs.len() > 1).collect();
            assert!(dup.is_empty(), "mirror {i} delivered puts twice: {dup:?}");
            let order: Vec<i64> = got.iter().map(|(r, _)| *r).collect();
            assert!(order.windows(2).all(|p| p[0] < p[1]), "mirror {i}: revisions out of order: {order:?}");
            assert_eq!(split_revisions(&wire, 1), Vec::<i64>::new(), "mirror {i} split revisions");
            assert_eq!(got, want, "mirror {i} (left) and etcd (right) watching /l/ from {start} differ");
        }
    });
}
