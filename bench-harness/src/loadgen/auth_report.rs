//! `argus-bench auth-report`: the runs of `scripts/bench-auth.sh` (the fan-out
//! scenarios on `argus serve --fsync always`, once without auth and once with auth
//! enabled and the load generator connected as an ordinary user) turned into
//! `results/auth-fanout.{json,md}`: per scenario and figure, the mean of each
//! side, the ratio with-auth / without-auth, and whether the goal (no
//! figure worse than 1.1× the run without auth) was met.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::scenario::RunRecord;

/// Arguments of `auth-report`.
#[derive(clap::Args, Debug)]
pub struct AuthReportArgs {
    /// Directory holding the run records (`*.json`), or an earlier
    /// auth-fanout.json (its runs are rendered again, with its command, date,
    /// source and machine unless given here).
    #[arg(long)]
    pub runs: PathBuf,
    /// Where to write auth-fanout.json and auth-fanout.md.
    #[arg(long, default_value = "results")]
    pub out_dir: PathBuf,
    /// The command that made the runs, for the report.
    #[arg(long, default_value = "scripts/bench-auth.sh")]
    pub command: String,
    /// Date of the run, for the report.
    #[arg(long, default_value = "")]
    pub date: String,
    /// Source measured (commit and a digest of uncommitted changes), for the report.
    #[arg(long, default_value = "")]
    pub source: String,
    /// Seconds the whole script took (build included).
    #[arg(long)]
    pub script_seconds: Option<f64>,
    /// Where the servers' data directories were (for the file system line).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

/// The system without auth (the baseline) and with it.
pub const WITHOUT: &str = "argus-always";
/// The system with auth enabled, the load generator connected as `bench`.
pub const WITH: &str = "argus-auth";

/// The bound: no figure worse than this factor of the run without auth.
pub const GOAL: f64 = 1.1;

/// Scenarios, in report order, with a title.
const SCENARIOS: &[(&str, &str)] = &[
    ("fanout-w1000", "Fan-out, 1,000 watchers on one prefix, one stream, puts as fast as possible"),
    ("fanout-rate200", "Fan-out, 1,000 watchers on one prefix, one stream, 200 puts/s"),
    ("fanout-w10k", "Fan-out, 10,000 watchers over 100 streams and 4 connections"),
    ("create-10k", "Watch creation, 10,000 watchers over 100 streams"),
    ("create-100k", "Watch creation, 100,000 watchers over 100 streams"),
];

/// One figure of a run.
struct Figure {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    /// Larger is better (a rate): the goal is a ratio of at least 1/GOAL.
    higher_is_better: bool,
    get: fn(&RunRecord) -> Option<f64>,
}

const FIGURES: &[Figure] = &[
    Figure { key: "events_per_s", label: "events/s", unit: "/s", higher_is_better: true, get: |r| r.events_per_s },
    Figure {
        key: "server_cpu_per_event_us",
        label: "server CPU per event",
        unit: "µs",
        higher_is_better: false,
        get: |r| r.server_cpu_per_event_us,
    },
    Figure {
        key: "event_p50_us",
        label: "event latency p50",
        unit: "µs",
        higher_is_better: false,
        get: |r| r.event_latency.as_ref().map(|l| l.p50_us),
    },
    Figure {
        key: "event_p99_us",
        label: "event latency p99",
        unit: "µs",
        higher_is_better: false,
        get: |r| r.event_latency.as_ref().map(|l| l.p99_us),
    },
    Figure {
        key: "put_ack_p50_us",
        label: "put-ack p50",
        unit: "µs",
        higher_is_better: false,
        get: |r| r.put_ack.as_ref().map(|l| l.p50_us),
    },
    Figure {
        key: "rss_per_watcher",
        label: "memory per watcher",
        unit: "B",
        higher_is_better: false,
        get: |r| r.rss_per_watcher,
    },
    Figure {
        key: "watchers_per_s",
        label: "watchers created/s",
        unit: "/s",
        higher_is_better: true,
        get: |r| r.watchers_per_s,
    },
];

/// Whether `ratio` (with / without) meets the goal for `f`.
fn met(f: &Figure, ratio: f64) -> bool {
    if f.higher_is_better {
        ratio >= 1.0 / GOAL
    } else {
        ratio <= GOAL
    }
}

/// Mean of `get` over the runs that passed (all runs if none did).
fn mean(runs: &[&RunRecord], get: fn(&RunRecord) -> Option<f64>) -> Option<f64> {
    let ok: Vec<&&RunRecord> = runs.iter().filter(|r| r.ok).collect();
    let pick: Vec<&&RunRecord> = if ok.is_empty() { runs.iter().collect() } else { ok };
    let v: Vec<f64> = pick.iter().filter_map(|r| get(r)).filter(|v| v.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn show(v: f64, unit: &str) -> String {
    match unit {
        "/s" if v >= 1000.0 => format!("{:.0}", v),
        "/s" => format!("{v:.1}"),
        "B" => format!("{v:.0} B"),
        _ if v >= 100.0 => format!("{v:.0} {unit}"),
        _ => format!("{v:.2} {unit}"),
    }
}

/// One row of the result: a figure of a scenario on both sides.
struct Row {
    scenario: &'static str,
    figure: &'static Figure,
    without: f64,
    with: f64,
    ratio: f64,
    per_rep: Vec<(u32, f64)>,
    met: bool,
}

fn rows(runs: &[RunRecord]) -> Vec<Row> {
    let mut out = Vec::new();
    for &(scenario, _) in SCENARIOS {
        let of = |sys: &str| -> Vec<&RunRecord> {
            let mut v: Vec<&RunRecord> = runs.iter().filter(|r| r.scenario == scenario && r.system == sys).collect();
            v.sort_by_key(|r| r.rep);
            v
        };
        let (a, b) = (of(WITHOUT), of(WITH));
        for f in FIGURES {
            let (Some(without), Some(with)) = (mean(&a, f.get), mean(&b, f.get)) else { continue };
            if without <= 0.0 {
                continue;
            }
            let ratio = with / without;
            let per_rep: Vec<(u32, f64)> = a
                .iter()
                .filter_map(|ra| {
                    let rb = b.iter().find(|rb| rb.rep == ra.rep)?;
                    let (x, y) = ((f.get)(ra)?, (f.get)(rb)?);
                    (x > 0.0).then(|| (ra.rep, y / x))
                })
                .collect();
            out.push(Row { scenario, figure: f, without, with, ratio, per_rep, met: met(f, ratio) });
        }
    }
    out
}

/// Writes `auth-fanout.json` and `auth-fanout.md` into `a.out_dir`.
///
/// # Errors
///
/// A sentence if the runs cannot be read or the files written.
pub fn run(a: &AuthReportArgs) -> Result<(), String> {
    let (runs, earlier) = super::report::load(&a.runs)?;
    if runs.is_empty() {
        return Err(format!("no run records in {}", a.runs.display()));
    }
    let p = earlier.provenance(&a.command, &a.date, &a.source, a.script_seconds);
    let rows = rows(&runs);
    let machine = earlier.machine.unwrap_or_else(argus_bench::machine::describe);
    let fs = a.data_root.as_deref().and_then(argus_bench::fs_of).or(earlier.fs);
    let reps = runs.iter().map(|r| r.rep).max().unwrap_or(0);
    let version = runs.iter().find(|r| !r.server_version.is_empty()).map(|r| r.server_version.clone());
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} {} rep {}: {}", r.system, r.scenario, r.rep, r.errors.join("; ")))
        .collect();
    let all_met = rows.iter().all(|r| r.met) && failed.is_empty();

    std::fs::create_dir_all(&a.out_dir).map_err(|e| format!("create {}: {e}", a.out_dir.display()))?;
    let rows_json: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario,
                "figure": r.figure.key,
                "higher_is_better": r.figure.higher_is_better,
                "without_auth": r.without,
                "with_auth": r.with,
                "ratio": r.ratio,
                "ratio_per_rep": r.per_rep.iter().map(|(rep, x)| json!({"rep": rep, "ratio": x})).collect::<Vec<_>>(),
                "verdict": if r.met { "MET" } else { "MISSED" },
            })
        })
        .collect();
    let doc = json!({
        "generated_by": "argus-bench auth-report (bench-harness/src/loadgen/auth_report.rs)",
        "command": p.command,
        "date": p.date,
        "source": p.source,
        "machine": machine,
        "data_dir_fs": fs,
        "script_seconds": p.script_seconds,
        "repetitions": reps,
        "argus_version": version,
        "goal": format!("with auth / without auth <= {GOAL} (rates >= 1/{GOAL})"),
        "all_met": all_met,
        "failed_runs": failed,
        "figures": rows_json,
        "runs": runs,
    });
    let json_path = a.out_dir.join("auth-fanout.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("write {}: {e}", json_path.display()))?;

    let mut md = String::new();
    md.push_str("# Fan-out with auth enabled, against the same runs without auth\n\n");
    md.push_str(
        "Generated by `argus-bench auth-report` (bench-harness/src/loadgen/auth_report.rs) from the runs of one \
         `scripts/bench-auth.sh`; do not edit by hand.\n\n",
    );
    let _ = writeln!(md, "- **Command:** `{}`", p.command);
    let _ = writeln!(md, "- **Date (UTC):** {}", p.date);
    let _ = writeln!(md, "- **Source measured:** {}", p.source);
    let _ = writeln!(
        md,
        "- **Server:** Argus {} (`argus serve --fsync always`), on 127.0.0.1 with a fresh data directory per run. \
         `{WITHOUT}`: auth disabled, the load generator sends no token. `{WITH}`: auth enabled (user `root`, and \
         user `bench` with a role granting READWRITE on the prefix `/argus-bench`), the load generator connects as \
         `bench`: one `Auth.Authenticate` per connection, the token in every call, Watch streams included",
        version.as_deref().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "- **Machine:** {}, `nproc` = {}, {} GiB memory, kernel {}, {}; the client and the server share the cores",
        machine.cpu_model, machine.nproc, machine.mem_total_gib, machine.kernel, machine.rustc
    );
    if let Some(fs) = &fs {
        let _ =
            writeln!(md, "- **Data directories:** on {} ({} mounted at `{}`)", fs.fstype, fs.source, fs.mount_point);
    }
    let _ = writeln!(
        md,
        "- **Repetitions:** {reps}, the two systems alternating run by run (the order reversed in alternate \
         repetitions); figures are means over the repetitions, the ratio is with-auth / without-auth of the means \
         (per repetition in parentheses)"
    );
    if let Some(s) = p.script_seconds {
        let _ = writeln!(md, "- **Script time:** {s:.0} s, build included");
    }
    let _ = writeln!(
        md,
        "- **Goal** (issue 13): no figure worse than {GOAL}× the same run without auth: ratio ≤ {GOAL} for costs \
         and latencies, ≥ 1/{GOAL} = {:.3} for rates. **Overall: {}**\n",
        1.0 / GOAL,
        if all_met { "MET" } else { "MISSED" }
    );
    for &(scenario, title) in SCENARIOS {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        if rs.is_empty() {
            continue;
        }
        let _ = writeln!(md, "## {scenario}: {title}\n");
        md.push_str("| figure | without auth | with auth | difference | with / without | goal | verdict |\n");
        md.push_str("|---|---:|---:|---:|---:|---|---|\n");
        for r in rs {
            let per: Vec<String> = r.per_rep.iter().map(|(_, x)| format!("{x:.3}")).collect();
            let goal = if r.figure.higher_is_better { format!("≥ {:.3}", 1.0 / GOAL) } else { format!("≤ {GOAL}") };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}{} | {:.3}× ({}) | {} | {} |",
                r.figure.label,
                show(r.without, r.figure.unit),
                show(r.with, r.figure.unit),
                if r.with >= r.without { "+" } else { "−" },
                show((r.with - r.without).abs(), r.figure.unit),
                r.ratio,
                per.join(", "),
                goal,
                if r.met { "MET" } else { "**MISSED**" }
            );
        }
        let counts: BTreeMap<&str, (usize, usize)> = [WITHOUT, WITH]
            .iter()
            .map(|&s| {
                let v: Vec<&RunRecord> = runs.iter().filter(|r| r.scenario == scenario && r.system == s).collect();
                (s, (v.iter().filter(|r| r.ok).count(), v.len()))
            })
            .collect();
        let _ = writeln!(
            md,
            "\nRuns passed (every watcher checked): {WITHOUT} {}/{}, {WITH} {}/{}.\n",
            counts[WITHOUT].0, counts[WITHOUT].1, counts[WITH].0, counts[WITH].1
        );
    }
    readme_snippet(&mut md, &rows);
    if !failed.is_empty() {
        md.push_str("## Failed runs\n\n");
        for f in &failed {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
    let md_path = a.out_dir.join("auth-fanout.md");
    std::fs::write(&md_path, md).map_err(|e| format!("write {}: {e}", md_path.display()))?;
    Ok(())
}

/// The README's table: per scenario, each figure's ratio with / without auth (the
/// spread of the repetitions' ratios in parentheses), misses in bold.
fn readme_snippet(md: &mut String, rows: &[Row]) {
    md.push_str("## README snippet\n\nRatio with auth / without auth of the means (range over the repetitions).\n\n");
    md.push_str("| scenario |");
    for f in FIGURES {
        let _ = write!(md, " {} |", f.label);
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(FIGURES.len()));
    md.push('\n');
    for &(scenario, _) in SCENARIOS {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        if rs.is_empty() {
            continue;
        }
        let _ = write!(md, "| {scenario} |");
        for f in FIGURES {
            match rs.iter().find(|r| r.figure.key == f.key) {
                None => md.push_str(" – |"),
                Some(r) => {
                    let lo = r.per_rep.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                    let hi = r.per_rep.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                    let spread = if lo.is_finite() { format!(" ({lo:.2}–{hi:.2})") } else { String::new() };
                    let cell = format!("{:.3}×{spread}", r.ratio);
                    let _ = if r.met { write!(md, " {cell} |") } else { write!(md, " **{cell}** |") };
                }
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_direction_depends_on_the_figure() {
        let rate = FIGURES.iter().find(|f| f.key == "events_per_s").unwrap();
        let cost = FIGURES.iter().find(|f| f.key == "server_cpu_per_event_us").unwrap();
        assert!(met(rate, 0.95) && !met(rate, 0.90));
        assert!(met(cost, 1.09) && !met(cost, 1.11));
    }

    #[test]
    fn the_readme_snippet_shows_ratio_spread_and_bolds_a_miss() {
        let f = |key: &str| FIGURES.iter().find(|f| f.key == key).unwrap();
        let row = |figure, ratio: f64, per: &[f64]| Row {
            scenario: "create-10k",
            figure,
            without: 1.0,
            with: ratio,
            ratio,
            per_rep: per.iter().enumerate().map(|(i, x)| (i as u32 + 1, *x)).collect(),
            met: met(figure, ratio),
        };
        let rows = [row(f("rss_per_watcher"), 1.25, &[1.2, 1.3]), row(f("watchers_per_s"), 0.95, &[0.9, 1.0])];
        let mut md = String::new();
        readme_snippet(&mut md, &rows);
        let line = md.lines().find(|l| l.starts_with("| create-10k |")).expect("a row for the scenario");
        assert_eq!(line, "| create-10k | – | – | – | – | – | **1.250× (1.20–1.30)** | 0.950× (0.90–1.00) |");
        assert!(!md.contains("| fanout-w1000 |"), "no row for a scenario without runs");
    }
}
