//! Backups: a [`BackupStream`] of a store's files at one consistent cut, and
//! [`restore`] of such a stream into an empty data directory. `engine/FORMAT.md`,
//! "Backup stream", specifies the bytes; this module follows it.
//!
//! A stream is produced as it is read: its header and entry blocks are made when
//! the cut is taken, file contents are read with `pread` from handles the stream
//! holds open, a piece at a time, so a backup of a multi-GB log never sits in
//! memory. The SHA-256 trailer is computed over the bytes as they are read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::log::StorageFile;
use crate::store::{Store, StoreOptions};
use crate::sync::Arc;

/// Size of a header or entry block, and the unit the body is padded to.
pub const BLOCK: usize = 512;
/// Size of the SHA-256 trailer.
pub const TRAILER: usize = 32;
/// Magic of the header block.
pub const BACKUP_MAGIC: &[u8; 8] = b"ARGUSBAK";
/// Magic of an entry block.
pub const ENTRY_MAGIC: &[u8; 8] = b"ARGUSFIL";
/// The backup format version this code writes and reads.
pub const BACKUP_VERSION: u32 = 1;
/// Longest file name an entry may carry.
const MAX_NAME: usize = 64;

/// Bytes of padding after `len` content bytes.
fn padding(len: u64) -> u64 {
    (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64
}

/// Seals a block: CRC-32C of bytes 0..508 into 508..512.
fn seal(block: &mut [u8; BLOCK]) {
    let crc = crc32c::crc32c(&block[..BLOCK - 4]);
    block[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn sealed(block: &[u8; BLOCK]) -> bool {
    crc32c::crc32c(&block[..BLOCK - 4]).to_le_bytes() == block[BLOCK - 4..]
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// What a backup holds, from its header and entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// The last complete revision in it.
    pub revision: u64,
    /// Its compaction revision (0: never compacted).
    pub compact_revision: u64,
    /// Its files, in order: name and content length.
    pub files: Vec<(String, u64)>,
    /// Bytes before the trailer.
    pub body_len: u64,
}

/// One piece of the body.
enum Piece {
    /// A header or entry block.
    Block(Box<[u8; BLOCK]>),
    /// `len` bytes of a file from offset 0.
    File { file: Arc<dyn StorageFile>, len: u64 },
    /// Padding.
    Zeros(u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Block(_) => BLOCK as u64,
            Piece::File { len, .. } => *len,
            Piece::Zeros(n) => *n,
        }
    }
}

/// A backup of a store as a byte stream (FORMAT.md, Backup stream): read it with
/// [`Read`] to the end. The first [`BackupStream::body_len`] bytes are the body,
/// the last [`TRAILER`] bytes its SHA-256.
///
/// The cut it copies was taken when it was made ([`Store::backup`]); writes and
/// compactions after that do not change what it yields.
pub struct BackupStream {
    pieces: Vec<Piece>,
    /// The piece being read and the offset in it.
    piece: usize,
    offset: u64,
    hasher: Sha256,
    /// The trailer, once the body is read, and how much of it was read.
    trailer: Option<([u8; TRAILER], usize)>,
    summary: BackupSummary,
}

impl std::fmt::Debug for BackupStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupStream").field("summary", &self.summary).finish_non_exhaustive()
    }
}

impl Store {
    /// Takes a consistent cut of the store's files and returns the backup stream
    /// of it (FORMAT.md, Backup stream). Holds the log's writer lock for the cut
    /// and one fsync; reading the stream takes no lock.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] when the log refuses writes (its files may end in a
    /// failed write), I/O errors of the fsync or of opening the base snapshot.
    pub fn backup(&self) -> crate::Result<BackupStream> {
        let cut = self.log().cut()?;
        let mut pieces = Vec::with_capacity(1 + 3 * cut.files.len());
        let mut files = Vec::with_capacity(cut.files.len());
        let mut body_len = BLOCK as u64;
        for f in &cut.files {
            let mut entry = Box::new([0u8; BLOCK]);
            entry[..8].copy_from_slice(ENTRY_MAGIC);
            entry[8..16].copy_from_slice(&f.len.to_le_bytes());
            debug_assert!(!f.name.is_empty() && f.name.len() <= MAX_NAME);
            entry[16..18].copy_from_slice(&(f.name.len() as u16).to_le_bytes());
            entry[18..18 + f.name.len()].copy_from_slice(f.name.as_bytes());
            seal(&mut entry);
            pieces.push(Piece::Block(entry));
            pieces.push(Piece::File { file: Arc::clone(&f.file), len: f.len });
            pieces.push(Piece::Zeros(padding(f.len)));
            body_len += BLOCK as u64 + f.len + padding(f.len);
            files.push((f.name.clone(), f.len));
        }
        let mut header = Box::new([0u8; BLOCK]);
        header[..8].copy_from_slice(BACKUP_MAGIC);
        header[8..12].copy_from_slice(&BACKUP_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(cut.files.len() as u32).to_le_bytes());
        header[16..24].copy_from_slice(&cut.last_rev.to_le_bytes());
        header[24..32].copy_from_slice(&cut.compact_rev.to_le_bytes());
        header[32..40].copy_from_slice(&body_len.to_le_bytes());
        seal(&mut header);
        pieces.insert(0, Piece::Block(header));
        let summary = BackupSummary { revision: cut.last_rev, compact_revision: cut.compact_rev, files, body_len };
        Ok(BackupStream { pieces, piece: 0, offset: 0, hasher: Sha256::new(), trailer: None, summary })
    }
}

