//! What the loom model files share.

/// Runs `f` under loom (preemption bound 2 unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise) and prints how many interleavings it explored.
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(move || {
        counter.fetch_add(1, Relaxed);
        f();
    });
    println!("explored {} interleavings", runs.load(Relaxed));
}
