// Seeded concurrency bugs for the loom twin tests (`scripts/loom.sh`).
//
// `ARGUS_BUG=<name>` in the environment of a loom build (`RUSTFLAGS="--cfg loom"`)
// compiles the engine with `--cfg argus_bug="<name>"`: one known bug seeded on
// purpose, which the matching loom model in `loom-tests/` must then find. The bugs
// are a cfg and not cargo features so that `--all-features` never builds one, and
// they are set here rather than in `RUSTFLAGS` so that switching from one twin to
// the next rebuilds only the engine and the loom tests, not every dependency.
// (`RUSTFLAGS="--cfg loom --cfg argus_bug=\"<name>\""` seeds the same bug.)
//
// `loom-tests/build.rs` includes this file, so its tests see the same cfg.

/// Every seeded bug, as `cfg(argus_bug, values(..))` in the workspace lints lists
/// them (which `cargo clippy` checks every use against).
const BUGS: &[&str] = &[
    // Revision log (engine/src/log/mod.rs): `committed_rev` published before the
    // records are written.
    "publish-before-write",
    // Watch engine (engine/src/watch/): a victim's retry lost when it races the
    // consumer's drain; a group made synced before the notifier reaches its cursor;
    // a catch-up result delivered to a reused group slot; the consumer sleeping
    // without re-checking its queue; a progress notification ahead of a delivery.
    "lost-victim-retry",
    "early-handoff",
    "stale-handle",
    "lost-wakeup",
    "progress-ahead",
    // Group commit (engine/src/log/commit.rs): a writer woken as durable before its
    // revision is; the syncer role never handed on (a writer sleeps forever).
    "early-wake",
    "lost-handoff",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=ARGUS_BUG");
    let Ok(bug) = std::env::var("ARGUS_BUG") else { return };
    if bug.is_empty() {
        return;
    }
    assert!(BUGS.contains(&bug.as_str()), "ARGUS_BUG={bug}: no such seeded bug; known: {}", BUGS.join(", "));
    assert!(
        std::env::var_os("CARGO_CFG_LOOM").is_some(),
        "ARGUS_BUG={bug} outside a loom build: seeded bugs are for the loom twins only \
         (scripts/loom.sh; RUSTFLAGS=\"--cfg loom\")"
    );
    println!("cargo::rustc-cfg=argus_bug=\"{bug}\"");
}
