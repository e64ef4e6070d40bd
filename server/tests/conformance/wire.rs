//! The Watch stream on the wire, through a raw HTTP/2 client (the `h2` crate), which
//! can do what client libraries hide: half-close, reset one stream, stop granting
//! flow-control credit, send a malformed or oversized request, a compressed one, a
//! wrong method or path. What each gets is what tonic's generated server gives
//! (statuses and messages), the engine stream closes whenever the gRPC stream ends,
//! and a client that stops reading does not grow the server's memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argus_server::proto::etcdserverpb as pb;
use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;

use crate::common::{connect, free_port, http_get, metric, poll, Argus, ArgusProcess, PATIENCE};

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// An HTTP/2 connection to `endpoint` and its connection task (aborting the task
/// closes the connection). Streams have HTTP/2's default window (64 KiB); the
/// connection a large one, as gRPC clients set it, so that one stream that is not
/// read does not stall the others.
pub(crate) async fn h2_connect(endpoint: &str) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    let (client, conn) = h2::client::Builder::new()
        .initial_connection_window_size(64 << 20)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

/// One gRPC stream, read by hand.
pub(crate) struct Raw {
    pub(crate) send: h2::SendStream<Bytes>,
    pub(crate) body: h2::RecvStream,
    /// Response headers.
    pub(crate) headers: http::HeaderMap,
    pub(crate) buf: BytesMut,
}

impl Raw {
    /// Opens `POST path` with gRPC's headers plus `extra`.
    pub(crate) async fn open(
        client: &SendRequest<Bytes>,
        endpoint: &str,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Raw {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{endpoint}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let mut client = client.clone().ready().await.expect("the connection takes a stream");
        let (resp, send) = client.send_request(req.body(()).expect("request"), false).expect("send the request");
        let resp = tokio::time::timeout(PATIENCE, resp).await.expect("response headers in time").expect("response");
        let (parts, body) = resp.into_parts();
        assert_eq!(parts.status, http::StatusCode::OK);
        Raw { send, body, headers: parts.headers, buf: BytesMut::new() }
    }

    /// Opens a Watch stream, sends `first` (raw bytes) on it, and only then waits
    /// for the response head: etcd (grpc-go) sends it with its first response or its
    /// status.
    pub(crate) async fn watch_lazy(client: &SendRequest<Bytes>, endpoint: &str, first: Bytes, end: bool) -> Raw {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{endpoint}/etcdserverpb.Watch/Watch"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut client = client.clone().ready().await.expect("the connection takes a stream");
        let (resp, mut send) = client.send_request(req, false).expect("send the request");
        send.send_data(first, end).expect("send");
        let resp = tokio::time::timeout(PATIENCE, resp).await.expect("response headers in time").expect("response");
        let (parts, body) = resp.into_parts();
        assert_eq!(parts.status, http::StatusCode::OK);
        Raw { send, body, headers: parts.headers, buf: BytesMut::new() }
    }

    /// Reads to the end of the stream, granting credit; its status, from the
    /// trailers or from a trailers-only head.
    pub(crate) async fn status(&mut self) -> (i32, String) {
        if let Some(s) = grpc_status(&self.headers) {
            return s;
        }
        loop {
            match tokio::time::timeout(PATIENCE, self.body.data()).await.expect("data in time") {
                Some(Ok(c)) => {
                    let _ = self.body.flow_control().release_capacity(c.len());
                }
                Some(Err(e)) => panic!("the response body failed: {e}"),
                None => break,
            }
        }
        let trailers = tokio::time::timeout(PATIENCE, self.body.trailers()).await.expect("trailers in time");
        grpc_status(&trailers.expect("trailers").expect("the stream ends with trailers")).expect("a status")
    }

    pub(crate) async fn watch(client: &SendRequest<Bytes>, endpoint: &str) -> Raw {
        let raw = Raw::open(client, endpoint, "POST", "/etcdserverpb.Watch/Watch", &[]).await;
        assert_eq!(raw.headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/grpc"[..]));
        assert!(raw.headers.get("grpc-status").is_none(), "not a trailers-only answer: {:?}", raw.headers);
        raw
    }

    /// Sends raw bytes as one gRPC message.
    pub(crate) fn send_raw(&mut self, msg: &[u8]) {
        let mut b = Vec::with_capacity(5 + msg.len());
        b.push(0);
        b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        b.extend_from_slice(msg);
        self.send.send_data(b.into(), false).expect("send a message");
    }

    pub(crate) fn send(&mut self, req: &pb::WatchRequest) {
        self.send_raw(&req.encode_to_vec());
    }

    pub(crate) fn create(&mut self, key: &str, range_end: &str, prev_kv: bool) {
        self.send(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv,
                ..Default::default()
            })),
        });
    }

    pub(crate) fn half_close(&mut self) {
        self.send.send_data(Bytes::new(), true).expect("half-close");
    }

    /// The next response, reading (and granting credit for) what arrives; `None`
    /// when the response body ends.
    pub(crate) async fn next(&mut self) -> Option<pb::WatchResponse> {
        loop {
            if self.buf.len() >= 5 {
                assert_eq!(self.buf[0], 0, "an uncompressed message");
                let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let msg = self.buf.split_to(len);
                    return Some(pb::WatchResponse::decode(msg).expect("a WatchResponse"));
                }
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.data()).await.expect("data in time");
            match chunk {
                Some(Ok(c)) => {
                    let _ = self.body.flow_control().release_capacity(c.len());
                    self.buf.extend_from_slice(&c);
                }
                Some(Err(e)) => panic!("the response body failed: {e}"),
                None => {
                    assert!(self.buf.is_empty(), "{} bytes of a truncated message", self.buf.len());
                    return None;
                }
            }
        }
    }

    /// Reads the responses up to the end of the body, then the trailers.
    pub(crate) async fn rest(&mut self) -> (Vec<pb::WatchResponse>, http::HeaderMap) {
        let mut out = Vec::new();
        while let Some(r) = self.next().await {
            out.push(r);
        }
        let trailers = tokio::time::timeout(PATIENCE, self.body.trailers()).await.expect("trailers in time");
        (out, trailers.expect("trailers").expect("the stream ends with trailers"))
    }
}

