//! Hostile clients: one that floods its Watch stream with requests and never reads
//! the responses (pushed back: what the server holds for it stays bounded, and it is
//! answered in order once it reads), one whose owed responses overflow anyway
//! (closed with RESOURCE_EXHAUSTED), the server-wide limits on watch streams and
//! watchers with their `/metrics` gauges, and SIGTERM with watch streams open (idle,
//! busy, and one whose client never reads).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_server::proto::etcdserverpb as pb;
use bytes::Bytes;
use prost::Message;

use crate::common::{connect, free_port, http_get, metric, poll, Argus, ArgusProcess, Collected, Spec, PATIENCE};
use crate::wire::{grpc_status, h2_connect, rss_anon, runtime, Raw};

/// The gauge of control responses owed by every watch stream.
const OWED: &str = "argus_watch_owed_control_responses";

fn create(id: i64, key: &str) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into(),
            watch_id: id,
            ..Default::default()
        })),
    }
}

fn cancel(id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: id })),
    }
}

fn progress() -> pb::WatchRequest {
    pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(Default::default())) }
}

/// Appends `req` as one gRPC message.
fn frame(req: &pb::WatchRequest, out: &mut Vec<u8>) {
    let m = req.encode_to_vec();
    out.push(0);
    out.extend_from_slice(&(m.len() as u32).to_be_bytes());
    out.extend_from_slice(&m);
}

/// Sends `data` once the stream's flow-control window has room for all of it; false
/// (nothing sent) if the server granted no room within `wait`: it pushes back.
async fn send_when_allowed(send: &mut h2::SendStream<Bytes>, data: Bytes, wait: Duration) -> bool {
    send.reserve_capacity(data.len());
    let deadline = tokio::time::Instant::now() + wait;
    while send.capacity() < data.len() {
        match tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| send.poll_capacity(cx))).await {
            Err(_) => return false,
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the stream failed while waiting for flow-control credit: {other:?}"),
        }
    }
    send.send_data(data, false).expect("send");
    true
}

