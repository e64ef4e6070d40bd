//! The harness of the conformance tests: servers (Argus in-process or as the built
//! `argus` binary, real etcd 3.4 as a child process), `etcdctl`, a `/metrics`
//! scraper, a model of the writes made (a [`History`] for the guarantee checker),
//! and the conversion of what the `etcd-client` crate received into the engine's
//! watch types for [`check::Observed`].
//!
//! Every child process is killed by a `Drop` guard (by its own pid), so a failing
//! test leaves nothing running; every server gets a fresh temporary data directory
//! and listens on 127.0.0.1 only.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use argus_engine::check::{self, History, Observed};
use argus_engine::store::{KeyValue, Store};
use argus_engine::watch::{
    Event, EventKind, Filters, RevisionBatch, RevisionEvents, WatchHub, WatchRequest, WatchResponse,
};
use argus_server::ServerConfig;
use etcd_client::proto::PbWatchResponse;
use etcd_client::{Client, ConnectOptions, WatchFilterType, WatchOptions, WatchResponseStream};

/// How long any single wait of the harness may take before the test fails (generous:
/// the suite shares two cores with whatever else the machine runs).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `f` every 10 ms until it answers `Some`, or panics after [`PATIENCE`].
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port free on 127.0.0.1 right now (bound and released; the tests that pass it to
/// a child retry if it was taken in between).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

// ---------------------------------------------------------------------------------
// Argus in-process
// ---------------------------------------------------------------------------------

/// Argus served in this process by [`argus_server::serve`] on 127.0.0.1:0, on a
/// runtime of its own thread; stopped (gracefully, with a bounded wait) on drop.
pub struct Argus {
    /// The store served.
    pub store: Store,
    /// The watch engine.
    pub hub: Arc<WatchHub>,
    /// `/metrics`, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    endpoint: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Argus {
    /// A server with the default configuration (fsync `always`, etcd's limits).
    pub fn start() -> Argus {
        Self::start_with(|_| {})
    }

    /// A server whose configuration `tune` adjusts (listen address and data
    /// directory are set by the harness).
    pub fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> Argus {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().join("data"),
            ..ServerConfig::default()
        };
        tune(&mut cfg);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("argus-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                let mut graceful = stop_rx.clone();
                let mut hard = stop_rx;
                let result = rt.block_on(async move {
                    let serve = argus_server::serve(
                        cfg,
                        async move {
                            let _ = graceful.wait_for(|s| *s).await;
                        },
                        move |r| {
                            let _ = ready_tx.send((r.addr, r.store.clone(), Arc::clone(&r.hub), r.metrics_addr));
                        },
                    );
                    // Graceful shutdown waits for clients to hang up; a test that
                    // still holds a stream must not hang on it.
                    tokio::select! {
                        r = serve => r,
                        _ = async {
                            let _ = hard.wait_for(|s| *s).await;
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        } => Ok(()),
                    }
                });
                if let Err(e) = result {
                    eprintln!("argus (in-process) failed: {e}");
                }
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn server thread");
        let (addr, store, hub, metrics_addr) =
            ready_rx.recv_timeout(PATIENCE).expect("the in-process server did not become ready");
        Argus {
            store,
            hub,
            metrics_addr,
            endpoint: addr.to_string(),
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `127.0.0.1:port`, as `etcdctl --endpoints` and `etcd-client` take it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The history of everything written so far, from the store's own log.
    pub fn history(&self) -> History {
        let rev = self.store.current_revision();
        History::from_log(&self.store.log().reader(), 1, rev).expect("read the log")
    }
}

impl Drop for Argus {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------
// Child processes: the argus binary and etcd
// ---------------------------------------------------------------------------------

/// A child process killed (SIGKILL, by its pid) and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the built `argus` binary as `argus <args[0]> --listen 127.0.0.1:0
/// --data-dir <data_dir> <args[1..]...>` with `RUST_LOG` = `filter`, and waits up
/// to `patience` for the address it reports on stderr. Its stderr keeps being
/// drained into [`ArgusProcess::stderr`] (errors and `argus:` lines are echoed).
/// If it reports none in time it is killed, and the error holds its exit status
/// and stderr.
pub fn spawn_argus(args: &[&str], data_dir: &Path, filter: &str, patience: Duration) -> Result<ArgusProcess, String> {
    let (subcommand, extra) = args.split_first().expect("a subcommand");
    let mut child = Command::new(env!("CARGO_BIN_EXE_argus"))
        .arg(subcommand)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the argus binary");
    let stderr = child.stderr.take().expect("stderr");
    let mut child = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = Arc::clone(&lines);
    let label = format!("[argus {subcommand}]");
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("argus: serving etcd v3 API on ") {
                let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            } else if line.contains("ERROR") || line.starts_with("argus: ") {
                eprintln!("{label} {line}");
            }
            kept.lock().unwrap().push(line);
        }
    });
    match rx.recv_timeout(patience) {
        Ok(addr) => Ok(ArgusProcess { addr: addr.parse().expect("the reported address"), stderr: lines, child }),
        Err(_) => {
            let status = child.0.try_wait().ok().flatten();
            child.kill();
            Err(format!(
                "`argus {}` did not report its address (exit status {status:?}); its stderr:\n{}",
                args.join(" "),
                lines.lock().unwrap().join("\n")
            ))
        }
    }
}

/// The built `argus` binary serving a data directory.
pub struct ArgusProcess {
    /// The gRPC address it printed.
    pub addr: SocketAddr,
    /// Every line it wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub(crate) child: ChildGuard,
}

impl ArgusProcess {
    /// Runs `argus serve --listen 127.0.0.1:0 --data-dir <dir> <extra...>` and waits
    /// for the address it reports on stderr (its stderr keeps being drained).
    pub fn start(data_dir: &Path, extra: &[&str]) -> ArgusProcess {
        Self::start_logging(data_dir, extra, "warn")
    }

    /// As [`ArgusProcess::start`], with `RUST_LOG` set to `filter`.
    pub fn start_logging(data_dir: &Path, extra: &[&str], filter: &str) -> ArgusProcess {
        Self::start_subcommand("serve", data_dir, extra, filter)
    }

    /// As [`ArgusProcess::start_logging`], for `argus <subcommand>` (`serve`,
    /// `mirror`).
    pub fn start_subcommand(subcommand: &str, data_dir: &Path, extra: &[&str], filter: &str) -> ArgusProcess {
        let mut args = vec![subcommand];
        args.extend_from_slice(extra);
        spawn_argus(&args, data_dir, filter, PATIENCE).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        self.child.kill();
    }

    /// Sends SIGTERM (a graceful stop) and waits up to `within` for the process to
    /// exit; its exit status, or `None` if it is still running (it is then killed).
    pub fn terminate(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        terminate(&mut self.child, within)
    }
}

/// A real etcd 3.4 (`/usr/bin/etcd`), single member, on 127.0.0.1 with free ports and
/// a fresh data directory.
pub struct Etcd {
    /// `127.0.0.1:port` of the client listener.
    pub endpoint: String,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it serves `/health`.
    pub fn start() -> Etcd {
        Self::start_with("http", &[], |endpoint| {
            http_get(endpoint, "/health").is_some_and(|b| b.contains("\"health\":\"true\""))
        })
    }

    /// Starts etcd with its client URL on `scheme` (`http` or `https`) and `extra`
    /// flags, and waits until `healthy(endpoint)` says it serves; retries on fresh
    /// ports when it exits first (a port taken meanwhile).
    pub fn start_with(scheme: &str, extra: &[String], healthy: impl Fn(&str) -> bool) -> Etcd {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (client, peer) = (free_port(), free_port());
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
            let c = format!("{scheme}://127.0.0.1:{client}");
            let p = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .arg("--name")
                .arg("default")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
                .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
                .arg("--initial-cluster")
                .arg(format!("default={p}"))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn etcd (is etcd 3.4 installed? scripts/test.sh installs it)");
            let mut child = ChildGuard(child);
            let endpoint = format!("127.0.0.1:{client}");
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Ok(Some(_)) = child.0.try_wait() {
                    break; // exited: most likely a port was taken meanwhile; retry
                }
                if healthy(&endpoint) {
                    return Etcd { endpoint, child, _dir: dir };
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.kill();
            last_log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
        }
        panic!("etcd did not start; its log:\n{last_log}");
    }
}

/// SIGTERM to `child`, then up to `within` for it to exit (else SIGKILL, `None`).
pub fn terminate(child: &mut ChildGuard, within: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.0.id();
    let ok = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill();
    None
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.child.kill();
    }
}

