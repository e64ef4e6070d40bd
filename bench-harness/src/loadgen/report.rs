//! `argus-bench report`: reads the run records `scripts/compare-etcd.sh` collected
//! (one JSON file per run) and writes `compare-etcd.json`, `compare-etcd.md` and the
//! SVG plots. Every figure is the mean over the repetitions of a scenario on a
//! system; ratios are Argus over etcd of those means, and per repetition (the runs
//! of one repetition were made back to back, alternating systems).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use plotters::prelude::SeriesLabelPosition;

use super::plot::{self, color_of, Line, Panel};
use super::scenario::RunRecord;

/// Arguments of `report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Directory holding the run records (`*.json`), or an earlier compare-etcd.json
    /// to render again from its runs.
    #[arg(long)]
    pub runs: PathBuf,
    /// Where to write compare-etcd.json, compare-etcd.md and the SVG plots.
    #[arg(long, default_value = "results")]
    pub out_dir: PathBuf,
    /// The command that made the runs, for the report.
    #[arg(long, default_value = "scripts/compare-etcd.sh")]
    pub command: String,
    /// Date of the run, for the report.
    #[arg(long, default_value = "")]
    pub date: String,
    /// Source measured (commit and a digest of uncommitted changes), for the report.
    #[arg(long, default_value = "")]
    pub source: String,
    /// Seconds the whole script took so far (build included).
    #[arg(long)]
    pub script_seconds: Option<f64>,
    /// Seconds the release build took.
    #[arg(long)]
    pub build_seconds: Option<f64>,
    /// Where the servers' data directories were (for the file system line).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

/// The systems, in column order. `argus-always-nodelay` is the diagnostic run
/// (Argus with `TCP_NODELAY` forced on its accepted sockets).
const SYSTEMS: &[&str] = &["etcd", "argus-always", "argus-batch", "argus-always-nodelay"];
const ARGUS: &str = "argus-always";
const ETCD: &str = "etcd";
const NODELAY: &str = "argus-always-nodelay";

/// Scenario names of the matrix, in report order, with a short title.
const SCENARIOS: &[(&str, &str)] = &[
    ("catchup", "Catch-up from revision 1"),
    ("fanout-w1000", "Fan-out, 1,000 watchers on one prefix, one stream, puts as fast as possible"),
    ("fanout-rate200", "Fan-out, 1,000 watchers, 200 puts/s"),
    ("fanout-w10k", "Fan-out, 10,000 watchers over 100 streams"),
    ("fanout-w1", "Fan-out, 1 watcher"),
    ("fanout-w100", "Fan-out, 100 watchers"),
    ("put-c16", "Puts, 16 clients, no watchers"),
    ("put-c16-w10k", "Puts, 16 clients, 10,000 watchers open"),
    ("create-10k", "Watch creation, 10,000 watchers"),
    ("create-100k", "Watch creation, 100,000 watchers"),
];

type Get = fn(&RunRecord) -> Option<f64>;

#[derive(Clone, Copy)]
enum Fmt {
    Secs,
    Us,
    Rate,
    Bytes,
    Cores,
    Count,
}

struct Metric {
    key: &'static str,
    label: &'static str,
    fmt: Fmt,
    get: Get,
}

fn lat(r: &RunRecord, f: fn(&super::stats::Latency) -> f64) -> Option<f64> {
    r.event_latency.as_ref().filter(|l| l.count > 0).map(f)
}

fn ack(r: &RunRecord, f: fn(&super::stats::Latency) -> f64) -> Option<f64> {
    r.put_ack.as_ref().filter(|l| l.count > 0).map(f)
}

fn busy(cpu: Option<f64>, wall: f64) -> Option<f64> {
    cpu.filter(|_| wall > 0.0).map(|c| c / wall)
}

const METRICS: &[Metric] = &[
    Metric { key: "wall_s", label: "measured wall time", fmt: Fmt::Secs, get: |r| Some(r.wall_s) },
    Metric { key: "events", label: "events delivered", fmt: Fmt::Count, get: |r| Some(r.events as f64) },
    Metric { key: "events_per_s", label: "events/s", fmt: Fmt::Rate, get: |r| r.events_per_s },
    Metric { key: "event_p50_us", label: "event latency p50", fmt: Fmt::Us, get: |r| lat(r, |l| l.p50_us) },
    Metric { key: "event_p99_us", label: "event latency p99", fmt: Fmt::Us, get: |r| lat(r, |l| l.p99_us) },
    Metric { key: "event_p999_us", label: "event latency p99.9", fmt: Fmt::Us, get: |r| lat(r, |l| l.p999_us) },
    Metric { key: "event_max_us", label: "event latency max", fmt: Fmt::Us, get: |r| lat(r, |l| l.max_us) },
    Metric {
        key: "watcher_done_p50_us",
        label: "catch-up done, median watcher",
        fmt: Fmt::Us,
        get: |r| r.watcher_done.as_ref().filter(|l| l.count > 0).map(|l| l.p50_us),
    },
    Metric { key: "puts", label: "puts", fmt: Fmt::Count, get: |r| (r.puts > 0).then_some(r.puts as f64) },
    Metric { key: "puts_per_s", label: "puts/s", fmt: Fmt::Rate, get: |r| r.puts_per_s },
    Metric { key: "put_ack_p50_us", label: "put-ack latency p50", fmt: Fmt::Us, get: |r| ack(r, |l| l.p50_us) },
    Metric { key: "put_ack_p99_us", label: "put-ack latency p99", fmt: Fmt::Us, get: |r| ack(r, |l| l.p99_us) },
    Metric { key: "server_cpu_s", label: "server CPU", fmt: Fmt::Secs, get: |r| r.server_cpu_s },
    Metric { key: "client_cpu_s", label: "client CPU", fmt: Fmt::Secs, get: |r| r.client_cpu_s },
    Metric {
        key: "server_cores",
        label: "server cores busy",
        fmt: Fmt::Cores,
        get: |r| busy(r.server_cpu_s, r.wall_s),
    },
    Metric {
        key: "client_cores",
        label: "client cores busy",
        fmt: Fmt::Cores,
        get: |r| busy(r.client_cpu_s, r.wall_s),
    },
    Metric {
        key: "server_cpu_per_event_us",
        label: "server CPU per event",
        fmt: Fmt::Us,
        get: |r| r.server_cpu_per_event_us,
    },
    Metric {
        key: "client_cpu_per_event_us",
        label: "client CPU per event",
        fmt: Fmt::Us,
        get: |r| r.client_cpu_per_event_us,
    },
    Metric {
        key: "server_cpu_per_put_us",
        label: "server CPU per put",
        fmt: Fmt::Us,
        get: |r| r.server_cpu_per_put_us,
    },
    Metric { key: "watchers_per_s", label: "watchers created/s", fmt: Fmt::Rate, get: |r| r.watchers_per_s },
    Metric {
        key: "rss_before",
        label: "server RSS, no watchers",
        fmt: Fmt::Bytes,
        get: |r| r.rss_before.map(|v| v as f64),
    },
    Metric {
        key: "rss_after",
        label: "server RSS, watchers open",
        fmt: Fmt::Bytes,
        get: |r| r.rss_after.map(|v| v as f64),
    },
    Metric { key: "rss_per_watcher", label: "server memory per watcher", fmt: Fmt::Bytes, get: |r| r.rss_per_watcher },
    Metric { key: "write_s", label: "writing the history (not measured)", fmt: Fmt::Secs, get: |r| r.write_s },
];

