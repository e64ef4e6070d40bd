//! Limits and errors through `etcd-client` (codes and messages compared with real
//! etcd 3.4 where etcd has the same behaviour), Prometheus `/metrics`, and a client
//! that never reads its watch stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::check::History;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use tonic::Code;

use crate::common::{
    apply, assert_watch_guarantees, connect, http_get, metric, poll, put, record, Argus, Collected, Etcd, Spec,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn start_both() -> (Etcd, Argus) {
    let etcd = std::thread::spawn(Etcd::start);
    let argus = Argus::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("address")));
    (etcd.join().expect("etcd start"), argus)
}

/// The gRPC code and message of a failed call (panics if it succeeded or failed
/// without a status).
fn status<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> (Code, String) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected an error status, got {other:?}"),
    }
}

const KIB: usize = 1024;

/// The requests of the limit tests, each made on a client of `endpoint`; returns
/// every answer's (code, message).
async fn oversized(endpoint: &str) -> Vec<(&'static str, (Code, String))> {
    let mut c = connect(endpoint).await;
    // Raise the client's own limit so that the server is the one that refuses.
    let mut kv = c.kv_client().max_encoding_message_size(64 << 20);
    let big = |n: usize| vec![b'v'; n];
    let mut out = Vec::new();
    // A 1 MiB value is within the limit on both.
    let ok = kv.put("ok", big(1024 * KIB), None).await.expect("a 1 MiB put");
    assert_eq!(ok.header().expect("header").revision(), 2);
    out.push(("value above max request bytes", status(kv.put("v", big(1600 * KIB), None).await)));
    out.push(("key above max request bytes", status(kv.put(big(1600 * KIB), "v", None).await)));
    let txn = Txn::new().and_then([TxnOp::put("a", big(900 * KIB), None), TxnOp::put("b", big(900 * KIB), None)]);
    out.push(("txn above max request bytes", status(kv.txn(txn).await)));
    let _ = c.put("after", "1", None).await.expect("the server still serves");
    out
}

/// A request above max request bytes (1.5 MiB, etcd's default) but below the gRPC
/// message limit (+512 KiB): InvalidArgument, for a large value, a large key, or a
/// txn whose parts are each small enough; nothing is written.
#[test]
fn requests_above_max_request_bytes_are_invalid_argument() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) = rt.block_on(async { tokio::join!(oversized(&etcd.endpoint), oversized(argus.endpoint())) });
    for ((what, (ecode, emsg)), (_, (acode, amsg))) in e.iter().zip(&a) {
        assert_eq!(
            (*ecode, emsg.as_str()),
            (Code::InvalidArgument, "etcdserver: request is too large"),
            "etcd: {what}"
        );
        assert_eq!(*acode, Code::InvalidArgument, "argus: {what}: {amsg}");
        assert!(amsg.starts_with("etcdserver: request is too large"), "argus: {what}: {amsg}");
    }
    assert_eq!(argus.store.current_revision(), 3, "only the 1 MiB put and the last put were written");
}

/// The same, message for message: etcd's Go client recognizes server errors by their
/// exact message (`rpctypes.ErrGRPCRequestTooLarge`), so a message with more text
/// is not recognized as `ErrRequestTooLarge`.
#[test]
fn requests_above_max_request_bytes_have_etcds_message() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) = rt.block_on(async { tokio::join!(oversized(&etcd.endpoint), oversized(argus.endpoint())) });
    assert_eq!(a, e);
}

/// Requests above the gRPC message limit (max request bytes + 512 KiB) are refused
/// by the transport before any handler, whatever their size: etcd (grpc-go) answers
/// ResourceExhausted with the sizes.
async fn above_grpc_limit(endpoint: &str) -> Vec<(Code, String)> {
    let c = connect(endpoint).await;
    let mut kv = c.kv_client().max_encoding_message_size(64 << 20);
    let mut out = Vec::new();
    for n in [2560 * KIB, 9 << 20, 40 << 20] {
        out.push(status(kv.put("v", vec![b'v'; n], None).await));
    }
    out.push(status(kv.get("k", Some(GetOptions::new().with_range(vec![b'z'; 9 << 20]))).await));
    out
}

