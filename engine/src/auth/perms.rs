//! Per-user merged permissions (etcd's range_perm_cache.go): every permission of
//! every role of a user, merged into one sorted set of disjoint intervals per
//! access, so that a check is one binary search and allocates nothing.

use std::collections::HashMap;

use super::state::AuthState;
use super::{Access, PermKind, ROOT_ROLE};

/// The end of an interval: a key (exclusive), or past every key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Key(Vec<u8>),
    Infinity,
}

impl End {
    /// Whether this end is at or past `key` (as an exclusive end: covers up to it).
    fn reaches(&self, key: &[u8]) -> bool {
        match self {
            End::Infinity => true,
            End::Key(k) => k.as_slice() >= key,
        }
    }
    /// Whether this end is past `key`, i.e. the interval holds `key` itself.
    fn beyond(&self, key: &[u8]) -> bool {
        match self {
            End::Infinity => true,
            End::Key(k) => k.as_slice() > key,
        }
    }
    fn at_or_past(&self, other: &End) -> bool {
        match (self, other) {
            (End::Infinity, _) => true,
            (End::Key(_), End::Infinity) => false,
            (End::Key(a), End::Key(b)) => a >= b,
        }
    }
}

/// Disjoint, non-adjacent half-open intervals `[begin, end)`, sorted by begin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    spans: Vec<(Vec<u8>, End)>,
}

impl IntervalSet {
    /// Merges `spans` (any order, overlapping or adjacent) into a set.
    fn build(mut spans: Vec<(Vec<u8>, End)>) -> IntervalSet {
        spans.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Vec<u8>, End)> = Vec::with_capacity(spans.len());
        for (begin, end) in spans {
            if let Some(last) = out.last_mut() {
                // Overlapping or adjacent (last end == begin): one interval.
                if last.1.reaches(&begin) {
                    if end.at_or_past(&last.1) {
                        last.1 = end;
                    }
                    continue;
                }
            }
            out.push((begin, end));
        }
        IntervalSet { spans: out }
    }

    /// The interval whose begin is the greatest at or below `key`.
    fn floor(&self, key: &[u8]) -> Option<&(Vec<u8>, End)> {
        let i = self.spans.partition_point(|(b, _)| b.as_slice() <= key);
        i.checked_sub(1).map(|i| &self.spans[i])
    }

    /// Whether the set holds the one key `key`.
    pub(crate) fn holds_key(&self, key: &[u8]) -> bool {
        self.floor(key).is_some_and(|(_, e)| e.beyond(key))
    }

    /// Whether the set holds every key of `[key, end)` (`end` None: to the end).
    /// Intervals are merged, so a covered span lies inside one of them.
    pub(crate) fn holds_span(&self, key: &[u8], end: Option<&[u8]>) -> bool {
        let Some((_, e)) = self.floor(key) else { return false };
        match end {
            None => *e == End::Infinity,
            Some(end) => e.reaches(end) && e.beyond(key),
        }
    }
}

/// What one user may do.
#[derive(Clone, Debug, Default)]
pub(crate) struct UserPerms {
    pub(crate) root: bool,
    read: IntervalSet,
    write: IntervalSet,
}

impl UserPerms {
    /// The check of [`super::AuthStore::check`] for this user.
    pub(crate) fn permits(&self, key: &[u8], range_end: &[u8], access: Access) -> bool {
        if self.root {
            return true;
        }
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            return set.holds_key(key);
        }
        if range_end == [0] {
            return set.holds_span(key, None);
        }
        if range_end <= key {
            // An empty span: the request touches no key. etcd 3.4 permits it only
            // when its interval tree visits a permission holding `key` (its
            // overlap test on an inverted interval), so never when `key` itself is
            // not permitted, and not always when it is: the tree's shape prunes
            // some (`get x a` with READ [x, z) among other ranges was refused by
            // etcd 3.4.23). The one key decides here: as etcd in every case but
            // that flaw, which permits a span holding no key.
            return set.holds_key(key);
        }
        set.holds_span(key, Some(range_end))
    }
}

/// Every user's merged permissions, made from one state.
pub(crate) fn merged(state: &AuthState) -> HashMap<String, UserPerms> {
    let mut out = HashMap::with_capacity(state.users.len());
    for (name, user) in &state.users {
        let mut read = Vec::new();
        let mut write = Vec::new();
        for role in &user.roles {
            let Some(perms) = state.roles.get(role) else { continue };
            for p in perms {
                let end = if p.range_end.is_empty() {
                    // One key: [key, key + "\0").
                    let mut next = p.key.clone();
                    next.push(0);
                    End::Key(next)
                } else if p.range_end == [0] {
                    End::Infinity
                } else {
                    End::Key(p.range_end.clone())
                };
                if matches!(p.kind, PermKind::Read | PermKind::ReadWrite) {
                    read.push((p.key.clone(), end.clone()));
                }
                if matches!(p.kind, PermKind::Write | PermKind::ReadWrite) {
                    write.push((p.key.clone(), end));
                }
            }
        }
        out.insert(
            name.clone(),
            UserPerms {
                root: user.has_role(ROOT_ROLE),
                read: IntervalSet::build(read),
                write: IntervalSet::build(write),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(spans: &[(&[u8], Option<&[u8]>)]) -> IntervalSet {
        IntervalSet::build(
            spans.iter().map(|(b, e)| (b.to_vec(), e.map_or(End::Infinity, |e| End::Key(e.to_vec())))).collect(),
        )
    }

    #[test]
    fn merging_joins_overlapping_and_adjacent_intervals() {
        let s = set(&[(b"c", Some(b"e")), (b"a", Some(b"b")), (b"b", Some(b"c")), (b"x", None), (b"d", Some(b"d\0"))]);
        assert_eq!(s.spans.len(), 2, "{s:?}");
        assert!(s.holds_span(b"a", Some(b"e")));
        assert!(!s.holds_span(b"a", Some(b"e\0")));
        assert!(s.holds_span(b"x", None));
        assert!(s.holds_span(b"xyz", None));
        assert!(!s.holds_span(b"w", None));
        assert!(s.holds_key(b"a") && s.holds_key(b"dz") && !s.holds_key(b"e") && !s.holds_key(b"0"));
    }
}
