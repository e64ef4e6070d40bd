//! Latency histograms (hdrhistogram, nanoseconds) and what `/proc` says about a
//! process: CPU seconds (utime + stime), resident memory, and the CPU of each of
//! its threads by name, which splits an Argus server's CPU into the parts of the
//! server ([`Part`], [`Threads::until`]).

use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns` (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Smallest.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// The distribution: `[fraction, latency µs]` pairs, fraction rising from 0 to 1.
    pub cdf: Vec<[f64; 2]>,
}

/// Fractions the CDF is sampled at: every percent, then finer in the tail.
fn cdf_points() -> Vec<f64> {
    let mut q: Vec<f64> = (0..=99).map(|i| f64::from(i) / 100.0).collect();
    q.extend([0.992, 0.994, 0.995, 0.996, 0.998, 0.999, 0.9995, 0.9999, 1.0]);
    q
}

impl Latency {
    /// The summary of `h` (all zero if it is empty).
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            min_us: us(h.min()),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            cdf: cdf_points().into_iter().map(|q| [q, us(h.value_at_quantile(q))]).collect(),
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The name (field 2, in parentheses: the same text as `comm`) and the CPU seconds
/// (utime + stime) of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    // The name may hold spaces and parentheses: it runs from the first '(' to the last ')'.
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / ticks_per_second()))
}

/// CPU seconds (user + system, all threads, including threads that have ended)
/// `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, s)| s)
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `/proc/loadavg`, trimmed.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The part of an Argus server a thread works for, told by the thread's name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The watch engine: its notifier thread (`argus-notifier`) and its own thread
    /// pools for parallel matching (`argus-engine-fN`) and catch-up (`argus-engine-cN`).
    Engine,
    /// The tokio workers (`argus-io*`): HTTP/2, gRPC decoding, the Watch wire encoding.
    Wire,
    /// The blocking pool (`argus-kv*`): Put, Txn, Range and their fsyncs.
    Kv,
    /// Every other thread (the main thread, threads not named as above), and the CPU
    /// of threads that ended between the two samples.
    #[default]
    Other,
}

impl Part {
    /// The four parts, in report order.
    pub const ALL: [Part; 4] = [Part::Engine, Part::Wire, Part::Kv, Part::Other];

    /// The part a thread named `name` (its `comm`, at most 15 bytes) works for.
    pub fn of(name: &str) -> Part {
        if name == "argus-notifier" || name.starts_with("argus-engine") {
            Part::Engine
        } else if name.starts_with("argus-io") {
            Part::Wire
        } else if name.starts_with("argus-kv") {
            Part::Kv
        } else {
            Part::Other
        }
    }

    /// Short name, for tables.
    pub fn label(self) -> &'static str {
        match self {
            Part::Engine => "engine",
            Part::Wire => "wire",
            Part::Kv => "kv",
            Part::Other => "other",
        }
    }
}

/// The family of a thread name: trailing digits (a pool's thread number) become `*`,
/// so `argus-io-3` and `argus-io-12` count as one `argus-io-*`.
fn family(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() < name.len() {
        format!("{trimmed}*")
    } else {
        name.to_string()
    }
}

/// One thread at one moment: its name and the CPU seconds it has used.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadCpu {
    /// Thread id.
    pub tid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// CPU seconds (utime + stime) so far.
    pub cpu_s: f64,
}

/// A process's CPU at one moment: its total (which includes the threads that have
/// ended) and each live thread's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Threads {
    /// CPU seconds of the whole process (`/proc/<pid>/stat`).
    pub total_s: f64,
    /// Its live threads (`/proc/<pid>/task/*/stat`).
    pub threads: Vec<ThreadCpu>,
}

impl Threads {
    /// `pid`'s threads now, from `/proc`.
    pub fn sample(pid: u32) -> Option<Threads> {
        Threads::sample_in(Path::new("/proc"), pid)
    }

