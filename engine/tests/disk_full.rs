//! A real full disk: a small tmpfs mounted for the test (needs root and mount
//! permission; without them the test says so and checks nothing). On tmpfs, a
//! page of a sparse file that was never written has no memory behind it, and a
//! read of it through a mapping on a full file system is SIGBUS: segments are
//! preallocated and recovery reads with pread, so neither writing to a full disk
//! nor restarting on one kills the process.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use argus_engine::log::FsyncPolicy;
use argus_engine::store::{Store, StoreOptions};
use common::{check_history, k, ErrKind, Limits, Model};

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
    match out {
        Ok(o) if o.status.success() => Some(Mounted(dir.to_path_buf())),
        Ok(o) => {
            println!("SKIPPED: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&o.stderr).trim());
            None
        }
        Err(e) => {
            println!("SKIPPED: cannot run mount: {e}");
            None
        }
    }
}

#[test]
fn a_full_tmpfs_refuses_writes_restarts_and_resumes_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mounted) = mount_tmpfs(tmp.path(), "1m") else { return };
    let data = tmp.path().join("data");
    let filler = tmp.path().join("filler");
    std::fs::write(&filler, vec![1u8; 256 << 10]).unwrap();
    let mut o = StoreOptions::default();
    o.log.fsync = FsyncPolicy::Always;
    o.log.segment_size = 128 << 10;
    o.max_request_bytes = 2048;
    o.max_txn_ops = 8;
    let mut model = Model::new(Limits::of(&o));
    let s = Store::open(&data, o.clone()).unwrap();
    let mut refused = 0;
    for i in 0..4000 {
        let key = format!("k{}", i % 50).into_bytes();
        let v = vec![b'v'; 500];
        match k(s.put(&key, &v)) {
            Ok(r) => assert_eq!(Ok(r), model.put(&key, &v, false), "put {i}"),
            Err(ErrKind::NoSpace) => {
                refused += 1;
                if refused > 20 {
                    break;
                }
            }
            Err(e) => panic!("put {i}: expected success or NoSpace, got {e:?}"),
        }
    }
    assert!(refused > 0, "the tmpfs filled up");
    assert!(!s.log().is_poisoned());
    check_history(&model, &s, "reads on a full disk");
    drop(s);
    // A restart on the full disk (was SIGBUS).
    let s = Store::open(&data, o.clone()).unwrap();
    check_history(&model, &s, "restarted on a full disk");
    // Space returns: writes resume in the same process.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..300 {
        let key = format!("after{}", i % 7).into_bytes();
        assert_eq!(k(s.put(&key, b"space is back")), model.put(&key, b"space is back", false), "put {i} after");
    }
    check_history(&model, &s, "after space returned");
    drop(s);
    let s = Store::open(&data, o).unwrap();
    check_history(&model, &s, "reopened after space returned");
}