// ---------------------------------------------------------------------------------
// etcdctl, HTTP
// ---------------------------------------------------------------------------------

/// What one `etcdctl` run printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error without the client library's retry log lines (JSON lines with
    /// timestamps and random client ids; the `Error: ...` line that follows them is
    /// kept).
    pub stderr: String,
    /// Exit status.
    pub code: i32,
}

/// The `etcdctl` command line for `endpoint` (API v3, generous timeouts).
pub fn etcdctl_command(endpoint: &str) -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=20s")
        .arg("--dial-timeout=10s");
    c
}

/// Keeps the lines of etcdctl's stderr that are its own output.
pub fn filter_stderr(s: &str) -> String {
    s.lines().filter(|l| !l.starts_with("{\"level\":")).map(|l| format!("{l}\n")).collect()
}

/// Runs `etcdctl <args>` against `endpoint`, feeding `stdin`.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: &str) -> CtlOutput {
    let mut child = etcdctl_command(endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl (is etcdctl 3.4 installed? scripts/test.sh installs it)");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("etcdctl output");
    let _ = writer.join();
    CtlOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: filter_stderr(&String::from_utf8_lossy(&out.stderr)),
        code: out.status.code().unwrap_or(-1),
    }
}

/// `GET path` over HTTP/1.0 from `addr`; the body if the status is 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.lines().next()?.contains(" 200 ").then(|| body.to_string())
}