/// An HTTP/2 connection whose streams accept `window` bytes of responses unread.
async fn h2_connect_window(
    endpoint: &str,
    window: u32,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(64 << 20)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
    (
        client,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// A client that sends progress requests, creates and cancels as fast as the server
/// takes them and reads nothing (with room for 4 MiB of unread responses on its
/// side, as a gRPC client with a large window has). The server stops taking its
/// requests once the responses it owes reach the per-stream bound (etcd blocks the
/// same way): the client is pushed back long before it has sent the million
/// requests it tries to, the owed-responses gauge stays at the bound, and the
/// server's heap stays flat (it grew by over 100 MB when every request was taken
/// and answered into an unbounded queue). When the client reads, every create and
/// cancel it made is answered, in order, and its progress requests are answered
/// (those made while one was owed share its answer).
#[test]
fn a_client_that_floods_requests_and_never_reads_is_pushed_back() {
    const BATCHES: usize = 20_000;
    const PROGRESS_PER_BATCH: usize = 40;
    const CREATES_PER_BATCH: usize = 16;
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = ArgusProcess::start(dir.path(), &["--fsync", "never", "--metrics-listen", &metrics]);
    let (pid, ep) = (server.pid(), server.endpoint());
    let gauge = |name: &str| http_get(&metrics, "/metrics").and_then(|p| metric(&p, name));
    runtime().block_on(async {
        let (client, _conn) = h2_connect_window(&ep, 4 << 20).await;
        let mut s = Raw::watch(&client, &ep).await;
        s.send(&create(1, "/p/"));
        let created = s.next().await.expect("created");
        assert!(created.created && created.watch_id == 1, "{created:?}");
        let base = rss_anon(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let max_owed = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, max_owed, metrics) = (Arc::clone(&stop), Arc::clone(&max_owed), metrics.clone());
            std::thread::spawn(move || {
                let mut max = 0;
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    max = max.max(rss_anon(pid));
                    if i.is_multiple_of(8) {
                        let owed = http_get(&metrics, "/metrics").and_then(|p| metric(&p, OWED)).unwrap_or(0.0);
                        max_owed.fetch_max(owed as u64, Ordering::SeqCst);
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                max
            })
        };
        let started = Instant::now();
        let mut sent = 0;
        let mut pushed_back = false;
        let mut expected = Vec::new();
        while sent < BATCHES && started.elapsed() < Duration::from_secs(60) {
            let mut buf = Vec::new();
            for _ in 0..PROGRESS_PER_BATCH {
                frame(&progress(), &mut buf);
            }
            let first = 1000 + (CREATES_PER_BATCH * sent) as i64;
            let ids = first..first + CREATES_PER_BATCH as i64;
            for id in ids.clone() {
                frame(&create(id, &format!("/c/{id}")), &mut buf);
                frame(&cancel(id), &mut buf);
            }
            if !send_when_allowed(&mut s.send, buf.into(), Duration::from_secs(2)).await {
                pushed_back = true;
                break;
            }
            for id in ids {
                expected.push(format!("created {id}"));
                expected.push(format!("canceled {id}"));
            }
            sent += 1;
        }
        // Time for anything taken to be answered into the queue, if the server would.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let max = sampler.join().expect("sampler");
        let grew = max.saturating_sub(base);
        let max_owed = max_owed.load(Ordering::SeqCst);
        eprintln!(
            "sent {sent} batches of {} requests in {:?} (pushed back: {pushed_back}); server heap {} MiB before, at \
             most +{} MiB; owed responses at most {max_owed}",
            PROGRESS_PER_BATCH + 2 * CREATES_PER_BATCH,
            started.elapsed(),
            base >> 20,
            grew >> 20
        );
        assert!(pushed_back, "the server took all {sent} batches of a client that reads nothing");
        assert!(sent < BATCHES / 2, "the server took {sent} batches of a client that reads nothing");
        assert!(grew < 32 << 20, "the server's heap grew by {} MiB for a client that reads nothing", grew >> 20);
        assert!(max_owed > 0 && max_owed <= 256 + 8, "owed control responses reached {max_owed} (bound 256)");

        // It reads now: every create and cancel answered, in order; progress answered.
        let (mut got, mut progress_responses, mut last_rev) = (Vec::new(), 0, 0);
        let last = expected.last().cloned().expect("some requests were sent");
        while got.last() != Some(&last) {
            let r = s.next().await.expect("a response");
            let rev = r.header.as_ref().map_or(0, |h| h.revision);
            assert!(rev >= last_rev, "header revision went back from {last_rev} to {rev}: {r:?}");
            last_rev = rev;
            if r.created {
                got.push(format!("created {}", r.watch_id));
            } else if r.canceled {
                got.push(format!("canceled {}", r.watch_id));
            } else if r.watch_id == -1 && r.events.is_empty() {
                progress_responses += 1;
            } else {
                panic!("unexpected response {r:?}");
            }
        }
        assert_eq!(got, expected, "creates and cancels answered in order");
        s.half_close();
        let (rest, trailers) = s.rest().await;
        progress_responses += rest.iter().filter(|r| r.watch_id == -1 && !r.created).count();
        assert!(rest.iter().all(|r| r.watch_id == -1 && !r.created && !r.canceled), "{rest:?}");
        assert_eq!(grpc_status(&trailers), Some((0, String::new())));
        let asked = sent * PROGRESS_PER_BATCH;
        eprintln!("{progress_responses} progress responses for {asked} progress requests");
        assert!(progress_responses >= 1 && progress_responses <= asked, "{progress_responses} for {asked}");
        tokio::task::block_in_place(|| {
            poll("nothing owed", || (gauge(OWED)? == 0.0).then_some(()));
        });
    });
}

/// A stream whose client reads nothing while the engine keeps answering for it
/// without any request (progress notifications of idle `progress_notify` watchers,
/// every 20 ms here) owes more than its bound at last: the engine closes it, and the
/// client, when it reads again, gets what was queued and then RESOURCE_EXHAUSTED
/// with a message saying why. Nothing of the stream is left in the engine.
#[test]
fn a_stream_whose_owed_responses_overflow_is_closed_with_resource_exhausted() {
    let argus = Argus::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        c.progress_interval = Duration::from_millis(20);
        c.max_owed_responses = 8;
        c.max_watchers_per_stream = 8;
        c.fsync = argus_engine::log::FsyncPolicy::Never;
    });
    let ep = argus.endpoint().to_string();
    runtime().block_on(async {
        let (client, _conn) = h2_connect(&ep).await;
        let mut s = Raw::watch(&client, &ep).await;
        // One watcher whose events fill the client's window (it becomes a victim), and
        // four idle ones with progress notifications (each its own group).
        s.send(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"/big/".to_vec(),
                range_end: b"/big0".to_vec(),
                watch_id: 1,
                ..Default::default()
            })),
        });
        for id in 2..=5 {
            s.send(&pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    key: format!("/idle/{id}").into_bytes(),
                    watch_id: id,
                    progress_notify: true,
                    ..Default::default()
                })),
            });
        }
        for _ in 0..5 {
            assert!(s.next().await.expect("created").created);
        }
        let value = vec![b'v'; 32 << 10];
        for i in 0..64 {
            argus.store.put(format!("/big/{}", i % 4).as_bytes(), &value).expect("put");
        }
        // The stream is closed by the engine while the client reads nothing.
        tokio::task::block_in_place(|| {
            poll("the engine closes the overflowing stream", || (argus.hub.metrics().streams == 0).then_some(()))
        });
        let (rest, trailers) = s.rest().await;
        let (code, msg) = grpc_status(&trailers).expect("a status");
        eprintln!("{} responses, then {code} {msg:?}", rest.len());
        assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{msg}");
        assert!(msg.contains("does not read"), "{msg}");
        assert!(rest.iter().any(|r| r.watch_id >= 2 && r.events.is_empty()), "progress responses came first");
        assert_eq!(argus.hub.metrics().watchers, 0);
        let m = argus.metrics_addr.expect("metrics").to_string();
        poll("the overflow counted", || {
            (metric(&http_get(&m, "/metrics")?, "argus_server_watch_streams_overflowed_total")? == 1.0).then_some(())
        });
    });
}