#[test]
fn requests_above_the_grpc_limit_are_resource_exhausted() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) =
        rt.block_on(async { tokio::join!(above_grpc_limit(&etcd.endpoint), above_grpc_limit(argus.endpoint())) });
    assert!(e.iter().all(|(c, _)| *c == Code::ResourceExhausted), "{e:?}");
    assert_eq!(a, e);
}

/// Errors with etcd's codes and messages, each made on both servers.
async fn errors(endpoint: &str) -> Vec<(&'static str, (Code, String))> {
    let mut c: Client = connect(endpoint).await;
    for i in 0..5 {
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let mut out = Vec::new();
    let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    out.push(("txn: two puts of a key", status(c.txn(dup).await)));
    let overlap = Txn::new()
        .and_then([TxnOp::put("k1", "x", None), TxnOp::delete("k", Some(DeleteOptions::new().with_prefix()))]);
    out.push(("txn: a put inside a deleted range", status(c.txn(overlap).await)));
    let dup_else = Txn::new()
        .when([Compare::version("k0", CompareOp::Equal, 99)])
        .and_then([TxnOp::put("x", "1", None)])
        .or_else([TxnOp::put("e", "1", None), TxnOp::put("e", "2", None)]);
    out.push(("txn: duplicate keys in the failure branch", status(c.txn(dup_else).await)));
    let many: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("m{i}"), "v", None)).collect();
    out.push(("txn: 129 operations", status(c.txn(Txn::new().and_then(many)).await)));
    out.push(("put: empty key", status(c.put("", "v", None).await)));
    out.push((
        "put: a lease that does not exist",
        status(c.put("l", "v", Some(PutOptions::new().with_lease(12345))).await),
    ));
    out.push((
        "put: ignore_lease with a lease",
        status(c.put("k0", "v", Some(PutOptions::new().with_lease(5).with_ignore_lease())).await),
    ));
    out.push((
        "put: ignore_lease on a missing key",
        status(c.put("nokey", "v", Some(PutOptions::new().with_ignore_lease())).await),
    ));
    out.push(("lease grant: a TTL above the maximum", status(c.lease_grant(9_000_000_001, None).await)));
    out.push(("lease revoke: a lease that does not exist", status(c.lease_revoke(12345).await)));
    c.lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(4242))).await.expect("grant");
    out.push((
        "lease grant: an ID in use",
        status(c.lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(4242))).await),
    ));
    let txn_lease = Txn::new().and_then([TxnOp::put("tl", "v", Some(PutOptions::new().with_lease(999)))]);
    out.push(("txn: a put with a lease that does not exist", status(c.txn(txn_lease).await)));
    out.push((
        "put: ignore_value on a missing key",
        status(c.put("nokey", "", Some(PutOptions::new().with_ignore_value())).await),
    ));
    out.push(("range: a future revision", status(c.get("k0", Some(GetOptions::new().with_revision(100))).await)));
    c.compact(4, None).await.expect("compact");
    out.push(("range: a compacted revision", status(c.get("k0", Some(GetOptions::new().with_revision(3))).await)));
    out.push(("compact: a compacted revision", status(c.compact(3, None).await)));
    out.push(("compact: a future revision", status(c.compact(100, None).await)));
    // Two deletes of overlapping ranges are allowed (etcd checks puts against deletes
    // only): not an error on either.
    let deletes =
        Txn::new().and_then([TxnOp::delete("k1", None), TxnOp::delete("k", Some(DeleteOptions::new().with_prefix()))]);
    assert!(c.txn(deletes).await.expect("overlapping deletes").succeeded());
    out
}

/// A malformed txn (duplicate key) → InvalidArgument "etcdserver: duplicate key given
/// in txn request"; a Range on a compacted revision → OutOfRange "etcdserver: mvcc:
/// required revision has been compacted"; and the other errors of the KV API: codes
/// and messages exactly as etcd's.
#[test]
fn errors_match_etcd() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) = rt.block_on(async { tokio::join!(errors(&etcd.endpoint), errors(argus.endpoint())) });
    let show =
        |v: &[(&str, (Code, String))]| v.iter().map(|(w, (c, m))| format!("  {w}: {c:?} {m:?}\n")).collect::<String>();
    assert_eq!(a, e, "\n---- etcd ----\n{}---- argus ----\n{}", show(&e), show(&a));
    assert!(e.contains(&(
        "txn: two puts of a key",
        (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".to_string())
    )));
    assert!(e.contains(&(
        "range: a compacted revision",
        (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_string())
    )));
}

