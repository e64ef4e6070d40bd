//! `argus restore FILE --data-dir DIR`: rebuilds a data directory from a backup
//! that `etcdctl snapshot save` (or any client of `Maintenance.Snapshot`) saved
//! from Argus. The engine does the work (`argus_engine::backup::restore`: verify
//! everything first, then write, then open the store once); this says what it
//! restored.

use std::path::Path;

use argus_engine::backup;
use argus_engine::store::{RangeOptions, StoreOptions};

/// Restores `file` into `dir` and returns the line to print: revision, compaction
/// revision, keys, files.
///
/// # Errors
///
/// A sentence saying what is wrong with the file or the directory; `dir` is left
/// as it was (nothing written, or what was written removed again).
pub fn run(file: &Path, dir: &Path) -> Result<String, String> {
    let restored = backup::restore(file, dir, StoreOptions::default())
        .map_err(|e| format!("{e}; {} was left as it was", dir.display()))?;
    let s = &restored.summary;
    let all = RangeOptions { count_only: true, ..RangeOptions::default() };
    let keys =
        restored.store.range(b"\0", b"\0", all).map_err(|e| format!("the restored store cannot be read: {e}"))?.count;
    let bytes: u64 = s.files.iter().map(|(_, len)| len).sum();
    let compacted = match s.compact_revision {
        0 => "never compacted".to_string(),
        c => format!("compaction revision {c}"),
    };
    let keys = if keys == 1 { "1 key".to_string() } else { format!("{keys} keys") };
    Ok(format!(
        "restored {} into {}: revision {}, {compacted}, {keys} ({} files, {bytes} bytes)",
        file.display(),
        dir.display(),
        s.revision,
        s.files.len(),
    ))
}
