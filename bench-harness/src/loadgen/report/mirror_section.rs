//! The report's "Mirror" section (issue 12): `argus mirror`s in front of a 3-member
//! etcd cluster against the same watchers on the members, from the `mirror-*` runs
//! of `scripts/compare-etcd.sh` (system `etcd`: the watchers on the members;
//! `argus-mirror`: on the mirrors). One table in `compare-etcd.md`, its target rows
//! in the README snippet, and the same rows under `mirror` in `compare-etcd.json`.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{met, metric, ratio_text, runs_of, show, value, Against, Goal, Grouped, ETCD};

/// The system name of the runs with the watchers on the mirrors.
pub(super) const MIRROR: &str = "argus-mirror";

/// The scenarios of the section.
const SCENARIOS: &[&str] = &["mirror-fanout", "mirror-catchup", "mirror-hop"];

/// How a row compares the two setups.
#[derive(Clone, Copy)]
enum Kind {
    /// Argus / etcd (`Against::Etcd`) or etcd / Argus (`Against::EtcdOverArgus`),
    /// with a goal or none.
    Ratio(Against, Option<(Goal, &'static str)>),
    /// The members' CPU per put of the fan-out minus the puts' own cost (the
    /// members' CPU per put of the one-watcher run on etcd): what the watchers cost
    /// the cluster, per put; Argus / etcd.
    BeyondPuts,
    /// Argus minus etcd (the added hop).
    Difference,
    /// The watchers the members hold with the watchers on the mirrors: at most one
    /// per mirror.
    OnePerMirror,
    /// Both figures, no comparison.
    Plain,
}

struct Row {
    id: &'static str,
    /// The figure; `{watchers}`, `{rate}`, `{history}`, `{catchup_watchers}` are
    /// filled in from the runs' parameters.
    text: &'static str,
    scenario: &'static str,
    metric: &'static str,
    kind: Kind,
    /// Also in the README snippet.
    readme: bool,
}

const ROWS: &[Row] = &[
    Row {
        id: "mirror-fanout-member-cpu",
        text: "fan-out, {watchers} watchers at {rate} puts/s: CPU of the 3 etcd members over the window",
        scenario: "mirror-fanout",
        metric: "member_cpu_s",
        kind: Kind::Ratio(Against::Etcd, Some((Goal::AtMost(1.0 / 20.0), "≤ 1/20"))),
        readme: true,
    },
    Row {
        id: "mirror-fanout-member-cpu-per-put",
        text: "fan-out: the members' CPU per put",
        scenario: "mirror-fanout",
        metric: "member_cpu_per_put_us",
        kind: Kind::Ratio(Against::Etcd, None),
        readme: false,
    },
    Row {
        id: "mirror-fanout-member-cpu-beyond-puts",
        text: "fan-out: the members' CPU per put beyond the puts' own cost (minus the one-watcher run's on etcd)",
        scenario: "mirror-fanout",
        metric: "member_cpu_per_put_us",
        kind: Kind::BeyondPuts,
        readme: true,
    },
    Row {
        id: "mirror-fanout-mirror-cpu",
        text: "fan-out: CPU of the 2 mirrors (etcd column: the same mirrors, only following the cluster)",
        scenario: "mirror-fanout",
        metric: "mirror_cpu_s",
        kind: Kind::Plain,
        readme: true,
    },
    Row {
        id: "mirror-fanout-member-watchers",
        text: "fan-out: watchers the etcd members hold (`etcd_debugging_mvcc_watcher_total`, summed)",
        scenario: "mirror-fanout",
        metric: "member_watchers",
        kind: Kind::OnePerMirror,
        readme: true,
    },
    Row {
        id: "mirror-fanout-p99",
        text: "event latency, {watchers} watchers at {rate} puts/s: p99",
        scenario: "mirror-fanout",
        metric: "event_p99_us",
        kind: Kind::Ratio(Against::Etcd, Some((Goal::AtMost(1.0 / 10.0), "≤ 1/10"))),
        readme: true,
    },
    Row {
        id: "mirror-fanout-p50",
        text: "event latency, {watchers} watchers at {rate} puts/s: p50",
        scenario: "mirror-fanout",
        metric: "event_p50_us",
        kind: Kind::Ratio(Against::Etcd, None),
        readme: false,
    },
    Row {
        id: "mirror-catchup-wall",
        text: "catch-up of {catchup_watchers} watchers from revision 1 over {history} revisions: time until all \
               have everything",
        scenario: "mirror-catchup",
        metric: "wall_s",
        kind: Kind::Ratio(Against::EtcdOverArgus, Some((Goal::AtLeast(8.0), "≥ 8× faster"))),
        readme: true,
    },
    Row {
        id: "mirror-catchup-cpu",
        text: "catch-up: CPU of the serving process (the member, the mirror)",
        scenario: "mirror-catchup",
        metric: "server_cpu_s",
        kind: Kind::Ratio(Against::Etcd, None),
        readme: false,
    },
    Row {
        id: "mirror-hop-p50",
        text: "the added hop, one watcher at {rate} puts/s: event latency p50 (difference: mirror minus member)",
        scenario: "mirror-hop",
        metric: "event_p50_us",
        kind: Kind::Difference,
        readme: true,
    },
    Row {
        id: "mirror-hop-p99",
        text: "the added hop: event latency p99 (difference: mirror minus member)",
        scenario: "mirror-hop",
        metric: "event_p99_us",
        kind: Kind::Difference,
        readme: false,
    },
];

/// What the section says about the setup.
const NOTES: &str = "One 3-member etcd cluster on loopback (static bootstrap, heartbeat 50 ms, election timeout \
     500 ms, fresh data directories) and two `argus mirror`s in front of it (their default `--fsync never`: the cluster keeps the revisions, see README), started once for \
     the section. Column **etcd**: the watchers on the members directly (spread over the three, or on the first); \
     column **Argus**: the same watchers on the mirrors (spread over both, or on the first). The puts always go \
     into the cluster, round-robin over the members, so both setups carry the same write load; the mirrors keep \
     following the cluster (one upstream watch each) during the etcd runs too. The members' and the mirrors' CPU \
     are user + system seconds from `/proc/<pid>/stat` over the measured phase (first put to the last event \
     delivered); the watchers the members hold are read from each member's `/metrics` with the run's watchers \
     open. The members' CPU includes what the puts themselves cost them (raft, the WAL's fsyncs, the apply), \
     which no watch tier removes; the row \"beyond the puts' own cost\" subtracts the members' CPU per put of the \
     one-watcher run on etcd from each setup's. Catch-up: the history is written once, before the other runs, \
     and both setups replay it from revision 1 (etcd: from the first member). Event latency is the receive time \
     minus the send time carried in the value, over every delivered event. The fan-out's watchers watch a few \
     keys each shared by many watchers (the shape is in its table under All figures), so that delivering \
     events, not committing puts, is most of what serving them directly costs the members.";

/// Whether the runs include the mirror section.
pub(super) fn present(g: &Grouped<'_>) -> bool {
    SCENARIOS.iter().any(|s| g.contains_key(s))
}

/// A parameter of the first run of `scenario`, as text.
fn param(g: &Grouped<'_>, scenario: &str, key: &str) -> Option<String> {
    g.get(scenario)?
        .values()
        .flat_map(|runs| runs.iter())
        .find_map(|r| r.params.get(key))
        .map(|v| v.to_string().trim_matches('"').to_string())
}

fn row_text(row: &Row, g: &Grouped<'_>) -> String {
    let num = |scenario: &str, key: &str| {
        param(g, scenario, key).map_or_else(|| "?".to_string(), |v| v.parse::<f64>().map_or(v, super::thousands))
    };
    row.text
        .replace("{watchers}", &num("mirror-fanout", "watchers"))
        .replace("{rate}", &num(row.scenario, "rate"))
        .replace("{history}", &num("mirror-catchup", "history"))
        .replace("{catchup_watchers}", &num("mirror-catchup", "watchers"))
}

/// One row's figures.
struct Figures {
    etcd: Option<f64>,
    argus: Option<f64>,
    /// The comparison, as a number (ratio or difference).
    compared: Option<f64>,
    /// The comparison, as the table shows it.
    compared_text: String,
    goal: &'static str,
    verdict: &'static str,
    runs_ok: bool,
}

/// The most mirrors any run of `scenario` had running.
fn mirrors(g: &Grouped<'_>, scenario: &str) -> Option<u64> {
    g.get(scenario)?.values().flat_map(|runs| runs.iter()).filter_map(|r| r.mirror.as_ref()).map(|m| m.mirrors).max()
}

fn figures(row: &Row, g: &Grouped<'_>) -> Figures {
    let fmt = metric(row.metric).fmt;
    let (mut etcd, mut argus) = (value(g, row.scenario, ETCD, row.metric), value(g, row.scenario, MIRROR, row.metric));
    let mut runs_ok = runs_of(g, row.scenario, ETCD).iter().chain(runs_of(g, row.scenario, MIRROR)).all(|r| r.ok);
    let verdict = |goal: Option<Goal>, r: Option<f64>| match (goal, r) {
        (None, _) => "–",
        (Some(_), None) => "NO DATA",
        (Some(goal), Some(r)) if met(goal, r) => "MET",
        (Some(_), Some(_)) => "MISSED",
    };
    let ratio = |against: Against, e: Option<f64>, a: Option<f64>| match against {
        Against::EtcdOverArgus => a.zip(e).filter(|(a, _)| *a > 0.0).map(|(a, e)| e / a),
        _ => a.zip(e).filter(|(a, e)| *e > 0.0 && *a >= 0.0).map(|(a, e)| a / e),
    };
    let (compared, compared_text, goal, verdict) = match row.kind {
        Kind::Ratio(against, goal) => {
            let r = ratio(against, etcd, argus);
            (r, ratio_text(r), goal.map_or("–", |(_, t)| t), verdict(goal.map(|(g, _)| g), r))
        }
        Kind::BeyondPuts => {
            let own = value(g, "mirror-hop", ETCD, row.metric);
            runs_ok &= runs_of(g, "mirror-hop", ETCD).iter().all(|r| r.ok);
            etcd = etcd.zip(own).map(|(v, o)| v - o);
            argus = argus.zip(own).map(|(v, o)| v - o);
            let r = ratio(Against::Etcd, etcd, argus);
            // Within the noise of the puts' own cost, the watchers cost nothing.
            let text = match (etcd, argus) {
                (Some(e), Some(a)) if e > 0.0 && a <= 0.0 => "0 (none measurable)".to_string(),
                _ => ratio_text(r),
            };
            (r, text, "–", "–")
        }
        Kind::Difference => {
            let d = argus.zip(etcd).map(|(a, e)| a - e);
            let text =
                d.map_or("–".to_string(), |d| format!("{}{}", if d >= 0.0 { "+" } else { "" }, show(Some(d), fmt)));
            (d, text, "– (reported)", "–")
        }
        Kind::OnePerMirror => {
            let n = mirrors(g, row.scenario);
            let per = argus.zip(n).filter(|(_, n)| *n > 0).map(|(a, n)| a / n as f64);
            let text = per.map_or("–".to_string(), |p| format!("{p:.2} per mirror"));
            (per, text, "one per mirror", verdict(Some(Goal::AtMost(1.0)), per))
        }
        Kind::Plain => (None, "–".to_string(), "–", "–"),
    };
    Figures { etcd, argus, compared, compared_text, goal, verdict, runs_ok }
}

/// The section's table; `readme`: only the rows of the README snippet.
pub(super) fn table(out: &mut String, g: &Grouped<'_>, readme: bool) {
    out.push_str(
        "| figure | etcd (watchers on the members) | Argus (watchers on the mirrors) | comparison | goal | verdict |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    for row in ROWS.iter().filter(|r| !readme || r.readme) {
        if !g.contains_key(row.scenario) {
            continue;
        }
        let f = figures(row, g);
        let fmt = metric(row.metric).fmt;
        let verdict = match (f.verdict, f.runs_ok) {
            ("–", true) => "–".to_string(),
            ("–", false) => "– (a run failed)".to_string(),
            (v, true) => format!("**{v}**"),
            (v, false) => format!("**{v}** (a run failed)"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {verdict} |",
            row_text(row, g),
            show(f.etcd, fmt),
            show(f.argus, fmt),
            f.compared_text,
            f.goal
        );
    }
}

/// The section of `compare-etcd.md`: the notes and the table.
pub(super) fn section(out: &mut String, g: &Grouped<'_>) {
    let _ = writeln!(out, "{NOTES}\n");
    if !g.contains_key("mirror-fanout") || runs_of(g, "mirror-fanout", MIRROR).is_empty() {
        out.push_str("**No run with the watchers on mirrors** (the build measured has no `argus mirror`).\n\n");
    }
    table(out, g, false);
    missed_reasons(out, g);
}

/// Why the goals the section missed could not be met, from the runs' own figures:
/// what the puts alone cost the members (the one-watcher run on etcd), and how
/// fast etcd delivers an event to one watcher (which every event a mirror delivers
/// waits for first).
fn missed_reasons(out: &mut String, g: &Grouped<'_>) {
    let missed = |id: &str| ROWS.iter().find(|r| r.id == id).is_some_and(|r| figures(r, g).verdict == "MISSED");
    let us = |scenario: &str, system: &str, m: &str| value(g, scenario, system, m);
    let fmt = |m: &str, v: f64| show(Some(v), metric(m).fmt);
    let mut reasons = Vec::new();
    let per_put = "member_cpu_per_put_us";
    if let (true, Some(own), Some(direct), Some(mirrored)) = (
        missed("mirror-fanout-member-cpu"),
        us("mirror-hop", ETCD, per_put),
        us("mirror-fanout", ETCD, per_put),
        us("mirror-fanout", MIRROR, per_put),
    ) {
        reasons.push(format!(
            "- **the members' CPU (≤ 1/20)**: the puts themselves cost the members {} each (the one-watcher run on \
             etcd: raft, the WAL's fsyncs and the apply on all three members), in both setups. With the watchers on \
             the members they spent {} per put, with the watchers on the mirrors {}: the mirrors took away what the \
             watchers cost ({} per put beyond the puts' own, against {}), and what is left is the writes. Meeting \
             1/20 would need the members at {} per put, less than the puts alone cost them: no watch tier can get \
             there while the same writes go into the cluster; it needs watchers that cost the members far more \
             than the writes do (many more watchers per put than here).",
            fmt(per_put, own),
            fmt(per_put, direct),
            fmt(per_put, mirrored),
            fmt(per_put, (mirrored - own).max(0.0)),
            fmt(per_put, direct - own),
            fmt(per_put, direct / 20.0),
        ));
    }
    let p99 = "event_p99_us";
    if let (true, Some(one), Some(direct), Some(mirrored)) = (
        missed("mirror-fanout-p99"),
        us("mirror-hop", ETCD, p99),
        us("mirror-fanout", ETCD, p99),
        us("mirror-fanout", MIRROR, p99),
    ) {
        reasons.push(format!(
            "- **event latency p99 (≤ 1/10)**: an event reaches a mirror's watchers only after etcd committed the put \
             and sent the event to the mirror, and etcd's p99 to one watcher at this rate is {} (the one-watcher \
             run). The mirrors' p99 with all the watchers ({}) is within {} of that floor; etcd serving them directly \
             had {}, so 1/10 would need {}, below etcd's own latency to a single watcher.",
            fmt(p99, one),
            fmt(p99, mirrored),
            fmt(p99, (mirrored - one).max(0.0)),
            fmt(p99, direct),
            fmt(p99, direct / 10.0),
        ));
    }
    if !reasons.is_empty() {
        let _ = writeln!(out, "\nMissed goals of this section, from this run's figures:\n\n{}\n", reasons.join("\n"));
    }
}

/// The rows, for `compare-etcd.json`.
pub(super) fn json(g: &Grouped<'_>) -> Value {
    if !present(g) {
        return Value::Null;
    }
    let rows: Vec<Value> = ROWS
        .iter()
        .filter(|r| g.contains_key(r.scenario))
        .map(|row| {
            let f = figures(row, g);
            json!({
                "id": row.id,
                "figure": row_text(row, g),
                "scenario": row.scenario,
                "metric": row.metric,
                "etcd": f.etcd,
                "argus_mirror": f.argus,
                "compared": f.compared,
                "compared_as": match row.kind {
                    Kind::Ratio(Against::EtcdOverArgus, _) => "etcd / argus",
                    Kind::Ratio(..) | Kind::BeyondPuts => "argus / etcd",
                    Kind::Difference => "argus - etcd",
                    Kind::OnePerMirror => "argus / mirrors",
                    Kind::Plain => "none",
                },
                "goal": f.goal,
                "verdict": f.verdict,
                "runs_ok": f.runs_ok,
            })
        })
        .collect();
    json!({ "notes": NOTES, "rows": rows })
}

#[cfg(test)]
mod tests {
    use super::super::group;
    use super::*;
    use crate::loadgen::mirror::MirrorFigures;
    use crate::loadgen::scenario::RunRecord;
    use crate::loadgen::stats::Latency;

    fn run(scenario: &str, system: &str, rep: u32, f: impl FnOnce(&mut RunRecord, &mut MirrorFigures)) -> RunRecord {
        let mut r = RunRecord {
            scenario: scenario.into(),
            kind: if scenario == "mirror-catchup" { "mirror-catchup" } else { "mirror-fanout" }.into(),
            system: system.into(),
            rep,
            ok: true,
            wall_s: 1.0,
            ..Default::default()
        };
        r.params.insert("watchers".into(), json!(10_000));
        r.params.insert("rate".into(), json!(200.0));
        r.params.insert("history".into(), json!(100_000));
        let mut m = MirrorFigures { mirrors: 2, ..Default::default() };
        f(&mut r, &mut m);
        r.mirror = Some(m);
        r
    }

    fn lat(p50_us: f64, p99_us: f64) -> Option<Latency> {
        Some(Latency { count: 100, p50_us, p99_us, ..Default::default() })
    }

    /// Two repetitions of the section: the members' CPU 12 s against 3 s (1/4:
    /// missed), 2 watchers held (met), p99 1/12 (met), catch-up 9× (met), the hop
    /// +300 µs.
    fn records() -> Vec<RunRecord> {
        let mut v = Vec::new();
        for rep in 1..=2 {
            v.push(run("mirror-fanout", ETCD, rep, |r, m| {
                r.puts = 4000;
                r.event_latency = lat(2_000.0, 24_000.0);
                m.member_cpu_s = Some(12.0);
                m.mirror_cpu_s = Some(0.5);
                m.member_watchers = Some(10_002);
            }));
            v.push(run("mirror-fanout", MIRROR, rep, |r, m| {
                r.puts = 4000;
                r.event_latency = lat(2_500.0, 2_000.0);
                m.member_cpu_s = Some(3.0);
                m.mirror_cpu_s = Some(4.0);
                m.member_watchers = Some(2);
            }));
            v.push(run("mirror-catchup", ETCD, rep, |r, _| r.wall_s = 18.0));
            v.push(run("mirror-catchup", MIRROR, rep, |r, _| r.wall_s = 2.0));
            v.push(run("mirror-hop", ETCD, rep, |r, m| {
                r.puts = 1000;
                r.event_latency = lat(1_400.0, 4_000.0);
                m.member_cpu_s = Some(0.6);
            }));
            v.push(run("mirror-hop", MIRROR, rep, |r, m| {
                r.puts = 1000;
                r.event_latency = lat(1_700.0, 5_000.0);
                m.member_cpu_s = Some(0.6);
            }));
        }
        v
    }

    #[test]
    fn rows_compare_the_two_setups() {
        let runs = records();
        let g = group(&runs);
        let row = |id: &str| figures(ROWS.iter().find(|r| r.id == id).unwrap(), &g);
        let cpu = row("mirror-fanout-member-cpu");
        assert_eq!((cpu.verdict, cpu.compared), ("MISSED", Some(0.25)));
        // Per put: 3,000 µs and 750 µs; the puts' own cost 600 µs.
        let beyond = row("mirror-fanout-member-cpu-beyond-puts");
        assert_eq!((beyond.etcd, beyond.argus), (Some(2_400.0), Some(150.0)));
        assert_eq!(beyond.compared, Some(150.0 / 2_400.0));
        let held = row("mirror-fanout-member-watchers");
        assert_eq!((held.verdict, held.compared_text.as_str()), ("MET", "1.00 per mirror"));
        let p99 = row("mirror-fanout-p99");
        assert_eq!(p99.verdict, "MET");
        let catchup = row("mirror-catchup-wall");
        assert_eq!((catchup.verdict, catchup.compared), ("MET", Some(9.0)));
        // The mirrors' setup below the puts' own cost: no measurable watcher cost.
        let mut cheaper = records();
        for r in cheaper.iter_mut().filter(|r| r.scenario == "mirror-fanout" && r.system == MIRROR) {
            r.mirror.as_mut().unwrap().member_cpu_s = Some(2.0);
        }
        let g2 = group(&cheaper);
        let beyond = figures(ROWS.iter().find(|r| r.id == "mirror-fanout-member-cpu-beyond-puts").unwrap(), &g2);
        assert_eq!((beyond.argus, beyond.compared_text.as_str()), (Some(-100.0), "0 (none measurable)"));
        let hop = row("mirror-hop-p50");
        assert_eq!((hop.compared, hop.compared_text.as_str(), hop.verdict), (Some(300.0), "+300 µs", "–"));
    }

    #[test]
    fn tables_and_json() {
        let runs = records();
        let g = group(&runs);
        assert!(present(&g));
        let mut md = String::new();
        section(&mut md, &g);
        assert!(
            md.contains(
                "| fan-out, 10,000 watchers at 200 puts/s: CPU of the 3 etcd members over the window | 12.00 s | \
                 3.00 s | 0.250 (1/4.0) | ≤ 1/20 | **MISSED** |"
            ),
            "{md}"
        );
        assert!(md.contains("catch-up of 10,000 watchers from revision 1 over 100,000 revisions"), "{md}");
        assert!(md.contains("| 18.00 s | 2.00 s | 9.00× | ≥ 8× faster | **MET** |"), "{md}");
        let mut short = String::new();
        table(&mut short, &g, true);
        assert!(short.contains("watchers the etcd members hold") && !short.contains("p50 |"), "{short}");
        let doc = json(&g);
        let rows = doc["rows"].as_array().unwrap();
        assert_eq!(rows.len(), ROWS.len());
        assert_eq!(rows[0]["verdict"], "MISSED");
        assert_eq!(json(&group(&[])), Value::Null);
    }
}
