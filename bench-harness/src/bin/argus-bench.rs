//! `argus-bench`: one load generator for any etcd v3 endpoint (Argus or etcd), the
//! same client code for both, printing one JSON record per run; and `report`, which
//! turns the records of `scripts/compare-etcd.sh` into `results/compare-etcd.*`.
//!
//! ```text
//! argus-bench fanout       --endpoint 127.0.0.1:2379 [--watchers 1000 --streams 1 --puts 5000 --rate 0 ...]
//! argus-bench light        --endpoint 127.0.0.1:2379 [--watchers 100 --streams 10 --puts 1000 --rate 100 ...]
//! argus-bench catchup      --endpoint 127.0.0.1:2379 [--history 100000 --watchers 100 ...]
//! argus-bench put          --endpoint 127.0.0.1:2379 [--clients 16 --puts 20000 --watchers 0 ...]
//! argus-bench watch-create --endpoint 127.0.0.1:2379 [--watchers 10000 --streams 100 ...]
//! argus-bench lease-keepalive --endpoint 127.0.0.1:2379 [--leases 10000 --connections 4 --window 128 --secs 5]
//! argus-bench lease-expiry --endpoint 127.0.0.1:2379 [--leases 20000 --ttl 10 --put-clients 16]
//! argus-bench lease-memory --endpoint 127.0.0.1:2379 [--leases 100000]
//! argus-bench mirror-fanout  --watch-endpoints M1,M2 --members E1,E2,E3 [--watchers 10000 --rate 200 ...]
//! argus-bench mirror-history --members E1,E2,E3 --wait-for M1,M2 --history-file F [--history 100000]
//! argus-bench mirror-catchup --watch-endpoints M1 --members E1,E2,E3 --history-file F [--watchers 100]
//! argus-bench report       --runs DIR --out-dir results [...]
//! argus-bench auth-report  --runs DIR --out-dir results [...]
//! ```
//!
//! `--user NAME --password PW` (any load subcommand): authenticate each connection
//! with `Auth.Authenticate` and send the token with every call.
//!
//! ```text
//! ```
//!
//! Only loopback endpoints are accepted. Every run is bounded by `--timeout`. Pass
//! `--server-pid` to record the server's CPU seconds and memory from `/proc`.

#[path = "../loadgen/mod.rs"]
mod loadgen;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::scenario::{self, Catchup, Common, Mode, RunRecord, WriteWatch};
use loadgen::stats::Part;
use loadgen::{lease, mirror};

/// Load generator for etcd v3 endpoints (Argus or etcd), and the side-by-side report.
#[derive(Parser, Debug)]
#[command(name = "argus-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct CommonArgs {
    /// gRPC address of the server (loopback only).
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: SocketAddr,
    /// Pid of the server process, to read its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    run: RunArgs,
}

/// The settings of a run other than the server it loads.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Name of the system under test, recorded in the output (e.g. etcd, argus-always).
    #[arg(long, default_value = "server")]
    system: String,
    /// Name of the scenario, recorded in the output (default: the subcommand).
    #[arg(long)]
    scenario: Option<String>,
    /// Repetition number, recorded in the output.
    #[arg(long, default_value_t = 1)]
    rep: u32,
    /// Bound of the whole run (e.g. 300s, 5m).
    #[arg(long, default_value = "300s", value_parser = humantime_secs)]
    timeout: Duration,
    /// HTTP/2 connections to the server (default: 1; `light`: one per stream;
    /// the mirror scenarios: per watch endpoint).
    #[arg(long)]
    connections: Option<usize>,
    /// Bytes per value (at least 8: the send time, nanoseconds, little endian).
    #[arg(long, default_value_t = 32)]
    value_size: usize,
    /// Watchers whose responses are kept and judged by the engine's guarantee checker.
    #[arg(long, default_value_t = 8)]
    check_watchers: usize,
    /// Also write the JSON record to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Authenticate as this user (`Auth.Authenticate` once per connection; the
    /// token goes in the `token` metadata of every call, Watch streams included).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// The password of `--user`.
    #[arg(long, requires = "user")]
    password: Option<String>,
}

