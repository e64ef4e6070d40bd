//! Where the log's bytes live: a [`Storage`] trait with a file implementation
//! ([`FileStorage`], memory-mapped reads) and an in-memory one ([`MemStorage`]) that
//! keeps, beside what was written, what was made durable, so a test can crash it and
//! reopen what survived (the way redb tests crash consistency).
//!
//! Invariant shared by both: a [`Mapping`] is made once per file and covers the
//! file's whole length; bytes the log has published (below a segment's committed
//! length) are never written again while a mapping exists, so handing out shared
//! slices of them is sound even while the writer appends further on.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Arc, Mutex};

/// A directory of named files, flat.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Names of the files present.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates (or truncates) `name` with `len` zero bytes.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file; mappings of it stay readable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing `to`.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_dir(&self) -> io::Result<()>;
    /// A path for messages.
    fn path(&self, name: &str) -> PathBuf;
}

/// One file of a [`Storage`].
pub trait StorageFile: Send + Sync {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes all of `bytes` at `offset` (within the file's length).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset` (`pread`: a hole reads as zeros
    /// and needs no memory from the file system, unlike a read through a mapping).
    ///
    /// # Errors
    ///
    /// The operating system's error; `UnexpectedEof` past the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes every write so far durable (fdatasync).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync(&self) -> io::Result<()>;
    /// A read-only view of the whole file that sees later writes.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn map(&self) -> io::Result<Mapping>;
}

enum MappingOwner {
    Mmap(#[allow(dead_code)] memmap2::Mmap),
    Mem(#[allow(dead_code)] Arc<MemBuf>),
    Empty,
}

/// A read-only view of a whole file; keeps the mapping (or buffer) alive.
pub struct Mapping {
    ptr: *const u8,
    len: usize,
    _owner: MappingOwner,
}

// SAFETY: a Mapping only hands out shared slices of bytes that are no longer written
// (see `Mapping::bytes`); the owner (an Mmap or an Arc'd buffer) is itself Send + Sync.
unsafe impl Send for Mapping {}
// SAFETY: as above; there is no interior mutability reachable through &Mapping.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Length of the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `[offset, offset + len)`, or `None` if out of range.
    ///
    /// # Safety
    ///
    /// No write to those bytes may happen while the returned slice lives: the caller
    /// asks only for bytes the log has published (below a committed length), which
    /// the log never writes again, or for bytes of a file nobody writes (recovery runs
    /// before any writer exists).
    pub unsafe fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: [offset, end) lies inside the mapping, which lives as long as self;
        // the caller guarantees no concurrent write to these bytes.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }
}

/// Gives `file` the length `len` with every block reserved (`fallocate`), so that
/// a full disk fails here, with `ENOSPC`, rather than at a later write or as a
/// `SIGBUS` when a page of the mapping has no memory to back it (tmpfs). Falls back
/// to `ftruncate` where the file system cannot preallocate.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(len_off) = libc::off_t::try_from(len) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("file length {len}")));
    };
    if len_off > 0 {
        // SAFETY: plain system call on a file descriptor this function borrows.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
                return Err(e);
            }
        }
    }
    file.set_len(len)
}

/// Files in a directory of the file system, read through read-only mmaps.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    _lock: File,
}

