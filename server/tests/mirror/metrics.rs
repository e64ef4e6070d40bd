//! What a mirror reports and what it costs etcd: after writes settle, each mirror's
//! `/metrics` has `argus_mirror_applied_revision` equal to etcd's revision,
//! `argus_mirror_upstream_up` 1 and no lag, and its Maintenance.Status answers at
//! that revision naming etcd's leader; while 50 clients watch through the two
//! mirrors (and receive the writes), etcd's members hold exactly one watcher per
//! mirror: `etcd_debugging_mvcc_watcher_total` (etcd 3.4.23's gauge of the watchers
//! a member holds) summed over the members is 2.

use std::time::{Duration, Instant};

use crate::cluster::{EtcdCluster, MirrorProcess, Rng};
use crate::common::{connect, poll, Collected, Spec};
use crate::support::{current_revision, mixed_writes, runtime, settle, wait_reached};

const WATCHER_GAUGE: &str = "etcd_debugging_mvcc_watcher_total";

#[test]
fn mirrors_report_their_state_and_etcd_holds_one_watcher_per_mirror() {
    let cluster = EtcdCluster::start();
    assert_eq!(cluster.metric_sum(WATCHER_GAUGE), Some(0.0), "watchers on a fresh cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let rotated = vec![eps[1].clone(), eps[0].clone(), eps[2].clone()];
    let mirrors = [
        MirrorProcess::start_with_metrics(&eps, &dir.path().join("m1"), &[]),
        MirrorProcess::start_with_metrics(&rotated, &dir.path().join("m2"), &[]),
    ];
    let mut rng = Rng::seeded("mirrors_report_their_state_and_etcd_holds_one_watcher_per_mirror");
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let mut via = Vec::new();
        for m in &mirrors {
            via.push(connect(&m.endpoint()).await);
        }
        let settled = mixed_writes(&mut rng, &mut direct, &mut via, 30, "/m/").await;
        for (i, m) in mirrors.iter().enumerate() {
            let state = tokio::task::block_in_place(|| {
                poll(&format!("mirror {i}'s metrics to show revision {settled}, upstream up, no lag"), || {
                    let applied = m.metric("argus_mirror_applied_revision")?;
                    let up = m.metric("argus_mirror_upstream_up")?;
                    let lag = m.metric("argus_mirror_lag_revisions")?;
                    (applied == settled as f64 && up == 1.0 && lag == 0.0).then_some((applied, up, lag))
                })
            });
            eprintln!("mirror {i}: applied, upstream_up, lag_revisions = {state:?}");
        }

        // Status: the applied revision, and the cluster's leader.
        let leader = cluster.leader().await;
        let leader_id =
            connect(&eps[leader]).await.status().await.expect("etcd status").header().expect("h").member_id();
        for (i, c) in via.iter_mut().enumerate() {
            let s = c.status().await.expect("Status of a mirror");
            assert_eq!(s.header().expect("header").revision(), settled, "mirror {i}'s Status revision");
            assert_eq!(s.leader(), leader_id, "mirror {i}'s Status leader (etcd's leader is member {leader})");
        }

        // 50 watchers: 5 streams of 5 on each mirror, on keys, prefixes, from now
        // and from an older revision.
        let mut streams = Vec::new();
        for m in &mirrors {
            let client = connect(&m.endpoint()).await;
            for s in 0..5 {
                let specs: Vec<Spec> = (0..5)
                    .map(|w| {
                        let id = (s * 5 + w + 1) as i64;
                        match w {
                            0 => Spec::prefix(id, "/m/"),
                            1 => Spec::prefix(id, "/m/z/").prev(),
                            2 => Spec::key(id, "/m/z/0"),
                            3 => Spec::prefix(id, "/m/").from(settled - 5),
                            _ => Spec::range(id, "/m/z/", "/m/z/5"),
                        }
                    })
                    .collect();
                streams.push(Collected::open(&client, &specs).await);
            }
        }
        let mut last = settled;
        for i in 0..10 {
            last = direct
                .put(format!("/m/z/{}", i % 3), format!("z{i}"), None)
                .await
                .expect("put")
                .0
                .header
                .expect("h")
                .revision;
        }
        for c in &mut streams {
            let ids: Vec<i64> = c.specs.iter().map(|s| s.id).collect();
            wait_reached(c, &ids, last).await;
        }
        let watchers: usize = streams.iter().map(|c| c.specs.len()).sum();
        assert_eq!(watchers, 50);

        // etcd holds the mirrors' watchers only. (A gauge: wait for it to settle.)
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut held = cluster.metric_sum(WATCHER_GAUGE);
        while held != Some(2.0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            held = cluster.metric_sum(WATCHER_GAUGE);
        }
        assert_eq!(held, Some(2.0), "{WATCHER_GAUGE} summed over etcd's members with 50 clients watching 2 mirrors");

        for c in &mut via {
            settle(c, last).await;
        }
        assert_eq!(current_revision(&mut direct).await, last);
        for (i, m) in mirrors.iter().enumerate() {
            let applied = tokio::task::block_in_place(|| {
                poll("the applied revision", || m.metric("argus_mirror_applied_revision").filter(|&r| r == last as f64))
            });
            assert_eq!(applied, last as f64, "mirror {i}");
        }
        drop(streams);
    });
}
