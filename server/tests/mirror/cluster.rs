//! The processes of the mirror tests: a 3-member etcd 3.4 cluster ([`EtcdCluster`])
//! and the `argus mirror` binary ([`MirrorProcess`]), children of the test process,
//! killed by their own pids when dropped.
//!
//! Ports are picked at random in 10000..32000 and checked free by binding them
//! (ports above 32768 collide with outgoing connections); a start that loses a race
//! for one (a member exits at once) is retried on new ports.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{connect, http_get, metric, spawn_argus, ChildGuard, PATIENCE};

/// A small deterministic generator (splitmix64): ports, and the randomized tests'
/// choices (those print their seed).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from `MIRROR_TEST_SEED` if set, else from the clock; the
    /// seed is printed with `what` so a failing run can be replayed.
    pub fn seeded(what: &str) -> Rng {
        let seed = std::env::var("MIRROR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(clock_seed);
        eprintln!("{what}: seed {seed} (replay with MIRROR_TEST_SEED={seed})");
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// `n` distinct ports in 10000..32000 that were free on 127.0.0.1 when picked (each
/// is bound while the others are picked, then released).
pub fn free_low_ports(n: usize) -> Vec<u16> {
    let mut rng = Rng::new(clock_seed());
    let mut held: Vec<TcpListener> = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if ports.len() == n {
            break;
        }
        let p = 10_000 + rng.below(22_000) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", p)) {
            held.push(l);
            ports.push(p);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free ports in 10000..32000");
    ports
}

// ---------------------------------------------------------------------------------
// The etcd cluster
// ---------------------------------------------------------------------------------

/// How many members the cluster has.
pub const MEMBERS: usize = 3;

struct Member {
    client_port: u16,
    peer_port: u16,
    /// etcd's data directory (kept across [`EtcdCluster::restart`]).
    data_dir: PathBuf,
    /// Its stderr, appended to by every run of the member.
    log: PathBuf,
    child: Option<ChildGuard>,
}

/// A 3-member etcd 3.4 cluster on 127.0.0.1: static bootstrap, fresh temporary
/// directories, heartbeat 50 ms and election timeout 500 ms (a kill -9 of the
/// leader is over in about a second). Every member is killed on drop; when the test
/// is failing, the end of each member's log is printed first.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts the three members and waits until each serves `/health` (which in
    /// etcd 3.4 means it knows a leader).
    pub fn start() -> EtcdCluster {
        let mut last_logs = String::new();
        for attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let ports = free_low_ports(2 * MEMBERS);
            let members: Vec<Member> = (0..MEMBERS)
                .map(|i| Member {
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    data_dir: dir.path().join(format!("member-{i}")),
                    log: dir.path().join(format!("member-{i}.log")),
                    child: None,
                })
                .collect();
            let initial_cluster = members
                .iter()
                .enumerate()
                .map(|(i, m)| format!("m{i}=http://127.0.0.1:{}", m.peer_port))
                .collect::<Vec<_>>()
                .join(",");
            let token = format!("argus-mirror-test-{}-{attempt}-{}", std::process::id(), clock_seed() % 1_000_000);
            let mut cluster = EtcdCluster { members, initial_cluster, token, _dir: dir };
            for i in 0..MEMBERS {
                let child = cluster.spawn(i);
                cluster.members[i].child = Some(child);
            }
            let deadline = Instant::now() + PATIENCE;
            loop {
                if (0..MEMBERS).any(|i| cluster.exited(i)) {
                    break; // most likely a port was taken meanwhile: retry on others
                }
                if (0..MEMBERS).all(|i| cluster.healthy(i)) {
                    return cluster;
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_logs = cluster.log_tails(40);
            for m in &mut cluster.members {
                if let Some(mut c) = m.child.take() {
                    c.kill();
                }
            }
        }
        panic!("the etcd cluster did not start (3 attempts); the members' logs:\n{last_logs}");
    }

    fn spawn(&self, i: usize) -> ChildGuard {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (is etcd 3.4 installed? scripts/test.sh installs it)");
        ChildGuard(child)
    }

    fn exited(&mut self, i: usize) -> bool {
        self.members[i].child.as_mut().is_none_or(|c| matches!(c.0.try_wait(), Ok(Some(_))))
    }

    /// Whether member `i` answers `/health` with true.
    pub fn healthy(&self, i: usize) -> bool {
        http_get(&self.endpoint(i), "/health").is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    /// `127.0.0.1:port` of member `i`'s client listener.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// The client endpoints of the three members, `127.0.0.1:port` each, member 0
    /// first.
    pub fn endpoints(&self) -> Vec<String> {
        (0..MEMBERS).map(|i| self.endpoint(i)).collect()
    }

    /// Whether member `i` is running (not killed by [`EtcdCluster::kill9`]).
    pub fn alive(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// `kill -9` of member `i` (its data directory stays for [`EtcdCluster::restart`]).
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.members[i].child.take().unwrap_or_else(|| panic!("member {i} is not running"));
        child.kill();
    }

    /// Starts member `i` again on its data directory and ports and waits until it
    /// serves `/health` (it rejoined and knows the leader).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        for _attempt in 0..3 {
            let child = self.spawn(i);
            self.members[i].child = Some(child);
            let deadline = Instant::now() + PATIENCE;
            while !self.exited(i) && Instant::now() < deadline {
                if self.healthy(i) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(mut c) = self.members[i].child.take() {
                c.kill();
            }
            std::thread::sleep(Duration::from_millis(200)); // its port, if still held by the old process
        }
        panic!("member {i} did not come back; the logs:\n{}", self.log_tails(40));
    }

    /// The index of the member that leads, from Maintenance.Status of every running
    /// member: each reports the leader's id and, in its header, its own id. Waits
    /// (up to [`PATIENCE`]) until the running members agree on a leader that is one
    /// of them.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut ids: Vec<Option<(u64, u64)>> = Vec::new(); // (own id, leader id)
            for i in 0..MEMBERS {
                if !self.alive(i) {
                    ids.push(None);
                    continue;
                }
                let status = tokio::time::timeout(Duration::from_secs(3), async {
                    let mut c = connect(&self.endpoint(i)).await;
                    c.status().await
                })
                .await;
                ids.push(match status {
                    Ok(Ok(s)) => s.header().map(|h| (h.member_id(), s.leader())),
                    _ => None,
                });
            }
            let running: Vec<(usize, (u64, u64))> =
                ids.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s))).collect();
            let agreed = running.first().map(|&(_, (_, l))| l).filter(|&l| l != 0);
            if let Some(leader) = agreed {
                if running.len() == (0..MEMBERS).filter(|&i| self.alive(i)).count()
                    && running.iter().all(|&(_, (_, l))| l == leader)
                {
                    if let Some(&(i, _)) = running.iter().find(|&&(_, (own, _))| own == leader) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "the running members did not agree on a leader: {ids:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sum over the running members of an unlabelled metric of etcd's `/metrics`
    /// (`None` if a member did not answer or lacks it).
    pub fn metric_sum(&self, name: &str) -> Option<f64> {
        let mut sum = 0.0;
        for i in (0..MEMBERS).filter(|&i| self.alive(i)) {
            sum += metric(&http_get(&self.endpoint(i), "/metrics")?, name)?;
        }
        Some(sum)
    }

    /// The last `n` lines of every member's log.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- member {i} ({}):\n", m.log.display());
            for l in &lines[lines.len().saturating_sub(n)..] {
                out += l;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the etcd members' logs (the test failed):\n{}", self.log_tails(15));
        }
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                c.kill();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// argus mirror
// ---------------------------------------------------------------------------------

/// The built `argus` binary running `argus mirror`. Killed on drop; when the test is
/// failing, the end of its stderr is printed first.
pub struct MirrorProcess {
    /// The gRPC address it printed.
    pub addr: SocketAddr,
    /// `127.0.0.1:port` of its `/metrics`, when started by
    /// [`MirrorProcess::start_with_metrics`].
    pub metrics: Option<String>,
    /// Every line it wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    child: Option<ChildGuard>,
}

impl MirrorProcess {
    /// Runs `argus mirror --upstream <http://upstreams, comma-joined> --listen
    /// 127.0.0.1:0 --data-dir <data_dir> <extra...>` and waits for the address it
    /// reports on stderr (`argus: serving etcd v3 API on ADDR`: it bootstrapped and
    /// serves); its stderr keeps being drained.
    pub fn start(upstreams: &[String], data_dir: &Path, extra: &[&str]) -> MirrorProcess {
        Self::try_start(upstreams, data_dir, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`MirrorProcess::start`], also serving `/metrics` on a free port below
    /// 32768 (the binary does not report the metrics address it bound; a start that
    /// lost the port is retried on another). Restart on the same port with
    /// [`MirrorProcess::start_on_metrics`].
    pub fn start_with_metrics(upstreams: &[String], data_dir: &Path, extra: &[&str]) -> MirrorProcess {
        let mut last = String::new();
        for _ in 0..3 {
            let metrics = format!("127.0.0.1:{}", free_low_ports(1)[0]);
            match Self::try_start_on_metrics(upstreams, data_dir, extra, &metrics) {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// As [`MirrorProcess::start`], serving `/metrics` on `metrics` (`host:port`).
    pub fn start_on_metrics(upstreams: &[String], data_dir: &Path, extra: &[&str], metrics: &str) -> MirrorProcess {
        Self::try_start_on_metrics(upstreams, data_dir, extra, metrics).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on_metrics(
        upstreams: &[String],
        data_dir: &Path,
        extra: &[&str],
        metrics: &str,
    ) -> Result<MirrorProcess, String> {
        let mut args = vec!["--metrics-listen", metrics];
        args.extend_from_slice(extra);
        let mut m = Self::try_start(upstreams, data_dir, &args)?;
        m.metrics = Some(metrics.to_string());
        Ok(m)
    }

    fn try_start(upstreams: &[String], data_dir: &Path, extra: &[&str]) -> Result<MirrorProcess, String> {
        let upstream = upstreams.iter().map(|u| format!("http://{u}")).collect::<Vec<_>>().join(",");
        let mut args = vec!["mirror", "--upstream", &upstream];
        args.extend_from_slice(extra);
        // Bootstrapping loads the cluster's state and history first: give it time.
        let p = spawn_argus(&args, data_dir, "warn", PATIENCE * 2)?;
        Ok(MirrorProcess { addr: p.addr, metrics: None, stderr: p.stderr, child: Some(p.child) })
    }

    /// `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Waits up to `within` for the process to exit by itself: its exit status, or
    /// `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs `argus mirror` expecting it to fail before it serves: its stderr (the
    /// test fails if it serves).
    pub fn start_failing(upstreams: &[String], data_dir: &Path, extra: &[&str]) -> String {
        match Self::try_start(upstreams, data_dir, extra) {
            Ok(m) => panic!("the mirror served on {} where it must not", m.addr),
            Err(e) => e,
        }
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// SIGTERM (a graceful stop), then up to `within` for the process to exit: its
    /// exit status, or `None` if it was still running (it is then killed).
    pub fn terminate(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        crate::common::terminate(&mut child, within)
    }

    /// An unlabelled metric of its `/metrics` (`None` without metrics, or if it did
    /// not answer or lacks the metric).
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&http_get(self.metrics.as_ref()?, "/metrics")?, name)
    }
}

impl Drop for MirrorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.stderr.lock().unwrap();
            let tail = &lines[lines.len().saturating_sub(30)..];
            eprintln!("the stderr of the mirror on {} (the test failed):\n{}", self.addr, tail.join("\n"));
        }
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}