impl FileStorage {
    /// Opens (creating if needed) `dir` and takes its `LOCK`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Locked`] when another handle holds it; I/O errors otherwise.
    pub fn open(dir: impl AsRef<Path>) -> crate::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| crate::Error::io(format!("create data directory {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| crate::Error::io(format!("open {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(crate::Error::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => {
                return Err(crate::Error::io(format!("lock {}", lock_path.display()), e))
            }
        }
        Ok(FileStorage { dir, _lock: lock })
    }
}

struct DiskFile {
    file: File,
    len: u64,
}

impl StorageFile for DiskFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn map(&self) -> io::Result<Mapping> {
        if self.len == 0 {
            return Ok(Mapping { ptr: std::ptr::null(), len: 0, _owner: MappingOwner::Empty });
        }
        // SAFETY: the log is the only writer of its files (the LOCK file keeps other
        // Argus processes out) and never truncates a file while it is mapped; bytes are
        // read through `Mapping::bytes` only once published (see its contract).
        let mmap = unsafe { memmap2::MmapOptions::new().len(self.len as usize).map(&self.file)? };
        Ok(Mapping { ptr: mmap.as_ptr(), len: mmap.len(), _owner: MappingOwner::Mmap(mmap) })
    }
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let path = self.dir.join(name);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        if let Err(e) = allocate(&file, len) {
            // Nothing of it may stay behind: a full disk stays as full as it was.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Arc::new(DiskFile { file, len }))
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(self.dir.join(name))?;
        let len = file.metadata()?.len();
        Ok(Arc::new(DiskFile { file, len }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A fixed-size byte buffer written through a raw pointer, like a mapped file.
struct MemBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is a plain heap allocation; concurrent access follows the
// Mapping contract (writes only to bytes no reader has been handed).
unsafe impl Send for MemBuf {}
// SAFETY: as above.
unsafe impl Sync for MemBuf {}

impl MemBuf {
    fn new(content: &[u8], len: usize) -> Arc<Self> {
        let mut v = vec![0u8; len].into_boxed_slice();
        let n = content.len().min(len);
        v[..n].copy_from_slice(&content[..n]);
        let ptr = Box::into_raw(v) as *mut u8;
        Arc::new(MemBuf { ptr, len })
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "write past the end of a MemFile");
        // SAFETY: in bounds (asserted); writes are serialized by MemFile's lock and
        // target bytes no reader has been handed (Mapping contract).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) }
    }

    /// Copies `[offset, offset + out.len())` into `out`.
    ///
    /// # Panics
    ///
    /// If the range is not inside the buffer.
    fn read_into(&self, offset: usize, out: &mut [u8]) {
        assert!(offset.checked_add(out.len()).is_some_and(|e| e <= self.len), "read past the end of a MemFile");
        // SAFETY: in bounds (asserted); callers hold the file's write lock, so no
        // write to these bytes runs concurrently, and a copy hands out no reference.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), out.len()) }
    }
}

impl Drop for MemBuf {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from Box::into_raw of a boxed slice of exactly len bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

struct MemFile {
    buf: Arc<MemBuf>,
    /// Writes not yet synced, in order: (offset, bytes).
    pending: Mutex<Vec<(u64, Vec<u8>)>>,
    /// The bytes a crash would leave.
    durable: Mutex<Vec<u8>>,
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    /// Bytes the live files may hold in all (0: no limit).
    capacity: AtomicU64,
}

impl StorageFile for MemFile {
    fn len(&self) -> u64 {
        self.buf.len as u64
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected write failure"));
        }
        let mut pending = lock(&self.pending);
        if offset as usize + bytes.len() > self.buf.len {
            return Err(io::Error::other("write past the end of the file"));
        }
        self.buf.write(offset as usize, bytes);
        pending.push((offset, bytes.to_vec()));
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        // Writes hold this lock while they copy into the buffer.
        let _writes = lock(&self.pending);
        let end = (offset as usize).checked_add(buf.len()).filter(|&e| e <= self.buf.len);
        if end.is_none() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        self.buf.read_into(offset as usize, buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        if self.faults.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let mut pending = lock(&self.pending);
        let mut durable = lock(&self.durable);
        for (off, bytes) in pending.drain(..) {
            let off = off as usize;
            durable[off..off + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }

    fn map(&self) -> io::Result<Mapping> {
        let _writes = lock(&self.pending); // see `MemStorage::flip`
        Ok(Mapping { ptr: self.buf.ptr, len: self.buf.len, _owner: MappingOwner::Mem(Arc::clone(&self.buf)) })
    }
}

#[derive(Default)]
struct MemDir {
    live: HashMap<String, Arc<MemFile>>,
    durable: HashMap<String, Arc<MemFile>>,
}

/// How a simulated crash treats writes that were never synced.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Every unsynced write is lost.
    DropUnsynced,
    /// A prefix of the unsynced writes of each file survives, in order, the last one
    /// of them cut at a random byte (a torn write); chosen by `seed`.
    Torn {
        /// Seed of the choice.
        seed: u64,
    },
    /// The page cache wrote back the unsynced pages in no particular order when the
    /// power went: each 4 KiB page touched by unsynced writes survives whole (with
    /// every unsynced write to it) or not at all, independently of the others;
    /// chosen by `seed`. A later page can survive while an earlier one is lost.
    Reordered {
        /// Seed of the choice.
        seed: u64,
    },
}

/// The unit of write-back that [`CrashMode::Reordered`] keeps or loses.
pub const PAGE: usize = 4096;

/// An in-memory [`Storage`] that remembers what is durable, for crash tests.
///
/// Directory changes (create, rename, remove) become durable at `sync_dir`, file
/// contents at `StorageFile::sync`, as on a POSIX file system.
#[derive(Clone, Default)]
pub struct MemStorage {
    dir: Arc<Mutex<MemDir>>,
    faults: Arc<Faults>,
}

impl fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStorage").finish_non_exhaustive()
    }
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later write (`true`) fail, or stops doing so.
    pub fn fail_writes(&self, on: bool) {
        self.faults.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Limits the bytes all live files may hold together (`None`: no limit): a
    /// `create` past it fails with `ErrorKind::StorageFull`, as `fallocate` does on
    /// a full disk. Files already there keep their size.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.faults.capacity.store(bytes.unwrap_or(0), Ordering::SeqCst);
    }

    /// Makes every later fsync (`true`) fail, or stops doing so.
    pub fn fail_syncs(&self, on: bool) {
        self.faults.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// What a machine would find after a power cut now: a new storage holding the
    /// durable directory and, per `mode`, the durable or partly durable contents.
    pub fn crash(&self, mode: CrashMode) -> MemStorage {
        let dir = lock(&self.dir);
        let mut rng_state = match mode {
            CrashMode::Torn { seed } | CrashMode::Reordered { seed } => seed | 1,
            CrashMode::DropUnsynced => 1,
        };
        let mut next = move || {
            // xorshift64*: enough to pick prefixes reproducibly.
            rng_state ^= rng_state >> 12;
            rng_state ^= rng_state << 25;
            rng_state ^= rng_state >> 27;
            rng_state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut out = MemDir::default();
        let faults = Arc::new(Faults::default());
        let mut names: Vec<_> = dir.durable.keys().cloned().collect();
        names.sort();
        for name in names {
            let f = &dir.durable[&name];
            let mut content = lock(&f.durable).clone();
            let pending = lock(&f.pending);
            match mode {
                CrashMode::DropUnsynced => {}
                CrashMode::Torn { .. } if !pending.is_empty() => {
                    let keep = (next() % (pending.len() as u64 + 1)) as usize;
                    for (i, (off, bytes)) in pending.iter().take(keep).enumerate() {
                        let off = *off as usize;
                        let n = if i + 1 == keep { (next() % (bytes.len() as u64 + 1)) as usize } else { bytes.len() };
                        content[off..off + n].copy_from_slice(&bytes[..n]);
                    }
                }
                CrashMode::Torn { .. } => {}
                CrashMode::Reordered { .. } => {
                    // A surviving page gets every unsynced write to it, in order.
                    let mut pages: Vec<usize> = pending
                        .iter()
                        .flat_map(|(off, bytes)| {
                            let first = *off as usize / PAGE;
                            let last = (*off as usize + bytes.len().max(1) - 1) / PAGE;
                            first..=last
                        })
                        .collect();
                    pages.sort_unstable();
                    pages.dedup();
                    let survives: std::collections::HashSet<usize> =
                        pages.into_iter().filter(|_| next() % 2 == 0).collect();
                    for (off, bytes) in pending.iter() {
                        for (i, b) in bytes.iter().enumerate() {
                            let at = *off as usize + i;
                            if survives.contains(&(at / PAGE)) {
                                content[at] = *b;
                            }
                        }
                    }
                }
            }
            drop(pending);
            let len = f.buf.len;
            let file = Arc::new(MemFile {
                buf: MemBuf::new(&content, len),
                pending: Mutex::new(Vec::new()),
                durable: Mutex::new(content),
                faults: Arc::clone(&faults),
            });
            out.live.insert(name.clone(), Arc::clone(&file));
            out.durable.insert(name, file);
        }
        MemStorage { dir: Arc::new(Mutex::new(out)), faults }
    }

    /// Flips bit `bit` of byte `offset` of `name`, live and durable (for corruption tests).
    ///
    /// # Panics
    ///
    /// If the file does not exist, the offset is past its end, `bit > 7`, or the
    /// file is mapped (a log has it open): flipping bytes that a reader may hold a
    /// slice of would be a data race, so corrupt a copy (`crash`) instead.
    pub fn corrupt(&self, name: &str, offset: usize, bit: u8) {
        self.flip(name, offset, bit, false);
    }

    /// As [`MemStorage::corrupt`], for a file a live log has mapped (to make a
    /// reader of it fail).
    ///
    /// # Safety
    ///
    /// No thread may hold or take a slice of that byte of the mapping while this
    /// runs: call it while nothing reads the log (for example before any watcher
    /// or reader exists).
    ///
    /// # Panics
    ///
    /// If the file does not exist, the offset is past its end or `bit > 7`.
    pub unsafe fn corrupt_mapped(&self, name: &str, offset: usize, bit: u8) {
        self.flip(name, offset, bit, true);
    }

    fn flip(&self, name: &str, offset: usize, bit: u8, mapped_ok: bool) {
        assert!(bit < 8, "bit {bit} of a byte");
        let dir = lock(&self.dir);
        let f = dir.live.get(name).expect("no such file");
        assert!(offset < f.buf.len, "offset {offset} past the end of {name} ({} bytes)", f.buf.len);
        // Writes and `map` take this lock: while it is held no write runs and no
        // new mapping is made. Every mapping holds a reference to the buffer and
        // the file holds one, so a count of one means no slice of it exists.
        let _writes = lock(&f.pending);
        assert!(
            mapped_ok || Arc::strong_count(&f.buf) == 1,
            "{name} is mapped: corrupt a crash image of the storage instead"
        );
        let mut byte = [0u8];
        f.buf.read_into(offset, &mut byte);
        byte[0] ^= 1 << bit;
        f.buf.write(offset, &byte);
        lock(&f.durable)[offset] ^= 1 << bit;
    }

    /// The live content of `name`, if it exists (every write so far, synced or not).
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let f = lock(&self.dir).live.get(name).map(Arc::clone)?;
        let mut out = vec![0u8; f.buf.len];
        f.read_at(0, &mut out).expect("in bounds");
        Some(out)
    }

    /// The durable content of `name`, if it exists: what a crash now would leave of
    /// it under [`CrashMode::DropUnsynced`] (every write synced so far, zeros
    /// elsewhere), had its directory entry been synced.
    pub fn read_durable(&self, name: &str) -> Option<Vec<u8>> {
        let f = lock(&self.dir).live.get(name).map(Arc::clone)?;
        let durable = lock(&f.durable).clone();
        Some(durable)
    }
}

impl Storage for MemStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.dir).live.keys().cloned().collect())
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let capacity = self.faults.capacity.load(Ordering::SeqCst);
        if capacity > 0 {
            let dir = lock(&self.dir);
            let used: u64 = dir.live.iter().filter(|(n, _)| n.as_str() != name).map(|(_, f)| f.buf.len as u64).sum();
            if used + len > capacity {
                return Err(io::Error::new(io::ErrorKind::StorageFull, format!("no space for {len} bytes of {name}")));
            }
        }
        let f = Arc::new(MemFile {
            buf: MemBuf::new(&[], len as usize),
            pending: Mutex::new(Vec::new()),
            durable: Mutex::new(vec![0; len as usize]),
            faults: Arc::clone(&self.faults),
        });
        lock(&self.dir).live.insert(name.to_string(), Arc::clone(&f));
        Ok(f)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        match lock(&self.dir).live.get(name) {
            Some(f) => Ok(Arc::clone(f) as Arc<dyn StorageFile>),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_string())),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match lock(&self.dir).live.remove(name) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_string())),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut dir = lock(&self.dir);
        let f = dir.live.remove(from).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_string()))?;
        dir.live.insert(to.to_string(), f);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        if self.faults.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let mut dir = lock(&self.dir);
        dir.durable = dir.live.clone();
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("mem:{name}"))
    }
}

