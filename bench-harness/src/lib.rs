//! Shared helpers of Argus's benchmarks.
//!
//! - [`fs_of`]: which file system a path lives on (from `/proc/self/mountinfo`), so
//!   a benchmark can refuse tmpfs and a report can say where the data was;
//! - [`RunMeta`]: facts a benchmark run records beside criterion's own output (data
//!   directory, its file system, sizes of the data sets), read back by the report;
//! - [`machine`]: the machine a run was made on;
//! - [`load_json`], [`json_num`]: reading the JSON files the runs write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file system a path lives on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    /// Mount point holding the path.
    pub mount_point: String,
    /// File system type (`ext4`, `xfs`, `tmpfs`, ...).
    pub fstype: String,
    /// Mount source (device).
    pub source: String,
}

impl FsInfo {
    /// Whether the file system keeps its data in memory only (fsync is then free and
    /// a benchmark of durability meaningless).
    pub fn is_memory(&self) -> bool {
        matches!(self.fstype.as_str(), "tmpfs" | "ramfs")
    }
}

/// Undoes the octal escapes (`\040` for a space, ...) of a mountinfo field.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file system holding `path` (which must exist): the mount in
/// `/proc/self/mountinfo` with the longest mount point that is a prefix of it.
pub fn fs_of(path: &Path) -> Option<FsInfo> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, FsInfo)> = None;
    for line in info.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = pre.split(' ').nth(4).map(unescape_mount) else { continue };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("").to_string();
        let source = unescape_mount(post.next().unwrap_or(""));
        if path.starts_with(&mount_point) {
            let depth = Path::new(&mount_point).components().count();
            // Later lines of the same mount point shadow earlier ones.
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, FsInfo { mount_point, fstype, source }));
            }
        }
    }
    best.map(|(_, f)| f)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Facts a benchmark run records beside criterion's output, as free-form JSON
/// values under string keys (kept sorted, so the file diffs well).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunMeta {
    /// When the benchmark process started (Unix seconds); results older than this
    /// are from an earlier run.
    pub started_unix: f64,
    /// Everything else.
    pub facts: BTreeMap<String, serde_json::Value>,
}

impl RunMeta {
    /// Reads a meta file.
    ///
    /// # Errors
    ///
    /// I/O or JSON errors, as text.
    pub fn load(path: &Path) -> Result<RunMeta, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
    }

    /// Writes the meta file (whole, via a temporary file and a rename).
    ///
    /// # Errors
    ///
    /// I/O errors, as text.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
    }
}

/// The cargo target directory a benchmark binary runs from: `$CARGO_TARGET_DIR`
/// if set, else the ancestor of the executable above `release/deps` (or
/// `debug/deps`).
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // <target>/<profile>/deps/<exe>
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"))
}

/// The machine a run is made on.
pub mod machine {
    use super::*;

    /// What `machine::describe` found.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct Machine {
        /// Output of `nproc`.
        pub nproc: String,
        /// `model name` of the first processor in `/proc/cpuinfo`.
        pub cpu_model: String,
        /// `MemTotal` of `/proc/meminfo`, in GiB.
        pub mem_total_gib: f64,
        /// Output of `uname -srm`.
        pub kernel: String,
        /// Output of `rustc -V`.
        pub rustc: String,
    }

    /// The trimmed standard output of a command, or a note why there is none.
    pub fn run(cmd: &str, args: &[&str]) -> String {
        match Command::new(cmd).args(args).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => format!("({cmd} failed: {})", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => format!("({cmd} unavailable: {e})"),
        }
    }

    fn proc_field(file: &str, field: &str) -> Option<String> {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == field).then(|| v.trim().to_string())
        })
    }

    /// Describes this machine.
    pub fn describe() -> Machine {
        let mem_kib: f64 = proc_field("/proc/meminfo", "MemTotal")
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0.0);
        Machine {
            nproc: run("nproc", &[]),
            cpu_model: proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "(unknown)".into()),
            mem_total_gib: (mem_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            kernel: run("uname", &["-srm"]),
            rustc: run("rustc", &["-V"]),
        }
    }
}

/// Reads and parses a JSON file.
///
/// # Errors
///
/// A sentence naming the file and what failed.
pub fn load_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// The number at `path` (object keys) inside `v`, if there is one.
pub fn json_num(v: &serde_json::Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_mount(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn finds_the_root_file_system() {
        let fs = fs_of(Path::new("/")).expect("/ is mounted");
        assert_eq!(fs.mount_point, "/");
        assert!(!fs.fstype.is_empty());
    }
}