/// `grpc-status` and `grpc-message` (percent-decoded).
pub(crate) fn grpc_status(h: &http::HeaderMap) -> Option<(i32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h.get("grpc-message").map(|m| percent_decode(m.to_str().unwrap_or_default())).unwrap_or_default();
    Some((code, msg))
}

/// Waits until the engine has `streams` streams and `watchers` watchers.
fn engine_has(argus: &Argus, streams: u64, watchers: u64) {
    poll(&format!("{streams} engine streams and {watchers} watchers"), || {
        let m = argus.hub.metrics();
        (m.streams == streams && m.watchers == watchers).then_some(())
    });
}

/// A client that half-closes its requests gets what the engine still had for it,
/// then `grpc-status: 0`; the engine stream is gone.
#[test]
fn half_close_drains_then_ends_with_status_ok() {
    let argus = Argus::start();
    let ep = argus.endpoint().to_string();
    runtime().block_on(async {
        let (client, _conn) = h2_connect(&ep).await;
        let mut s = Raw::watch(&client, &ep).await;
        s.create("/h/", "/h0", false);
        let created = s.next().await.expect("created");
        assert!(created.created && created.watch_id == 1, "{created:?}");
        tokio::task::block_in_place(|| engine_has(&argus, 1, 1));
        for i in 0..3 {
            argus.store.put(format!("/h/{i}").as_bytes(), b"v").expect("put");
        }
        let mut events = 0;
        while events < 3 {
            let r = s.next().await.expect("events");
            assert_eq!(r.watch_id, 1);
            events += r.events.len();
        }
        s.half_close();
        let (rest, trailers) = s.rest().await;
        assert!(rest.iter().all(|r| r.watch_id == 1), "{rest:?}");
        assert_eq!(grpc_status(&trailers), Some((0, String::new())));
        tokio::task::block_in_place(|| engine_has(&argus, 0, 0));
    });
}

