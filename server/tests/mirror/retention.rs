//! History and compaction:
//! * with `--retain 100000` a mirror keeps what etcd compacts: after etcd compacted
//!   (directly, and once more through the mirror) and the mirror had time to learn
//!   of it (10 s), a watch from revision 1 through the mirror (which etcd now
//!   cancels) delivers what etcd's watch from 1 delivered before the compaction,
//!   and Range at old revisions answers what etcd answered then;
//! * without `--retain` a mirror follows a compaction made directly on etcd within
//!   10 s (polled with a 20 s deadline), and then answers as etcd does: Range below
//!   the compaction (code and message), Range at it, a watch from below it (canceled
//!   with `compact_revision`), and Compact below, at and beyond the current revision.

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, Txn, TxnOp};

use crate::cluster::{EtcdCluster, MirrorProcess, Rng};
use crate::common::{connect, Spec};
use crate::support::{
    assert_watch_from_compaction, cancels, current_revision, events_at, everything, grpc_error, mixed_writes, range,
    revisions, runtime, settle, watch_until, RangeAnswer,
};

/// etcd's message for a revision below the compaction.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

fn every_key_at(rev: i64) -> GetOptions {
    GetOptions::new().with_range(vec![0]).with_revision(rev)
}

#[test]
fn with_retain_a_mirror_serves_history_etcd_has_compacted() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let mirror = MirrorProcess::start(&eps, &dir.path().join("m"), &["--retain", "100000"]);
    let mut rng = Rng::seeded("with_retain_a_mirror_serves_history_etcd_has_compacted");
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let mut via = vec![connect(&mirror.endpoint()).await];
        let last = mixed_writes(&mut rng, &mut direct, &mut via, 40, "/t/").await;
        settle(&mut via[0], last).await;
        let specs = vec![everything(1).from(1).prev(), Spec::prefix(2, "/t/a/").from(1)];
        let before = watch_until(&eps[1], &specs, last).await;
        let old_revs = [1, 2, last / 3, last / 2, last - 6];
        let mut old_ranges: Vec<RangeAnswer> = Vec::new();
        for &rev in &old_revs {
            old_ranges.push(range(&mut direct, b"\0", every_key_at(rev)).await);
        }

        let compact = last - 5;
        direct.compact(compact, None).await.expect("compact etcd");
        let compacted_at = Instant::now();
        let refused = watch_until(&eps[1], &specs[..1], last).await;
        assert_eq!(
            cancels(&refused, 1).first().map(|c| (c.0, c.1)),
            Some((true, compact)),
            "etcd after compacting at {compact}: {refused:?}"
        );
        // A compaction through the mirror is forwarded to etcd, and does not shorten
        // the mirror's retention either.
        let through = last - 2;
        via[0].compact(through, None).await.expect("compact through the mirror");
        let e = range(&mut direct, b"\0", every_key_at(through - 1)).await;
        assert_eq!(
            e.map(|_| ()),
            Err((tonic::Code::OutOfRange, COMPACTED.into())),
            "etcd after the forwarded compaction"
        );

        // The mirror learns of a compaction within 10 s: give it that, and more.
        let learn = Duration::from_secs(12).saturating_sub(compacted_at.elapsed());
        tokio::time::sleep(learn).await;
        let after = watch_until(&mirror.endpoint(), &specs, last).await;
        for s in &specs {
            let want: Vec<_> = revisions(&before, s.id).into_iter().filter(|(r, _)| *r <= last).collect();
            let got: Vec<_> = revisions(&after, s.id).into_iter().filter(|(r, _)| *r <= last).collect();
            assert_eq!(cancels(&after, s.id), vec![], "the retaining mirror canceled watch {} from 1", s.id);
            assert_eq!(got, want, "watch {} from 1: the retaining mirror now (left), etcd before compacting", s.id);
        }
        for (rev, want) in old_revs.iter().zip(&old_ranges) {
            for serializable in [false, true] {
                let opts = if serializable { every_key_at(*rev).with_serializable() } else { every_key_at(*rev) };
                let got = range(&mut via[0], b"\0", opts).await;
                assert_eq!(
                    &got, want,
                    "Range at {rev} (serializable {serializable}): the retaining mirror (left), etcd before compacting"
                );
            }
        }
    });
}