/// The value of an unlabelled metric in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------
// etcd-client
// ---------------------------------------------------------------------------------

/// An `etcd-client` connected to `endpoint`.
pub async fn connect(endpoint: &str) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(10));
    Client::connect([endpoint], Some(opts)).await.expect("etcd-client connects")
}

/// The header revision of a response header.
pub fn rev_of(h: Option<&etcd_client::ResponseHeader>) -> u64 {
    h.expect("a response header").revision() as u64
}

/// One watcher: what the test asks for, as `etcd-client` options and as the engine's
/// request (for the checker).
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The watch id to ask for (etcd 3.4 honours `watch_id`).
    pub id: i64,
    /// Key, or the start of the range.
    pub key: Vec<u8>,
    /// Range end (`""` one key, `"\0"` from key).
    pub range_end: Vec<u8>,
    /// Start revision (0 = now).
    pub start: i64,
    /// NOPUT filter.
    pub no_put: bool,
    /// NODELETE filter.
    pub no_delete: bool,
    /// prev_kv.
    pub prev_kv: bool,
    /// progress_notify.
    pub progress_notify: bool,
    /// fragment.
    pub fragment: bool,
}

impl Spec {
    /// A watcher of one key.
    pub fn key(id: i64, key: &str) -> Spec {
        Spec { id, key: key.into(), ..Default::default() }
    }

    /// A watcher of a prefix.
    pub fn prefix(id: i64, prefix: &str) -> Spec {
        Spec {
            id,
            key: prefix.into(),
            range_end: argus_engine::store::prefix_end(prefix.as_bytes()),
            ..Default::default()
        }
    }

    /// A watcher of `[key, end)`.
    pub fn range(id: i64, key: &str, end: &str) -> Spec {
        Spec { id, key: key.into(), range_end: end.into(), ..Default::default() }
    }

    /// Sets the start revision.
    pub fn from(mut self, rev: i64) -> Spec {
        self.start = rev;
        self
    }

    /// Asks for prev_kv.
    pub fn prev(mut self) -> Spec {
        self.prev_kv = true;
        self
    }