impl RunArgs {
    /// The credentials given, if any.
    fn credentials(&self) -> Option<loadgen::client::Credentials> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                Some(loadgen::client::Credentials { user: user.clone(), password: password.clone() })
            }
            _ => None,
        }
    }
}

/// A 3-member etcd cluster, the mirrors in front of it, and where the watchers go.
#[derive(Args, Debug, Clone)]
struct TopologyArgs {
    /// Where the watchers go, comma-separated: the mirrors, or the cluster's members
    /// (watch stream s on endpoint s % endpoints).
    #[arg(long, value_delimiter = ',', required = true)]
    watch_endpoints: Vec<SocketAddr>,
    /// Pids of the processes serving the watchers, in the same order (their CPU is
    /// the record's server CPU).
    #[arg(long, value_delimiter = ',')]
    watch_pids: Vec<u32>,
    /// The cluster's members' client addresses, comma-separated: the puts go there
    /// (round-robin) and their /metrics is read.
    #[arg(long, value_delimiter = ',', required = true)]
    members: Vec<SocketAddr>,
    /// The members' pids, for their CPU.
    #[arg(long, value_delimiter = ',')]
    member_pids: Vec<u32>,
    /// The mirrors' pids, for their CPU (omit when no mirror runs).
    #[arg(long, value_delimiter = ',')]
    mirror_pids: Vec<u32>,
}

