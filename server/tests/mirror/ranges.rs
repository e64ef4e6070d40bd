//! Range through two mirrors equals Range on etcd: after a seeded mix of puts
//! (some with leases), deletes, txns and a lease revoke, made some through each
//! mirror and some directly, every Range below (every key, prefixes, one key, from
//! a key, limit and sort, keys_only, count_only, a mod-revision filter), each
//! serializable and linearizable, at revisions from 1 to the current one and one
//! in the future, gives through each mirror the very response etcd gives (header
//! revision, create/mod revision, version, lease, value, `more`, `count`; only the
//! cluster and member ids and the raft term blanked), or the same error. And every
//! put made through a mirror was answered with the revision etcd then shows for the
//! key ([`mixed_writes`]).

use etcd_client::{GetOptions, SortOrder, SortTarget};

use crate::cluster::{EtcdCluster, MirrorProcess, Rng};
use crate::common::connect;
use crate::support::{current_revision, mixed_writes, range, runtime, settle};

/// The Range requests compared: a label, the key, and the options at `rev`.
fn requests(rev: i64, mid: i64) -> Vec<(String, Vec<u8>, GetOptions)> {
    let at = |o: GetOptions| o.with_revision(rev);
    let mut out: Vec<(String, Vec<u8>, GetOptions)> = vec![
        ("every key".into(), b"\0".to_vec(), at(GetOptions::new().with_range(vec![0]))),
        ("prefix /r/a/".into(), b"/r/a/".to_vec(), at(GetOptions::new().with_prefix())),
        ("prefix /r/l/ (leased)".into(), b"/r/l/".to_vec(), at(GetOptions::new().with_prefix())),
        ("key /r/a/1".into(), b"/r/a/1".to_vec(), at(GetOptions::new())),
        ("from key /r/b/".into(), b"/r/b/".to_vec(), at(GetOptions::new().with_from_key())),
        (
            "limit 3 by mod revision, descending".into(),
            b"/r/".to_vec(),
            at(GetOptions::new().with_prefix().with_limit(3).with_sort(SortTarget::Mod, SortOrder::Descend)),
        ),
        ("keys_only".into(), b"\0".to_vec(), at(GetOptions::new().with_range(vec![0]).with_keys_only())),
        ("count_only /r/".into(), b"/r/".to_vec(), at(GetOptions::new().with_prefix().with_count_only())),
        ("min_mod_revision".into(), b"/r/".to_vec(), at(GetOptions::new().with_prefix().with_min_mod_revision(mid))),
    ];
    let serializable: Vec<(String, Vec<u8>, GetOptions)> =
        out.iter().map(|(l, k, o)| (format!("{l}, serializable"), k.clone(), o.clone().with_serializable())).collect();
    out.extend(serializable);
    out
}

#[test]
fn ranges_through_the_mirrors_equal_etcds() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let rotated = vec![eps[2].clone(), eps[0].clone(), eps[1].clone()];
    let mirrors = [
        MirrorProcess::start(&eps, &dir.path().join("m1"), &[]),
        MirrorProcess::start(&rotated, &dir.path().join("m2"), &[]),
    ];
    let mut rng = Rng::seeded("ranges_through_the_mirrors_equal_etcds");
    runtime().block_on(async {
        let mut direct = connect(&eps[1]).await;
        let mut via: Vec<_> = Vec::new();
        for m in &mirrors {
            via.push(connect(&m.endpoint()).await);
        }
        let first = current_revision(&mut direct).await;
        let mid = mixed_writes(&mut rng, &mut direct, &mut via, 40, "/r/").await;
        let last = mixed_writes(&mut rng, &mut direct, &mut via, 40, "/r/").await;
        for c in &mut via {
            settle(c, last).await;
        }
        let revisions = [0, 1, first, (first + mid) / 2, mid, mid + 1, (mid + last) / 2, last - 1, last, last + 1];
        let mut compared = 0;
        for rev in revisions {
            for (label, key, opts) in requests(rev, mid) {
                let want = range(&mut direct, &key, opts.clone()).await;
                for (i, c) in via.iter_mut().enumerate() {
                    let got = range(c, &key, opts.clone()).await;
                    assert_eq!(got, want, "Range {label} at revision {rev}: mirror {i} (left) and etcd (right) differ");
                    compared += 1;
                }
            }
        }
        // The comparison saw something: keys, leases, and a future revision refused.
        let all = range(&mut direct, b"\0", GetOptions::new().with_range(vec![0])).await.expect("every key");
        assert!(all.kvs.iter().any(|kv| kv.lease != 0), "no leased key left to compare: {all:?}");
        let future = range(&mut direct, b"\0", GetOptions::new().with_revision(last + 1)).await;
        assert!(future.is_err(), "etcd answered a Range at a future revision: {future:?}");
        eprintln!("{compared} Range answers of the mirrors equal etcd's (revisions {first}..={last})");
    });
}