    /// `pid`'s threads now, from a `/proc`-like tree at `root` (tests give a fake
    /// one). The process total is read first; a thread that ends while the tasks are
    /// read is left out (its CPU then shows up as ended, see [`Threads::until`]).
    pub fn sample_in(root: &Path, pid: u32) -> Option<Threads> {
        let dir = root.join(pid.to_string());
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let total_s = parse_stat(&stat)?.1;
        let mut threads = Vec::new();
        for e in std::fs::read_dir(dir.join("task")).ok()?.flatten() {
            let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            if let Some((name, ticks_s)) = parse_stat(&stat) {
                // `schedstat`'s first field is the thread's CPU time in nanoseconds:
                // exact, where `stat` rounds each thread to clock ticks (10 ms), which
                // is all of a short phase's work on a busy pool of idle threads.
                let cpu_s = std::fs::read_to_string(e.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                    .map_or(ticks_s, |ns| ns / 1e9);
                threads.push(ThreadCpu { tid, name: name.to_string(), cpu_s });
            }
        }
        threads.sort_by_key(|t| t.tid);
        Some(Threads { total_s, threads })
    }

    /// The CPU used from `self` to `later`, by part. A thread seen at both moments
    /// counts its difference, a thread seen only at the end all of its CPU (it
    /// started in between); threads that ended in between (seen only at the start,
    /// or never seen) cannot be read any more: what they used is the process total's
    /// difference minus the threads', counted under "other" and reported as
    /// `ended_s`. A thread is classed by its name at the end (at the start if gone).
    pub fn until(&self, later: &Threads) -> CpuSplit {
        let total = (later.total_s - self.total_s).max(0.0);
        let mut by_part = [0.0f64; 4];
        let mut names: std::collections::BTreeMap<String, (Part, u32, f64)> = std::collections::BTreeMap::new();
        let mut seen = 0.0;
        let mut started = 0;
        for t in &later.threads {
            let before = self.threads.iter().find(|b| b.tid == t.tid);
            if before.is_none() {
                started += 1;
            }
            let used = (t.cpu_s - before.map_or(0.0, |b| b.cpu_s)).max(0.0);
            seen += used;
            let part = Part::of(&t.name);
            by_part[part as usize] += used;
            let e = names.entry(family(&t.name)).or_insert((part, 0, 0.0));
            e.1 += 1;
            e.2 += used;
        }
        let ended = self.threads.iter().filter(|b| !later.threads.iter().any(|t| t.tid == b.tid)).count() as u32;
        let ended_s = (total - seen).max(0.0);
        let [engine_s, wire_s, kv_s, _] = by_part;
        CpuSplit {
            total_s: total,
            engine_s,
            wire_s,
            kv_s,
            // The rest of the total, so that the four parts add up to it.
            other_s: (total - engine_s - wire_s - kv_s).max(0.0),
            ended_s,
            threads_started: started,
            threads_ended: ended,
            by_name: names
                .into_iter()
                .map(|(name, (part, threads, cpu_s))| NameCpu { name, part, threads, cpu_s })
                .collect(),
        }
    }
}

/// CPU of the threads of one name family in a [`CpuSplit`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NameCpu {
    /// Thread name, trailing digits as `*`.
    pub name: String,
    /// The part it was counted under.
    pub part: Part,
    /// Threads of that name alive at the end of the phase.
    pub threads: u32,
    /// Their CPU seconds over the phase.
    pub cpu_s: f64,
}

/// A server's CPU over a phase, by the part of the server its threads work for.
/// Per-thread times come from `schedstat` (nanoseconds; `stat`'s clock ticks where
/// it is missing); the process total comes in clock ticks (10 ms), so "other"
/// carries an error of up to a tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSplit {
    /// The process's CPU seconds (the same as `server_cpu_s`, read with the threads).
    pub total_s: f64,
    /// `argus-notifier` and `argus-engine-*`.
    pub engine_s: f64,
    /// `argus-io*`.
    pub wire_s: f64,
    /// `argus-kv*`.
    pub kv_s: f64,
    /// Everything else, `ended_s` included: `total_s` minus the three above.
    pub other_s: f64,
    /// CPU of threads that ended during the phase (not readable per thread).
    pub ended_s: f64,
    /// Threads that appeared during the phase (their whole CPU is counted).
    pub threads_started: u32,
    /// Threads that ended during the phase.
    pub threads_ended: u32,
    /// By thread name family, largest names first in reports.
    pub by_name: Vec<NameCpu>,
}

