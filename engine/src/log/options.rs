//! The log's settings: how and when appended revisions are made durable, and how
//! large segment files are.

use std::time::Duration;

/// When an appended revision is made durable before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging; writers waiting at the same time share one fsync.
    Always,
    /// Like `Always`, but the fsync waits for more writers to share it: in slices of
    /// an eighth of `LogOptions::batch_delay`, until a slice brings nobody new, the
    /// delay has passed, or `batch_bytes` are pending.
    Batch,
    /// Acknowledge once written to the page cache; only segment seals and snapshots
    /// are fsynced. A crash may lose acknowledged writes, never corrupt older ones.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!("unknown fsync policy {other:?} (expected always, batch or never)")),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Never => "never",
        })
    }
}

/// Settings of the log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Size a new segment file is created with (a revision larger than this gets a
    /// segment of its own, as large as it needs).
    pub segment_size: u64,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Longest wait for company before a `Batch` fsync.
    pub batch_delay: Duration,
    /// Pending bytes that start a `Batch` fsync without waiting.
    pub batch_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: 64 << 20,
            fsync: FsyncPolicy::Always,
            batch_delay: Duration::from_millis(2),
            batch_bytes: 1 << 20,
        }
    }
}
