//! The HTTP/JSON gateway, side by side with real etcd 3.4 through `curl`: every
//! path's answer (status, content type, body) is compared byte for byte after the
//! ids that differ by nature (cluster and member ids, Status's sizes and indexes)
//! are blanked; both servers start empty and get the same writes, so revisions
//! match as they are. Then what only Argus has: h2c, gRPC and HTTP on one port at
//! once, the end of an HTTP watch (client gone, server stopping), and a service
//! that answers UNIMPLEMENTED.
//!
//! The Lease, Cluster and Maintenance (but Status) tests need those services,
//! which Argus does not have yet: they are ignored until it does.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{connect, poll, Argus, ChildGuard, Etcd, PATIENCE};

/// One HTTP answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs `curl` on `http://{endpoint}{path}` with `args`: the status and headers
/// (from its header dump, where trailers would follow them) and the body.
fn curl(endpoint: &str, path: &str, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let dump = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "-m", "20", "-H", "Expect:", "-D"])
        .arg(&dump)
        .args(args)
        .arg(format!("http://{endpoint}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl (is it installed? scripts/test.sh installs it)");
    assert!(out.status.success(), "curl {args:?} {path}: {}", String::from_utf8_lossy(&out.stderr));
    let head = std::fs::read_to_string(&dump).expect("curl's header dump");
    let mut reply = parse_head(&head);
    reply.body = String::from_utf8(out.stdout).expect("a UTF-8 answer");
    reply
}

/// The status line and headers of a header dump (the last block: a `100 Continue`
/// comes first; trailers after the headers are left out).
fn parse_head(dump: &str) -> Reply {
    let block = dump
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or_else(|| panic!("no header block: {dump:?}"));
    let mut lines = block.lines();
    let status_line = lines.next().expect("a status line");
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply { status, headers, body: String::new() }
}

/// `POST path` with `body`.
fn post(endpoint: &str, path: &str, body: &str) -> Reply {
    curl(endpoint, path, &["-X", "POST", "--data-binary", body])
}

