//! The cluster harness on its own (no mirror): three members elect a leader; after
//! `kill -9` of the leader the other two elect another and take writes; the member
//! restarted on its data directory rejoins and serves what was written meanwhile.

use etcd_client::GetOptions;

use crate::cluster::{EtcdCluster, MEMBERS};
use crate::common::connect;
use crate::support::runtime;

#[test]
fn the_cluster_elects_a_new_leader_after_a_kill9_and_takes_the_member_back() {
    let mut cluster = EtcdCluster::start();
    runtime().block_on(async {
        let old = cluster.leader().await;
        let other = (old + 1) % MEMBERS;
        let mut c = connect(&cluster.endpoint(other)).await;
        let before = c.put("/h/k", "before", None).await.expect("put").0.header.expect("header").revision;

        tokio::task::block_in_place(|| cluster.kill9(old));
        let new = cluster.leader().await;
        assert_ne!(new, old, "the killed member {old} is still reported as the leader");
        let mut c = connect(&cluster.endpoint(new)).await;
        let during = c.put("/h/k", "during", None).await.expect("put with a member down").0.header.expect("h").revision;
        assert!(during > before, "revision {during} after {before}");

        tokio::task::block_in_place(|| cluster.restart(old));
        let mut back = connect(&cluster.endpoint(old)).await;
        let got = back.get("/h/k", None).await.expect("linearizable get on the restarted member");
        assert_eq!(got.kvs()[0].value(), b"during");
        assert_eq!(got.kvs()[0].mod_revision(), during);
        let serial = back.get("/h/k", Some(GetOptions::new().with_serializable())).await.expect("serializable get");
        assert_eq!(serial.kvs()[0].mod_revision(), during, "the restarted member did not apply the write");
        let leader = cluster.leader().await;
        assert!(cluster.alive(leader));
        assert!((0..MEMBERS).all(|i| cluster.healthy(i)), "not every member is healthy after the restart");
    });
}
