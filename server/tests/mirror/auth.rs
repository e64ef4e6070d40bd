//! A mirror holds no credentials for its cluster (issue 13 adds etcd's auth to
//! Argus; a mirror's own credentials are not built yet). It must never serve the
//! keys of a cluster that has authentication on to clients it cannot check: it
//! refuses to bootstrap from one, and stops when the cluster turns auth on.

use std::time::Duration;

use crate::cluster::MirrorProcess;
use crate::common::{etcdctl, poll, Etcd};

#[test]
fn a_mirror_stops_when_its_cluster_turns_auth_on_and_will_not_start_on_one() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = vec![etcd.endpoint.clone()];
    let mut mirror = MirrorProcess::start(&upstream, dir.path(), &[]);
    let put = etcdctl(&etcd.endpoint, &["put", "/secret", "s3cr3t"], "");
    assert_eq!(put.code, 0, "{}", put.stderr);
    // The mirror serves the key while the cluster has no auth.
    poll("the mirror has the key", || {
        let got = etcdctl(&mirror.endpoint(), &["get", "/secret", "--print-value-only"], "");
        got.stdout.contains("s3cr3t").then_some(())
    });
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"][..]] {
        let out = etcdctl(&etcd.endpoint, args, "");
        assert_eq!(out.code, 0, "etcdctl {args:?}: {}", out.stderr);
    }
    // Within a few compaction probes (3 s each) the mirror stops, non-zero.
    let status = mirror.wait_exit(Duration::from_secs(30)).expect("the mirror stops once the cluster has auth on");
    assert!(!status.success(), "{status:?}");
    let said = mirror.stderr.lock().unwrap().join("\n");
    assert!(said.contains("authentication enabled"), "{said}");
    // A new mirror will not bootstrap from it.
    let dir2 = tempfile::tempdir().expect("temp dir");
    let why = MirrorProcess::start_failing(&upstream, dir2.path(), &[]);
    assert!(why.contains("authentication enabled"), "{why}");
}