/// Methods Argus does not implement answer Unimplemented with a message naming the
/// method, through the crate's ordinary calls.
#[test]
fn unimplemented_methods_name_the_method() {
    let argus = Argus::start();
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect(argus.endpoint()).await;
        let cases = vec![
            ("Cluster.MemberAdd", status(c.member_add(["http://127.0.0.1:1"], None).await)),
            ("Cluster.MemberRemove", status(c.member_remove(1).await)),
            ("Cluster.MemberUpdate", status(c.member_update(1, vec!["http://127.0.0.1:1".to_string()]).await)),
            (
                "Maintenance.Alarm ACTIVATE",
                status(c.alarm(etcd_client::AlarmAction::Activate, etcd_client::AlarmType::Nospace, None).await),
            ),
        ];
        for (method, (code, msg)) in cases {
            assert_eq!(code, Code::Unimplemented, "{method}: {msg}");
            assert!(msg.contains(method), "{method}: the message {msg:?} does not name the method");
        }
        // And the server still serves.
        c.put("k", "v", None).await.expect("put after the unimplemented calls");
    });
}

/// `(watcher_total, watch_stream_total)` scraped from `/metrics` at `addr`.
fn watch_gauges(addr: &str) -> Option<(f64, f64)> {
    let page = http_get(addr, "/metrics")?;
    Some((
        metric(&page, "etcd_debugging_mvcc_watcher_total")?,
        metric(&page, "etcd_debugging_mvcc_watch_stream_total")?,
    ))
}

/// `/metrics` counts watchers and watch streams as etcd's does, as they are
/// created, canceled and closed: `etcd_debugging_mvcc_watcher_total` and
/// `etcd_debugging_mvcc_watch_stream_total` on Argus equal the engine's counters and
/// move exactly as etcd's (compared as changes from etcd's value before the test, in
/// case etcd counts anything of its own).
#[test]
fn metrics_count_watchers_like_etcd() {
    let (etcd, argus) = start_both();
    let metrics = argus.metrics_addr.expect("metrics").to_string();
    let base_e = poll("etcd's metrics", || watch_gauges(&etcd.endpoint));
    assert_eq!(watch_gauges(&metrics), Some((0.0, 0.0)), "a fresh Argus has no watchers");
    let rt = runtime();
    let expect = |watchers: f64, streams: f64| {
        poll(&format!("{watchers} watchers on {streams} streams on both"), || {
            let e = watch_gauges(&etcd.endpoint)?;
            let a = watch_gauges(&metrics)?;
            let m = argus.hub.metrics();
            let want = (watchers, streams);
            ((e.0 - base_e.0, e.1 - base_e.1) == want && a == want && (m.watchers as f64, m.streams as f64) == want)
                .then_some(())
        })
    };
    rt.block_on(async {
        let (ce, ca) = (connect(&etcd.endpoint).await, connect(argus.endpoint()).await);
        let specs = |n: i64| (1..=n).map(|i| Spec::prefix(i, &format!("/w{i}/"))).collect::<Vec<_>>();
        let mut streams = Vec::new();
        for n in [2, 3, 4] {
            for c in [&ce, &ca] {
                let s = Collected::open(c, &specs(n)).await;
                s.wait("created", |rs| rs.iter().filter(|r| r.created).count() == n as usize).await;
                streams.push(s);
            }
        }
        tokio::task::block_in_place(|| expect(9.0, 3.0));
        // Cancel two watchers of the 4-watcher streams.
        for s in &mut streams[4..] {
            s.sender.cancel(1).await.expect("cancel");
            s.sender.cancel(2).await.expect("cancel");
            s.wait("two cancels", |rs| rs.iter().filter(|r| r.canceled).count() == 2).await;
        }
        tokio::task::block_in_place(|| expect(7.0, 3.0));
        // Close the 3-watcher streams.
        streams.drain(2..4);
        tokio::task::block_in_place(|| expect(4.0, 2.0));
        drop(streams);
        tokio::task::block_in_place(|| expect(0.0, 0.0));
    });
}

