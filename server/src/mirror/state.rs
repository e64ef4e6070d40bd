//! `mirror.state`: the one file of a mirror's data directory that is not part of
//! the revision log (recovery ignores it). It says which cluster the log mirrors
//! and whether its bootstrap finished:
//!
//! ```text
//! argus-mirror 1
//! cluster_id 12345678901234567890
//! state bootstrapping | ready
//! base 42
//! ```
//!
//! It is written (to a temporary file, fsynced, renamed, directory fsynced) as
//! `bootstrapping` before the bootstrap writes anything, and as `ready` once the
//! base snapshot and its revision are durable. A directory whose state is
//! `bootstrapping` holds an interrupted bootstrap: its log files are deleted and
//! the bootstrap starts again. A directory with log files and no state file is an
//! `argus serve` directory, which a mirror refuses to touch.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the state file in the data directory.
pub const STATE_FILE: &str = "mirror.state";

/// Whether the bootstrap of the directory finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started and not finished: the log files are not to be trusted.
    Bootstrapping,
    /// The log holds the cluster's history from `base` on.
    Ready,
}

/// The contents of `mirror.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorState {
    /// The cluster mirrored (its response headers' `cluster_id`).
    pub cluster_id: u64,
    /// Bootstrap phase.
    pub phase: Phase,
    /// The revision the log was bootstrapped at (1: from the cluster's first).
    pub base: u64,
}

/// What the data directory holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No log files and no state: a new mirror.
    Empty,
    /// A mirror's directory.
    Mirror(MirrorState),
    /// Log files without a state file: not a mirror's directory.
    NotAMirror,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Whether `name` is one of the revision log's files (FORMAT.md, The data directory).
fn is_log_file(name: &str) -> bool {
    (name.starts_with("seg-") || name.starts_with("snap-"))
        && (name.ends_with(".log") || name.ends_with(".snap") || name.ends_with(".tmp"))
}

/// Reads what `dir` holds.
///
/// # Errors
///
/// A sentence naming the file that cannot be read or parsed.
pub fn inspect(dir: &Path) -> Result<Found, String> {
    match fs::read_to_string(path(dir)) {
        Ok(text) => parse(&text).map(Found::Mirror).map_err(|e| format!("{}: {e}", path(dir).display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_log = match fs::read_dir(dir) {
                Ok(entries) => entries.flatten().any(|e| is_log_file(&e.file_name().to_string_lossy())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
            };
            Ok(if has_log { Found::NotAMirror } else { Found::Empty })
        }
        Err(e) => Err(format!("cannot read {}: {e}", path(dir).display())),
    }
}

fn parse(text: &str) -> Result<MirrorState, String> {
    let mut lines = text.lines();
    if lines.next() != Some("argus-mirror 1") {
        return Err("not an argus mirror state file (version 1)".to_string());
    }
    let (mut cluster_id, mut phase, mut base) = (None, None, None);
    for line in lines {
        let Some((k, v)) = line.split_once(' ') else { continue };
        match k {
            "cluster_id" => cluster_id = v.parse::<u64>().ok(),
            "state" => {
                phase = match v {
                    "bootstrapping" => Some(Phase::Bootstrapping),
                    "ready" => Some(Phase::Ready),
                    _ => None,
                }
            }
            "base" => base = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    match (cluster_id, phase, base) {
        (Some(cluster_id), Some(phase), Some(base)) => Ok(MirrorState { cluster_id, phase, base }),
        _ => Err("missing or malformed cluster_id, state or base".to_string()),
    }
}

/// Writes `state` durably (temporary file, fsync, rename, directory fsync).
///
/// # Errors
///
/// A sentence naming the failed step.
pub fn write(dir: &Path, state: MirrorState) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let phase = match state.phase {
        Phase::Bootstrapping => "bootstrapping",
        Phase::Ready => "ready",
    };
    let text = format!("argus-mirror 1\ncluster_id {}\nstate {phase}\nbase {}\n", state.cluster_id, state.base);
    let tmp = dir.join("mirror.state.tmp");
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut f = fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    drop(f);
    fs::rename(&tmp, path(dir)).map_err(|e| io("rename", e))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("fsync {}: {e}", dir.display()))?;
    Ok(())
}

/// Deletes the revision log's files from `dir` (nothing else), for a new bootstrap.
///
/// # Errors
///
/// A sentence naming the file that could not be deleted.
pub fn wipe_log(dir: &Path) -> Result<usize, String> {
    let mut n = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    for e in entries.flatten() {
        if is_log_file(&e.file_name().to_string_lossy()) {
            fs::remove_file(e.path()).map_err(|err| format!("cannot delete {}: {err}", e.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_directories_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Found::Empty);
        fs::write(dir.path().join("seg-00000000000000000002.log"), b"x").unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Found::NotAMirror, "a serve directory is not a mirror's");
        let s = MirrorState { cluster_id: u64::MAX - 3, phase: Phase::Bootstrapping, base: 77 };
        write(dir.path(), s).unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Found::Mirror(s));
        let s = MirrorState { phase: Phase::Ready, ..s };
        write(dir.path(), s).unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Found::Mirror(s));
        fs::write(dir.path().join("other.txt"), b"keep").unwrap();
        assert_eq!(wipe_log(dir.path()).unwrap(), 1);
        assert!(dir.path().join("other.txt").exists() && dir.path().join(STATE_FILE).exists());
        fs::write(path(dir.path()), "argus-mirror 1\ncluster_id x\n").unwrap();
        assert!(inspect(dir.path()).unwrap_err().contains("malformed"));
    }
}
