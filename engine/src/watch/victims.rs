//! The victim retry queue: streams whose consumer drained after some of their
//! groups became victims, waiting for the notifier to move those groups back to
//! catch-up.
//!
//! A lock-free MPSC hand-off (the facade's [`Queue`], crossbeam's `SegQueue`):
//! consumers of any stream push, the notifier pops. A victim holds only its cursor
//! (next revision), never events, so whatever its lag a slow consumer costs O(1)
//! memory; the log is the buffer.

use super::stream::StreamShared;
use crate::sync::{Arc, Queue};

pub(crate) type RetryQueue = Queue<Arc<StreamShared>>;
