//! A mirror's own failures:
//! * `kill -9` while writes continue, restarted on the same data directory: it
//!   catches up (Maintenance.Status reports etcd's revision), and watches from an
//!   old revision and from one it had before the kill equal etcd's, as does Range;
//! * down while etcd compacted past what it had: restarted, it re-bootstraps
//!   (`argus_mirror_rebootstraps_total`), a watch from a revision it had but etcd
//!   compacted is canceled with `compact_revision` as etcd cancels it, a watch from
//!   the compaction revision equals etcd's, and Range answers equal etcd's.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::cluster::{EtcdCluster, MirrorProcess, Rng};
use crate::common::{connect, poll, Spec, PATIENCE};
use crate::support::{
    assert_watch_from_compaction, cancels, current_revision, events_at, everything, mixed_writes, range, revisions,
    runtime, settle, split_revisions, watch_until,
};

/// Puts (and every seventh write a delete) through `endpoint` until `stop`,
/// counting acknowledgements.
async fn background_writer(endpoint: String, stop: Arc<AtomicBool>, acks: Arc<AtomicUsize>) {
    let mut c = connect(&endpoint).await;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = format!("/k/{}", seq % 7);
        let done = if seq.is_multiple_of(7) {
            c.delete(key, None).await.map(|_| ())
        } else {
            c.put(key, format!("v{seq}"), None).await.map(|_| ())
        };
        done.expect("a write to etcd (no member is down)");
        acks.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_count(acks: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while acks.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the writer made only {} of {n} writes", acks.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Range answers of `mirror` and etcd (`direct`) for every key at each revision,
/// serializable and not, must be equal.
async fn assert_ranges_equal(direct: &mut etcd_client::Client, mirror: &mut etcd_client::Client, revs: &[i64]) {
    for &rev in revs {
        for serializable in [false, true] {
            let mut opts = GetOptions::new().with_range(vec![0]).with_revision(rev);
            if serializable {
                opts = opts.with_serializable();
            }
            let want = range(direct, b"\0", opts.clone()).await;
            let got = range(mirror, b"\0", opts).await;
            assert_eq!(got, want, "Range of every key at {rev} (serializable {serializable}): mirror (left), etcd");
        }
    }
}

#[test]
fn a_mirror_killed_and_restarted_on_its_data_dir_resumes_without_a_gap() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("m");
    let eps = cluster.endpoints();
    let mut mirror = Some(MirrorProcess::start(&eps, &data, &[]));
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn(background_writer(eps[1].clone(), Arc::clone(&stop), Arc::clone(&acks)));
        wait_count(&acks, 30).await;
        let endpoint = mirror.as_ref().expect("mirror").endpoint();
        let mut mc = connect(&endpoint).await;
        let had = current_revision(&mut direct).await;
        settle(&mut mc, had).await;

        mirror.take().expect("mirror").kill9();
        let n = acks.load(Ordering::SeqCst);
        wait_count(&acks, n + 40).await;
        let restarted = tokio::task::block_in_place(|| MirrorProcess::start(&eps, &data, &[]));
        let n = acks.load(Ordering::SeqCst);
        wait_count(&acks, n + 20).await;
        stop.store(true, Ordering::SeqCst);
        writer.await.expect("writer");
        let last = current_revision(&mut direct).await;

        // The applied revision catches up: Status's header revision is it.
        let mut mc = connect(&restarted.endpoint()).await;
        let deadline = Instant::now() + PATIENCE * 2;
        loop {
            let status = mc.status().await.expect("Status of the mirror");
            let applied = status.header().expect("header").revision();
            assert!(applied <= last, "the mirror reports revision {applied}, beyond etcd's {last}");
            if applied == last {
                break;
            }
            assert!(Instant::now() < deadline, "the restarted mirror stays at revision {applied} (etcd: {last})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let specs = vec![everything(1).from(2).prev(), Spec::prefix(2, "/k/").from(had - 5).prev()];
        let etcd = watch_until(&eps[2], &specs, last).await;
        let got = watch_until(&restarted.endpoint(), &specs, last).await;
        for s in &specs {
            let want: Vec<_> = revisions(&etcd, s.id).into_iter().filter(|(r, _)| *r <= last).collect();
            let seen: Vec<_> = revisions(&got, s.id).into_iter().filter(|(r, _)| *r <= last).collect();
            assert_eq!(seen, want, "watch {} from {}: the restarted mirror (left) and etcd differ", s.id, s.start);
            assert_eq!(split_revisions(&got, s.id), Vec::<i64>::new(), "split revisions");
        }
        assert_ranges_equal(&mut direct, &mut mc, &[0, had - 1, had, had + 1, last]).await;

        // A graceful stop and start resumes where it was, too.
        let status = tokio::task::block_in_place(|| restarted.terminate(Duration::from_secs(10)));
        assert!(status.is_some_and(|s| s.success()), "the mirror's exit on SIGTERM: {status:?}");
        let again = tokio::task::block_in_place(|| MirrorProcess::start(&eps, &data, &[]));
        let mut mc = connect(&again.endpoint()).await;
        settle(&mut mc, last).await;
        assert_ranges_equal(&mut direct, &mut mc, &[had, last]).await;
    });
}

#[test]
fn a_mirror_down_while_etcd_compacts_past_it_rebootstraps_and_cancels_as_etcd_does() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("m");
    let eps = cluster.endpoints();
    let mirror = MirrorProcess::start_with_metrics(&eps, &data, &[]);
    let metrics = mirror.metrics.clone().expect("metrics address");
    let mut rng = Rng::seeded("a_mirror_down_while_etcd_compacts_past_it_rebootstraps_and_cancels_as_etcd_does");
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let mut via = vec![connect(&mirror.endpoint()).await];
        let had = mixed_writes(&mut rng, &mut direct, &mut via, 20, "/c/").await;
        settle(&mut via[0], had).await;
        drop(via);
        mirror.kill9();

        for i in 0..30 {
            direct.put(format!("/c/x/{}", i % 4), format!("down-{i}"), None).await.expect("put");
        }
        let compact = current_revision(&mut direct).await - 5;
        assert!(compact > had + 1);
        let before = events_at(&eps[1], compact).await;
        direct.compact(compact, None).await.expect("compact etcd");
        for i in 0..5 {
            direct.put(format!("/c/y/{i}"), "after", None).await.expect("put");
        }
        let last = current_revision(&mut direct).await;

        let mirror = tokio::task::block_in_place(|| MirrorProcess::start_on_metrics(&eps, &data, &[], &metrics));
        let mut mc = connect(&mirror.endpoint()).await;
        settle(&mut mc, last).await;
        let rebootstraps = tokio::task::block_in_place(|| {
            poll("argus_mirror_rebootstraps_total >= 1", || {
                mirror.metric("argus_mirror_rebootstraps_total").filter(|&n| n >= 1.0)
            })
        });
        eprintln!("rebootstraps: {rebootstraps}; the mirror had {had}, etcd compacted at {compact}, now at {last}");

        // Watches from a revision the mirror had, from one it never had (both
        // compacted), and from the compaction revision.
        let specs =
            vec![everything(1).from(had - 2), everything(2).from(compact - 1), everything(3).from(compact).prev()];
        let etcd = watch_until(&eps[1], &specs, last).await;
        let got = watch_until(&mirror.endpoint(), &specs, last).await;
        for id in [1, 2] {
            let want = cancels(&etcd, id);
            assert_eq!(want.first().map(|c| (c.0, c.1)), Some((true, compact)), "etcd's cancel of watch {id}");
            assert_eq!(cancels(&got, id), want, "the cancel of watch {id}: the mirror (left) and etcd differ");
            assert_eq!(revisions(&got, id), revisions(&etcd, id), "events of the canceled watch {id}");
        }
        let want: Vec<_> = revisions(&etcd, 3).into_iter().filter(|(r, _)| *r <= last).collect();
        let seen: Vec<_> = revisions(&got, 3).into_iter().filter(|(r, _)| *r <= last).collect();
        assert!(!want.is_empty());
        assert_watch_from_compaction(&seen, &want, compact, &before, "the watch from the compaction revision");
        assert_eq!(cancels(&got, 3), vec![], "the watch from {compact} was canceled");
        assert_ranges_equal(&mut direct, &mut mc, &[0, had - 1, had, compact - 1, compact, compact + 1, last]).await;
    });
}