/// A client that never reads its watch stream while many puts happen (1000 puts of
/// 16 KiB, ~32 KiB per event with prev_kv: far more than the HTTP/2 windows, the
/// server's send queue and the engine stream hold): its watcher becomes a victim
/// (`slow_watcher_total` >= 1 in `/metrics`, the engine's victim count), the events
/// the server holds for it stay bounded (the engine's pending events, sampled after
/// every put, never exceed twice the stream capacity of 128 deliveries), a normal
/// client on another connection keeps receiving every event promptly, and when the
/// slow client finally reads, it gets every event: both pass the checker.
#[test]
fn a_client_that_never_reads_becomes_a_victim_and_memory_stays_bounded() {
    const PUTS: usize = 1000;
    let argus = Argus::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        c.fsync = argus_engine::log::FsyncPolicy::Never;
    });
    let metrics = argus.metrics_addr.expect("metrics").to_string();
    let rt = runtime();
    rt.block_on(async {
        let slow_client = connect(argus.endpoint()).await;
        let normal_client = connect(argus.endpoint()).await;
        let spec = Spec::prefix(1, "/s/").prev();
        // The slow stream: created, then never read until the end.
        let mut wc = slow_client.watch_client();
        let slow = wc.watch(spec.key.clone(), Some(spec.options())).await.expect("watch");
        let normal = Collected::open(&normal_client, std::slice::from_ref(&spec)).await;
        normal.wait("created", |rs| rs.iter().any(|r| r.created)).await;
        poll("two watchers", || (argus.hub.metrics().watchers == 2).then_some(()));
        // Three writers on connections of their own; the history is recorded in
        // revision order afterwards. The metrics are sampled meanwhile.
        let value = "x".repeat(16 * KIB);
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (hub, done) = (Arc::clone(&argus.hub), Arc::clone(&done));
            tokio::spawn(async move {
                let (mut max_pending, mut max_victims) = (0, 0);
                while !done.load(Ordering::SeqCst) {
                    let m = hub.metrics();
                    max_pending = max_pending.max(m.pending_events);
                    max_victims = max_victims.max(m.victims);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (max_pending, max_victims)
            })
        };
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (endpoint, value) = (argus.endpoint().to_string(), value.clone());
                tokio::spawn(async move {
                    let mut c = connect(&endpoint).await;
                    let mut done = Vec::new();
                    for i in (w..PUTS).step_by(3) {
                        let ops = vec![put(&format!("/s/{}", i % 100), &format!("{i}:{value}"))];
                        done.push((apply(&mut c, &ops).await.expect("put"), ops));
                    }
                    done
                })
            })
            .collect();
        let mut writes = Vec::new();
        for w in writers {
            writes.extend(w.await.expect("writer"));
        }
        done.store(true, Ordering::SeqCst);
        let (max_pending, max_victims) = sampler.await.expect("sampler");
        writes.sort_by_key(|(rev, _)| *rev);
        let mut h = History::new();
        for (rev, ops) in &writes {
            record(&mut h, *rev, ops);
        }
        assert_eq!(h.last_revision(), PUTS as u64 + 1);
        let wrote = started.elapsed();
        let last = h.last_revision();
        // The normal client is unaffected: it has everything promptly.
        let t = Instant::now();
        normal.wait_rev(&[1], last).await;
        let lag = t.elapsed();
        let m = argus.hub.metrics();
        let page = http_get(&metrics, "/metrics").expect("scrape");
        let slow_gauge = metric(&page, "etcd_debugging_mvcc_slow_watcher_total").expect("slow_watcher_total");
        eprintln!(
            "{PUTS} puts in {wrote:?}; normal client caught up {lag:?} after the last; max pending events \
             {max_pending}, max victims {max_victims}; now {m:?}, slow_watcher_total {slow_gauge}"
        );
        assert!(m.victims >= 1 && slow_gauge >= 1.0, "the slow watcher is a victim: {m:?}, gauge {slow_gauge}");
        assert!(
            max_pending <= 2 * 128,
            "pending events grew to {max_pending} of {PUTS} written: the server buffers for the slow client"
        );
        assert!(lag < Duration::from_secs(5), "the normal client lagged {lag:?} behind the writes");
        // Now the slow client reads: it catches up with every event, in order.
        let (sender, receiver) = slow.split();
        let slow = Collected::collect(sender, receiver);
        slow.wait_rev(&[1], last).await;
        poll("no victim left", || (argus.hub.metrics().victims == 0).then_some(()));
        let specs = [spec];
        assert_watch_guarantees(&h, &[(&specs, normal.snapshot()), (&specs, slow.snapshot())]);
    });
}