#[test]
fn without_retain_a_mirror_follows_etcds_compaction_and_answers_as_etcd() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let mirror = MirrorProcess::start(&eps, &dir.path().join("m"), &[]);
    let mut rng = Rng::seeded("without_retain_a_mirror_follows_etcds_compaction_and_answers_as_etcd");
    runtime().block_on(async {
        let mut direct = connect(&eps[0]).await;
        let mut mc = connect(&mirror.endpoint()).await;
        mixed_writes(&mut rng, &mut direct, std::slice::from_mut(&mut mc), 25, "/f/").await;
        // The compaction revision deletes a key (etcd 3.4.23 drops that tombstone
        // when it compacts there) and puts one.
        direct.put("/f/gone", "soon", None).await.expect("put");
        let txn = Txn::new().and_then([TxnOp::delete("/f/gone", None), TxnOp::put("/f/kept", "k", None)]);
        let compact = direct.txn(txn).await.expect("txn").header().expect("header").revision();
        let last = mixed_writes(&mut rng, &mut direct, std::slice::from_mut(&mut mc), 10, "/f/").await;
        settle(&mut mc, last).await;
        let before = events_at(&eps[2], compact).await;
        direct.compact(compact, None).await.expect("compact etcd directly");
        let compacted_at = Instant::now();
        loop {
            let got = range(&mut mc, b"\0", every_key_at(compact - 1).with_serializable()).await;
            if got.as_ref().err() == Some(&(tonic::Code::OutOfRange, COMPACTED.to_string())) {
                break;
            }
            assert!(
                compacted_at.elapsed() < Duration::from_secs(20),
                "20 s after etcd compacted at {compact}, the mirror still answers a Range at {}: {got:?}",
                compact - 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("the mirror followed the compaction within {:?}", compacted_at.elapsed());

        for rev in [1, compact - 5, compact - 1, compact, compact + 1, last] {
            for serializable in [false, true] {
                let opts = if serializable { every_key_at(rev).with_serializable() } else { every_key_at(rev) };
                let want = range(&mut direct, b"\0", opts.clone()).await;
                let got = range(&mut mc, b"\0", opts).await;
                assert_eq!(got, want, "Range at {rev} (serializable {serializable}): the mirror (left) and etcd");
            }
        }
        let specs = vec![everything(1).from(compact - 1), everything(2).from(compact).prev()];
        let etcd = watch_until(&eps[2], &specs, last).await;
        let got = watch_until(&mirror.endpoint(), &specs, last).await;
        assert_eq!(cancels(&etcd, 1).first().map(|c| (c.0, c.1)), Some((true, compact)), "etcd's cancel");
        assert_eq!(
            cancels(&got, 1),
            cancels(&etcd, 1),
            "the cancel of a watch from {}: mirror (left), etcd",
            compact - 1
        );
        let what = format!("a watch from {compact}");
        assert_watch_from_compaction(&revisions(&got, 2), &revisions(&etcd, 2), compact, &before, &what);

        // Compaction answers: below and at the compaction, and in the future.
        let now = current_revision(&mut direct).await;
        for rev in [compact - 1, compact, now + 100] {
            let want = direct.compact(rev, None).await.map(|_| ()).map_err(|e| grpc_error(&e));
            let got = mc.compact(rev, None).await.map(|_| ()).map_err(|e| grpc_error(&e));
            assert!(want.is_err(), "etcd compacted at {rev} again");
            assert_eq!(got, want, "Compact at {rev}: the mirror (left) and etcd");
        }
    });
}