impl TopologyArgs {
    fn topology(&self) -> mirror::Topology {
        mirror::Topology {
            watch_endpoints: self.watch_endpoints.clone(),
            watch_pids: self.watch_pids.clone(),
            members: self.members.clone(),
            member_pids: self.member_pids.clone(),
            mirror_pids: self.mirror_pids.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// W watchers (over S streams and C connections) and P puts at rate R: events/s,
    /// event latency, put-ack latency, every watcher checked.
    Fanout {
        #[command(flatten)]
        common: CommonArgs,
        /// Watchers.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Watch streams the watchers are spread over.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// `prefix`: all watchers on one prefix; `keys`: each on one key.
        #[arg(long, value_enum, default_value_t = Mode::Prefix)]
        mode: Mode,
        /// Keys the puts cycle over (default: 100 with `prefix`, the watcher count with `keys`).
        #[arg(long)]
        keys: Option<usize>,
        /// Puts.
        #[arg(long, default_value_t = 5000)]
        puts: u64,
        /// Puts per second; 0 = as fast as the put clients go.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Concurrent put clients.
        #[arg(long, default_value_t = 16)]
        put_clients: usize,
        /// Start no put after this many seconds (0: no bound); watchers then expect what was written.
        #[arg(long, default_value_t = 0.0)]
        max_put_secs: f64,
    },
    /// Light load, the shape of etcd's `benchmark watch-latency`: W watchers on one
    /// key over S streams, each stream on a connection of its own (etcd's clients
    /// open one Watch stream per connection), and P puts of that key at a steady R
    /// puts/s from one client: event latency (mean, p99), every watcher checked.
    Light {
        #[command(flatten)]
        common: CommonArgs,
        /// Watchers, all on one key.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Watch streams (watcher i on stream i % S), one per connection unless
        /// `--connections` says otherwise.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Puts.
        #[arg(long, default_value_t = 1000)]
        puts: u64,
        /// Puts per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Concurrent put clients (client i on connection i % connections).
        #[arg(long, default_value_t = 1)]
        put_clients: usize,
    },
    /// Write H revisions, then W watchers from revision 1: time until all have everything.
    Catchup {
        #[command(flatten)]
        common: CommonArgs,
        /// Revisions written first (one put each).
        #[arg(long, default_value_t = 100_000)]
        history: u64,
        /// Watchers from revision 1.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Watch streams.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Concurrent clients writing the history.
        #[arg(long, default_value_t = 64)]
        write_clients: usize,
        /// Keys the history cycles over.
        #[arg(long, default_value_t = 1000)]
        keys: usize,
    },
    /// Put throughput and latency with C concurrent clients, optionally with
    /// watchers open on the written keys (one watcher per key).
    Put {
        #[command(flatten)]
        common: CommonArgs,
        /// Concurrent put clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Puts.
        #[arg(long, default_value_t = 20_000)]
        puts: u64,
        /// Keys the puts cycle over.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Watchers open during the puts, watcher i on key i.
        #[arg(long, default_value_t = 0)]
        watchers: usize,
        /// Watch streams the watchers are spread over.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Start no put after this many seconds (0: no bound).
        #[arg(long, default_value_t = 0.0)]
        max_put_secs: f64,
    },
    /// Open W idle watchers: watchers created per second and server memory per watcher.
    WatchCreate {
        #[command(flatten)]
        common: CommonArgs,
        /// Watchers.
        #[arg(long, default_value_t = 10_000)]
        watchers: usize,
        /// Watch streams.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// `keys`: each watcher on its own key; `prefix`: all on one prefix.
        #[arg(long, value_enum, default_value_t = Mode::Keys)]
        mode: Mode,
    },
    /// Keep-alives per second: L leases granted, then one LeaseKeepAlive stream per
    /// connection renewing its share of them round-robin, a window of requests
    /// outstanding, for a fixed time: renewals/s and renewal latency.
    LeaseKeepalive {
        #[command(flatten)]
        common: CommonArgs,
        /// Leases.
        #[arg(long, default_value_t = 10_000)]
        leases: usize,
        /// Their TTL, seconds (none may expire during the run).
        #[arg(long, default_value_t = 60)]
        ttl: i64,
        /// Keep-alive requests outstanding per stream.
        #[arg(long, default_value_t = 128)]
        window: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Seconds of renewals before the measured ones.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Put one key with each lease (100 per txn) before the renewals.
        #[arg(long)]
        keys: bool,
    },
    /// Mass expiry under load: P clients put in a closed loop; L leases with one key
    /// each and the same TTL, renewed once in one burst, expire together; put
    /// latency during the expiry against before the leases, and the expiry's length.
    LeaseExpiry {
        #[command(flatten)]
        common: CommonArgs,
        /// Leases, each with one key.
        #[arg(long, default_value_t = 20_000)]
        leases: usize,
        /// Their TTL, seconds (more than granting them takes).
        #[arg(long, default_value_t = 10)]
        ttl: i64,
        /// Closed-loop put clients.
        #[arg(long, default_value_t = 16)]
        put_clients: usize,
        /// Seconds of puts before any lease (the idle window).
        #[arg(long, default_value_t = 3.0)]
        idle_secs: f64,
        /// Give up waiting for the expiry this long after the first deadline.
        #[arg(long, default_value_t = 120.0)]
        max_wait_secs: f64,
    },
    /// Server memory per lease: RSS before and after granting L leases with one key each.
    LeaseMemory {
        #[command(flatten)]
        common: CommonArgs,
        /// Leases, each with one key.
        #[arg(long, default_value_t = 100_000)]
        leases: usize,
        /// Their TTL, seconds (none may expire during the run).
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Watchers on `argus mirror`s or on a cluster's members directly, puts into the
    /// cluster: event latency, the members' and the mirrors' CPU, the watchers the
    /// members hold (`etcd_debugging_mvcc_watcher_total`), every watcher checked.
    MirrorFanout {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        topology: TopologyArgs,
        /// Watchers, over every watch endpoint.
        #[arg(long, default_value_t = 10_000)]
        watchers: usize,
        /// Watch streams, over every watch endpoint.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// `prefix`: all watchers on one prefix; `keys`: watcher i on key i % keys.
        #[arg(long, value_enum, default_value_t = Mode::Keys)]
        mode: Mode,
        /// Keys the puts cycle over.
        #[arg(long, default_value_t = 100)]
        keys: usize,
        /// Puts.
        #[arg(long, default_value_t = 4000)]
        puts: u64,
        /// Puts per second; 0 = as fast as the put clients go.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Concurrent put clients (client i on member i % members).
        #[arg(long, default_value_t = 16)]
        put_clients: usize,
    },
    /// Write H revisions into the cluster, wait until the mirrors have them, and
    /// keep what was written in a file for `mirror-catchup`.
    MirrorHistory {
        #[command(flatten)]
        run: RunArgs,
        /// The cluster's members' client addresses, comma-separated (writer i on member i % members).
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<SocketAddr>,
        /// Endpoints that must have applied the history first (the mirrors), comma-separated.
        #[arg(long, value_delimiter = ',')]
        wait_for: Vec<SocketAddr>,
        /// Revisions written (one put each).
        #[arg(long, default_value_t = 100_000)]
        history: u64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        write_clients: usize,
        /// Keys the history cycles over.
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Where to write what was written.
        #[arg(long)]
        history_file: PathBuf,
    },
    /// W watchers from revision 1 over the history `mirror-history` wrote, on the
    /// watch endpoints: time until all have everything.
    MirrorCatchup {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        topology: TopologyArgs,
        /// The file `mirror-history` wrote.
        #[arg(long)]
        history_file: PathBuf,
        /// Watchers from revision 1.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Watch streams.
        #[arg(long, default_value_t = 1)]
        streams: usize,
    },
    /// Turn the run records of scripts/compare-etcd.sh into results/compare-etcd.{json,md} and SVG plots.
    Report(loadgen::report::ReportArgs),
    /// Turn the run records of scripts/bench-auth.sh into results/auth-fanout.{json,md}.
    AuthReport(loadgen::auth_report::AuthReportArgs),
}

impl Command {
    /// The run settings of a load-generating subcommand.
    fn run_args(&self) -> Option<&RunArgs> {
        match self {
            Command::Fanout { common, .. }
            | Command::Light { common, .. }
            | Command::Catchup { common, .. }
            | Command::Put { common, .. }
            | Command::WatchCreate { common, .. }
            | Command::LeaseKeepalive { common, .. }
            | Command::LeaseExpiry { common, .. }
            | Command::LeaseMemory { common, .. } => Some(&common.run),
            Command::MirrorFanout { run, .. }
            | Command::MirrorHistory { run, .. }
            | Command::MirrorCatchup { run, .. } => Some(run),
            Command::Report(_) | Command::AuthReport(_) => None,
        }
    }
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let v: f64 = num.parse().map_err(|e| format!("{s}: {e}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("{s}: unknown unit {unit} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The settings of a run; `connections` unless `--connections` was given.
fn common(a: &CommonArgs, kind: &str, connections: usize) -> Common {
    Common { endpoint: a.endpoint, server_pid: a.server_pid, ..run_settings(&a.run, kind, connections) }
}

/// The settings of a run on no one server (the mirror scenarios: `endpoint` is the
/// first watch endpoint, or the first member); `connections` unless
/// `--connections` was given.
fn run_settings(a: &RunArgs, kind: &str, connections: usize) -> Common {
    Common {
        endpoint: SocketAddr::from(([127, 0, 0, 1], 2379)),
        server_pid: None,
        system: a.system.clone(),
        scenario: a.scenario.clone().unwrap_or_else(|| kind.to_string()),
        rep: a.rep,
        timeout: a.timeout,
        connections: a.connections.unwrap_or(connections).max(1),
        value_size: a.value_size.max(8),
        check_watchers: a.check_watchers,
        progress: !a.quiet,
    }
}

fn emit(rec: &RunRecord, out: Option<&PathBuf>) -> ExitCode {
    let text = match serde_json::to_string_pretty(rec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("argus-bench: cannot encode the record: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("argus-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("{text}");
    let summary = format!(
        "{} {} rep {}: {} wall {:.2}s, events/s {}, event mean/p50/p99 {} µs, puts/s {}, server CPU {} s{}, client CPU {} s",
        rec.system,
        rec.scenario,
        rec.rep,
        if rec.ok { "ok" } else { "FAILED" },
        rec.wall_s,
        rec.events_per_s.map_or("-".into(), |v| format!("{v:.0}")),
        rec.event_latency.as_ref().map_or("-".into(), |l| format!("{:.0}/{:.0}/{:.0}", l.mean_us, l.p50_us, l.p99_us)),
        rec.puts_per_s.map_or("-".into(), |v| format!("{v:.0}")),
        rec.server_cpu_s.map_or("-".into(), |v| format!("{v:.2}")),
        // The split, once the server names its threads (etcd's are all `etcd`).
        rec.server_cpu_split.as_ref().filter(|s| s.by_name.iter().any(|n| n.part != Part::Other)).map_or(String::new(), |s| {
            let parts: Vec<String> =
                Part::ALL.iter().map(|&p| format!("{} {:.2}", p.label(), s.part_s(p))).collect();
            format!(" ({})", parts.join(", "))
        }),
        rec.client_cpu_s.map_or("-".into(), |v| format!("{v:.2}")),
    );
    eprintln!("{summary}");
    for e in &rec.errors {
        eprintln!("  error: {e}");
    }
    for p in &rec.check.problems {
        eprintln!("  check: {p}");
    }
    for v in &rec.check.violation_examples {
        eprintln!("  violation: {v}");
    }
    if rec.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Report(args) = &cli.command {
        return match loadgen::report::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("argus-bench report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::AuthReport(args) = &cli.command {
        return match loadgen::auth_report::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("argus-bench auth-report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(creds) = cli.command.run_args().and_then(RunArgs::credentials) {
        if let Err(e) = loadgen::client::set_credentials(creds) {
            eprintln!("argus-bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("argus-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::MirrorHistory { run, members, wait_for, history, write_clients, keys, history_file } = &cli.command
    {
        let c = Common { endpoint: members[0], ..run_settings(run, "mirror-history", 1) };
        let p = mirror::History {
            history: *history,
            write_clients: *write_clients,
            keys: *keys,
            wait_for: wait_for.clone(),
        };
        return match rt.block_on(mirror::write_history(&c, members, &p)) {
            Ok(h) => {
                let text = serde_json::to_string(&h).unwrap_or_default();
                if let Err(e) = std::fs::write(history_file, text) {
                    eprintln!("argus-bench: cannot write {}: {e}", history_file.display());
                    return ExitCode::FAILURE;
                }
                eprintln!(
                    "mirror-history: {} revisions (last {}) in {:.2} s, applied by {} mirror(s); {}",
                    h.acks.len(),
                    h.acks.last().map_or(0, |a| a[1]),
                    h.write_s,
                    wait_for.len(),
                    history_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("argus-bench mirror-history: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (rec, out) = rt.block_on(async {
        match &cli.command {
            Command::Fanout { common: a, watchers, streams, mode, keys, puts, rate, put_clients, max_put_secs } => {
                let c = common(a, "fanout", 1);
                let keys = keys.unwrap_or(match mode {
                    Mode::Prefix => 100,
                    Mode::Keys => (*watchers).max(1),
                });
                let p = WriteWatch {
                    mode: *mode,
                    watchers: *watchers,
                    streams: *streams,
                    keys,
                    puts: *puts,
                    rate: *rate,
                    put_clients: *put_clients,
                    max_put_secs: *max_put_secs,
                };
                (scenario::write_watch(&c, "fanout", &p).await, a.run.out.clone())
            }
            Command::Light { common: a, watchers, streams, puts, rate, put_clients } => {
                let c = common(a, "light", *streams);
                let p = WriteWatch {
                    mode: Mode::Keys,
                    watchers: *watchers,
                    streams: *streams,
                    keys: 1,
                    puts: *puts,
                    rate: *rate,
                    put_clients: *put_clients,
                    max_put_secs: 0.0,
                };
                (scenario::write_watch(&c, "light", &p).await, a.run.out.clone())
            }
            Command::Catchup { common: a, history, watchers, streams, write_clients, keys } => {
                let c = common(a, "catchup", 1);
                let p = Catchup {
                    history: *history,
                    watchers: *watchers,
                    streams: *streams,
                    write_clients: *write_clients,
                    keys: *keys,
                };
                (scenario::catchup(&c, &p).await, a.run.out.clone())
            }
            Command::Put { common: a, clients, puts, keys, watchers, streams, max_put_secs } => {
                let c = common(a, "put", 1);
                let p = WriteWatch {
                    mode: Mode::Keys,
                    watchers: *watchers,
                    streams: *streams,
                    keys: (*keys).max(*watchers).max(1),
                    puts: *puts,
                    rate: 0.0,
                    put_clients: *clients,
                    max_put_secs: *max_put_secs,
                };
                (scenario::write_watch(&c, "put", &p).await, a.run.out.clone())
            }
            Command::WatchCreate { common: a, watchers, streams, mode } => {
                let c = common(a, "watch-create", 1);
                (scenario::watch_create(&c, *mode, *watchers, *streams).await, a.run.out.clone())
            }
            Command::LeaseKeepalive { common: a, leases, ttl, window, secs, warmup_secs, keys } => {
                let c = common(a, "lease-keepalive", 4);
                let p = lease::KeepAlive {
                    leases: *leases,
                    ttl: *ttl,
                    window: *window,
                    secs: *secs,
                    warmup_secs: *warmup_secs,
                    keys: *keys,
                };
                (lease::keep_alive(&c, &p).await, a.run.out.clone())
            }
            Command::LeaseExpiry { common: a, leases, ttl, put_clients, idle_secs, max_wait_secs } => {
                let c = common(a, "lease-expiry", 1);
                let p = lease::Expiry {
                    leases: *leases,
                    ttl: *ttl,
                    put_clients: *put_clients,
                    idle_secs: *idle_secs,
                    max_wait_secs: *max_wait_secs,
                };
                (lease::expiry(&c, &p).await, a.run.out.clone())
            }
            Command::LeaseMemory { common: a, leases, ttl } => {
                let c = common(a, "lease-memory", 1);
                (lease::memory(&c, &lease::Memory { leases: *leases, ttl: *ttl }).await, a.run.out.clone())
            }
            Command::MirrorFanout { run, topology, watchers, streams, mode, keys, puts, rate, put_clients } => {
                let c = Common { endpoint: topology.watch_endpoints[0], ..run_settings(run, "mirror-fanout", 1) };
                let p = mirror::Fanout {
                    mode: *mode,
                    watchers: *watchers,
                    streams: *streams,
                    keys: (*keys).max(1),
                    puts: *puts,
                    rate: *rate,
                    put_clients: *put_clients,
                };
                (mirror::fanout(&c, &topology.topology(), &p).await, run.out.clone())
            }
            Command::MirrorCatchup { run, topology, history_file, watchers, streams } => {
                let c = Common { endpoint: topology.watch_endpoints[0], ..run_settings(run, "mirror-catchup", 1) };
                let p = mirror::Catchup { watchers: *watchers, streams: *streams };
                let rec = match mirror::HistoryFile::read(history_file) {
                    Ok(h) => mirror::catchup(&c, &topology.topology(), &h, &p).await,
                    Err(e) => RunRecord::default().fail(e),
                };
                (rec, run.out.clone())
            }
            Command::MirrorHistory { .. } | Command::Report(_) | Command::AuthReport(_) => {
                unreachable!("handled above")
            }
        }
    });
    emit(&rec, out.as_ref())
}