/// `--max-streams` and `--max-watchers`: past the first, a new Watch stream is
/// refused with RESOURCE_EXHAUSTED (trailers-only, as a resource limit of gRPC); past
/// the second, a create is refused as other creates are (watch id -1, created and
/// canceled, with the reason). Closing a stream or canceling a watcher makes room
/// again. `/metrics` shows the streams and watchers counted against the limits, the
/// limits and the refusals.
#[test]
fn server_wide_limits_refuse_streams_and_watchers_past_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server =
        ArgusProcess::start(dir.path(), &["--max-streams", "3", "--max-watchers", "5", "--metrics-listen", &metrics]);
    let ep = server.endpoint();
    let page = || http_get(&metrics, "/metrics").expect("scrape");
    let gauges = |want: [(&str, f64); 2]| {
        poll(&format!("gauges {want:?}"), || {
            let p = page();
            want.iter().all(|(name, v)| metric(&p, name) == Some(*v)).then_some(())
        })
    };
    let p = page();
    assert_eq!(metric(&p, "argus_server_max_watch_streams"), Some(3.0));
    assert_eq!(metric(&p, "argus_server_max_watchers"), Some(5.0));
    runtime().block_on(async {
        let (client, _conn) = h2_connect(&ep).await;
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(Raw::watch(&client, &ep).await);
        }
        tokio::task::block_in_place(|| gauges([("argus_server_watch_streams", 3.0), ("argus_server_watchers", 0.0)]));
        // The fourth stream is refused at once.
        let refused = Raw::open(&client, &ep, "POST", "/etcdserverpb.Watch/Watch", &[]).await;
        let (code, msg) = grpc_status(&refused.headers).expect("a trailers-only status");
        assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{msg}");
        assert_eq!(msg, "argus: too many watch streams (limit 3)");
        // So is one through etcd-client.
        let mut c = connect(&ep).await;
        match c.watch("/x", None).await {
            Err(etcd_client::Error::GRpcStatus(s)) => assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}"),
            Err(other) => panic!("a watch past --max-streams failed with {other}"),
            Ok(mut w) => match w.message().await {
                Err(etcd_client::Error::GRpcStatus(s)) => {
                    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}")
                }
                other => panic!("a watch past --max-streams answered {other:?}"),
            },
        }
        let p = page();
        assert!(metric(&p, "argus_server_watch_streams_refused_total") >= Some(2.0));

        // Watchers: three on the first stream, two on the second, then one too many.
        for id in 1..=3 {
            open[0].send(&create(id, &format!("/w/{id}")));
        }
        for id in 4..=5 {
            open[1].send(&create(id, &format!("/w/{id}")));
        }
        for (i, n) in [(0, 3), (1, 2)] {
            for _ in 0..n {
                assert!(open[i].next().await.expect("created").created);
            }
        }
        tokio::task::block_in_place(|| gauges([("argus_server_watch_streams", 3.0), ("argus_server_watchers", 5.0)]));
        open[2].send(&create(6, "/w/6"));
        let r = open[2].next().await.expect("a refusal");
        assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
        assert_eq!(r.cancel_reason, "argus: too many watchers (limit 5)");
        assert_eq!(metric(&page(), "argus_server_watchers_refused_total"), Some(1.0));
        // A cancel makes room.
        open[1].send(&cancel(5));
        let r = open[1].next().await.expect("canceled");
        assert!(r.canceled && r.watch_id == 5, "{r:?}");
        tokio::task::block_in_place(|| gauges([("argus_server_watch_streams", 3.0), ("argus_server_watchers", 4.0)]));
        open[2].send(&create(6, "/w/6"));
        let r = open[2].next().await.expect("created");
        assert!(r.created && !r.canceled && r.watch_id == 6, "{r:?}");
        // Closing a stream releases it and its watchers.
        let mut first = open.remove(0);
        first.send.send_reset(h2::Reason::CANCEL);
        drop(first);
        tokio::task::block_in_place(|| gauges([("argus_server_watch_streams", 2.0), ("argus_server_watchers", 2.0)]));
        let mut again = Raw::watch(&client, &ep).await;
        again.send(&create(7, "/w/7"));
        assert!(again.next().await.expect("created").created);
        tokio::task::block_in_place(|| gauges([("argus_server_watch_streams", 3.0), ("argus_server_watchers", 3.0)]));
    });
}