fn metric(key: &str) -> &'static Metric {
    METRICS.iter().find(|m| m.key == key).expect("a known metric")
}

#[derive(Clone, Copy)]
enum Goal {
    /// ratio ≥ x
    AtLeast(f64),
    /// ratio ≤ x
    AtMost(f64),
}

#[derive(Clone, Copy)]
enum Against {
    /// argus / etcd.
    Etcd,
    /// etcd / argus ("× faster").
    EtcdOverArgus,
    /// Argus in this scenario / Argus in another scenario.
    Own(&'static str),
}

struct TargetDef {
    id: &'static str,
    text: &'static str,
    scenario: &'static str,
    metric: &'static str,
    against: Against,
    goal: Goal,
    goal_text: &'static str,
}

const TARGETS: &[TargetDef] = &[
    TargetDef {
        id: "catchup-wall",
        text: "catch-up, H=100k, W=100 from revision 1: wall time",
        scenario: "catchup",
        metric: "wall_s",
        against: Against::EtcdOverArgus,
        goal: Goal::AtLeast(8.0),
        goal_text: "≥ 8× faster",
    },
    TargetDef {
        id: "catchup-cpu",
        text: "catch-up: server CPU",
        scenario: "catchup",
        metric: "server_cpu_s",
        against: Against::Etcd,
        goal: Goal::AtMost(1.0 / 15.0),
        goal_text: "≤ 1/15 of etcd",
    },
    TargetDef {
        id: "fanout-eps",
        text: "fan-out, W=1000 on one prefix, one stream, puts as fast as possible: events/s",
        scenario: "fanout-w1000",
        metric: "events_per_s",
        against: Against::Etcd,
        goal: Goal::AtLeast(1.5),
        goal_text: "≥ 1.5×",
    },
    TargetDef {
        id: "fanout-p99",
        text: "fan-out, W=1000, as fast as possible: p99 event latency",
        scenario: "fanout-w1000",
        metric: "event_p99_us",
        against: Against::Etcd,
        goal: Goal::AtMost(1.0 / 3.0),
        goal_text: "≤ 1/3",
    },
    TargetDef {
        id: "fanout-cpu",
        text: "fan-out, W=1000, as fast as possible: server CPU per delivered event",
        scenario: "fanout-w1000",
        metric: "server_cpu_per_event_us",
        against: Against::Etcd,
        goal: Goal::AtMost(1.0 / 5.0),
        goal_text: "≤ 1/5",
    },
    TargetDef {
        id: "rate-p99",
        text: "fan-out, W=1000 at 200 puts/s: p99 event latency",
        scenario: "fanout-rate200",
        metric: "event_p99_us",
        against: Against::Etcd,
        goal: Goal::AtMost(1.0 / 20.0),
        goal_text: "≤ 1/20",
    },
    TargetDef {
        id: "w10k-mem",
        text: "fan-out, W=10k over 100 streams: server memory per watcher",
        scenario: "fanout-w10k",
        metric: "rss_per_watcher",
        against: Against::Etcd,
        goal: Goal::AtMost(1.0 / 5.0),
        goal_text: "≤ 1/5",
    },
    TargetDef {
        id: "put-tput",
        text: "put, 16 clients: throughput",
        scenario: "put-c16",
        metric: "puts_per_s",
        against: Against::Etcd,
        goal: Goal::AtLeast(1.0),
        goal_text: "≥ 1×",
    },
    TargetDef {
        id: "put-w10k",
        text: "put, 16 clients: put-ack p50 with 10k watchers open vs Argus's own with none",
        scenario: "put-c16-w10k",
        metric: "put_ack_p50_us",
        against: Against::Own("put-c16"),
        goal: Goal::AtMost(1.2),
        goal_text: "≤ 1.2× (own)",
    },
    TargetDef {
        id: "w1-p50",
        text: "W=1, 10k puts: event latency p50",
        scenario: "fanout-w1",
        metric: "event_p50_us",
        against: Against::Etcd,
        goal: Goal::AtMost(1.0),
        goal_text: "≤ 1× (no worse)",
    },
];

/// Runs by scenario, then system.
type Grouped<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a RunRecord>>>;

/// What an earlier `compare-etcd.json` says about its run, for re-rendering.
#[derive(Default)]
struct Earlier {
    date: String,
    source: String,
    command: String,
    script_seconds: Option<f64>,
    build_seconds: Option<f64>,
    fs: Option<argus_bench::FsInfo>,
    machine: Option<argus_bench::machine::Machine>,
}

/// The run records of a directory of `*.json` records, or of an earlier
/// `compare-etcd.json` (its `runs`), to render the report again.
fn load(path: &Path) -> Result<(Vec<RunRecord>, Earlier), String> {
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
        let runs: Vec<RunRecord> = serde_json::from_value(doc.get("runs").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("{}: runs: {e}", path.display()))?;
        let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let earlier = Earlier {
            date: s("date"),
            source: s("source"),
            command: s("command"),
            script_seconds: doc.get("script_seconds").and_then(Value::as_f64),
            build_seconds: doc.get("build_seconds").and_then(Value::as_f64),
            fs: doc.get("data_dir_fs").and_then(|v| serde_json::from_value(v.clone()).ok()),
            machine: doc.get("machine").and_then(|v| serde_json::from_value(v.clone()).ok()),
        };
        return Ok((runs, earlier));
    }
    Ok((load_dir(path)?, Earlier::default()))
}

