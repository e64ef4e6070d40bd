//! The victim retry queue: streams whose consumer drained after some of their
//! watchers became victims, waiting for the notifier to move those watchers back to
//! catch-up.
//!
//! A lock-free MPSC hand-off (crossbeam's `SegQueue`): consumers of any stream push,
//! the notifier pops. Under loom it is a `Mutex<VecDeque>` so the models can see
//! it. A victim holds only its cursor (next revision), never events, so whatever
//! its lag a slow consumer costs O(1) memory; the log is the buffer.

use super::stream::StreamShared;
use crate::sync::Arc;

pub(crate) struct RetryQueue {
    #[cfg(not(loom))]
    q: crossbeam_queue::SegQueue<Arc<StreamShared>>,
    #[cfg(loom)]
    q: crate::sync::Mutex<std::collections::VecDeque<Arc<StreamShared>>>,
}

impl RetryQueue {
    pub(crate) fn new() -> Self {
        RetryQueue { q: Default::default() }
    }

    pub(crate) fn push(&self, s: Arc<StreamShared>) {
        #[cfg(not(loom))]
        self.q.push(s);
        #[cfg(loom)]
        crate::sync::lock(&self.q).push_back(s);
    }

    pub(crate) fn pop(&self) -> Option<Arc<StreamShared>> {
        #[cfg(not(loom))]
        {
            self.q.pop()
        }
        #[cfg(loom)]
        {
            crate::sync::lock(&self.q).pop_front()
        }
    }
}