/// A stream reset by the client (RST_STREAM), one that is being read and one whose
/// server side is parked on flow control (the client stopped granting credit with a
/// lot queued), closes its engine stream and no other; a closed connection closes
/// every stream it carried.
#[test]
fn a_reset_closes_the_engine_stream_and_no_other() {
    let argus = Argus::start();
    let ep = argus.endpoint().to_string();
    runtime().block_on(async {
        let (client, _conn) = h2_connect(&ep).await;
        let mut kept = Raw::watch(&client, &ep).await;
        kept.create("/r/", "/r0", false);
        assert!(kept.next().await.expect("created").created);
        let mut reset = Raw::watch(&client, &ep).await;
        reset.create("/r/", "/r0", false);
        assert!(reset.next().await.expect("created").created);
        let mut parked = Raw::watch(&client, &ep).await;
        parked.create("/r/", "/r0", true);
        assert!(parked.next().await.expect("created").created);
        tokio::task::block_in_place(|| engine_has(&argus, 3, 3));

        // `parked` stops reading; 64 events of 32 KiB (with prev_kv) are far more
        // than its flow-control window.
        let value = vec![b'p'; 16 << 10];
        for i in 0..64 {
            argus.store.put(format!("/r/{}", i % 4).as_bytes(), &value).expect("put");
        }
        let last = argus.store.current_revision() as i64;
        let mut got = 0;
        while got < last {
            let r = kept.next().await.expect("events");
            got = r.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max().unwrap_or(got);
        }
        reset.send.send_reset(h2::Reason::CANCEL);
        tokio::task::block_in_place(|| engine_has(&argus, 2, 2));
        parked.send.send_reset(h2::Reason::CANCEL);
        tokio::task::block_in_place(|| engine_has(&argus, 1, 1));

        // The other stream still works.
        argus.store.put(b"/r/after", b"1").expect("put");
        let r = kept.next().await.expect("the event after the resets");
        assert_eq!(r.events[0].kv.as_ref().expect("kv").key, b"/r/after");

        // A second connection, then closed as a whole.
        let (other, conn) = h2_connect(&ep).await;
        let mut a = Raw::watch(&other, &ep).await;
        a.create("/c/", "", false);
        let mut b = Raw::watch(&other, &ep).await;
        b.create("/c/", "", false);
        assert!(a.next().await.expect("created").created && b.next().await.expect("created").created);
        tokio::task::block_in_place(|| engine_has(&argus, 3, 3));
        // The streams are still open on this side; the TCP connection goes.
        conn.abort();
        tokio::task::block_in_place(|| engine_has(&argus, 1, 1));
        drop((a, b, other));
    });
}

/// A request that does not decode ends the stream with its status (etcd's: see
/// [`undecodable_requests_end_the_stream_as_on_etcd`]); a compressed request, an unknown method and a
/// method other than POST get what tonic's generated servers answer: trailers-only
/// Unimplemented. No engine stream is left behind.
#[test]
fn failing_requests_end_the_stream_with_their_status() {
    let argus = Argus::start();
    let ep = argus.endpoint().to_string();
    runtime().block_on(async {
        let (client, _conn) = h2_connect(&ep).await;

        // Malformed: a length-delimited field longer than the message.
        let mut s = Raw::watch(&client, &ep).await;
        s.create("/m/", "", false);
        assert!(s.next().await.expect("created").created);
        s.send_raw(&[0x0a, 0x05, 0x01]);
        let (_, trailers) = s.rest().await;
        let (code, msg) = grpc_status(&trailers).expect("a status");
        assert_eq!(code, tonic::Code::Internal as i32, "{msg}");
        assert!(msg.starts_with("grpc: failed to unmarshal the received message "), "{msg}");
        tokio::task::block_in_place(|| engine_has(&argus, 0, 0));

        // Above the receive limit (etcd's: max request bytes + 512 KiB).
        let mut s = Raw::watch(&client, &ep).await;
        let big = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: vec![b'k'; 2560 << 10],
                ..Default::default()
            })),
        };
        let n = big.encoded_len();
        s.send(&big);
        let (_, trailers) = s.rest().await;
        let max = 1536 * 1024 + 512 * 1024;
        assert_eq!(
            grpc_status(&trailers),
            Some((
                tonic::Code::ResourceExhausted as i32,
                format!("grpc: received message larger than max ({n} vs. {max})")
            ))
        );
        tokio::task::block_in_place(|| engine_has(&argus, 0, 0));

        // Trailers-only answers.
        // (method, path, extra header, message): each answered Unimplemented.
        let gzip = [("grpc-encoding", "gzip")];
        let cases = [
            ("POST", "/etcdserverpb.Watch/Watch", &gzip[..], "Content is compressed with `gzip` which isn't supported"),
            ("POST", "/etcdserverpb.Watch/Nope", &[], ""),
            ("GET", "/etcdserverpb.Watch/Watch", &[], ""),
            ("PUT", "/etcdserverpb.Watch/Watch", &[], ""),
        ];
        let code = tonic::Code::Unimplemented as i32;
        for (method, path, extra, msg) in cases {
            let mut s = Raw::open(&client, &ep, method, path, extra).await;
            let got =
                grpc_status(&s.headers).unwrap_or_else(|| panic!("{method} {path}: no status in {:?}", s.headers));
            assert_eq!((got.0, got.1.as_str()), (code, msg), "{method} {path} {extra:?}");
            assert!(s.next().await.is_none(), "{method} {path}: no body");
        }
        tokio::task::block_in_place(|| engine_has(&argus, 0, 0));
        // The server still serves a Watch stream on this connection.
        let mut s = Raw::watch(&client, &ep).await;
        s.create("/ok/", "", false);
        assert!(s.next().await.expect("created").created);
    });
}