/// Base64 of `s` (the gateway's bytes fields).
fn b64(s: impl AsRef<[u8]>) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_ref().chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |a, (i, &b)| a | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() { T[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Blanks the values of `keys` (a quoted string or a bare token) in a JSON text.
fn blank(body: &str, keys: &[&str]) -> String {
    let mut out = body.to_string();
    for k in keys {
        let pat = format!("\"{k}\":");
        let mut from = 0;
        while let Some(i) = out[from..].find(&pat) {
            let start = from + i + pat.len();
            let end = if out[start..].starts_with('"') {
                start + 2 + out[start + 1..].find('"').expect("a closing quote")
            } else if out[start..].starts_with('[') {
                start + 1 + out[start..].find(']').expect("a closing bracket")
            } else {
                start + out[start..].find([',', '}']).expect("the end of a value")
            };
            out.replace_range(start..end, "\"_\"");
            from = start;
        }
    }
    out
}

/// The ids every header carries.
const IDS: &[&str] = &["cluster_id", "member_id"];

/// etcd and Argus, both empty.
struct Pair {
    etcd: Etcd,
    argus: Argus,
}

impl Pair {
    fn start() -> Pair {
        Pair { etcd: Etcd::start(), argus: Argus::start() }
    }

    /// The same request to both: (etcd's answer, Argus's).
    fn both(&self, f: impl Fn(&str) -> Reply) -> (Reply, Reply) {
        (f(&self.etcd.endpoint), f(self.argus.endpoint()))
    }

    /// `POST path body` to both; the answers must be the same (status, content
    /// type, CORS headers, body with `blanked` and the header ids blanked).
    fn same(&self, path: &str, body: &str, blanked: &[&str]) -> Reply {
        let (e, a) = self.both(|ep| post(ep, path, body));
        assert_same(&format!("POST {path} {body}"), &e, &a, blanked);
        a
    }

    /// As [`Pair::same`], but only the status and the error's code must agree (the
    /// words of a JSON type error are Go's in etcd, serde's in Argus).
    fn same_error_code(&self, path: &str, body: &str) {
        let (e, a) = self.both(|ep| post(ep, path, body));
        let what = format!("POST {path} {body}");
        assert_eq!(e.status, a.status, "{what}: status\netcd:  {}\nargus: {}", e.body, a.body);
        assert_eq!(e.json()["code"], a.json()["code"], "{what}\netcd:  {}\nargus: {}", e.body, a.body);
        assert_eq!(e.header("content-type"), a.header("content-type"), "{what}: content type");
    }
}

fn assert_same(what: &str, e: &Reply, a: &Reply, blanked: &[&str]) {
    let keys: Vec<&str> = IDS.iter().chain(blanked).copied().collect();
    let (eb, ab) = (blank(&e.body, &keys), blank(&a.body, &keys));
    assert_eq!((e.status, &eb), (a.status, &ab), "{what}\netcd:  {}\nargus: {}", e.body, a.body);
    for h in [
        "content-type",
        "grpc-metadata-content-type",
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "x-content-type-options",
        "allow",
        "location",
    ] {
        assert_eq!(e.header(h), a.header(h), "{what}: header {h}");
    }
}

#[test]
fn kv_paths_answer_as_etcd() {
    let p = Pair::start();
    let (a, b, c) = (b64("a"), b64("b"), b64("c"));
    let all = b64([0u8]);
    // Writes, with the names either way, integers as numbers or strings, enums by
    // name or number, and a value whose base64 has `+` and `/`.
    p.same("/v3/kv/put", &format!(r#"{{"key":"{a}","value":"{}"}}"#, b64("1")), &[]);
    p.same("/v3/kv/put", &format!(r#"{{"key":"{a}","value":"{}","prevKv":true}}"#, b64("2")), &[]);
    p.same("/v3/kv/put", &format!(r#"{{"key":"{b}","value":"{}","prev_kv":true}}"#, b64([0xfb, 0xff, 0x3e])), &[]);
    p.same("/v3beta/kv/put", &format!(r#"{{"key":"{c}","value":"{}","unknown_field":{{"x":1}}}}"#, b64("<&>")), &[]);
    p.same("/v3/kv/put", &format!(r#"{{"key":"{c}","ignore_value":true}}"#), &[]);
    // Reads.
    for body in [
        format!(r#"{{"key":"{a}"}}"#),
        format!(r#"{{"key":"{all}","range_end":"{all}"}}"#),
        format!(r#"{{"key":"{all}","range_end":"{all}","limit":"1"}}"#),
        format!(r#"{{"key":"{all}","rangeEnd":"{all}","limit":2,"sort_order":"DESCEND","sort_target":"MOD"}}"#),
        format!(r#"{{"key":"{all}","range_end":"{all}","sort_order":2,"sortTarget":4}}"#),
        format!(r#"{{"key":"{all}","range_end":"{all}","keys_only":true}}"#),
        format!(r#"{{"key":"{all}","range_end":"{all}","count_only":true}}"#),
        format!(r#"{{"key":"{a}","revision":"2"}}"#),
        format!(r#"{{"key":"{a}","revision":2,"serializable":true}}"#),
        format!(r#"{{"key":"{}"}}"#, b64("nothing")),
        format!(r#"{{"key":"{all}","range_end":"{all}","min_mod_revision":"3","max_create_revision":3}}"#),
        format!(r#"{{"key":"{a}","range_end":null}}"#),
    ] {
        p.same("/v3/kv/range", &body, &[]);
        p.same("/v3beta/kv/range", &body, &[]);
    }
    // Txns: both branches, every kind of op, compares on every target but LEASE.
    let txn = format!(
        r#"{{"compare":[{{"key":"{a}","result":"EQUAL","target":"VERSION","version":"2"}},
            {{"key":"{b}","target":"CREATE","result":"LESS","create_revision":100}},
            {{"key":"{a}","target":"MOD","result":"GREATER","mod_revision":"1"}},
            {{"key":"{c}","target":"VALUE","result":"NOT_EQUAL","value":"{}"}}],
          "success":[{{"request_put":{{"key":"{}","value":"{}","prev_kv":true}}}},
                     {{"requestRange":{{"key":"{all}","range_end":"{all}","limit":"2"}}}},
                     {{"request_delete_range":{{"key":"{b}","prev_kv":true}}}}],
          "failure":[{{"request_range":{{"key":"{a}"}}}}]}}"#,
        b64("x"),
        b64("d"),
        b64("4")
    );
    p.same("/v3/kv/txn", &txn, &[]);
    p.same("/v3/kv/txn", &txn, &[]); // now the compare fails: the failure branch
    p.same("/v3/kv/txn", "{}", &[]);
    // Deletes.
    p.same("/v3/kv/deleterange", &format!(r#"{{"key":"{}"}}"#, b64("nothing")), &[]);
    p.same("/v3/kv/deleterange", &format!(r#"{{"key":"{a}","range_end":"{}","prev_kv":true}}"#, b64("b")), &[]);
    // Compaction, then reads before it and after the end.
    p.same("/v3/kv/compaction", r#"{"revision":"3"}"#, &[]);
    p.same("/v3/kv/compaction", r#"{"revision":"2","physical":true}"#, &[]);
    p.same("/v3/kv/range", &format!(r#"{{"key":"{a}","revision":"2"}}"#), &[]);
    p.same("/v3/kv/range", &format!(r#"{{"key":"{a}","revision":1000}}"#), &[]);
    p.same("/v3/kv/compaction", r#"{"revision":1000}"#, &[]);
    // Requests etcd refuses.
    for (path, body) in [
        ("/v3/kv/put", r#"{"key":"","value":"eA=="}"#),
        ("/v3/kv/put", ""),
        ("/v3/kv/range", "{}"),
        ("/v3/kv/range", ""),
        ("/v3/kv/range", "null"),
        ("/v3/kv/range", "  \n"),
        ("/v3/kv/deleterange", "{}"),
        ("/v3/kv/put", r#"{"key":"eA==","value":"eA==","lease":"12345"}"#),
    ] {
        p.same(path, body, &[]);
    }
    // The gateway reads the first value of the body only.
    p.same("/v3/kv/range", &format!(r#"{{"key":"{c}"}} and then anything"#), &[]);
    // The answer is the same whatever content type the request names (but gRPC's).
    let (e, a) = p.both(|ep| {
        curl(ep, "/v3/kv/range", &["-X", "POST", "-H", "content-type: application/json", "--data-binary", "{}"])
    });
    assert_same("range with a JSON content type", &e, &a, &[]);
}

#[test]
fn bad_requests_and_unknown_paths_answer_as_etcd() {
    let p = Pair::start();
    let key = b64("k");
    // Syntax errors: Go's words.
    for body in [
        format!(r#"{{"key":"{key}""#),
        "xx".to_string(),
        format!(r#"{{"key":"{key}" "limit":1}}"#),
        format!(r#"{{"key":"{key}",}}"#),
        "{key:1}".to_string(),
        format!("{{\"key\"  \"{key}\"}}"),
        "[]".to_string(),
        "\"text\"".to_string(),
        "17".to_string(),
    ] {
        p.same("/v3/kv/range", &body, &[]);
    }
    // Type errors: INVALID_ARGUMENT as etcd, in serde's words.
    for body in [
        r#"{"key":"!!"}"#,
        r#"{"key":"eA==","limit":1.5}"#,
        r#"{"key":"eA==","limit":"many"}"#,
        r#"{"key":"eA==","sort_order":"NOPE"}"#,
        r#"{"key":"eA==","keys_only":"yes"}"#,
        r#"{"key":["eA=="]}"#,
    ] {
        p.same_error_code("/v3/kv/range", body);
    }
    // Paths and methods.
    for path in [
        "/v3/kv/rangex",
        "/v3/kv/range/",
        "/v3/",
        "/v3beta/",
        "/v3beta",
        "/v3alpha/kv/range",
        "/v2/keys",
        "/",
        "/v3/maintenance/hashkv",
        "/v3/maintenance/downgrade",
        "/v3/auth/status",
        "/v3/kv/lease/keepalive",
        "/v3",
    ] {
        p.same(path, "{}", &[]);
    }
    for (method, path) in [
        ("GET", "/v3/kv/range"),
        ("PUT", "/v3/kv/put"),
        ("DELETE", "/v3/kv/deleterange"),
        ("GET", "/v3/watch"),
        ("GET", "/v3beta/maintenance/status"),
        ("POST", "/version"),
        ("POST", "/health"),
        ("OPTIONS", "/v3/kv/range"),
        ("OPTIONS", "/anything"),
    ] {
        let (e, a) = p.both(|ep| curl(ep, path, &["-X", method]));
        assert_same(&format!("{method} {path}"), &e, &a, &[]);
    }
}

#[test]
fn version_health_and_status_answer_as_etcd() {
    let p = Pair::start();
    let (e, a) = p.both(|ep| curl(ep, "/version", &[]));
    assert_same("GET /version", &e, &a, &["etcdserver"]);
    let v = a.json();
    assert_eq!(v["etcdserver"], argus_server::ETCD_API_VERSION);
    assert_eq!(v["etcdcluster"], "3.4.0");
    let (e, a) = p.both(|ep| curl(ep, "/health", &[]));
    assert_same("GET /health", &e, &a, &[]);
    assert_eq!(a.body, r#"{"health":"true"}"#);
    let sizes = ["version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftAppliedIndex"];
    p.same("/v3/maintenance/status", "{}", &sizes);
    p.same("/v3beta/maintenance/status", "", &sizes);
}

/// A streaming `curl` (`POST`, the request body from its stdin as it is written),
/// whose output is read line by line.
struct Stream {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    /// A stream whose request body is written with [`Stream::send`] (`-T .`: curl
    /// reads its stdin without blocking, so it prints answers while it waits).
    fn open(endpoint: &str, path: &str, extra: &[&str]) -> Stream {
        Stream::spawn(endpoint, path, &[&["-T", "."], extra].concat())
    }

    /// A stream whose request body is `body`, sent at once.
    fn with_body(endpoint: &str, path: &str, body: &str, extra: &[&str]) -> Stream {
        Stream::spawn(endpoint, path, &[&["--data-binary", body], extra].concat())
    }

    fn spawn(endpoint: &str, path: &str, args: &[&str]) -> Stream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-X", "POST", "-H", "Expect:"])
            .args(args)
            .arg(format!("http://{endpoint}{path}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run curl");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream { child: ChildGuard(child), stdin, lines }
    }

    fn send(&mut self, msg: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").expect("write to curl");
        stdin.flush().expect("flush");
    }

    /// Ends the request body.
    fn close_body(&mut self) {
        self.stdin = None;
    }

    /// The next `n` lines.
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| self.lines.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("line {i} of {n} did not come")))
            .collect()
    }

    /// Whether a line comes within `wait`.
    fn quiet_for(&self, wait: Duration) -> bool {
        self.lines.recv_timeout(wait).is_err()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
}

/// Lines with the header ids blanked.
fn blank_all(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| blank(l, IDS)).collect()
}

/// Each watcher's lines (ids blanked), in the order they came: the order across
/// watchers is the server's own.
fn per_watcher(lines: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in blank_all(lines) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        let id = v["result"]["watch_id"].as_str().unwrap_or("0").to_string();
        out.entry(id).or_default().push(l);
    }
    out
}

/// Known differences of Argus's Watch service from etcd 3.4 (on gRPC too), blanked
/// in a watch line: a watcher canceled for compaction gets the current revision in
/// its header (etcd's has none) and a reason (etcd gives none).
fn known_watch_differences(line: &str) -> String {
    if !line.contains(r#""compact_revision""#) {
        return line.to_string();
    }
    let mut l = line.replace(r#","cancel_reason":"required revision has been compacted""#, "");
    let pat = r#""revision":""#;
    if let Some(i) = l.find(pat) {
        let value = i + pat.len();
        let mut end = value + l[value..].find('"').expect("a closing quote") + 1;
        if l[end..].starts_with(',') {
            end += 1;
        }
        l.replace_range(i..end, "");
    }
    l
}

#[test]
fn a_watch_over_http_sees_puts_and_deletes_and_a_cancel_as_etcd() {
    let p = Pair::start();
    let (k, other) = (b64("wk"), b64("other"));
    // etcd's HTTP/1.1 server answers only once the request body has ended (Go's
    // server reads the rest of a body before it writes a response's headers), so
    // the requests go in one body; the watch outlives it. Explicit ids: etcd numbers
    // its own watchers from 0, Argus from 1.
    let body = format!(
        r#"{{"create_request":{{"key":"{k}","watch_id":"7","prev_kv":true}}}}
           {{"createRequest":{{"key":"{k}","watchId":8,"filters":["NOPUT"]}}}}
           {{"create_request":{{"key":"{k}","range_end":"{}","watch_id":"9"}}}}
           {{"cancel_request":{{"watch_id":9}}}}"#,
        b64("wl")
    );
    let streams = [
        Stream::with_body(&p.etcd.endpoint, "/v3/watch", &body, &[]),
        Stream::with_body(p.argus.endpoint(), "/v3/watch", &body, &[]),
    ];
    let mut got: Vec<Vec<String>> = streams.iter().map(|s| s.take(4)).collect();
    for (path, body) in [
        ("/v3/kv/put", format!(r#"{{"key":"{k}","value":"{}"}}"#, b64("v1"))),
        ("/v3/kv/put", format!(r#"{{"key":"{other}","value":"{}"}}"#, b64("x"))),
        ("/v3/kv/put", format!(r#"{{"key":"{k}","value":"{}"}}"#, b64("v2"))),
        ("/v3/kv/deleterange", format!(r#"{{"key":"{k}"}}"#)),
        ("/v3/kv/txn", format!(r#"{{"success":[{{"request_put":{{"key":"{k}","value":"{}"}}}}]}}"#, b64("<v3>"))),
        ("/v3/kv/deleterange", format!(r#"{{"key":"{k}","range_end":"{}","prev_kv":true}}"#, b64("wl"))),
    ] {
        p.same(path, &body, &[]);
    }
    // 7: put, put, delete, put, delete; 8: delete, delete.
    for (s, out) in streams.iter().zip(&mut got) {
        out.extend(s.take(7));
    }
    assert_eq!(per_watcher(&got[0]), per_watcher(&got[1]), "etcd's lines, then Argus's");
    assert!(got[1].iter().any(|l| l.contains(r#""prev_kv""#) && l.contains(r#""type":"DELETE""#)), "{:#?}", got[1]);
    assert!(got[1].iter().any(|l| l.contains(r#""watch_id":"9","canceled":true"#)), "{:#?}", got[1]);
    for s in &streams {
        assert!(s.quiet_for(Duration::from_millis(200)), "nothing more");
    }
}

/// What etcd's HTTP/1.1 server cannot do: a watch whose requests come while it
/// runs (over HTTP/1.1 and h2c), in etcd's JSON.
#[test]
fn a_watch_over_http_takes_requests_while_it_runs() {
    let argus = Argus::start();
    let ep = argus.endpoint().to_string();
    let h = |rev: u64| {
        format!(
            r#"{{"cluster_id":"{}","member_id":"{}","revision":"{rev}","raft_term":"2"}}"#,
            0xa5a5_0a9d_5e70_0001u64, 0x8e9e_05c5_2164_694du64
        )
    };
    for (i, proto) in ["--http1.1", "--http2-prior-knowledge"].into_iter().enumerate() {
        let k = b64(format!("k{i}"));
        let base = 3 * i as u64 + 1;
        let mut w = Stream::open(&ep, "/v3/watch", &[proto]);
        w.send(&format!(r#"{{"create_request":{{"key":"{k}","watch_id":5,"prev_kv":true}}}}"#));
        assert_eq!(w.take(1), [format!(r#"{{"result":{{"header":{},"watch_id":"5","created":true}}}}"#, h(base))]);
        post(&ep, "/v3/kv/put", &format!(r#"{{"key":"{k}","value":"{}"}}"#, b64("v")));
        post(&ep, "/v3/kv/deleterange", &format!(r#"{{"key":"{k}"}}"#));
        let kv = format!(
            r#""key":"{k}","create_revision":"{}","mod_revision":"{}","version":"1","value":"{}""#,
            base + 1,
            base + 1,
            b64("v")
        );
        assert_eq!(
            w.take(2),
            [
                format!(r#"{{"result":{{"header":{},"watch_id":"5","events":[{{"kv":{{{kv}}}}}]}}}}"#, h(base + 1)),
                format!(
                    r#"{{"result":{{"header":{},"watch_id":"5","events":[{{"type":"DELETE","kv":{{"key":"{k}","mod_revision":"{}"}},"prev_kv":{{{kv}}}}}]}}}}"#,
                    h(base + 2),
                    base + 2
                ),
            ]
        );
        w.send(r#"{"progress_request":{}}"#);
        assert_eq!(w.take(1), [format!(r#"{{"result":{{"header":{},"watch_id":"-1"}}}}"#, h(base + 2))]);
        w.send(r#"{"cancel_request":{"watch_id":"5"}}"#);
        assert_eq!(w.take(1), [format!(r#"{{"result":{{"header":{},"watch_id":"5","canceled":true}}}}"#, h(base + 2))]);
        post(&ep, "/v3/kv/put", &format!(r#"{{"key":"{k}","value":"{}"}}"#, b64("after")));
        assert!(w.quiet_for(Duration::from_millis(200)), "nothing after the cancel");
        // The end of the body leaves the stream open.
        w.close_body();
        assert!(w.quiet_for(Duration::from_millis(200)));
        assert!(w.running(), "{proto}: the watch ended with its request body");
    }
}

#[test]
fn a_watch_request_body_read_at_once_answers_as_etcd() {
    let p = Pair::start();
    let k = b64("k");
    for i in 1..=3 {
        p.same("/v3/kv/put", &format!(r#"{{"key":"{k}","value":"{}"}}"#, b64(i.to_string())), &[]);
    }
    p.same("/v3/kv/deleterange", &format!(r#"{{"key":"{k}"}}"#), &[]);
    p.same("/v3/kv/compaction", r#"{"revision":"2"}"#, &[]);
    // History from 3 (with prev_kv), a refused create (empty range), one from
    // before the compaction (created, then canceled with compact_revision), one of a
    // whole range, a create reusing a live id, and garbage: etcd stops reading at
    // it, without ending the watch.
    let body = format!(
        r#"{{"create_request":{{"key":"{k}","start_revision":"3","watch_id":1,"prev_kv":true}}}}
           {{"create_request":{{"key":"{k}","range_end":"{k}","watch_id":2}}}}
           {{"create_request":{{"key":"{k}","start_revision":1,"watch_id":3}}}}
           {{"create_request":{{"key":"AA==","range_end":"AA==","start_revision":2,"watch_id":4,"filters":[0]}}}}
           {{"create_request":{{"key":"{k}","watch_id":1}}}}
           garbage {{"create_request":{{"key":"{k}","watch_id":9}}}}"#
    );
    let mut streams = [
        Stream::with_body(&p.etcd.endpoint, "/v3/watch", &body, &[]),
        Stream::with_body(p.argus.endpoint(), "/v3/watch", &body, &[]),
    ];
    let lines: Vec<Vec<String>> =
        streams.iter().map(|s| s.take(8).iter().map(|l| known_watch_differences(l)).collect()).collect();
    assert_eq!(per_watcher(&lines[0]), per_watcher(&lines[1]), "etcd's, then Argus's");
    for s in &mut streams {
        assert!(s.quiet_for(Duration::from_millis(300)), "nothing after the garbage is read");
        assert!(s.running());
    }
    // A first message that does not decode: 500, code UNKNOWN, before anything.
    for body in ["xx", r#"{"create_request":{"key":"!!"}}"#, r#"{"create_request":"#, "[1]"] {
        let (e, a) = p.both(|ep| post(ep, "/v3/watch", body));
        assert_eq!(e.status, 500, "{body}: {}", e.body);
        if body.contains("!!") || body == "[1]" {
            assert_eq!((e.status, e.json()["code"].clone()), (a.status, a.json()["code"].clone()), "{body}");
        } else {
            assert_same(&format!("watch {body}"), &e, &a, &[]);
        }
    }
}

#[test]
fn oversized_requests_are_refused_as_etcd() {
    let p = Pair::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // Above --max-request-bytes (1.5 MiB): etcd's "request is too large"; above the
    // gRPC receive limit (2 MiB): grpc-go's words, with the message's size.
    for (len, status) in [(1600 * 1024, 400), (2100 * 1024, 429)] {
        let file = dir.path().join(format!("put-{len}.json"));
        std::fs::write(&file, format!(r#"{{"key":"{}","value":"{}"}}"#, b64("big"), b64(vec![b'v'; len])))
            .expect("write the request");
        let arg = format!("@{}", file.display());
        let (e, a) = p.both(|ep| curl(ep, "/v3/kv/put", &["-X", "POST", "--data-binary", &arg]));
        assert_same(&format!("a put of {len} bytes"), &e, &a, &[]);
        assert_eq!(a.status, status, "{}", a.body);
    }
}

/// The lease paths side by side; `TTL`s left are blanked (a second may pass).
#[test]
fn lease_paths_answer_as_etcd() {
    let p = Pair::start();
    p.same("/v3/lease/grant", r#"{"TTL":60,"ID":1234}"#, &[]);
    p.same("/v3/lease/grant", r#"{"TTL":"30","ID":"99"}"#, &[]);
    p.same("/v3/lease/grant", r#"{"TTL":60,"ID":1234}"#, &[]);
    p.same("/v3/kv/put", &format!(r#"{{"key":"{}","value":"eA==","lease":"1234"}}"#, b64("lk")), &[]);
    p.same("/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("lk")), &[]);
    for path in ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"] {
        p.same(path, r#"{"ID":1234,"keys":true}"#, &["TTL"]);
        p.same(path, r#"{"ID":"5"}"#, &[]);
    }
    for path in ["/v3/lease/leases", "/v3/kv/lease/leases"] {
        p.same(path, "{}", &[]);
    }
    // Keep-alives: a stream of answers, ended by the end of the body.
    let (e, a) = p.both(|ep| post(ep, "/v3/lease/keepalive", r#"{"ID":1234} {"ID":"99"} {"ID":5}"#));
    assert_same("keepalive", &e, &a, &["TTL"]);
    assert_eq!(a.body.lines().count(), 3, "{}", a.body);
    p.same("/v3/lease/keepalive", "xx", &[]);
    p.same("/v3/lease/revoke", r#"{"ID":1234}"#, &[]);
    p.same("/v3/kv/lease/revoke", r#"{"ID":99}"#, &[]);
    p.same("/v3/lease/revoke", r#"{"ID":99}"#, &[]);
    p.same("/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("lk")), &[]);
}

#[test]
fn cluster_paths_answer_as_etcd() {
    let p = Pair::start();
    // Argus has no peers: its one member lists no peer URLs (etcd's lists its own).
    let (mut e, a) = p.both(|ep| post(ep, "/v3/cluster/member/list", "{}"));
    let at = e.body.find(r#""peerURLs":["#).expect("etcd lists peer URLs");
    let end = at + e.body[at..].find("],").expect("the end of the list") + 2;
    e.body.replace_range(at..end, "");
    assert_same("POST /v3/cluster/member/list", &e, &a, &["ID", "name", "clientURLs"]);
    assert_eq!(a.json()["members"][0]["clientURLs"][0], format!("http://{}", p.argus.endpoint()));
    // Changing the membership makes no sense for one server: Argus answers those
    // Unimplemented, naming the method, in etcd's error body (501, code 12).
    for (path, method) in [
        ("/v3/cluster/member/remove", "Cluster.MemberRemove"),
        ("/v3/cluster/member/update", "Cluster.MemberUpdate"),
        ("/v3/cluster/member/promote", "Cluster.MemberPromote"),
        ("/v3/cluster/member/add", "Cluster.MemberAdd"),
    ] {
        let r = post(p.argus.endpoint(), path, r#"{"ID":"1"}"#);
        assert_eq!((r.status, r.json()["code"].as_i64()), (501, Some(12)), "{path}: {}", r.body);
        assert!(r.json()["message"].as_str().is_some_and(|m| m.contains(method)), "{path}: {}", r.body);
    }
}

#[test]
fn maintenance_paths_answer_as_etcd() {
    let p = Pair::start();
    p.same("/v3/maintenance/alarm", r#"{"action":"GET"}"#, &[]);
    p.same("/v3/maintenance/defragment", "{}", &[]);
    p.same("/v3/maintenance/hash", "{}", &["hash"]);
    p.same("/v3/maintenance/transfer-leadership", r#"{"targetID":"1"}"#, &[]);
    // To the one member itself (the leader): a success with a header, on both.
    let (e, a) = p.both(|ep| {
        let id = post(ep, "/v3/maintenance/status", "{}").json()["header"]["member_id"].as_str().unwrap().to_string();
        post(ep, "/v3/maintenance/transfer-leadership", &format!(r#"{{"targetID":"{id}"}}"#))
    });
    assert_same("transfer-leadership to itself", &e, &a, &[]);
    let (e, a) = p.both(|ep| post(ep, "/v3/maintenance/snapshot", "{}"));
    assert_eq!((e.status, e.header("content-type")), (a.status, a.header("content-type")));
    assert!(a.body.lines().all(|l| l.starts_with(r#"{"result":{"#)), "{}", &a.body[..a.body.len().min(200)]);
}

#[test]
fn a_service_that_is_not_implemented_answers_etcds_error_body() {
    let argus = Argus::start();
    for path in ["/v3/cluster/member/add", "/v3/cluster/member/remove", "/v3beta/cluster/member/update"] {
        let r = post(argus.endpoint(), path, "{}");
        assert_eq!(r.status, 501, "{path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["code"], 12, "{}", r.body);
        assert_eq!(v["error"], v["message"]);
        assert!(v["error"].as_str().is_some_and(|m| m.starts_with("argus does not implement Cluster.")), "{}", r.body);
        assert_eq!(v.as_object().map(|o| o.len()), Some(3), "{}", r.body);
    }
}

#[test]
fn grpc_and_http_share_the_port_over_http1_and_h2c() {
    let argus = Argus::start();
    let ep = argus.endpoint().to_string();
    let k = b64("shared");
    // An HTTP watch stays open while a gRPC client writes and reads.
    let w = Stream::with_body(&ep, "/v3/watch", &format!(r#"{{"create_request":{{"key":"{k}"}}}}"#), &[]);
    assert!(w.take(1)[0].contains(r#""created":true"#));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = connect(&ep).await;
        c.put("shared", "from gRPC", None).await.expect("a gRPC put");
        let got = c.get("shared", None).await.expect("a gRPC get");
        assert_eq!(got.kvs()[0].value(), b"from gRPC");
    });
    let ev = w.take(1);
    assert!(ev[0].contains(&b64("from gRPC")), "{ev:?}");
    // h2c (prior knowledge), unary and streaming; and HTTP/1.1.
    let h2 = curl(
        &ep,
        "/v3/kv/range",
        &["--http2-prior-knowledge", "-X", "POST", "--data-binary", &format!(r#"{{"key":"{k}"}}"#)],
    );
    assert_eq!(h2.status, 200, "{}", h2.body);
    assert!(h2.body.contains(&b64("from gRPC")), "{}", h2.body);
    let h1 = curl(&ep, "/v3/kv/range", &["--http1.1", "-X", "POST", "--data-binary", &format!(r#"{{"key":"{k}"}}"#)]);
    assert_eq!(h1.body, h2.body);
    let from_2 = format!(r#"{{"create_request":{{"key":"{k}","start_revision":2}}}}"#);
    let s = Stream::with_body(&ep, "/v3/watch", &from_2, &["--http2-prior-knowledge"]);
    let lines = s.take(2);
    assert!(lines[1].contains(&b64("from gRPC")), "{lines:?}");
    // etcdctl at the same time.
    let out = crate::common::etcdctl(&ep, &["get", "shared"], "");
    assert_eq!(out.stdout, "shared\nfrom gRPC\n", "{out:?}");
}

#[test]
fn an_http_watch_ends_with_its_client_and_with_the_server() {
    let argus = Argus::start();
    let ep = argus.endpoint().to_string();
    let body = r#"{"create_request":{"key":"YQ=="}} {"create_request":{"key":"Yg=="}}"#;
    let mut w = Stream::with_body(&ep, "/v3/watch", body, &[]);
    w.take(2);
    assert_eq!(argus.hub.metrics().streams, 1);
    // The client goes: the stream and its watchers go.
    w.child.kill();
    poll("the watch stream to close", || (argus.hub.metrics().streams == 0).then_some(()));
    assert_eq!(argus.hub.metrics().watchers, 0);
    // The server stops: the stream ends with UNAVAILABLE, as grpc-gateway writes a
    // stream's error.
    let w = Stream::with_body(&ep, "/v3/watch", body, &[]);
    w.take(2);
    let started = Instant::now();
    drop(argus);
    let last = w.take(1).pop().expect("a line");
    let v: serde_json::Value = serde_json::from_str(&last).expect("JSON");
    assert_eq!(v["error"]["grpc_code"], 14, "{last}");
    assert_eq!(v["error"]["http_code"], 503);
    assert_eq!(v["error"]["http_status"], "Service Unavailable");
    assert_eq!(v["error"]["message"], argus_server::watch::SHUTTING_DOWN);
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn a_refused_watch_stream_answers_etcds_error_body() {
    let argus = Argus::start_with(|c| c.max_streams = 0);
    let r = post(argus.endpoint(), "/v3/watch", r#"{"create_request":{"key":"YQ=="}}"#);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["code"], 8);
    assert_eq!(r.json()["error"], "argus: too many watch streams (limit 0)");
}
