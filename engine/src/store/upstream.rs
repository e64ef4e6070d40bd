//! Revisions assigned upstream: the store of a mirror (`argus mirror`) holds an
//! etcd cluster's revisions, not its own (FORMAT.md, Mirrored logs).
//!
//! [`Store::install_base`] makes a fresh store look as if it had been compacted at
//! the cluster's compaction revision, and [`Store::apply_upstream`] appends each
//! later revision of the cluster as it comes. Both check what is cheap and certain
//! (order, versions, create revisions) before anything is written, and append
//! through the same path as a local write ([`Store::append_locked`]), so readers
//! and the watch notifier see an upstream revision exactly as a local txn.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::HashSet;
use std::rc::Rc;

use super::index::IndexEntry;
use super::{KeyValue, PlannedEvent, Store};
use crate::error::{Error, Result};
use crate::log::record::{RecordData, RecordKind};
use crate::log::Event;
use crate::sync::atomic::Ordering;
use crate::sync::lock;

/// One event of a revision that an upstream cluster assigned (one `mvccpb.Event`
/// of etcd's watch), for [`Store::apply_upstream`] and [`Store::install_base`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamEvent<'a> {
    /// [`RecordKind::Put`] or [`RecordKind::Delete`].
    pub kind: RecordKind,
    /// The key.
    pub key: &'a [u8],
    /// The value after a PUT (ignored for a DELETE).
    pub value: &'a [u8],
    /// The key's create revision after a PUT (ignored for a DELETE, recorded as 0).
    pub create_revision: u64,
    /// The key's version after a PUT (ignored for a DELETE, recorded as 0).
    pub version: u64,
    /// The key's lease after a PUT, 0 for none (ignored for a DELETE).
    pub lease: i64,
}

/// A key for an error message: lossy UTF-8, quoted, cut at 64 bytes.
fn show(key: &[u8]) -> String {
    let cut = &key[..key.len().min(64)];
    let more = if key.len() > 64 { "..." } else { "" };
    format!("{:?}{more}", String::from_utf8_lossy(cut))
}

fn invalid(msg: String) -> Error {
    Error::InvalidUpstream(msg)
}