    /// The etcd-client options.
    pub fn options(&self) -> WatchOptions {
        let mut o = WatchOptions::new().with_watch_id(self.id).with_start_revision(self.start);
        if !self.range_end.is_empty() {
            o = o.with_range(self.range_end.clone());
        }
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(WatchFilterType::NoPut);
        }
        if self.no_delete {
            filters.push(WatchFilterType::NoDelete);
        }
        if !filters.is_empty() {
            o = o.with_filters(filters);
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        if self.progress_notify {
            o = o.with_progress_notify();
        }
        if self.fragment {
            o = o.with_fragment();
        }
        o
    }

    /// The engine's request (what the checker checks against).
    pub fn request(&self) -> WatchRequest {
        WatchRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            start_revision: self.start,
            filters: Filters { no_put: self.no_put, no_delete: self.no_delete },
            prev_kv: self.prev_kv,
            progress_notify: self.progress_notify,
            watch_id: self.id,
        }
    }
}

/// A watch stream whose responses a background task collects.
pub struct Collected {
    /// The request half (create / cancel / progress).
    pub sender: etcd_client::WatchRequestSender,
    /// Every response received, in order, as on the wire.
    pub responses: Arc<Mutex<Vec<PbWatchResponse>>>,
    /// The error the stream ended with, if any.
    pub error: Arc<Mutex<Option<String>>>,
    /// The watchers created on it.
    pub specs: Vec<Spec>,
    task: tokio::task::JoinHandle<()>,
}

impl Collected {
    /// Opens a stream on `client` with the watchers `specs` (in order, on the same
    /// stream) and starts collecting.
    pub async fn open(client: &Client, specs: &[Spec]) -> Collected {
        Self::open_on(client.watch_client(), specs).await
    }

    /// As [`Collected::open`], on a given watch client.
    pub async fn open_on(mut wc: etcd_client::WatchClient, specs: &[Spec]) -> Collected {
        let first = specs.first().expect("at least one watcher");
        let stream = wc.watch(first.key.clone(), Some(first.options())).await.expect("open a watch stream");
        let (mut sender, receiver) = stream.split();
        for s in &specs[1..] {
            sender.watch(s.key.clone(), Some(s.options())).await.expect("create a watcher");
        }
        let mut c = Self::collect(sender, receiver);
        c.specs = specs.to_vec();
        c
    }

    /// Collects `receiver` in the background.
    pub fn collect(sender: etcd_client::WatchRequestSender, mut receiver: WatchResponseStream) -> Collected {
        let responses: Arc<Mutex<Vec<PbWatchResponse>>> = Arc::default();
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let (r, e) = (Arc::clone(&responses), Arc::clone(&error));
        let task = tokio::spawn(async move {
            loop {
                match receiver.message().await {
                    Ok(Some(m)) => r.lock().unwrap().push(m.0),
                    Ok(None) => break,
                    Err(err) => {
                        *e.lock().unwrap() = Some(err.to_string());
                        break;
                    }
                }
            }
        });
        Collected { sender, responses, error, specs: Vec::new(), task }
    }

