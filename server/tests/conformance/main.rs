//! Conformance of the Argus server with etcd's v3 API as real clients use it:
//! `etcdctl` 3.4 outputs compared with real etcd 3.4's ([`etcdctl`]), the Rust
//! `etcd-client` crate's watches checked with the engine's guarantee checker and
//! compared with etcd ([`client`]), `kill -9` under load and resume ([`restart`]),
//! limits, errors, metrics and slow clients ([`limits`]), Maintenance, Cluster,
//! snapshots and `argus restore` ([`maintenance`]), hostile clients, the
//! server-wide watch limits and SIGTERM ([`hostile`]), the binary's thread names
//! ([`threads`]), leases side by side with etcd and through kill -9 ([`lease`]),
//! the Watch stream on the wire through a raw HTTP/2 client ([`wire`]),
//! differences from etcd found and fixed, side by side ([`differences`]), the
//! HTTP/JSON gateway through `curl`, compared with etcd's ([`gateway`]), and Node's
//! `etcd3` npm client driving leases and watches on both ([`node_client`]), and
//! TLS with client certificates, side by side with etcd, and a mirror of a TLS
//! cluster ([`tls`]).
//!
//! Needs `/usr/bin/etcd` and `/usr/bin/etcdctl` 3.4 and `curl` (`scripts/test.sh`
//! installs them from the distribution's packages).

mod auth;
mod client;
mod common;
mod differences;
mod engine_failure;
mod etcdctl;
mod gateway;
mod hostile;
mod lease;
mod limits;
mod maintenance;
mod node_client;
mod restart;
mod threads;
mod tls;
mod wire;