impl Store {
    /// Refuses the upstream calls on a store that has leases of its own.
    fn upstream_store(&self) -> Result<()> {
        if !self.inner.opts.foreign_leases {
            return Err(invalid(
                "the store holds its own leases: open it with StoreOptions::foreign_leases to apply upstream revisions"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks a key an upstream cluster wrote: non-empty and within the key limit.
    fn check_upstream_key(&self, rev: u64, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(invalid(format!("revision {rev} has an event with an empty key")));
        }
        let max = self.inner.opts.max_key_bytes;
        if key.len() > max {
            return Err(invalid(format!(
                "key {} of revision {rev} is {} bytes, above the limit of {max} bytes",
                show(key),
                key.len()
            )));
        }
        Ok(())
    }

    /// Appends revision `rev` of an upstream cluster with exactly `events`, in
    /// order (sub revisions `0, 1, …`): every record's mod revision is `rev`, and a
    /// PUT's create revision, version and lease are the ones given (a DELETE's are
    /// 0). The key index is updated as by a local write, and the revision is
    /// published to readers and watchers like any commit. Returns once it is
    /// durable per the fsync policy, as a local txn (it shares the group commit).
    ///
    /// Leases stay in the records and index entries: the store must have been
    /// opened with [`StoreOptions::foreign_leases`](super::StoreOptions::foreign_leases).
    /// Values are not held to `max_value_bytes` (the cluster enforced its own
    /// limit); keys are held to `max_key_bytes`.
    ///
    /// # Errors
    ///
    /// Nothing is written on error.
    /// - [`Error::UpstreamOrder`] if `rev` is not the store's last revision + 1;
    /// - [`Error::InvalidUpstream`] if `events` is empty, a key is empty, too large
    ///   or appears twice, a PUT of a live key does not keep its create revision or
    ///   does not have its version + 1, a PUT of a key that does not exist does not
    ///   have version 1 and create revision `rev`, a DELETE names a key that does
    ///   not exist, an event is neither PUT nor DELETE, or the store was not opened
    ///   with `foreign_leases`;
    /// - [`Error::Poisoned`], [`Error::NoSpace`] as a local write.
    pub fn apply_upstream(&self, rev: u64, events: &[UpstreamEvent<'_>]) -> Result<()> {
        self.upstream_store()?;
        let inner = &*self.inner;
        let mut last = lock(&inner.write);
        let expected = *last + 1;
        if rev != expected {
            return Err(Error::UpstreamOrder { expected, got: rev });
        }
        let planned = self.plan_upstream(rev, events)?;
        let ticket = self.append_locked(&mut last, &planned)?;
        drop(last);
        drop(planned);
        inner.log.wait_durable(ticket)
    }

    /// Checks `events` as revision `rev` on top of the state at `rev - 1` (the last
    /// appended revision: the caller holds the write lock) and turns them into the
    /// events [`Store::append_locked`] appends.
    fn plan_upstream<'e>(&self, rev: u64, events: &[UpstreamEvent<'e>]) -> Result<Vec<PlannedEvent<'e>>> {
        if events.is_empty() {
            return Err(invalid(format!("revision {rev} has no events")));
        }
        let base = rev - 1;
        let mut seen: HashSet<&[u8]> = HashSet::with_capacity(events.len());
        let mut planned = Vec::with_capacity(events.len());
        for e in events {
            self.check_upstream_key(rev, e.key)?;
            if !seen.insert(e.key) {
                return Err(invalid(format!("key {} appears twice in revision {rev}", show(e.key))));
            }
            let prior = self.inner.index.get(e.key, base);
            let old_lease = prior.as_ref().map_or(0, |p| p.lease);
            match e.kind {
                RecordKind::Put => {
                    let (create, version) = match &prior {
                        Some(p) => (p.create_revision, p.version + 1),
                        None => (rev, 1),
                    };
                    if (e.create_revision, e.version) != (create, version) {
                        let was = match &prior {
                            Some(p) => format!("live since revision {} at version {}", p.create_revision, p.version),
                            None => "not live".to_string(),
                        };
                        return Err(invalid(format!(
                            "put of key {} at revision {rev} has create revision {} and version {}, but the key is \
                             {was}: expected create revision {create} and version {version}",
                            show(e.key),
                            e.create_revision,
                            e.version
                        )));
                    }
                    planned.push(PlannedEvent {
                        kind: RecordKind::Put,
                        key: Rc::from(e.key),
                        value: Cow::Borrowed(e.value),
                        create_revision: e.create_revision,
                        version: e.version,
                        lease: e.lease,
                        old_lease,
                    });
                }
                RecordKind::Delete => {
                    if prior.is_none() {
                        return Err(invalid(format!(
                            "delete of key {} at revision {rev}, which does not exist at revision {base}",
                            show(e.key)
                        )));
                    }
                    planned.push(PlannedEvent {
                        kind: RecordKind::Delete,
                        key: Rc::from(e.key),
                        value: Cow::Borrowed(&[][..]),
                        create_revision: 0,
                        version: 0,
                        lease: 0,
                        old_lease,
                    });
                }
                kind => {
                    return Err(invalid(format!(
                        "event of key {} at revision {rev} is a {kind:?}, not a PUT or a DELETE",
                        show(e.key)
                    )))
                }
            }
        }
        Ok(planned)
    }

    /// Makes a store that was never written look exactly as if it had been
    /// compacted at `rev`: the base snapshot at `rev` holds `kvs` (the upstream
    /// cluster's live keys at `rev`, in any order, each with its own create and mod
    /// revision, version and lease), and the log starts with revision `rev`'s own
    /// events, `events_at_rev` (what etcd's watch from `rev` delivers for `rev`),
    /// as the segment a compaction keeps: they are in the log for watchers, not in
    /// the index, which the snapshot covers. With `events_at_rev` empty, the log
    /// continues at `rev + 1`.
    ///
    /// Afterwards `current_revision() == rev`, `compact_revision() == rev`, a read
    /// at `rev` sees `kvs`, a watch from `rev` gets `events_at_rev` (a watch from
    /// below is canceled as compacted at `rev`), and [`Store::apply_upstream`]
    /// continues at `rev + 1`. A reopen finds the same state (FORMAT.md, Mirrored
    /// logs).
    ///
    /// Call it before creating a [`WatchHub`](crate::watch::WatchHub) on the store
    /// and before serving reads: while it runs, the store passes through revisions
    /// with nothing readable.
    ///
    /// Returns once everything it wrote is durable, whatever the fsync policy.
    ///
    /// Not atomic: a crash or an error after the snapshot is written leaves a store
    /// compacted at `rev` without (all of) revision `rev`'s events, or with them
    /// not yet durable. The caller records that the bootstrap completed (in its own
    /// file) after this returns, and wipes the directory otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUpstream`], with nothing written, if the store was written
    /// before (a revision, a compaction or a lease), was not opened with
    /// `foreign_leases`, `rev` is 0, a key is empty, too large or given twice, a
    /// key's revisions are not `2 <= create_revision <= mod_revision <= rev` with
    /// version 1 exactly when `create_revision == mod_revision`, or `events_at_rev`
    /// disagrees with `kvs` (a PUT whose key, value, revisions or lease are not
    /// those of `kvs`, a DELETE of a key live in `kvs`, a key of `kvs` changed at
    /// `rev` that no PUT names, or events at revision 1). I/O errors, after which
    /// the store must be discarded.
    pub fn install_base(&self, rev: u64, kvs: &[KeyValue], events_at_rev: &[UpstreamEvent<'_>]) -> Result<()> {
        self.upstream_store()?;
        let inner = &*self.inner;
        let _compacting = lock(&inner.compacting);
        let mut last = lock(&inner.write);
        if *last != 1 || self.current_revision() != 1 || self.compact_revision() != 0 || !inner.leases.ids().is_empty()
        {
            return Err(invalid(format!(
                "a base can be installed only on a store that was never written; this one is at revision {}, \
                 compacted at {}, with {} leases",
                *last,
                self.compact_revision(),
                inner.leases.ids().len()
            )));
        }
        if rev == 0 {
            return Err(invalid("the base revision must be at least 1".into()));
        }
        let mut sorted: Vec<&KeyValue> = kvs.iter().collect();
        sorted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        for pair in sorted.windows(2) {
            if pair[0].key == pair[1].key {
                return Err(invalid(format!("key {} appears twice in the base at {rev}", show(&pair[0].key))));
            }
        }
        for kv in &sorted {
            self.check_upstream_key(rev, &kv.key)?;
            let ok = 2 <= kv.create_revision
                && kv.create_revision <= kv.mod_revision
                && kv.mod_revision <= rev
                && kv.version >= 1
                && (kv.version == 1) == (kv.create_revision == kv.mod_revision);
            if !ok {
                return Err(invalid(format!(
                    "key {} of the base at {rev} has create revision {}, mod revision {} and version {}: expected \
                     2 <= create <= mod <= {rev}, and version 1 exactly when create == mod",
                    show(&kv.key),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version
                )));
            }
        }
        // Revision `rev`'s events against the base; a key's sub revision at `rev`.
        if !events_at_rev.is_empty() && rev < 2 {
            return Err(invalid("revision 1 has no events in etcd; none can be installed".into()));
        }
        let find = |key: &[u8]| sorted.binary_search_by(|kv| kv.key.as_slice().cmp(key)).ok().map(|i| sorted[i]);
        let mut subs: HashMap<&[u8], u32> = HashMap::with_capacity(events_at_rev.len());
        for (i, e) in events_at_rev.iter().enumerate() {
            self.check_upstream_key(rev, e.key)?;
            if subs.insert(e.key, i as u32).is_some() {
                return Err(invalid(format!("key {} appears twice in revision {rev}", show(e.key))));
            }
            match e.kind {
                RecordKind::Put => {
                    let matches = find(e.key).is_some_and(|kv| {
                        kv.mod_revision == rev
                            && kv.create_revision == e.create_revision
                            && kv.version == e.version
                            && kv.lease == e.lease
                            && kv.value == e.value
                    });
                    if !matches {
                        return Err(invalid(format!(
                            "put of key {} at revision {rev} is not the key's state in the base at {rev}",
                            show(e.key)
                        )));
                    }
                }
                RecordKind::Delete => {
                    if find(e.key).is_some() {
                        return Err(invalid(format!(
                            "delete of key {} at revision {rev}, which is live in the base at {rev}",
                            show(e.key)
                        )));
                    }
                }
                kind => {
                    return Err(invalid(format!(
                        "event of key {} at revision {rev} is a {kind:?}, not a PUT or a DELETE",
                        show(e.key)
                    )))
                }
            }
        }
        if !events_at_rev.is_empty() {
            if let Some(kv) = sorted.iter().find(|kv| kv.mod_revision == rev && !subs.contains_key(kv.key.as_slice())) {
                return Err(invalid(format!(
                    "key {} of the base changed at revision {rev}, but no event of revision {rev} puts it",
                    show(&kv.key)
                )));
            }
        }
        // etcd does not report sub revisions: a key changed at `rev` gets its
        // event's, any other 0 (one index entry per key: no two collide).
        let sub_of = |kv: &KeyValue| {
            if kv.mod_revision == rev {
                subs.get(kv.key.as_slice()).copied().unwrap_or(0)
            } else {
                0
            }
        };

        // The snapshot, and the compaction it stands for.
        let records = sorted.iter().map(|kv| RecordData {
            main: kv.mod_revision,
            sub: sub_of(kv),
            kind: RecordKind::Put,
            last: true,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
            key: &kv.key,
            value: &kv.value,
        });
        let locs = inner.log.write_snapshot(rev, records, &[], None)?;
        inner.compact_rev.store(rev, Ordering::Release);
        // Entries of revisions above the committed one (1): readers cannot see them
        // before the log's revision reaches `rev`.
        for (kv, loc) in sorted.iter().zip(locs) {
            let entry = IndexEntry::new(loc, kv.create_revision, kv.version, kv.lease, false);
            inner.index.insert(kv.key.clone(), kv.mod_revision, sub_of(kv), entry);
        }
        if events_at_rev.is_empty() {
            inner.log.start_at(rev + 1)?;
            *last = rev;
            return Ok(());
        }
        // Revision `rev`'s events, for watchers only: the snapshot answers reads.
        inner.log.start_at(rev)?;
        *last = rev - 1;
        let events: Vec<Event<'_>> = events_at_rev
            .iter()
            .map(|e| match e.kind {
                RecordKind::Put => Event {
                    kind: RecordKind::Put,
                    key: e.key,
                    value: e.value,
                    create_revision: e.create_revision,
                    version: e.version,
                    lease: e.lease,
                },
                _ => {
                    Event { kind: RecordKind::Delete, key: e.key, value: &[], create_revision: 0, version: 0, lease: 0 }
                }
            })
            .collect();
        let ticket = inner.log.append(rev, &events, |_| {})?;
        *last = rev;
        drop(last);
        inner.log.wait_durable(ticket)?;
        if inner.opts.log.fsync == crate::log::FsyncPolicy::Never {
            // The caller records the bootstrap as complete once this returns: it
            // must survive a crash under every policy.
            inner.log.flush()?;
        }
        Ok(())
    }
}

impl Store {
    /// Applies consecutive upstream revisions, each as [`Store::apply_upstream`]
    /// checks and appends it, and waits for durability once, after the last: a
    /// mirror catching up applies a watch response of many revisions with one
    /// fsync (group commit) instead of one each. Returns how many were applied.
    ///
    /// Revisions at or below the current one are skipped (a member may send again
    /// what the mirror has).
    ///
    /// # Errors
    ///
    /// As [`Store::apply_upstream`], for the first revision that fails; the ones
    /// before it are appended and become durable as usual, nothing of it or after it
    /// is written.
    pub fn apply_upstream_all<'e, I>(&self, revisions: I) -> Result<usize>
    where
        I: IntoIterator<Item = (u64, &'e [UpstreamEvent<'e>])>,
    {
        self.upstream_store()?;
        let inner = &*self.inner;
        let mut last_ticket = None;
        let mut applied = 0;
        let mut failed = None;
        for (rev, events) in revisions {
            let mut last = lock(&inner.write);
            if rev <= *last {
                continue;
            }
            let expected = *last + 1;
            if rev != expected {
                failed = Some(Error::UpstreamOrder { expected, got: rev });
                break;
            }
            let appended = self.plan_upstream(rev, events).and_then(|planned| self.append_locked(&mut last, &planned));
            match appended {
                Ok(t) => {
                    last_ticket = Some(t);
                    applied += 1;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(t) = last_ticket {
            inner.log.wait_durable(t)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }
}
