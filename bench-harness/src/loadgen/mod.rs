//! The etcd comparison load generator behind `argus-bench` (see
//! `src/bin/argus-bench.rs`): one client, one code path, any etcd v3 endpoint.
//!
//! - [`client`]: gRPC connections, the KV writer (send time in every value) and a
//!   small hand-made client of `/etcdserverpb.Watch/Watch` whose codec hands back
//!   the raw response bytes;
//! - [`wire`]: reads a `WatchResponse`'s bytes without allocating (the client's
//!   decoding bounds every fan-out figure on a 2-core machine, so it is kept cheap);
//! - [`watchers`]: opens watchers over streams and connections and keeps, per
//!   watcher, the count, order and a fingerprint of what it received;
//! - [`scenario`]: `fanout`, `light`, `catchup`, `put`, `watch-create`;
//! - [`lease`]: `lease-keepalive`, `lease-expiry`, `lease-memory`;
//! - [`mirror`]: `mirror-fanout`, `mirror-history`, `mirror-catchup`: watchers on
//!   `argus mirror`s in front of a 3-member etcd cluster against the same watchers
//!   on its members;
//! - [`stats`]: latency histograms, CPU and memory of processes, server CPU by thread;
//! - [`report`] and [`plot`]: the side-by-side tables and SVG plots;
//! - [`auth_report`]: the same runs with and without auth, side by side (`scripts/bench-auth.sh`).

pub mod auth_report;
pub mod client;
pub mod lease;
pub mod mirror;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod watchers;
pub mod wire;

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since a process-wide base instant (monotonic). Values carry the
/// send time in this clock; the same process reads them back, so no clock is
/// shared between processes.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// FNV-1a of a key: identifies keys in the per-watcher fingerprints.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The contribution of one event (revision, key) to a watcher's fingerprint: a
/// well-mixed 64-bit value, summed (wrapping) over the events. Together with strictly
/// increasing revisions and the right count, equal sums mean the watcher got
/// exactly the written events (up to a 2^-64 collision).
pub fn event_fp(revision: i64, key_hash: u64) -> u64 {
    let mut z = (revision as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key_hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Smallest key after every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn fingerprints_differ_by_revision_and_key() {
        let k = key_hash(b"/k");
        assert_ne!(event_fp(2, k), event_fp(3, k));
        assert_ne!(event_fp(2, k), event_fp(2, key_hash(b"/j")));
    }
}