    /// A copy of the responses so far.
    pub fn snapshot(&self) -> Vec<PbWatchResponse> {
        self.responses.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the responses so far.
    pub async fn wait(&self, what: &str, pred: impl Fn(&[PbWatchResponse]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if pred(&self.responses.lock().unwrap()) {
                return;
            }
            if let Some(e) = self.error.lock().unwrap().clone() {
                panic!("watch stream failed while waiting for {what}: {e}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received:\n{}",
                describe_wire(&self.responses.lock().unwrap())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every watcher in `ids` saw an event at `rev` or later (or a
    /// progress notification at or above it).
    pub async fn wait_rev(&self, ids: &[i64], rev: u64) {
        let ids = ids.to_vec();
        self.wait(&format!("watchers {ids:?} to reach revision {rev}"), move |rs| {
            ids.iter().all(|&id| reached(rs, id, rev))
        })
        .await;
    }

    /// Whether the stream has ended (the server closed it or failed).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether watcher `id` has seen revision `rev`: an event at `>= rev` in a complete
/// response (not a fragment before the last), or a progress response (its own or
/// stream-wide) at `>= rev`.
pub fn reached(rs: &[PbWatchResponse], id: i64, rev: u64) -> bool {
    rs.iter().filter(|r| !r.fragment).any(|r| {
        let hrev = r.header.as_ref().map_or(0, |h| h.revision as u64);
        let progress = !r.created && !r.canceled && r.events.is_empty() && (r.watch_id == id || r.watch_id == -1);
        (r.watch_id == id && r.events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision as u64 >= rev)))
            || (progress && hrev >= rev)
    })
}

/// A readable listing of wire responses (for failure messages).
pub fn describe_wire(rs: &[PbWatchResponse]) -> String {
    rs.iter()
        .map(|r| {
            let evs: Vec<String> = r
                .events
                .iter()
                .map(|e| {
                    let kv = e.kv.clone().unwrap_or_default();
                    format!(
                        "{}{}@{}",
                        if e.r#type == 0 { "PUT " } else { "DEL " },
                        String::from_utf8_lossy(&kv.key),
                        kv.mod_revision
                    )
                })
                .collect();
            format!(
                "  id {} rev {} created {} canceled {} compact {} frag {} reason {:?} events [{}]\n",
                r.watch_id,
                r.header.as_ref().map_or(-1, |h| h.revision),
                r.created,
                r.canceled,
                r.compact_revision,
                r.fragment,
                r.cancel_reason,
                evs.join(", ")
            )
        })
        .collect()
}

/// Joins fragmented responses (etcd's `fragment`): consecutive responses of a watcher
/// flagged `fragment` are one response with the events of all of them and of the
/// unflagged one that ends them, as etcd's Go client reassembles them. Returns the
/// reassembled responses and how many wire responses were fragments.
pub fn reassemble(rs: &[PbWatchResponse]) -> (Vec<PbWatchResponse>, usize) {
    let mut out = Vec::new();
    let mut pending: BTreeMap<i64, PbWatchResponse> = BTreeMap::new();
    let mut fragments = 0;
    for r in rs {
        if r.fragment {
            fragments += 1;
        }
        let mut r = r.clone();
        if let Some(mut p) = pending.remove(&r.watch_id) {
            p.events.append(&mut r.events);
            p.fragment = r.fragment;
            r = p;
        }
        if r.fragment {
            pending.insert(r.watch_id, r);
        } else {
            out.push(r);
        }
    }
    let open: Vec<PbWatchResponse> = pending.into_values().collect();
    assert!(open.is_empty(), "a fragmented response was never completed:\n{}", describe_wire(&open));
    (out, fragments)
}

/// A wire key-value as the engine's.
pub fn engine_kv(kv: &etcd_client::proto::PbKeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision as u64,
        mod_revision: kv.mod_revision as u64,
        version: kv.version as u64,
        lease: kv.lease,
    }
}

/// A wire response as the engine's, for the checker. Events are grouped into
/// revisions by `mod_revision` (the revision of a DELETE is its kv's mod revision);
/// an event's `sub` is looked up in `history` by its key (a revision changes a key
/// once), `u32::MAX` when the history has no such event. Panics if a revision's
/// events do not arrive in sub-revision order.
pub fn engine_response(history: &History, r: &PbWatchResponse, prev_kv: bool) -> WatchResponse {
    let mut groups: Vec<(u64, Vec<Event>)> = Vec::new();
    for e in &r.events {
        let kv = engine_kv(e.kv.as_ref().expect("an event without kv"));
        let rev = kv.mod_revision;
        let sub = history.events_at(rev).iter().find(|h| h.kv.key == kv.key).map_or(u32::MAX, |h| h.sub);
        let event = Event {
            kind: if e.r#type == 1 { EventKind::Delete } else { EventKind::Put },
            kv,
            prev_kv: e.prev_kv.as_ref().map(engine_kv),
            sub,
        };
        match groups.last_mut() {
            Some((r, evs)) if *r == rev => {
                let last = evs.last().map_or(0, |l| l.sub);
                assert!(
                    sub == u32::MAX || last == u32::MAX || sub > last,
                    "events of revision {rev} out of sub-revision order: {:?} after {last}",
                    event
                );
                evs.push(event);
            }
            _ => groups.push((rev, vec![event])),
        }
    }
    WatchResponse {
        watch_id: r.watch_id,
        revision: r.header.as_ref().map_or(0, |h| h.revision as u64),
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision.max(0) as u64,
        cancel_reason: r.cancel_reason.clone(),
        events: groups
            .into_iter()
            .map(|(rev, events)| RevisionEvents {
                batch: Arc::new(RevisionBatch::new(rev, events, prev_kv)),
                selection: None,
            })
            .collect(),
        prev_kv,
    }
}

/// One [`Observed`] per watcher of a stream: reassembles fragments, converts, splits.
pub fn observed(history: &History, specs: &[Spec], wire: &[PbWatchResponse]) -> Vec<Observed> {
    let (whole, _) = reassemble(wire);
    let prev: BTreeMap<i64, bool> = specs.iter().map(|s| (s.id, s.prev_kv)).collect();
    let responses: Vec<WatchResponse> =
        whole.iter().map(|r| engine_response(history, r, prev.get(&r.watch_id).copied().unwrap_or(false))).collect();
    let watchers: Vec<_> = specs.iter().map(|s| (s.id, s.request())).collect();
    Observed::split_stream(&watchers, &responses)
}

/// Runs the guarantee checker on what every stream's watchers received.
pub fn assert_watch_guarantees(history: &History, streams: &[(&[Spec], Vec<PbWatchResponse>)]) {
    let all: Vec<Observed> = streams.iter().flat_map(|(specs, wire)| observed(history, specs, wire)).collect();
    check::assert_clean(history, &all);
}

/// Every event a watcher received (fragments joined), flattened, as comparable text:
/// `PUT key=value c/m/v prev=...` per event.
pub fn event_lines(wire: &[PbWatchResponse], id: i64) -> Vec<String> {
    let (whole, _) = reassemble(wire);
    whole
        .iter()
        .filter(|r| r.watch_id == id)
        .flat_map(|r| r.events.iter())
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let prev = e.prev_kv.as_ref().map_or("-".to_string(), |p| {
                format!(
                    "{}={} {}/{}/{}",
                    String::from_utf8_lossy(&p.key),
                    value_text(&p.value),
                    p.create_revision,
                    p.mod_revision,
                    p.version
                )
            });
            format!(
                "{} {}={} {}/{}/{} prev={prev}",
                if e.r#type == 1 { "DELETE" } else { "PUT" },
                String::from_utf8_lossy(&kv.key),
                value_text(&kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version
            )
        })
        .collect()
}

/// A value as text: itself if short, else its length and a checksum.
pub fn value_text(v: &[u8]) -> String {
    if v.len() <= 64 {
        String::from_utf8_lossy(v).into_owned()
    } else {
        let sum = v.iter().fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
        format!("<{} bytes, sum {sum:x}>", v.len())
    }
}

// ---------------------------------------------------------------------------------
// A model of the writes, for the checker
// ---------------------------------------------------------------------------------

/// One operation of a write.
#[derive(Clone, Debug)]
pub enum Op {
    /// Put key = value.
    Put(Vec<u8>, Vec<u8>),
    /// Delete `[key, end)` (`end` empty: the key; `"\0"`: from the key).
    Delete(Vec<u8>, Vec<u8>),
}

/// Put `k` = `v`.
pub fn put(k: &str, v: &str) -> Op {
    Op::Put(k.into(), v.into())
}

/// Delete `k`.
pub fn del(k: &str) -> Op {
    Op::Delete(k.into(), Vec::new())
}

/// Delete every key under `prefix`.
pub fn del_prefix(prefix: &str) -> Op {
    Op::Delete(prefix.into(), argus_engine::store::prefix_end(prefix.as_bytes()))
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Records `ops`, applied at `rev`, into `history` the way etcd applies them (deletes
/// expand to the keys present, in key order; a delete of nothing makes no event).
pub fn record(history: &mut History, rev: u64, ops: &[Op]) {
    let state = history.state_at(rev.saturating_sub(1));
    let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for op in ops {
        match op {
            Op::Put(k, v) => writes.push((k.clone(), Some(v.clone()))),
            Op::Delete(k, end) => {
                writes.extend(state.keys().filter(|key| in_range(key, k, end)).map(|key| (key.clone(), None)))
            }
        }
    }
    history.record_writes(rev, &writes);
}

/// Applies `ops` as one request through `client` (a put, a delete, or a txn of
/// several) and returns the revision of the response header.
pub async fn apply(client: &mut Client, ops: &[Op]) -> Result<u64, etcd_client::Error> {
    use etcd_client::{DeleteOptions, Txn, TxnOp};
    let del_opts = |end: &[u8]| {
        if end.is_empty() {
            None
        } else {
            Some(DeleteOptions::new().with_range(end.to_vec()))
        }
    };
    match ops {
        [Op::Put(k, v)] => Ok(rev_of(client.put(k.clone(), v.clone(), None).await?.header())),
        [Op::Delete(k, end)] => Ok(rev_of(client.delete(k.clone(), del_opts(end)).await?.header())),
        _ => {
            let txn_ops: Vec<TxnOp> = ops
                .iter()
                .map(|op| match op {
                    Op::Put(k, v) => TxnOp::put(k.clone(), v.clone(), None),
                    Op::Delete(k, end) => TxnOp::delete(k.clone(), del_opts(end)),
                })
                .collect();
            Ok(rev_of(client.txn(Txn::new().and_then(txn_ops)).await?.header()))
        }
    }
}

/// The writes of a load that a `kill -9` interrupts, as its writer tasks record them
/// ([`apply_recorded`]).
#[derive(Default)]
pub struct Load {
    /// Acknowledged writes, with their revisions.
    pub acked: Mutex<Vec<(u64, Vec<Op>)>>,
    /// Writes whose outcome is unknown (the kill came first): each may or may not
    /// have been applied.
    pub in_flight: Mutex<Vec<Vec<Op>>>,
    /// Writes the server refused with an error status other than unavailability:
    /// none of the writes is invalid, so any is a failure.
    pub refused: Mutex<Vec<String>>,
    /// How many writes were acknowledged.
    pub acks: std::sync::atomic::AtomicUsize,
    /// Set to end a round without a kill: writers stop before their next write.
    pub stop: std::sync::atomic::AtomicBool,
}

/// Applies `ops` (waiting at most `wait`) and records the outcome in `load`:
/// acknowledged, refused, or in flight (failed without an answer: the kill). False
/// when the writer must stop, i.e. unless the write was acknowledged.
pub async fn apply_recorded(client: &mut Client, ops: Vec<Op>, wait: Duration, load: &Load) -> bool {
    use std::sync::atomic::Ordering;
    match tokio::time::timeout(wait, apply(client, &ops)).await {
        Ok(Ok(rev)) => {
            load.acked.lock().unwrap().push((rev, ops));
            load.acks.fetch_add(1, Ordering::SeqCst);
            true
        }
        Ok(Err(etcd_client::Error::GRpcStatus(s)))
            if !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) =>
        {
            load.refused.lock().unwrap().push(format!("{ops:?}: {s}"));
            false
        }
        _ => {
            load.in_flight.lock().unwrap().push(ops);
            false
        }
    }
}

/// Applies `ops` and records them at the revision the server answered, checking that
/// a write that changed something got the next revision.
pub async fn write(client: &mut Client, history: &mut History, ops: &[Op]) -> u64 {
    let before = history.last_revision().max(1); // a fresh store is at revision 1
    let rev = apply(client, ops).await.unwrap_or_else(|e| panic!("write {ops:?} failed: {e}"));
    if rev > before {
        assert_eq!(rev, before + 1, "write {ops:?} skipped revisions");
        record(history, rev, ops);
    }
    rev
}