fn load_dir(dir: &Path) -> Result<Vec<RunRecord>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        match serde_json::from_str::<RunRecord>(&text) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!("argus-bench report: skipping {}: {e}", p.display()),
        }
    }
    Ok(out)
}

/// Mean of `get` over the runs (only the runs that passed, unless none did).
fn mean(runs: &[&RunRecord], get: Get) -> Option<f64> {
    let ok: Vec<&&RunRecord> = runs.iter().filter(|r| r.ok).collect();
    let pick: Vec<&&RunRecord> = if ok.is_empty() { runs.iter().collect() } else { ok };
    let v: Vec<f64> = pick.iter().filter_map(|r| get(r)).filter(|v| v.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn runs_of<'a>(g: &'a Grouped<'a>, scenario: &str, system: &str) -> &'a [&'a RunRecord] {
    g.get(scenario).and_then(|s| s.get(system)).map_or(&[], |v| v.as_slice())
}

fn value(g: &Grouped<'_>, scenario: &str, system: &str, m: &str) -> Option<f64> {
    mean(runs_of(g, scenario, system), metric(m).get)
}

/// Formats `v` in `fmt`.
fn show(v: Option<f64>, fmt: Fmt) -> String {
    let Some(v) = v else { return "–".to_string() };
    match fmt {
        Fmt::Secs => {
            if v < 1.0 {
                format!("{:.0} ms", v * 1000.0)
            } else {
                format!("{v:.2} s")
            }
        }
        Fmt::Us => {
            if v >= 1_000_000.0 {
                format!("{:.2} s", v / 1e6)
            } else if v >= 1000.0 {
                format!("{:.1} ms", v / 1000.0)
            } else if v >= 10.0 {
                format!("{v:.0} µs")
            } else {
                format!("{v:.2} µs")
            }
        }
        Fmt::Rate => format!("{}/s", thousands(v)),
        Fmt::Count => thousands(v),
        Fmt::Bytes => {
            if v.abs() >= 1024.0 * 1024.0 {
                format!("{:.1} MiB", v / (1024.0 * 1024.0))
            } else if v.abs() >= 1024.0 {
                format!("{:.1} KiB", v / 1024.0)
            } else {
                format!("{v:.0} B")
            }
        }
        Fmt::Cores => format!("{v:.2}"),
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ratio_text(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(r) if r > 0.0 && r < 1.0 => format!("{r:.3} (1/{:.1})", 1.0 / r),
        Some(r) => format!("{r:.2}×"),
    }
}

fn met(goal: Goal, r: f64) -> bool {
    match goal {
        Goal::AtLeast(x) => r >= x,
        Goal::AtMost(x) => r <= x,
    }
}

struct TargetResult {
    def: &'static TargetDef,
    etcd: Option<f64>,
    argus: Option<f64>,
    ratio: Option<f64>,
    per_rep: Vec<(u32, f64)>,
    batch: Option<f64>,
    batch_ratio: Option<f64>,
    nodelay: Option<f64>,
    nodelay_ratio: Option<f64>,
    verdict: &'static str,
    runs_ok: bool,
}

fn ratio_of(def: &TargetDef, g: &Grouped<'_>, system: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
    let a = value(g, def.scenario, system, def.metric);
    let (base, r) = match def.against {
        Against::Etcd => {
            let e = value(g, def.scenario, ETCD, def.metric);
            (e, a.zip(e).filter(|(_, e)| *e != 0.0).map(|(a, e)| a / e))
        }
        Against::EtcdOverArgus => {
            let e = value(g, def.scenario, ETCD, def.metric);
            (e, a.zip(e).filter(|(a, _)| *a != 0.0).map(|(a, e)| e / a))
        }
        Against::Own(other) => {
            let o = value(g, other, system, def.metric);
            (o, a.zip(o).filter(|(_, o)| *o != 0.0).map(|(a, o)| a / o))
        }
    };
    (a, base, r)
}

fn per_rep(def: &TargetDef, g: &Grouped<'_>) -> Vec<(u32, f64)> {
    let get = metric(def.metric).get;
    let base_runs = match def.against {
        Against::Own(other) => runs_of(g, other, ARGUS),
        _ => runs_of(g, def.scenario, ETCD),
    };
    let mut out = Vec::new();
    for a in runs_of(g, def.scenario, ARGUS) {
        let Some(b) = base_runs.iter().find(|b| b.rep == a.rep) else { continue };
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            let r = match def.against {
                Against::EtcdOverArgus => (x != 0.0).then(|| y / x),
                _ => (y != 0.0).then(|| x / y),
            };
            if let Some(r) = r {
                out.push((a.rep, r));
            }
        }
    }
    out
}

fn evaluate(g: &Grouped<'_>) -> Vec<TargetResult> {
    TARGETS
        .iter()
        .map(|def| {
            let (argus, base, ratio) = ratio_of(def, g, ARGUS);
            let (batch, _, batch_ratio) = ratio_of(def, g, "argus-batch");
            let (nodelay, _, nodelay_ratio) = ratio_of(def, g, NODELAY);
            let runs_ok = runs_of(g, def.scenario, ARGUS).iter().chain(runs_of(g, def.scenario, ETCD)).all(|r| r.ok);
            let verdict = match ratio {
                None => "NO DATA",
                Some(r) if met(def.goal, r) => "MET",
                Some(_) => "MISSED",
            };
            TargetResult {
                def,
                etcd: base,
                argus,
                ratio,
                per_rep: per_rep(def, g),
                batch,
                batch_ratio,
                nodelay,
                nodelay_ratio,
                verdict,
                runs_ok,
            }
        })
        .collect()
}

fn describe_params(r: &RunRecord) -> String {
    let p = |k: &str| r.params.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
    match r.kind.as_str() {
        "catchup" => format!(
            "{} revisions written by {} clients, then {} watchers from revision 1 on one prefix over {} stream(s)",
            p("history"),
            p("write_clients"),
            p("watchers"),
            p("streams")
        ),
        "fanout" | "put" => {
            let rate = r.params.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
            let rate = if rate > 0.0 { format!("at {rate} puts/s") } else { "as fast as possible".to_string() };
            let stop = r.params.get("max_put_secs").and_then(Value::as_f64).filter(|s| *s > 0.0);
            let stop = stop.map(|s| format!(" (no put started after {s} s)")).unwrap_or_default();
            let watchers = match p("watchers").as_str() {
                "0" => "no watchers".to_string(),
                w => format!("{w} watchers ({}) over {} stream(s)", p("mode"), p("streams")),
            };
            format!(
                "{watchers}, {} connection(s); {} puts from {} clients {rate}{stop} over {} keys, {}-byte values",
                p("connections"),
                p("puts"),
                p("put_clients"),
                p("keys"),
                p("value_size")
            )
        }
        "watch-create" => format!(
            "{} watchers ({}) over {} streams, {} connection(s)",
            p("watchers"),
            p("mode"),
            p("streams"),
            p("connections")
        ),
        _ => String::new(),
    }
}

fn systems_in(g: &Grouped<'_>, scenario: &str) -> Vec<&'static str> {
    SYSTEMS.iter().copied().filter(|s| !runs_of(g, scenario, s).is_empty()).collect()
}

fn scenario_table(out: &mut String, g: &Grouped<'_>, scenario: &str) {
    let systems = systems_in(g, scenario);
    let _ = write!(out, "| figure |");
    for s in &systems {
        let _ = write!(out, " {s} |");
    }
    let ratio_systems: Vec<&str> = systems.iter().copied().filter(|s| *s != ETCD).collect();
    let has_etcd = systems.contains(&ETCD);
    if has_etcd {
        for s in &ratio_systems {
            let _ = write!(out, " {s} / etcd |");
        }
    }
    out.push('\n');
    let cols = 1 + systems.len() + if has_etcd { ratio_systems.len() } else { 0 };
    out.push_str(&"|---".repeat(cols));
    out.push_str("|\n");
    for m in METRICS {
        let vals: Vec<Option<f64>> = systems.iter().map(|s| mean(runs_of(g, scenario, s), m.get)).collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(out, "| {} |", m.label);
        for v in &vals {
            let _ = write!(out, " {} |", show(*v, m.fmt));
        }
        if has_etcd {
            let e = vals[0];
            for (i, s) in systems.iter().enumerate() {
                if *s == ETCD {
                    continue;
                }
                let r = vals[i].zip(e).filter(|(_, e)| *e != 0.0).map(|(a, e)| a / e);
                let _ = write!(out, " {} |", r.map_or("–".into(), |r| format!("{r:.3}")));
            }
        }
        out.push('\n');
    }
    // Checks.
    let _ = write!(out, "| watchers checked: all events once, in order |");
    for s in &systems {
        let runs = runs_of(g, scenario, s);
        let ok: u64 = runs.iter().map(|r| r.check.watchers_ok).sum();
        let all: u64 = runs.iter().map(|r| r.check.watchers).sum();
        let _ = write!(out, " {ok} / {all} |");
    }
    if has_etcd {
        out.push_str(&" |".repeat(ratio_systems.len()));
    }
    out.push('\n');
    let _ = write!(out, "| guarantee checker: watchers judged, violations |");
    for s in &systems {
        let runs = runs_of(g, scenario, s);
        let n: u64 = runs.iter().map(|r| r.check.full_checked).sum();
        let v: u64 = runs.iter().map(|r| r.check.violations).sum();
        let _ = write!(out, " {n}, {v} |");
    }
    if has_etcd {
        out.push_str(&" |".repeat(ratio_systems.len()));
    }
    out.push('\n');
    let _ = write!(out, "| runs passed |");
    for s in &systems {
        let runs = runs_of(g, scenario, s);
        let _ = write!(out, " {} / {} |", runs.iter().filter(|r| r.ok).count(), runs.len());
    }
    if has_etcd {
        out.push_str(&" |".repeat(ratio_systems.len()));
    }
    out.push('\n');
}

fn headline_table(out: &mut String, results: &[TargetResult], with_batch: bool) {
    out.push_str("| target | etcd | Argus (`always`) | ratio | goal | verdict |");
    if with_batch {
        out.push_str(" Argus (`batch`) | ratio |");
    }
    out.push('\n');
    out.push_str(if with_batch { "|---|---|---|---|---|---|---|---|\n" } else { "|---|---|---|---|---|---|\n" });
    for t in results {
        let fmt = metric(t.def.metric).fmt;
        let base_label = match t.def.against {
            Against::Own(_) => format!("{} (Argus, no watchers)", show(t.etcd, fmt)),
            _ => show(t.etcd, fmt),
        };
        let reps = if t.per_rep.len() > 1 {
            format!(" (runs: {})", t.per_rep.iter().map(|(_, r)| format!("{r:.2}")).collect::<Vec<_>>().join(", "))
        } else {
            String::new()
        };
        let verdict = if t.runs_ok { t.verdict.to_string() } else { format!("{} (a run failed)", t.verdict) };
        let _ = write!(
            out,
            "| {} | {} | {} | {}{} | {} | **{}** |",
            t.def.text,
            base_label,
            show(t.argus, fmt),
            ratio_text(t.ratio),
            reps,
            t.def.goal_text,
            verdict
        );
        if with_batch {
            let _ = write!(out, " {} | {} |", show(t.batch, fmt), ratio_text(t.batch_ratio));
        }
        out.push('\n');
    }
}

fn cores(g: &Grouped<'_>, scenario: &str, system: &str) -> (Option<f64>, Option<f64>) {
    (value(g, scenario, system, "server_cores"), value(g, scenario, system, "client_cores"))
}

/// Whether the diagnostic run shows Nagle's algorithm holding Argus's responses:
/// with `TCP_NODELAY` forced, the 1-watcher event p50 is at least 3× lower.
fn nagle_shown(g: &Grouped<'_>) -> Option<(f64, f64)> {
    let a = value(g, "fanout-w1", ARGUS, "event_p50_us")?;
    let n = value(g, "fanout-w1", NODELAY, "event_p50_us")?;
    (a >= 3.0 * n).then_some((a, n))
}

/// Measured facts behind a missed target, and what would close it.
fn why(t: &TargetResult, g: &Grouped<'_>) -> String {
    let s = t.def.scenario;
    let mut w = String::new();
    let f2 = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    let v = |sc: &str, sys: &str, m: &str| value(g, sc, sys, m);
    let us = |sc: &str, sys: &str, m: &str| show(v(sc, sys, m), Fmt::Us);
    let (sa, ca) = cores(g, s, ARGUS);
    let (se, ce) = cores(g, s, ETCD);
    let _ = write!(
        w,
        "Cores busy in the measured phase (2 cores, shared by server, client and other jobs): Argus server {}, \
         client {}; etcd server {}, client {}. ",
        f2(sa),
        f2(ca),
        f2(se),
        f2(ce)
    );
    let nagle = nagle_shown(g);
    match t.def.id {
        "catchup-wall" => {
            let need = v(s, ETCD, "wall_s").map(|e| e / 8.0);
            let _ = write!(
                w,
                "etcd 3.4 hands an unsynced watcher at most 1,000 revisions per sync round (`watchBatchMaxRevs`) \
                 and runs a round every 100 ms, so its catch-up of {} revisions takes many rounds. Argus is \
                 bound by CPU on a serial path: its 100 watchers form one catch-up job (jobs take up to 512) \
                 run on one thread, and the one stream's send task encodes every response ({} of server CPU per \
                 delivered event, next row). Meeting ≥ 8× needs Argus at {} or less, i.e. that path about {}× \
                 faster: see the next row for where its time goes.",
                runs_of(g, s, ARGUS)
                    .first()
                    .and_then(|r| r.params.get("history"))
                    .map_or("the".into(), |h| h.to_string()),
                us(s, ARGUS, "server_cpu_per_event_us"),
                show(need, Fmt::Secs),
                f2(v(s, ARGUS, "wall_s").zip(need).map(|(a, n)| a / n)),
            );
        }
        "catchup-cpu" => {
            let _ = write!(
                w,
                "Server CPU per delivered event: Argus {}, etcd {}. A perf profile of an earlier build \
                 (2bef85d) during a catch-up of 100 watchers from revision 1 put the time in the engine's \
                 catch-up job (`engine/src/watch/catchup.rs`: matching every event against every watcher, an \
                 allocation per (watcher, revision), responses grown one revision at a time) and in the \
                 server's per-response frame building. Matching once per distinct (range, filters) and \
                 allocating the selection only on a mismatch are in this build. What would close the rest: \
                 deliver the responses of watchers with equal cursors as one shared fan-out item (one message \
                 per stream, not per watcher), and append a response's memo slices without building a \
                 `Vec<EventsPart>` per response.",
                us(s, ARGUS, "server_cpu_per_event_us"),
                us(s, ETCD, "server_cpu_per_event_us"),
            );
        }
        "fanout-p99" | "fanout-cpu" => {
            let _ = write!(
                w,
                "Same scenario and reasons as the events/s row above: Argus {} and etcd {} of server CPU per \
                 delivered event, p99 {} and {} (queueing: the puts outrun delivery).",
                us(s, ARGUS, "server_cpu_per_event_us"),
                us(s, ETCD, "server_cpu_per_event_us"),
                us(s, ARGUS, "event_p99_us"),
                us(s, ETCD, "event_p99_us"),
            );
        }
        "fanout-eps" => {
            let _ = write!(
                w,
                "Both servers deliver to the one stream of 1,000 watchers at about the rate the client's single \
                 stream task reads it (client CPU per event: Argus {}, etcd {}), and every put now costs a \
                 1,000-way fan-out on the same 2 cores: puts/s fall from {} (Argus, no watchers) to {} (Argus) \
                 and {} (etcd). Since the puts outrun delivery, both p99s are queueing delays of the same order, \
                 and Argus's stream bound (128 deliveries) turns the watchers into victims that catch up from \
                 the log. Server CPU per delivered event is the figure the client does not set: Argus {}, etcd \
                 {} — equal, not 1/5. A profile of an earlier build showed Argus's cost in the per-watcher response \
                 path (one engine `WatchResponse` per watcher from `WatchReceiver::expand`, a `Vec<EventsPart>` \
                 and a head per watcher in `server/src/watch.rs` `frames`, one gRPC message and HTTP/2 frame per \
                 watcher; malloc/free alone about 18% of server CPU) and in victim catch-up (`catchup::run` \
                 about 7%). What would close it: encode the heads of all the watchers of one fan-out item into \
                 one buffer without per-watcher allocation, and keep watchers synced (a larger stream bound, or \
                 a client that reads faster: several streams on several threads) so they are not re-served \
                 from the log.",
                us(s, ARGUS, "client_cpu_per_event_us"),
                us(s, ETCD, "client_cpu_per_event_us"),
                show(v("put-c16", ARGUS, "puts_per_s"), Fmt::Rate),
                show(v(s, ARGUS, "puts_per_s"), Fmt::Rate),
                show(v(s, ETCD, "puts_per_s"), Fmt::Rate),
                us(s, ARGUS, "server_cpu_per_event_us"),
                us(s, ETCD, "server_cpu_per_event_us"),
            );
        }
        "w10k-mem" => {
            let _ = write!(
                w,
                "Server RSS per watcher here (one prefix, 100 streams): Argus {}, etcd {}; with distinct keys \
                 over 100 streams (`create-10k`, `create-100k`): Argus {} and {}, etcd {} and {}. Measured while \
                 preparing this benchmark on the same build: 10,000 key watchers on 1 stream cost 920 B each, \
                 on 100 streams 1,264 B, so each Watch stream costs about 35 KB (two tokio tasks, the engine \
                 stream's channel, the server's response channel, HTTP/2 stream state) — about 350 B per \
                 watcher of this scenario. What would close it: smaller per-stream buffers (allocated on first \
                 use rather than at capacity) and a leaner per-watcher record in the engine and server.",
                show(v(s, ARGUS, "rss_per_watcher"), Fmt::Bytes),
                show(v(s, ETCD, "rss_per_watcher"), Fmt::Bytes),
                show(v("create-10k", ARGUS, "rss_per_watcher"), Fmt::Bytes),
                show(v("create-100k", ARGUS, "rss_per_watcher"), Fmt::Bytes),
                show(v("create-10k", ETCD, "rss_per_watcher"), Fmt::Bytes),
                show(v("create-100k", ETCD, "rss_per_watcher"), Fmt::Bytes),
            );
        }
        "put-w10k" => {
            let _ = write!(
                w,
                "Argus put-ack p50 {} with 10,000 watchers open (each put reaches one of them) against {} with \
                 none; puts/s {} against {}; event p50 {} (etcd: ack {}, event {}). Two causes measured: \
                 (1) Nagle's algorithm on Argus's sockets (below) — the connection carries the watch streams \
                 too; (2) the notifier scans every watcher on every step: `dispatch_catchup` in \
                 `engine/src/watch/notify.rs` iterates all of `self.watchers` to find unsynced ones even when \
                 there are none (a perf profile of the notifier thread puts that loop at about 45% of \
                 `Notifier::step`); measured while preparing this benchmark, at 1,000 puts/s 10,000 idle key watchers cost the server 0.58 cores \
                 against 0.30 with 1,000 (same puts, same streams). What would close it: keep the unsynced \
                 watchers in their own set (or a count) maintained by `set_status`, so a step costs nothing \
                 per idle watcher; and set TCP_NODELAY.",
                us(s, ARGUS, "put_ack_p50_us"),
                us("put-c16", ARGUS, "put_ack_p50_us"),
                show(v(s, ARGUS, "puts_per_s"), Fmt::Rate),
                show(v("put-c16", ARGUS, "puts_per_s"), Fmt::Rate),
                us(s, ARGUS, "event_p50_us"),
                us(s, ETCD, "put_ack_p50_us"),
                us(s, ETCD, "event_p50_us"),
            );
            if let Some(e) = v(s, NODELAY, "event_p50_us") {
                let _ = write!(
                    w,
                    " With TCP_NODELAY forced the acks are fast, and the events then lag behind them (event p50 \
                     {}, puts/s {}): the notifier falls behind, consistent with the per-step scan of (2).",
                    show(Some(e), Fmt::Us),
                    show(v(s, NODELAY, "puts_per_s"), Fmt::Rate),
                );
            }
        }
        "w1-p50" => {
            let _ = write!(
                w,
                "Argus's event p50 ({}) is its put-ack p50 ({}) plus little: the put responses themselves are \
                 late, {} against etcd's {}.",
                us(s, ARGUS, "event_p50_us"),
                us(s, ARGUS, "put_ack_p50_us"),
                show(v(s, ARGUS, "puts_per_s"), Fmt::Rate),
                show(v(s, ETCD, "puts_per_s"), Fmt::Rate),
            );
            if nagle.is_some() {
                w.push_str(
                    " That is Nagle's algorithm (see the note above the table): about 40 ms per response, the \
                     Linux delayed-ACK timer.",
                );
            }
        }
        _ => {}
    }
    if let (Some(n), Some(r)) = (t.nodelay, t.nodelay_ratio) {
        let fmt = metric(t.def.metric).fmt;
        let _ = write!(
            w,
            " Diagnostic: with TCP_NODELAY forced on Argus's accepted sockets (LD_PRELOAD shim, same build) the \
             figure is {} and the ratio {} ({}).",
            show(Some(n), fmt),
            ratio_text(Some(r)),
            if met(t.def.goal, r) { "meets the goal" } else { "still short of the goal" }
        );
    }
    w
}

/// The note on Nagle's algorithm, when the diagnostic shows it.
fn nagle_note(g: &Grouped<'_>) -> Option<String> {
    let (a, n) = nagle_shown(g)?;
    let puts = |sys: &str| show(value(g, "fanout-w1", sys, "puts_per_s"), Fmt::Rate);
    Some(format!(
        "**Note: Argus as built leaves Nagle's algorithm on for its client connections.** `server/src/lib.rs` \
         serves gRPC with `serve_with_incoming_shutdown(TcpListenerStream::new(listener), ..)`, and tonic \
         ignores its `tcp_nodelay` setting for a caller-supplied incoming stream, so every accepted socket keeps \
         Nagle on; small responses then wait for the client's delayed ACK (40 ms on Linux) whenever earlier \
         bytes are unacknowledged — which is always, on a connection that also carries a watch stream. With \
         one watcher, Argus's event p50 is {} against {} with TCP_NODELAY forced by an `LD_PRELOAD` shim on the \
         same build (`argus-always-nodelay`, one repetition), and puts/s {} against {}. The fix is one line in \
         `serve`: set `TCP_NODELAY` on each accepted stream (map the `TcpListenerStream` with \
         `set_nodelay(true)`, or use `tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))`). \
         The `argus-always-nodelay` column shows what it gives.\n",
        show(Some(a), Fmt::Us),
        show(Some(n), Fmt::Us),
        puts(ARGUS),
        puts(NODELAY),
    ))
}

fn latency_panels(g: &Grouped<'_>) -> Vec<Panel> {
    let mut panels = Vec::new();
    for (scenario, title) in [
        ("fanout-w1", "1 watcher, puts as fast as possible"),
        ("fanout-rate200", "1,000 watchers, 200 puts/s"),
        ("fanout-w1000", "1,000 watchers, puts as fast as possible"),
    ] {
        let mut lines = Vec::new();
        for sys in SYSTEMS {
            let runs = runs_of(g, scenario, sys);
            for (i, r) in runs.iter().enumerate() {
                let Some(l) = r.event_latency.as_ref().filter(|l| l.count > 0) else { continue };
                let points: Vec<(f64, f64)> = l.cdf.iter().map(|[q, us]| (us / 1000.0, *q)).collect();
                lines.push(Line {
                    label: if i == 0 { (*sys).to_string() } else { String::new() },
                    color: color_of(sys),
                    dashed: *sys == NODELAY || i > 0,
                    markers: false,
                    points,
                });
            }
        }
        if !lines.is_empty() {
            panels.push(Panel {
                title: title.to_string(),
                x_label: "event latency (ms, log)".into(),
                y_label: "fraction of events".into(),
                y_log: false,
                lines,
                legend: SeriesLabelPosition::LowerRight,
            });
        }
    }
    panels
}

fn throughput_panels(g: &Grouped<'_>) -> Vec<Panel> {
    let points = ["fanout-w1", "fanout-w100", "fanout-w1000", "fanout-w10k"];
    let mut eps = Vec::new();
    let mut cpu = Vec::new();
    for sys in SYSTEMS {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for sc in points {
            let runs = runs_of(g, sc, sys);
            let Some(w) = runs.first().map(|r| r.watchers as f64) else { continue };
            if let Some(v) = mean(runs, |r| r.events_per_s) {
                a.push((w, v));
            }
            if let Some(v) = mean(runs, |r| r.server_cpu_per_event_us) {
                b.push((w, v));
            }
        }
        a.sort_by(|x, y| x.0.total_cmp(&y.0));
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let line = |points| Line {
            label: (*sys).to_string(),
            color: color_of(sys),
            dashed: *sys == NODELAY,
            markers: true,
            points,
        };
        if !a.is_empty() {
            eps.push(line(a));
        }
        if !b.is_empty() {
            cpu.push(line(b));
        }
    }
    vec![
        Panel {
            title: "events delivered per second".into(),
            x_label: "watchers (log)".into(),
            y_label: "events/s (log)".into(),
            y_log: true,
            lines: eps,
            legend: SeriesLabelPosition::LowerRight,
        },
        Panel {
            title: "server CPU per delivered event".into(),
            x_label: "watchers (log)".into(),
            y_label: "µs of server CPU (log)".into(),
            y_log: true,
            lines: cpu,
            legend: SeriesLabelPosition::UpperRight,
        },
    ]
}

/// Writes the report.
///
/// # Errors
///
/// Reading the records or writing the outputs, as text.
pub fn run(a: &ReportArgs) -> Result<(), String> {
    let (runs, earlier) = load(&a.runs)?;
    let pick = |given: &str, old: String| if given.is_empty() { old } else { given.to_string() };
    let a = &ReportArgs {
        runs: a.runs.clone(),
        out_dir: a.out_dir.clone(),
        command: if earlier.command.is_empty() { a.command.clone() } else { earlier.command.clone() },
        date: pick(&a.date, earlier.date),
        source: pick(&a.source, earlier.source),
        script_seconds: a.script_seconds.or(earlier.script_seconds),
        build_seconds: a.build_seconds.or(earlier.build_seconds),
        data_root: a.data_root.clone(),
    };
    if runs.is_empty() {
        return Err(format!("no run records in {}", a.runs.display()));
    }
    let mut g: Grouped<'_> = BTreeMap::new();
    for r in &runs {
        g.entry(r.scenario.as_str()).or_default().entry(r.system.as_str()).or_default().push(r);
    }
    for sys in g.values_mut() {
        for v in sys.values_mut() {
            v.sort_by_key(|r| r.rep);
        }
    }
    let results = evaluate(&g);
    std::fs::create_dir_all(&a.out_dir).map_err(|e| format!("create {}: {e}", a.out_dir.display()))?;
    let machine = earlier.machine.unwrap_or_else(argus_bench::machine::describe);
    let fs = a.data_root.as_deref().and_then(argus_bench::fs_of).or(earlier.fs);
    let version = |sys: &str| runs.iter().find(|r| r.system == sys).map(|r| r.server_version.clone());
    let reps = runs.iter().map(|r| r.rep).max().unwrap_or(0);

    // Plots.
    let cdf_path = a.out_dir.join("compare-etcd-latency-cdf.svg");
    plot::svg(&cdf_path, "Event latency CDF (etcd vs Argus, all runs)", &latency_panels(&g), 1500, 480)?;
    let tput_path = a.out_dir.join("compare-etcd-events-per-s.svg");
    plot::svg(&tput_path, "Fan-out on one prefix against watcher count", &throughput_panels(&g), 1200, 480)?;

    // JSON.
    let mut scen_json = serde_json::Map::new();
    for (scenario, systems) in &g {
        let mut sys_json = serde_json::Map::new();
        for (sys, rs) in systems {
            let mut m = serde_json::Map::new();
            for metric in METRICS {
                if let Some(v) = mean(rs, metric.get) {
                    m.insert(metric.key.to_string(), json!(v));
                }
            }
            m.insert("runs".into(), json!(rs.len()));
            m.insert("runs_ok".into(), json!(rs.iter().filter(|r| r.ok).count()));
            sys_json.insert((*sys).to_string(), Value::Object(m));
        }
        let desc = systems.values().next().and_then(|v| v.first()).map(|r| describe_params(r)).unwrap_or_default();
        scen_json.insert((*scenario).to_string(), json!({ "workload": desc, "systems": sys_json }));
    }
    let targets_json: Vec<Value> = results
        .iter()
        .map(|t| {
            json!({
                "id": t.def.id,
                "target": t.def.text,
                "scenario": t.def.scenario,
                "metric": t.def.metric,
                "goal": t.def.goal_text,
                "baseline": t.etcd,
                "argus_always": t.argus,
                "ratio": t.ratio,
                "ratio_per_rep": t.per_rep.iter().map(|(rep, r)| json!({"rep": rep, "ratio": r})).collect::<Vec<_>>(),
                "argus_batch": t.batch,
                "ratio_batch": t.batch_ratio,
                "argus_always_nodelay": t.nodelay,
                "ratio_nodelay": t.nodelay_ratio,
                "verdict": t.verdict,
                "runs_ok": t.runs_ok,
            })
        })
        .collect();
    let doc = json!({
        "generated_by": "argus-bench report (bench-harness/src/loadgen/report.rs)",
        "command": a.command,
        "date": a.date,
        "source": a.source,
        "machine": machine,
        "data_dir_fs": fs,
        "script_seconds": a.script_seconds,
        "build_seconds": a.build_seconds,
        "repetitions": reps,
        "etcd_version": version(ETCD),
        "argus_version": version(ARGUS),
        "targets": targets_json,
        "scenarios": scen_json,
        "runs": runs,
    });
    let json_path = a.out_dir.join("compare-etcd.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("write {}: {e}", json_path.display()))?;

    // Markdown.
    let mut md = String::new();
    md.push_str("# Argus vs etcd, side by side\n\n");
    md.push_str(
        "Generated by `argus-bench report` (bench-harness/src/loadgen/report.rs) from the runs of one \
         `scripts/compare-etcd.sh`; do not edit by hand. See `results/README.md`.\n\n",
    );
    let _ = writeln!(md, "- **Command:** `{}`", a.command);
    let _ = writeln!(md, "- **Date (UTC):** {}", a.date);
    let _ = writeln!(md, "- **Source measured:** {}", a.source);
    let _ = writeln!(
        md,
        "- **Servers:** etcd {} (Debian package `etcd-server`), Argus {}; both on 127.0.0.1 with fresh data \
         directories per run; etcd fsyncs every commit, so Argus runs with `--fsync always` (and `batch` beside it)",
        version(ETCD).unwrap_or_default(),
        version(ARGUS).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "- **Machine:** {}, `nproc` = {}, {} GiB memory, kernel {}, {}; the client, the server and other \
         engineers' jobs share the cores",
        machine.cpu_model, machine.nproc, machine.mem_total_gib, machine.kernel, machine.rustc
    );
    if let Some(fs) = &fs {
        let _ =
            writeln!(md, "- **Data directories:** on {} ({} mounted at `{}`)", fs.fstype, fs.source, fs.mount_point);
    }
    let loads: Vec<&str> = runs.iter().map(|r| r.loadavg_start.as_str()).collect();
    if let (Some(first), Some(last)) = (loads.first(), runs.last().map(|r| r.loadavg_end.as_str())) {
        let _ = writeln!(md, "- **Load average** (`/proc/loadavg`) at the first run: {first}; at the last: {last}");
    }
    let _ = writeln!(
        md,
        "- **Repetitions:** {reps}, each running every scenario on every system back to back, the order of the \
         systems reversed in alternate repetitions; figures are means over the repetitions, ratios are Argus / \
         etcd of the means (per repetition in parentheses)"
    );
    if let Some(s) = a.script_seconds {
        let _ = writeln!(
            md,
            "- **Script run time:** {:.1} min{}",
            s / 60.0,
            a.build_seconds.map(|b| format!(" (release build {:.1} min)", b / 60.0)).unwrap_or_default()
        );
    }
    md.push_str("\n## Targets\n\n");
    md.push_str(
        "Ratios are Argus / etcd in the same run (for catch-up wall time: etcd / Argus, i.e. how many times \
         faster). The goals are benchmark goals of the issue, not timed tests.\n\n",
    );
    if let Some(note) = nagle_note(&g) {
        md.push_str(&note);
        md.push('\n');
    }
    headline_table(&mut md, &results, true);
    let batch_put = (value(&g, "put-c16", "argus-batch", "puts_per_s"), value(&g, "put-c16", ARGUS, "puts_per_s"));
    if let (Some(b), Some(a)) = batch_put {
        if b < a {
            let _ = writeln!(
                md,
                "\n`batch` is slower than `always` for 16 closed-loop put clients ({} against {}): under `batch` \
                 the log's syncer first waits for company (`engine/src/log/mod.rs`, `wait_durable`: slices of an \
                 eighth of the 2 ms batch delay, until a slice brings no new writer), so each fsync cycle is at \
                 least one slice longer than under `always`, whose group commit already shares one fsync among \
                 the writers that arrive during the previous one.",
                show(Some(b), Fmt::Rate),
                show(Some(a), Fmt::Rate)
            );
        }
    }
    let missed: Vec<&TargetResult> = results.iter().filter(|t| t.verdict != "MET").collect();
    if missed.is_empty() {
        md.push_str("\nEvery target met.\n");
    } else {
        md.push_str("\n### Missed targets: measured reasons\n\n");
        for t in &missed {
            let _ =
                writeln!(md, "- **{}** ({}, {}): {}\n", t.def.text, ratio_text(t.ratio), t.def.goal_text, why(t, &g));
        }
    }
    md.push_str("\n## Plots\n\n");
    md.push_str("![event latency CDF](compare-etcd-latency-cdf.svg)\n\n");
    md.push_str("![events/s and server CPU per event against watcher count](compare-etcd-events-per-s.svg)\n\n");
    md.push_str("## All figures\n\n");
    md.push_str(
        "Server and client CPU are user + system seconds from `/proc/<pid>/stat` over the measured phase; \
         \"cores busy\" is CPU seconds over wall seconds. Memory is the server's `VmRSS` before the watchers \
         were opened and after they were (and one more revision was notified). Event latency is the receive \
         time minus the send time carried in the value (8 bytes of nanoseconds, same process). Every watcher \
         of every run is checked: created, every written event exactly once, in order (count, strictly rising \
         revisions and a fingerprint of the (revision, key) pairs against the acknowledged puts); a sample of \
         watchers is also judged by the engine's guarantee checker (`argus_engine::check`).\n\n",
    );
    for (scenario, title) in SCENARIOS {
        if !g.contains_key(scenario) {
            continue;
        }
        let desc = g[scenario].values().next().and_then(|v| v.first()).map(|r| describe_params(r)).unwrap_or_default();
        let _ = writeln!(md, "### {title} (`{scenario}`)\n\n{desc}.\n");
        scenario_table(&mut md, &g, scenario);
        md.push('\n');
    }
    for scenario in g.keys() {
        if SCENARIOS.iter().any(|(s, _)| s == scenario) {
            continue;
        }
        let _ = writeln!(md, "### `{scenario}`\n");
        scenario_table(&mut md, &g, scenario);
        md.push('\n');
    }
    let failures: Vec<&RunRecord> = runs.iter().filter(|r| !r.ok).collect();
    if !failures.is_empty() {
        md.push_str("### Failed runs\n\n");
        for r in failures {
            let _ = writeln!(
                md,
                "- {} {} rep {}: {}",
                r.system,
                r.scenario,
                r.rep,
                r.errors
                    .iter()
                    .chain(&r.check.problems)
                    .chain(&r.check.violation_examples)
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        md.push('\n');
    }

    md.push_str("## README snippet\n\n");
    md.push_str("For the lead to paste into `README.md` (paths relative to the repository root):\n\n");
    md.push_str("````markdown\n### Argus vs etcd\n\n");
    let _ = writeln!(
        md,
        "Side by side with etcd {} on one 2-core machine ({}), same client for both, etcd fsyncing every commit \
         and Argus with `--fsync always`:\n",
        version(ETCD).unwrap_or_default(),
        a.date
    );
    headline_table(&mut md, &results, false);
    md.push_str(
        "\n![events/s and server CPU per event against watcher count](results/compare-etcd-events-per-s.svg)\n\n",
    );
    let took = a.script_seconds.map(|s| format!("; this run took {:.1} min", s / 60.0)).unwrap_or_default();
    let _ = writeln!(
        md,
        "Reproduce with `scripts/compare-etcd.sh` (installs etcd from the distribution's package when missing, \
         builds in release mode, runs the matrix twice, under 20 minutes{took}); all figures, the latency CDFs \
         and the reasons for missed targets are in [results/compare-etcd.md](results/compare-etcd.md)."
    );
    md.push_str("````\n");
    let md_path = a.out_dir.join("compare-etcd.md");
    std::fs::write(&md_path, md).map_err(|e| format!("write {}: {e}", md_path.display()))?;
    eprintln!(
        "argus-bench report: wrote {}, {}, {}, {}",
        json_path.display(),
        md_path.display(),
        cdf_path.display(),
        tput_path.display()
    );
    Ok(())
}
