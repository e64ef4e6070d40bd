//! Latency histograms (hdrhistogram, nanoseconds) and what `/proc` says about a
//! process: CPU seconds (utime + stime) and resident memory.

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

/// CPU seconds (user + system, all threads) `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
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

/// CPU seconds of the server (if its pid is known) and of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// Server.
    pub server: Option<f64>,
    /// This client.
    pub client: Option<f64>,
}

impl Cpu {
    /// Now.
    pub fn sample(server_pid: Option<u32>) -> Cpu {
        Cpu { server: server_pid.and_then(cpu_seconds), client: cpu_seconds(std::process::id()) }
    }

    /// CPU used from `self` to `later`.
    pub fn until(&self, later: &Cpu) -> Cpu {
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        Cpu { server: d(self.server, later.server), client: d(self.client, later.client) }
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
