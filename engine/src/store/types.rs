//! Requests and answers of the store, shaped like etcd's KV API.

/// A key's state at a revision (etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty with `keys_only`).
    pub value: Vec<u8>,
    /// Revision that created the key's current generation.
    pub create_revision: u64,
    /// Revision of the key's last change.
    pub mod_revision: u64,
    /// Puts since creation, from 1.
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// Options of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Revision to read at; 0 = current.
    pub revision: u64,
    /// Most keys returned; 0 = no limit.
    pub limit: usize,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
}

/// Answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Keys found, in key order (at most `limit`).
    pub kvs: Vec<KeyValue>,
    /// Keys matching, ignoring `limit`.
    pub count: usize,
    /// Whether `limit` cut the answer.
    pub more: bool,
    /// Store revision when the read was served (etcd's header revision).
    pub revision: u64,
}

/// Answer to a put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// Revision of the put.
    pub revision: u64,
    /// The key's previous state, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// Answer to a delete-range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResult {
    /// Revision of the delete (the current revision if nothing was deleted).
    pub revision: u64,
    /// Keys deleted.
    pub deleted: u64,
    /// Their previous states, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value.
    Value(Vec<u8>),
    /// The version (0 for a missing key).
    Version(u64),
    /// The create revision (0 for a missing key).
    CreateRevision(u64),
    /// The mod revision (0 for a missing key).
    ModRevision(u64),
    /// The lease (0 for a missing key or a key without one).
    Lease(i64),
}

/// How a compare relates the key's field to the operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// field == operand
    Equal,
    /// field > operand
    Greater,
    /// field < operand
    Less,
    /// field != operand
    NotEqual,
}

/// One condition of a txn (etcd's `Compare`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key (or range start).
    pub key: Vec<u8>,
    /// Range end, as in a range read; every key in the range must satisfy it.
    pub range_end: Vec<u8>,
    /// Field and operand.
    pub target: CompareTarget,
    /// Relation.
    pub op: CompareOp,
}

impl Compare {
    /// A compare on one key.
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare { key: key.into(), range_end: Vec::new(), target, op }
    }

    pub(crate) fn holds(&self, kv: &KeyValue) -> bool {
        use std::cmp::Ordering;
        let ord = match &self.target {
            CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
            CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
            CompareOp::NotEqual => ord != Ordering::Equal,
        }
    }
}

/// Which lease a put leaves its key attached to (etcd's `lease` and `ignore_lease`
/// of a `PutRequest`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PutLease {
    /// None (etcd's lease 0): a key attached to a lease is detached from it.
    #[default]
    None,
    /// This lease, which must exist ([`crate::Error::LeaseNotFound`] otherwise).
    Attach(i64),
    /// The key's current one (etcd's `ignore_lease`; [`crate::Error::KeyNotFound`]
    /// if the key does not exist).
    Keep,
}

/// One operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Put `value` at `key`.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Return the previous state.
        prev_kv: bool,
        /// The lease the key is left attached to.
        lease: PutLease,
    },
    /// Put `key` again with its current value (etcd's `ignore_value`): a new
    /// revision and version; [`crate::Error::KeyNotFound`] if the key does not exist.
    PutKeepValue {
        /// Key.
        key: Vec<u8>,
        /// Unused; must be empty (keeps the shape of `Put` for matching).
        value: Vec<u8>,
        /// Return the previous state.
        prev_kv: bool,
        /// The lease the key is left attached to.
        lease: PutLease,
    },
    /// Delete `[key, range_end)`.
    DeleteRange {
        /// Key or range start.
        key: Vec<u8>,
        /// Range end (empty: one key).
        range_end: Vec<u8>,
        /// Return the deleted states.
        prev_kv: bool,
    },
    /// Read `[key, range_end)`.
    Range {
        /// Key or range start.
        key: Vec<u8>,
        /// Range end (empty: one key).
        range_end: Vec<u8>,
        /// Read options.
        options: RangeOptions,
    },
    /// A nested txn (etcd's `RequestOp.request_txn`): part of the enclosing txn and
    /// of its one revision. As in etcd 3.4, its compares are evaluated with every
    /// other compare of the request against the state *before* the txn (they do not
    /// see the writes of the ops before it), while its ops, like every op, see the
    /// writes of the ops that ran before them, at any level. Its ops count against
    /// what is left of the op limit ([`crate::store::StoreOptions::max_txn_ops`]
    /// minus the enclosing txn's largest of compares, success ops and failure ops),
    /// and etcd's duplicate-key rules apply across levels (see [`crate::store::Store::txn`]).
    Txn {
        /// Its conditions.
        compares: Vec<Compare>,
        /// Ops run if every compare holds.
        success: Vec<TxnOp>,
        /// Ops run otherwise.
        failure: Vec<TxnOp>,
    },
}

/// Answer to one txn operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    /// Of a put.
    Put(PutResult),
    /// Of a delete-range.
    DeleteRange(DeleteResult),
    /// Of a range.
    Range(RangeResult),
    /// Of a nested txn: its branch and that branch's answers; its `revision` is the
    /// enclosing txn's.
    Txn(TxnResult),
}

/// Answer to a txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<TxnOpResult>,
    /// Revision after the txn (new if it wrote, else the current one).
    pub revision: u64,
}