/// SIGTERM with watch streams open: an idle one, a busy one whose client reads, and
/// one whose client stopped reading with a lot queued (the server cannot even send
/// it its status: flow control). The server exits 0 within 5 s, having flushed its
/// log; the idle and busy streams end with UNAVAILABLE (etcd, which does not wait,
/// just closes the connections), the unread one ends with an error when its client
/// reads.
#[test]
fn sigterm_ends_every_watch_stream_and_exits_within_the_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ArgusProcess::start_logging(&dir.path().join("data"), &["--fsync", "never"], "info");
    let ep = server.endpoint();
    let stderr = Arc::clone(&server.stderr);
    let rt = runtime();
    let writing = Arc::new(AtomicBool::new(true));
    let (idle, busy, mut unread, writer) = rt.block_on(async {
        let (ci, cb, mut cu) = (connect(&ep).await, connect(&ep).await, connect(&ep).await);
        let idle = Collected::open(&ci, &[Spec::prefix(1, "/idle/")]).await;
        let busy = Collected::open(&cb, &[Spec::prefix(1, "/b/")]).await;
        let unread =
            cu.watch("/b/", Some(etcd_client::WatchOptions::new().with_prefix().with_prev_key())).await.expect("watch");
        idle.wait("created", |rs| rs.iter().any(|r| r.created)).await;
        busy.wait("created", |rs| rs.iter().any(|r| r.created)).await;
        let mut kv = connect(&ep).await;
        let value = vec![b'x'; 16 << 10];
        for i in 0..300 {
            kv.put(format!("/b/{}", i % 3), value.clone(), None).await.expect("put");
        }
        busy.wait_rev(&[1], 301).await;
        // Writes keep coming while the server stops.
        let writer = {
            let writing = Arc::clone(&writing);
            tokio::spawn(async move {
                let mut n = 0;
                while writing.load(Ordering::SeqCst) && kv.put("/b/w", format!("{n}"), None).await.is_ok() {
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                n
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        (idle, busy, unread, (writer, ci, cb, cu))
    });
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(15));
    let took = started.elapsed();
    writing.store(false, Ordering::SeqCst);
    let log = stderr.lock().unwrap().join("\n");
    let status = status.unwrap_or_else(|| panic!("argus still ran 15 s after SIGTERM; its log:\n{log}"));
    eprintln!("argus exited {status:?} {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(5), "argus took {took:?} to stop; its log:\n{log}");
    assert!(status.success(), "a graceful stop exits 0: {status:?}; its log:\n{log}");
    assert!(log.contains("log flushed"), "the log was flushed at shutdown; its log:\n{log}");
    let ended = |c: &Collected, what: &str| -> String {
        poll(&format!("the {what} stream to end"), || c.error.lock().unwrap().clone())
    };
    let e = ended(&idle, "idle");
    let unavailable = |e: &str| e.contains("currently unavailable") && e.contains("shutting down");
    assert!(unavailable(&e), "idle stream: {e}");
    let e = ended(&busy, "busy");
    assert!(unavailable(&e), "busy stream: {e}");
    let end = rt.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match unread.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the unread stream ends")
    });
    eprintln!("the unread stream ended with {end:?}");
    assert!(end.is_err(), "the unread stream ends with an error: {end:?}");
    let (writer, ..) = writer;
    let _ = rt.block_on(writer);
}
