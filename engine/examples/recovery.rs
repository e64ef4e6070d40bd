//! Times recovery: writes N revisions (64-byte keys, 256-byte values, fsync=never)
//! into a temporary data directory, then reopens it.
//!
//! `cargo run --release -p argus-engine --example recovery -- 1000000`

use std::time::Instant;

use argus_engine::log::FsyncPolicy;
use argus_engine::store::{Store, StoreOptions};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("argus-recovery-{}", std::process::id()));
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never;
    {
        let store = Store::open(&dir, opts.clone()).expect("open");
        let value = [b'v'; 256];
        let t = Instant::now();
        for i in 0..n {
            let key = format!("/bench/{:057}", i % 100_000);
            store.put(key.as_bytes(), &value).expect("put");
        }
        store.flush().expect("flush");
        println!("wrote {n} revisions in {:?}", t.elapsed());
    }
    for _ in 0..3 {
        let t = Instant::now();
        let store = Store::open(&dir, opts.clone()).expect("reopen");
        println!("recovered {} revisions in {:?}", store.current_revision() - 1, t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
