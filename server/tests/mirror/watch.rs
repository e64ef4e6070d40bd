//! A watch from revision 1 on each of two mirrors equals the same watch on etcd:
//! after a seeded mix of writes (through the mirrors and directly), three watchers
//! from revision 1 (every key with prev_kv; a prefix; a NODELETE-filtered prefix)
//! catch up, stay synced while more writes come, and receive, per revision, the
//! same events with the same revisions, versions, leases and prev_kv as etcd's;
//! each mirror delivers every revision in one response.

use crate::cluster::{EtcdCluster, MirrorProcess, Rng};
use crate::common::{connect, Collected, Spec};
use crate::support::{everything, mixed_writes, revisions, runtime, settle, split_revisions, wait_reached};

#[test]
fn a_watch_from_revision_1_on_each_mirror_equals_one_on_etcd() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let rotated = vec![eps[1].clone(), eps[2].clone(), eps[0].clone()];
    let mirrors = [
        MirrorProcess::start(&eps, &dir.path().join("m1"), &[]),
        MirrorProcess::start(&rotated, &dir.path().join("m2"), &[]),
    ];
    let mut rng = Rng::seeded("a_watch_from_revision_1_on_each_mirror_equals_one_on_etcd");
    let specs = vec![
        everything(1).from(1).prev(),
        Spec::prefix(2, "/w/a/").from(1),
        Spec { no_delete: true, ..Spec::prefix(3, "/w/") }.from(1),
    ];
    let ids: Vec<i64> = specs.iter().map(|s| s.id).collect();
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let mut via: Vec<_> = Vec::new();
        for m in &mirrors {
            via.push(connect(&m.endpoint()).await);
        }
        let caught_up = mixed_writes(&mut rng, &mut direct, &mut via, 50, "/w/").await;
        for c in &mut via {
            settle(c, caught_up).await;
        }
        // Streams: etcd (a member the mirrors' first upstream is not), then the mirrors.
        let mut streams: Vec<(String, Collected)> = Vec::new();
        for (name, ep) in [("etcd".to_string(), eps[2].clone())]
            .into_iter()
            .chain(mirrors.iter().enumerate().map(|(i, m)| (format!("mirror {i}"), m.endpoint())))
        {
            let client = connect(&ep).await;
            streams.push((name, Collected::open(&client, &specs).await));
        }
        for (_, c) in &mut streams {
            wait_reached(c, &ids, caught_up).await;
        }
        // Now synced: more writes arrive as live events.
        let last = mixed_writes(&mut rng, &mut direct, &mut via, 30, "/w/").await;
        for (_, c) in &mut streams {
            wait_reached(c, &ids, last).await;
        }
        let wires: Vec<(String, Vec<_>)> = streams.iter().map(|(n, c)| (n.clone(), c.snapshot())).collect();
        let (_, etcd) = &wires[0];
        for &id in &ids {
            let want: Vec<_> = revisions(etcd, id).into_iter().filter(|(r, _)| *r <= last).collect();
            assert!(want.len() > 10, "watcher {id} on etcd saw only {} revisions", want.len());
            for (name, wire) in &wires[1..] {
                let got: Vec<_> = revisions(wire, id).into_iter().filter(|(r, _)| *r <= last).collect();
                assert_eq!(got, want, "watcher {id} from revision 1: {name} (left) and etcd (right) differ");
                assert_eq!(split_revisions(wire, id), Vec::<i64>::new(), "{name} split revisions of watcher {id}");
            }
        }
        eprintln!("watches from revision 1 to {last} equal on etcd and both mirrors");
    });
}
