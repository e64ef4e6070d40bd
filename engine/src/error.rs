//! Errors of the engine. Every variant says what went wrong in words a user can act
//! on; none of them is returned after a partial write.

use std::path::PathBuf;

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the log or the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A record or header failed its checks somewhere other than a torn tail.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the bad record or header.
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// The disk is full: the write was refused and nothing of it was written. Reads
    /// and watches go on; writes succeed again once space is freed, no restart.
    #[error("no space left for the revision log: {0}")]
    NoSpace(String),
    /// An earlier write or fsync failed; the log refuses writes until it is reopened.
    #[error("the revision log is poisoned by an earlier failure and refuses writes: {0}")]
    Poisoned(String),
    /// Another process (or handle) holds the data directory.
    #[error("data directory {0} is in use by another process (LOCK is held)")]
    Locked(PathBuf),
    /// The requested revision is below the compaction revision.
    #[error("required revision {requested} has been compacted (compact revision {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The store's compaction revision.
        compact_revision: u64,
    },
    /// The requested revision is above the current revision.
    #[error("required revision {requested} is a future revision (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's current revision.
        current: u64,
    },
    /// A key was empty.
    #[error("key is not provided")]
    EmptyKey,
    /// A key is longer than `StoreOptions::max_key_bytes`.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Length of the key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is longer than `StoreOptions::max_value_bytes`.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The whole request is larger than `StoreOptions::max_request_bytes`.
    #[error("request of {size} bytes is too large (limit {max} bytes)")]
    RequestTooLarge {
        /// Size of the request.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A transaction has more operations than `StoreOptions::max_txn_ops`.
    #[error("too many operations in txn request: {count} (limit {max})")]
    TooManyOps {
        /// Operations in one branch or compares.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A put that keeps the current value found no key.
    #[error("key not found")]
    KeyNotFound,
    /// A put or a lease call names a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease ID that is already in use.
    #[error("lease already exists")]
    LeaseExists,
    /// A grant's TTL is above [`crate::lease::MAX_LEASE_TTL`].
    #[error("too large lease TTL: {ttl} (limit {max})")]
    LeaseTtlTooLarge {
        /// The TTL asked for, in seconds.
        ttl: i64,
        /// The limit.
        max: i64,
    },
    /// A transaction writes the same key twice.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// `range_end` is not above `key` (and is neither empty nor `"\0"`).
    #[error(
        "invalid range: range end must be greater than key (or empty for a single key, or \"\\0\" for all keys >= key)"
    )]
    InvalidRange,
    /// An option is out of its allowed range.
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    /// An upstream revision ([`crate::store::Store::apply_upstream`]) is not the one
    /// after the store's last revision: the mirror missed or repeated revisions.
    #[error("upstream revision {got} is out of order: the store expects revision {expected}")]
    UpstreamOrder {
        /// The revision the store can apply next (its last revision + 1).
        expected: u64,
        /// The revision given.
        got: u64,
    },
    /// Revisions or keys given by an upstream cluster contradict each other or the
    /// store (a version gap, a create revision that moved, an empty key, ...); the
    /// message says what and which key. Nothing was written.
    #[error("invalid upstream data: {0}")]
    InvalidUpstream(String),
    /// A lease call on a store whose leases belong to an upstream cluster
    /// ([`crate::store::StoreOptions::foreign_leases`]): lease calls go to that cluster.
    #[error("the leases of this store belong to its upstream cluster: lease calls must be sent there")]
    LeasesUpstream,
    /// An auth call was refused; displayed with etcd's message.
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