/// `req` as one gRPC message.
pub(crate) fn grpc_message(req: &pb::WatchRequest) -> Vec<u8> {
    let m = req.encode_to_vec();
    let mut b = Vec::with_capacity(5 + m.len());
    b.push(0);
    b.extend_from_slice(&(m.len() as u32).to_be_bytes());
    b.extend_from_slice(&m);
    b
}

/// What each kind of bad input on a Watch stream ends it with, as its first request:
/// (what, code, message). (After a valid create, etcd 3.4 sometimes sends the
/// `created` response's DATA before any HEADERS when the stream fails at once, which
/// the h2 client rightly refuses as a protocol error: grpc-go's race, not the
/// answer's.)
async fn bad_inputs(endpoint: &str) -> Vec<(&'static str, i32, String)> {
    let (client, _conn) = h2_connect(endpoint).await;
    let big = |mib: usize| {
        grpc_message(&pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: vec![b'k'; mib << 20],
                ..Default::default()
            })),
        })
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a field longer than the message", vec![0, 0, 0, 0, 3, 0x0a, 0x05, 0x01], false),
        ("the oneof with a varint", vec![0, 0, 0, 0, 2, 0x08, 0x01], false),
        ("compression flag 2", vec![2, 0, 0, 0, 1, 0], false),
        ("compression flag 1 without grpc-encoding", vec![1, 0, 0, 0, 1, 0], false),
        ("a message cut short by the end of the stream", vec![0, 0, 0, 0, 10, 1, 2, 3], true),
        ("text, not gRPC", b"hello world, this is not grpc\n".to_vec(), false),
        ("a 3 MiB message", big(3), false),
        ("a 9 MiB message", big(9), false),
    ];
    let mut out = Vec::new();
    for (what, bytes, end) in cases {
        let mut s = Raw::watch_lazy(&client, endpoint, bytes.into(), end).await;
        let (code, msg) = s.status().await;
        out.push((what, code, msg));
    }
    out
}

/// Bad input on a Watch stream ends it with etcd's status: INTERNAL for what does not
/// decode (a malformed message: grpc-go's "failed to unmarshal" with the decoder's
/// own words, which differ between Go and Rust; a bad compression flag, a message cut
/// short: grpc-go's messages), RESOURCE_EXHAUSTED for a message above the receive
/// limit, however large (grpc-go checks the length before anything else, so text
/// that is not gRPC at all reads as a huge message), all side by side with etcd.
#[test]
fn undecodable_requests_end_the_stream_as_on_etcd() {
    let etcd = std::thread::spawn(crate::common::Etcd::start);
    let argus = Argus::start();
    let etcd = etcd.join().expect("etcd");
    let (e, a) = runtime().block_on(async { tokio::join!(bad_inputs(&etcd.endpoint), bad_inputs(argus.endpoint())) });
    let show = |v: &[(&str, i32, String)]| v.iter().map(|(w, c, m)| format!("  {w}: {c} {m:?}\n")).collect::<String>();
    let unmarshal = "grpc: failed to unmarshal the received message ";
    for ((what, ecode, emsg), (_, acode, amsg)) in e.iter().zip(&a) {
        let diff = format!("{what}\n---- etcd ----\n{}---- argus ----\n{}", show(&e), show(&a));
        assert_eq!(acode, ecode, "{diff}");
        if emsg.starts_with(unmarshal) {
            assert!(amsg.starts_with(unmarshal), "{diff}");
        } else {
            assert_eq!(amsg, emsg, "{diff}");
        }
    }
    assert_eq!(e[0].1, tonic::Code::Internal as i32);
    assert_eq!(e[7].1, tonic::Code::ResourceExhausted as i32);
    engine_has(&argus, 0, 0);
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Anonymous resident memory of process `pid` (heap, not the mapped log), in bytes.
pub(crate) fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon")
        * 1024
}

