//! `argus mirror` in front of a real 3-member etcd 3.4 cluster (issue #12), each
//! check side by side with etcd itself:
//!
//! * [`harness`]: the cluster harness alone (a leader killed, a new one elected, the
//!   member restarted);
//! * [`ranges`]: Range through two mirrors equals etcd's (revisions, values,
//!   leases, historical and serializable reads), and a write through a mirror is
//!   acknowledged with the revision etcd gives it;
//! * [`watch`]: a watch from revision 1 on each mirror equals one on etcd;
//! * [`leader_kill`]: the leader is killed while writers run through the mirrors
//!   and directly; every acknowledged write reaches the mirrors' watchers once, in
//!   order;
//! * [`mirror_restart`]: a mirror killed and restarted on its data directory
//!   resumes without a gap; one that was down while etcd compacted past it
//!   re-bootstraps and cancels watches as etcd does;
//! * [`retention`]: with `--retain` a mirror serves history etcd has compacted;
//!   without, it follows etcd's compaction within 10 s and answers as etcd does;
//! * [`linearizable`]: a linearizable read through a mirror is never older than a
//!   write already acknowledged;
//! * [`auth`]: a mirror will not serve a cluster that has authentication on;
//! * [`metrics`]: the mirror's `/metrics`, and etcd holding one watcher per mirror
//!   while clients watch through the mirrors.
//!
//! Needs `/usr/bin/etcd` 3.4 (`scripts/test.sh` installs it). The same cluster,
//! started from a shell, is `scripts/etcd-cluster.sh start DIR`.

mod auth;
mod cluster;
#[allow(dead_code)]
#[path = "../conformance/common.rs"]
mod common;
mod harness;
mod leader_kill;
mod linearizable;
mod metrics;
mod mirror_restart;
mod ranges;
mod retention;
mod support;
mod watch;