impl CpuSplit {
    /// Seconds of one part.
    pub fn part_s(&self, p: Part) -> f64 {
        match p {
            Part::Engine => self.engine_s,
            Part::Wire => self.wire_s,
            Part::Kv => self.kv_s,
            Part::Other => self.other_s,
        }
    }
}

/// CPU seconds of the server (if its pid is known) and of this process.
#[derive(Clone, Debug, Default)]
pub struct Cpu {
    /// Server.
    pub server: Option<f64>,
    /// This client.
    pub client: Option<f64>,
    /// The server's threads.
    pub server_threads: Option<Threads>,
}

/// CPU used between two [`Cpu`] samples.
#[derive(Clone, Debug, Default)]
pub struct CpuUsed {
    /// Server seconds.
    pub server: Option<f64>,
    /// Client seconds.
    pub client: Option<f64>,
    /// The server's seconds by part.
    pub server_split: Option<CpuSplit>,
}

impl Cpu {
    /// Now.
    pub fn sample(server_pid: Option<u32>) -> Cpu {
        Cpu {
            server: server_pid.and_then(cpu_seconds),
            client: cpu_seconds(std::process::id()),
            server_threads: server_pid.and_then(Threads::sample),
        }
    }

    /// CPU used from `self` to `later`.
    pub fn until(&self, later: &Cpu) -> CpuUsed {
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let split = match (&self.server_threads, &later.server_threads) {
            (Some(a), Some(b)) => Some(a.until(b)),
            _ => None,
        };
        CpuUsed { server: d(self.server, later.server), client: d(self.client, later.client), server_split: split }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 0);
    }

    /// A `stat` line of a thread named `name` that has used `ticks` clock ticks (a
    /// fifth of them in the kernel).
    fn stat_line(tid: u32, name: &str, ticks: u64) -> String {
        let (user, system) = (ticks - ticks / 5, ticks / 5);
        format!("{tid} ({name}) S 1 {tid} {tid} 0 -1 4194560 120 0 0 0 {user} {system} 0 0 20 0 9 0 5 0\n")
    }

    /// Writes a fake `/proc/<pid>` under `root`: the process's total and its threads.
    fn fake_proc(root: &Path, pid: u32, total: u64, threads: &[(u32, &str, u64)]) {
        let dir = root.join(pid.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("task")).unwrap();
        std::fs::write(dir.join("stat"), stat_line(pid, "argus", total)).unwrap();
        for &(tid, name, ticks) in threads {
            let t = dir.join("task").join(tid.to_string());
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("stat"), stat_line(tid, name, ticks)).unwrap();
            std::fs::write(t.join("comm"), format!("{name}\n")).unwrap();
        }
    }

    #[test]
    fn parts_by_thread_name() {
        assert_eq!(Part::of("argus-notifier"), Part::Engine);
        assert_eq!(Part::of("argus-engine-0"), Part::Engine);
        assert_eq!(Part::of("argus-engine-11"), Part::Engine);
        assert_eq!(Part::of("argus-io-3"), Part::Wire);
        assert_eq!(Part::of("argus-io"), Part::Wire);
        assert_eq!(Part::of("argus-kv-0"), Part::Kv);
        // Today's unnamed threads: tokio's default name (both pools), the main thread.
        assert_eq!(Part::of("tokio-runtime-w"), Part::Other);
        assert_eq!(Part::of("argus"), Part::Other);
        assert_eq!(Part::of("argus-notifierx"), Part::Other);
        assert_eq!(family("argus-io-12"), "argus-io-*");
        assert_eq!(family("tokio-runtime-w"), "tokio-runtime-w");
    }

    /// Threads that stay, start and end between two samples of a fake `/proc`.
    #[test]
    fn splits_server_cpu_by_thread() {
        let root = tempfile::tempdir().unwrap();
        let pid = 4242;
        fake_proc(
            root.path(),
            pid,
            100,
            &[
                (pid, "argus", 10),
                (4243, "argus-notifier", 20),
                (4244, "argus-io-0", 30),
                (4245, "argus-io-1", 5),
                (4246, "argus-kv-0", 5),
                (4247, "tokio-runtime-w", 10), // ends during the phase
                (4248, "we(ird) name", 20),    // parentheses and a space in the name
            ],
        );
        let a = Threads::sample_in(root.path(), pid).unwrap();
        assert_eq!(a.threads.len(), 7);
        assert_eq!(a.threads[6].name, "we(ird) name");
        fake_proc(
            root.path(),
            pid,
            400,
            &[
                (pid, "argus", 15),
                (4243, "argus-notifier", 80),
                (4244, "argus-io-0", 100),
                (4245, "argus-io-1", 45),
                (4246, "argus-kv-0", 25),
                (4248, "we(ird) name", 40),
                (4249, "argus-engine-3", 50), // started during the phase
            ],
        );
        let b = Threads::sample_in(root.path(), pid).unwrap();
        let s = a.until(&b);
        let sec = |ticks: f64| ticks / ticks_per_second();
        let close = |x: f64, ticks: f64| (x - sec(ticks)).abs() < 1e-9;
        assert!(close(s.total_s, 300.0), "{s:?}");
        assert!(close(s.engine_s, 60.0 + 50.0), "{s:?}");
        assert!(close(s.wire_s, 70.0 + 40.0), "{s:?}");
        assert!(close(s.kv_s, 20.0), "{s:?}");
        // The main thread, the oddly named one and the ended thread's 35 ticks.
        assert!(close(s.other_s, 5.0 + 20.0 + 35.0), "{s:?}");
        assert!(close(s.ended_s, 35.0), "{s:?}");
        assert!(close(Part::ALL.iter().map(|&p| s.part_s(p)).sum(), 300.0));
        assert_eq!((s.threads_started, s.threads_ended), (1, 1));
        let io = s.by_name.iter().find(|n| n.name == "argus-io-*").unwrap();
        assert_eq!((io.part, io.threads), (Part::Wire, 2));
        assert!(close(io.cpu_s, 110.0));
        assert!(s.by_name.iter().all(|n| n.name != "tokio-runtime-w"), "an ended thread has no row: {s:?}");
    }

    /// Before the server names its threads, everything but the notifier is "other".
    #[test]
    fn schedstat_is_preferred_to_clock_ticks() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(dir.path(), 77, 500, &[(78, "argus-io", 100), (79, "argus-kv", 100)]);
        // Thread 78 also has a schedstat: 1.234567 s, exactly.
        std::fs::write(dir.path().join("77/task/78/schedstat"), "1234567000 5 6\n").unwrap();
        let t = Threads::sample_in(dir.path(), 77).unwrap();
        let io = t.threads.iter().find(|t| t.tid == 78).unwrap();
        assert!((io.cpu_s - 1.234567).abs() < 1e-12, "{io:?}");
        let kv = t.threads.iter().find(|t| t.tid == 79).unwrap();
        assert!((kv.cpu_s - 100.0 / ticks_per_second()).abs() < 1e-12, "{kv:?}");
    }

    #[test]
    fn unnamed_threads_are_other() {
        let root = tempfile::tempdir().unwrap();
        let pid = 77;
        let threads = |t: u64| vec![(pid, "argus", t), (78, "tokio-runtime-w", 2 * t), (79, "argus-notifier", t)];
        fake_proc(root.path(), pid, 40, &threads(10));
        let a = Threads::sample_in(root.path(), pid).unwrap();
        fake_proc(root.path(), pid, 80, &threads(20));
        let s = a.until(&Threads::sample_in(root.path(), pid).unwrap());
        let sec = |ticks: f64| ticks / ticks_per_second();
        assert!((s.engine_s - sec(10.0)).abs() < 1e-9 && s.wire_s == 0.0 && s.kv_s == 0.0, "{s:?}");
        assert!((s.other_s - sec(30.0)).abs() < 1e-9 && s.ended_s.abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn samples_own_threads() {
        let t = Threads::sample(std::process::id()).unwrap();
        assert!(!t.threads.is_empty());
        let sum: f64 = t.threads.iter().map(|t| t.cpu_s).sum();
        assert!(sum <= t.total_s + 0.01 * t.threads.len() as f64 + 0.01, "{t:?}");
    }

    #[test]
    fn summarizes_a_histogram() {
        let mut h = histogram();
        for i in 1..=1000 {
            record(&mut h, i * 1000);
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0);
        assert!((l.max_us - 1000.0).abs() < 1.0);
        assert_eq!(l.cdf.last().unwrap()[0], 1.0);
    }
}