/// Tests of the in-memory storage and of `Mapping`, small enough for Miri
/// (`scripts/miri.sh`), which checks the raw-pointer code for undefined behaviour.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_seen_through_a_mapping_and_read_at() {
        let s = MemStorage::new();
        let f = s.create("a", 64).unwrap();
        let map = f.map().unwrap();
        f.write_at(8, b"hello").unwrap();
        // SAFETY: bytes 8..13 are written and nothing writes them again.
        assert_eq!(unsafe { map.bytes(8, 5) }, Some(&b"hello"[..]));
        // SAFETY: out of range: no slice is made.
        assert_eq!(unsafe { map.bytes(60, 5) }, None);
        // SAFETY: as above, the offset overflows.
        assert_eq!(unsafe { map.bytes(usize::MAX, 2) }, None);
        let mut buf = [0u8; 5];
        f.read_at(8, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(f.read_at(62, &mut buf).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(f.write_at(62, b"abc").is_err(), "a write past the end fails");
        assert_eq!(s.read_file("a").unwrap()[8..13], *b"hello");
        assert_eq!(s.read_file("missing"), None);
    }

    #[test]
    fn crash_modes_keep_what_they_promise() {
        let s = MemStorage::new();
        let f = s.create("a", 3 * PAGE as u64).unwrap();
        s.sync_dir().unwrap();
        f.write_at(0, b"synced").unwrap();
        f.sync().unwrap();
        f.write_at(PAGE as u64, &[7u8; PAGE]).unwrap();
        f.write_at(2 * PAGE as u64, &[9u8; 10]).unwrap();
        let lost = s.crash(CrashMode::DropUnsynced).read_file("a").unwrap();
        assert_eq!(&lost[..6], b"synced");
        assert!(lost[6..].iter().all(|&b| b == 0));
        // Miri is slow: a few seeds there.
        for seed in 0..if cfg!(miri) { 2 } else { 16 } {
            let image = s.crash(CrashMode::Reordered { seed }).read_file("a").unwrap();
            assert_eq!(&image[..6], b"synced", "seed {seed}");
            // Each page is whole or absent.
            let p1 = &image[PAGE..2 * PAGE];
            assert!(p1.iter().all(|&b| b == 7) || p1.iter().all(|&b| b == 0), "seed {seed}");
            let p2 = &image[2 * PAGE..2 * PAGE + 10];
            assert!(p2.iter().all(|&b| b == 9) || p2.iter().all(|&b| b == 0), "seed {seed}");
            let torn = s.crash(CrashMode::Torn { seed }).read_file("a").unwrap();
            assert_eq!(&torn[..6], b"synced", "seed {seed}");
        }
    }

    #[test]
    fn corrupt_flips_one_bit_of_an_unmapped_file() {
        let s = MemStorage::new();
        let f = s.create("a", 16).unwrap();
        s.sync_dir().unwrap();
        f.write_at(0, &[0u8; 16]).unwrap();
        f.sync().unwrap();
        drop(f);
        s.corrupt("a", 3, 2);
        assert_eq!(s.read_file("a").unwrap()[3], 4);
        assert_eq!(s.read_durable("a").unwrap()[3], 4);
    }

    #[test]
    #[should_panic(expected = "is mapped")]
    fn corrupt_refuses_a_mapped_file() {
        let s = MemStorage::new();
        let f = s.create("a", 16).unwrap();
        let _map = f.map().unwrap();
        s.corrupt("a", 3, 2);
    }

    #[test]
    #[should_panic(expected = "past the end")]
    fn corrupt_refuses_an_offset_past_the_end() {
        let s = MemStorage::new();
        drop(s.create("a", 16).unwrap());
        s.corrupt("a", 16, 0);
    }

    #[test]
    fn capacity_refuses_creations_past_it() {
        let s = MemStorage::new();
        s.set_capacity(Some(100));
        drop(s.create("a", 60).unwrap());
        let e = s.create("b", 60).err().expect("past the capacity");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        drop(s.create("a", 100).unwrap()); // replacing a file frees its bytes
        s.set_capacity(None);
        drop(s.create("b", 60).unwrap());
    }

    /// A writer appending while readers read what it published, as the log does.
    #[test]
    fn readers_of_published_bytes_race_an_appender() {
        use crate::sync::atomic::AtomicUsize;
        let s = MemStorage::new();
        let f = s.create("a", 256).unwrap();
        let map = Arc::new(f.map().unwrap());
        let published = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (map, published) = (Arc::clone(&map), Arc::clone(&published));
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < 256 {
                    let n = published.load(Ordering::Acquire);
                    // SAFETY: bytes below `published` are written and never again.
                    let bytes = unsafe { map.bytes(0, n) }.unwrap();
                    assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i / 16) as u8 + 1));
                    seen = n;
                }
            })
        };
        for chunk in 0..16u8 {
            f.write_at(chunk as u64 * 16, &[chunk + 1; 16]).unwrap();
            published.store((chunk as usize + 1) * 16, Ordering::Release);
        }
        reader.join().unwrap();
    }
}
