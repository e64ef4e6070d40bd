//! A linearizable Range through a mirror is never older than a write a client has
//! already seen acknowledged: a few hundred times, a put made directly on a member
//! (round-robin over the three), then at once a linearizable Range of that key
//! through a mirror (alternating between two): the header revision is at least the
//! put's and the key has the value put, at the put's revision. (A serializable
//! Range may answer older; it is not checked.)

use crate::cluster::{EtcdCluster, MirrorProcess, MEMBERS};
use crate::common::connect;
use crate::support::runtime;

const ROUNDS: usize = 300;

#[test]
fn a_linearizable_read_through_a_mirror_sees_every_write_acknowledged_before_it() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let eps = cluster.endpoints();
    let rotated = vec![eps[2].clone(), eps[1].clone(), eps[0].clone()];
    let mirrors = [
        MirrorProcess::start(&eps, &dir.path().join("m1"), &[]),
        MirrorProcess::start(&rotated, &dir.path().join("m2"), &[]),
    ];
    runtime().block_on(async {
        let mut members = Vec::new();
        for ep in &eps {
            members.push(connect(ep).await);
        }
        let mut via = Vec::new();
        for m in &mirrors {
            via.push(connect(&m.endpoint()).await);
        }
        for i in 0..ROUNDS {
            let key = format!("/lin/{}", i % 10);
            let value = format!("v{i}");
            let put = members[i % MEMBERS].put(key.clone(), value.clone(), None).await.expect("put on a member");
            let acked = put.header().expect("header").revision();
            let m = i % via.len();
            let got = via[m].get(key.clone(), None).await.expect("linearizable get through a mirror");
            let seen = got.header().expect("header").revision();
            assert!(
                seen >= acked,
                "round {i}: a linearizable Range of {key} through mirror {m} answered at revision {seen}, \
                 after the put acknowledged at {acked} by member {}",
                i % MEMBERS
            );
            let kv = got.kvs().first().unwrap_or_else(|| panic!("round {i}: mirror {m} does not have {key}"));
            assert_eq!(
                (kv.value(), kv.mod_revision()),
                (value.as_bytes(), acked),
                "round {i}: {key} through mirror {m} (left), the put acknowledged (right)"
            );
        }
    });
}