impl BackupStream {
    /// Bytes before the trailer (a multiple of [`BLOCK`]).
    pub fn body_len(&self) -> u64 {
        self.summary.body_len
    }

    /// Bytes of the whole stream, trailer included.
    pub fn total_len(&self) -> u64 {
        self.summary.body_len + TRAILER as u64
    }

    /// What the backup holds.
    pub fn summary(&self) -> &BackupSummary {
        &self.summary
    }
}

impl Read for BackupStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while let Some(p) = self.pieces.get(self.piece) {
            let left = p.len() - self.offset;
            if left == 0 {
                self.piece += 1;
                self.offset = 0;
                continue;
            }
            let n = (left.min(buf.len() as u64)) as usize;
            let out = &mut buf[..n];
            match p {
                Piece::Block(b) => out.copy_from_slice(&b[self.offset as usize..self.offset as usize + n]),
                Piece::File { file, .. } => file.read_at(self.offset, out)?,
                Piece::Zeros(_) => out.fill(0),
            }
            self.hasher.update(&*out);
            self.offset += n as u64;
            return Ok(n);
        }
        let (sum, read) = self.trailer.get_or_insert_with(|| (self.hasher.finalize_reset().into(), 0));
        let n = (TRAILER - *read).min(buf.len());
        buf[..n].copy_from_slice(&sum[*read..*read + n]);
        *read += n;
        Ok(n)
    }
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored").field("summary", &self.summary).finish_non_exhaustive()
    }
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file is not a whole, intact backup; `offset` is where the check failed.
    #[error("{file} is not a valid Argus backup: {reason} (at byte {offset})")]
    Invalid {
        /// The backup file.
        file: PathBuf,
        /// Byte offset of the failed check.
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// The target directory has files in it.
    #[error("data directory {0} is not empty: a backup is restored only into an empty or new directory")]
    NotEmpty(PathBuf),
    /// An I/O call failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The restored files did not open as the store the backup describes.
    #[error("the restored files do not open as the store the backup holds: {0}")]
    Store(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// Reads a backup and hands each file's bytes to `sink` as they come, checking
/// everything FORMAT.md's "Restore" lists. `file_len` is the file's length.
struct Walker<'a, R> {
    src: R,
    path: &'a Path,
    /// Bytes read so far.
    pos: u64,
    hasher: Sha256,
}

/// What a [`Walker`] hands its sink.
enum Item<'b> {
    /// A file begins: its name.
    Start(&'b str),
    /// Bytes of its content.
    Data(&'b [u8]),
    /// Its content is complete.
    End,
}

impl<'a, R: Read> Walker<'a, R> {
    fn invalid(&self, offset: u64, reason: impl Into<String>) -> BackupError {
        BackupError::Invalid { file: self.path.to_path_buf(), offset, reason: reason.into() }
    }

    /// Reads exactly `buf.len()` bytes into `buf`, hashing them unless `hash` is off.
    fn fill(&mut self, buf: &mut [u8], hash: bool) -> Result<(), BackupError> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(self.invalid(
                        self.pos + got as u64,
                        "the file ends early: it is truncated (an interrupted copy or download?)",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackupError::Io { context: format!("read {}", self.path.display()), source: e }),
            }
        }
        if hash {
            self.hasher.update(&*buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn block(&mut self) -> Result<Box<[u8; BLOCK]>, BackupError> {
        let mut b = Box::new([0u8; BLOCK]);
        self.fill(&mut b[..], true)?;
        Ok(b)
    }

    fn walk(
        mut self,
        file_len: u64,
        mut sink: impl FnMut(Item<'_>) -> io::Result<()>,
    ) -> Result<BackupSummary, BackupError> {
        let min = (2 * BLOCK + TRAILER) as u64;
        let header = self.block()?;
        if &header[..8] != BACKUP_MAGIC {
            return Err(self.invalid(0, "no ARGUSBAK magic at its start (Argus restores only backups taken from Argus, not etcd's bbolt snapshots)"));
        }
        if !sealed(&header) {
            return Err(self.invalid(508, "the header block fails its checksum: the file is corrupt"));
        }
        let version = u32_at(&header[..], 8);
        if version != BACKUP_VERSION {
            return Err(
                self.invalid(8, format!("backup format version {version}; this Argus reads version {BACKUP_VERSION}"))
            );
        }
        let count = u32_at(&header[..], 12) as usize;
        let revision = u64_at(&header[..], 16);
        let compact_revision = u64_at(&header[..], 24);
        let body_len = u64_at(&header[..], 32);
        if !body_len.is_multiple_of(BLOCK as u64) || body_len.saturating_add(TRAILER as u64) < min {
            return Err(self.invalid(32, format!("body length {body_len} is not a whole number of blocks")));
        }
        let expected = body_len.saturating_add(TRAILER as u64);
        if file_len < expected {
            return Err(self
                .invalid(file_len, format!("the file is truncated: it has {file_len} bytes, the backup {expected}")));
        }
        if file_len > expected {
            return Err(self.invalid(
                expected,
                format!("{} bytes follow the end of the backup ({expected} bytes)", file_len - expected),
            ));
        }
        if count == 0 {
            return Err(self.invalid(12, "the header lists no files"));
        }
        if compact_revision > revision {
            return Err(
                self.invalid(24, format!("compaction revision {compact_revision} is above revision {revision}"))
            );
        }
        let mut files: Vec<(String, u64)> = Vec::with_capacity(count.min(1 << 16));
        let mut last_segment: Option<u64> = None;
        let mut buf = vec![0u8; 1 << 16];
        for i in 0..count {
            let at = self.pos;
            if at + BLOCK as u64 > body_len {
                return Err(self.invalid(at, format!("the body ends before entry {} of {count}", i + 1)));
            }
            let entry = self.block()?;
            if &entry[..8] != ENTRY_MAGIC {
                return Err(self.invalid(at, format!("entry {} has no ARGUSFIL magic", i + 1)));
            }
            if !sealed(&entry) {
                return Err(self.invalid(at + 508, format!("entry {} fails its checksum: the file is corrupt", i + 1)));
            }
            let len = u64_at(&entry[..], 8);
            let name_len = u16::from_le_bytes([entry[16], entry[17]]) as usize;
            if name_len == 0 || name_len > MAX_NAME || entry[18 + name_len..BLOCK - 4].iter().any(|&b| b != 0) {
                return Err(self.invalid(at + 16, format!("entry {} has a malformed name", i + 1)));
            }
            let name = std::str::from_utf8(&entry[18..18 + name_len])
                .map_err(|_| self.invalid(at + 18, format!("entry {} has a name that is not text", i + 1)))?
                .to_string();
            match (parse_name(&name, "snap-", ".snap"), parse_name(&name, "seg-", ".log")) {
                (Some(rev), _) if i == 0 && rev == compact_revision && rev != 0 => {}
                (_, Some(first)) if last_segment.is_none_or(|l| first > l) => last_segment = Some(first),
                _ => {
                    return Err(self.invalid(
                        at + 18,
                        format!("entry {} is named {name:?}, not the next file of a data directory", i + 1),
                    ))
                }
            }
            if compact_revision != 0 && i == 0 && name.starts_with("seg-") {
                return Err(self.invalid(at + 18, format!("compaction revision {compact_revision} but no snapshot")));
            }
            let end = self.pos.checked_add(len).and_then(|e| e.checked_add(padding(len)));
            if end.is_none_or(|e| e > body_len) {
                return Err(self.invalid(at + 8, format!("{name}: {len} bytes run past the end of the body")));
            }
            sink(Item::Start(&name)).map_err(io_err(format!("create {name}")))?;
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                self.fill(&mut buf[..n], true)?;
                sink(Item::Data(&buf[..n])).map_err(io_err(format!("write {name}")))?;
                left -= n as u64;
            }
            let pad = padding(len) as usize;
            let pad_at = self.pos;
            self.fill(&mut buf[..pad], true)?;
            if buf[..pad].iter().any(|&b| b != 0) {
                return Err(self.invalid(pad_at, format!("the padding after {name} is not zeros: the file is corrupt")));
            }
            sink(Item::End).map_err(io_err(format!("sync {name}")))?;
            files.push((name, len));
        }
        if last_segment.is_none() {
            return Err(self.invalid(self.pos, "the backup holds no log segment"));
        }
        if self.pos != body_len {
            return Err(self.invalid(self.pos, format!("the entries end at byte {}, the body at {body_len}", self.pos)));
        }
        let computed: [u8; TRAILER] = std::mem::take(&mut self.hasher).finalize().into();
        let mut trailer = [0u8; TRAILER];
        self.fill(&mut trailer, false)?;
        if trailer != computed {
            return Err(self.invalid(body_len, "the SHA-256 trailer does not match the content: the file is corrupt"));
        }
        Ok(BackupSummary { revision, compact_revision, files, body_len })
    }
}

/// `prefix<20 digits>suffix` → the number.
fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn open_backup(path: &Path) -> Result<(BufReader<File>, u64), BackupError> {
    let f = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let len = f.metadata().map_err(io_err(format!("stat {}", path.display())))?.len();
    Ok((BufReader::with_capacity(1 << 16, f), len))
}

/// Checks the backup file at `path` completely (FORMAT.md, Restore: the first
/// pass) and says what it holds. Writes nothing.
///
/// # Errors
///
/// [`BackupError::Invalid`] naming the failed check, [`BackupError::Io`].
pub fn verify(path: &Path) -> Result<BackupSummary, BackupError> {
    let (src, len) = open_backup(path)?;
    Walker { src, path, pos: 0, hasher: Sha256::new() }.walk(len, |_| Ok(()))
}

/// What [`restore`] did.
pub struct Restored {
    /// What the backup held.
    pub summary: BackupSummary,
    /// The restored store, opened (and so recovered) once; drop it to release the
    /// directory.
    pub store: Store,
}

/// Restores the backup at `path` into `dir` (FORMAT.md, Restore): refuses a
/// non-empty `dir`, verifies the whole file before writing anything, writes the
/// files (fsynced, and the directory), then opens the store with `opts` and checks
/// it recovers at the backup's revision and compaction revision.
///
/// # Errors
///
/// [`BackupError::NotEmpty`] and [`BackupError::Invalid`] with nothing written;
/// [`BackupError::Io`] and [`BackupError::Store`] after the files written were
/// removed again (and `dir` too, if this call created it).
pub fn restore(path: &Path, dir: &Path, opts: StoreOptions) -> Result<Restored, BackupError> {
    let created = match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir.to_path_buf()));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(BackupError::Io { context: format!("read directory {}", dir.display()), source: e }),
    };
    verify(path)?;
    if created {
        fs::create_dir_all(dir).map_err(io_err(format!("create directory {}", dir.display())))?;
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let result = write_and_open(path, dir, opts, &mut written);
    if result.is_err() {
        for p in &written {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_file(dir.join("LOCK"));
        if created {
            let _ = fs::remove_dir(dir);
        }
    }
    result
}

/// The second pass of [`restore`]: writes the files, noting each in `written`
/// before it is created, then opens the store.
fn write_and_open(
    path: &Path,
    dir: &Path,
    opts: StoreOptions,
    written: &mut Vec<PathBuf>,
) -> Result<Restored, BackupError> {
    let (src, len) = open_backup(path)?;
    let mut out: Option<File> = None;
    let summary = Walker { src, path, pos: 0, hasher: Sha256::new() }.walk(len, |item| {
        match item {
            Item::Start(name) => {
                let p = dir.join(name);
                written.push(p.clone());
                out = Some(OpenOptions::new().write(true).create_new(true).open(p)?);
            }
            Item::Data(bytes) => out.as_mut().expect("a file is open").write_all(bytes)?,
            Item::End => out.take().expect("a file is open").sync_all()?,
        }
        Ok(())
    })?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(format!("sync directory {}", dir.display())))?;
    let store = Store::open(dir, opts).map_err(|e: Error| BackupError::Store(e.to_string()))?;
    let (rev, compact) = (store.current_revision(), store.compact_revision());
    if (rev, compact) != (summary.revision, summary.compact_revision) {
        return Err(BackupError::Store(format!(
            "it recovered at revision {rev} (compaction revision {compact}), the backup holds revision {} \
             (compaction revision {})",
            summary.revision, summary.compact_revision
        )));
    }
    Ok(Restored { summary, store })
}

#[cfg(test)]
mod tests;