/// The `argus` binary with a client that creates 100 watchers on one stream, then
/// stops reading (grants no more flow-control credit) while 200 puts of 4 KiB are
/// made: about 160 MiB of responses (8 KiB per event with prev_kv, per watcher:
/// below the size at which memo bytes are shared, so a server that queued them
/// would hold copies) that the client never takes. The server's heap (RssAnon,
/// sampled every few ms) grows by far less (the engine stream's bound, the HTTP/2
/// send buffer and one frame target), its watchers become victims, and when the
/// client resets the stream the engine stream closes.
#[test]
fn a_client_that_stops_reading_does_not_grow_server_memory() {
    const WATCHERS: usize = 100;
    const PUTS: usize = 200;
    const VALUE: usize = 4 << 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = ArgusProcess::start(dir.path(), &["--fsync", "never", "--metrics-listen", &metrics]);
    let pid = server.pid();
    let ep = server.endpoint();
    let gauge = |name: &str| http_get(&metrics, "/metrics").and_then(|p| metric(&p, name));
    runtime().block_on(async {
        let (client, _conn) = h2_connect(&ep).await;
        let mut s = Raw::watch(&client, &ep).await;
        for _ in 0..WATCHERS {
            s.create("/m/", "/m0", true);
        }
        let mut created = 0;
        while created < WATCHERS {
            created += usize::from(s.next().await.expect("created").created);
        }
        tokio::task::block_in_place(|| {
            poll("the watchers synced", || (gauge("argus_watch_synced_watchers")? == WATCHERS as f64).then_some(()))
        });
        // Warm the server's allocator with a few puts that are read.
        let mut kv = connect(&ep).await;
        let value = vec![b'w'; VALUE];
        for i in 0..4 {
            kv.put(format!("/m/{i}"), value.clone(), None).await.expect("put");
        }
        let mut seen: HashMap<i64, i64> = HashMap::new();
        let warm_last = 5;
        while seen.len() < WATCHERS || seen.values().any(|&r| r < warm_last) {
            let r = s.next().await.expect("warm-up events");
            if let Some(kv) = r.events.last().and_then(|e| e.kv.as_ref()) {
                seen.insert(r.watch_id, kv.mod_revision);
            }
        }
        let base = rss_anon(pid);

        // From here on the client reads nothing.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut max = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    max = max.max(rss_anon(pid));
                    std::thread::sleep(Duration::from_millis(3));
                }
                max
            })
        };
        let started = Instant::now();
        for i in 0..PUTS {
            let v = format!("{i}:{}", "x".repeat(VALUE));
            kv.put(format!("/m/{}", i % 10), v, None).await.expect("put");
        }
        let last = 5.0 + PUTS as f64;
        tokio::task::block_in_place(|| {
            poll("the notifier at the last put", || (gauge("argus_watch_notified_revision")? >= last).then_some(()));
            poll("victims", || (gauge("etcd_debugging_mvcc_slow_watcher_total")? >= 1.0).then_some(()));
        });
        // Time for anything queued to be encoded, if the server would.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let max = sampler.join().expect("sampler");
        let grew = max.saturating_sub(base);
        let unread = (PUTS * WATCHERS * 2 * VALUE) as u64;
        eprintln!(
            "{PUTS} puts in {:?}; server heap {} MiB before, at most {} MiB after (+{} MiB) with {} MiB of \
             responses unread",
            started.elapsed(),
            base >> 20,
            max >> 20,
            grew >> 20,
            unread >> 20
        );
        assert!(grew < 32 << 20, "the server's heap grew by {} MiB for a client that reads nothing", grew >> 20);

        // The client resets the stream: the engine stream is closed.
        s.send.send_reset(h2::Reason::CANCEL);
        tokio::task::block_in_place(|| {
            poll("no engine stream", || (gauge("etcd_debugging_mvcc_watch_stream_total")? == 0.0).then_some(()))
        });
    });
}
