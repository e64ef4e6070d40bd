//! The one reading of etcd's `(key, range_end)` pair, shared by the store, the watch
//! engine and the server, so that every request that names keys selects the same
//! ones.
//!
//! etcd's rules (`api/etcdserverpb/rpc.proto`, `RangeRequest`):
//! - `range_end` empty: the one key `key`;
//! - `range_end` is `"\0"`: every key `>= key`;
//! - otherwise the keys in `[key, range_end)`, which selects nothing when
//!   `range_end <= key`. etcd answers such a Range or DeleteRange with nothing; the
//!   store refuses it ([`crate::Error::InvalidRange`]) and the watch engine refuses
//!   such a watch, so [`KeySpan::parse`] reports it as [`KeySpan::Empty`] and lets
//!   each caller decide.
//!
//! An empty `key` is never valid ([`crate::Error::EmptyKey`]); the server maps
//! etcd's "empty key means `\0`" for watches before it parses.

use std::cmp::Ordering;
use std::ops::Bound;

use crate::error::{Error, Result};

/// Lower and upper bound of a non-empty span, as `BTreeMap::range` takes them.
pub type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A parsed `(key, range_end)` pair, borrowing the request's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpan<'a> {
    /// `range_end` empty: exactly this key.
    One(&'a [u8]),
    /// `range_end == "\0"`: every key `>=` this one.
    From(&'a [u8]),
    /// Keys in `[start, end)`, with `start < end`.
    Between(&'a [u8], &'a [u8]),
    /// `range_end <= key` (and not `"\0"`): no key at all.
    Empty,
}

impl<'a> KeySpan<'a> {
    /// Parses `(key, range_end)` by the rules of the module.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`] if `key` is empty.
    pub fn parse(key: &'a [u8], range_end: &'a [u8]) -> Result<KeySpan<'a>> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        Ok(match range_end {
            [] => KeySpan::One(key),
            [0] => KeySpan::From(key),
            e if e <= key => KeySpan::Empty,
            e => KeySpan::Between(key, e),
        })
    }

    /// As [`KeySpan::parse`], refusing a span that selects nothing.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], and [`Error::InvalidRange`] for [`KeySpan::Empty`].
    pub fn parse_non_empty(key: &'a [u8], range_end: &'a [u8]) -> Result<KeySpan<'a>> {
        match Self::parse(key, range_end)? {
            KeySpan::Empty => Err(Error::InvalidRange),
            s => Ok(s),
        }
    }

    /// Whether the span selects key `k`.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeySpan::One(key) => k == key,
            KeySpan::From(start) => k >= start,
            KeySpan::Between(start, end) => k >= start && k < end,
            KeySpan::Empty => false,
        }
    }

    /// Whether some key is in both spans.
    pub fn overlaps(&self, other: &KeySpan<'_>) -> bool {
        match (self.start(), other.start()) {
            (Some(a), Some(b)) => other.starts_before_end(a) && self.starts_before_end(b),
            _ => false,
        }
    }

    /// The smallest key selected (`None` for [`KeySpan::Empty`]).
    pub fn start(&self) -> Option<&'a [u8]> {
        match *self {
            KeySpan::One(k) | KeySpan::From(k) | KeySpan::Between(k, _) => Some(k),
            KeySpan::Empty => None,
        }
    }

    /// Whether a key `k` at or above this span's start is still in it; for `One(key)`
    /// that is `k <= key` (its exclusive end is `key + "\0"`, with no allocation).
    fn starts_before_end(&self, k: &[u8]) -> bool {
        match *self {
            KeySpan::One(key) => k.cmp(key) != Ordering::Greater,
            KeySpan::From(_) => true,
            KeySpan::Between(_, end) => k < end,
            KeySpan::Empty => false,
        }
    }

    /// The span as bounds for a `BTreeMap::range` over keys (`None` for
    /// [`KeySpan::Empty`], which has none: `[key, end)` with `end <= key` would make
    /// `range` panic).
    pub fn bounds(&self) -> Option<Bounds<'a>> {
        match *self {
            KeySpan::One(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeySpan::From(k) => Some((Bound::Included(k), Bound::Unbounded)),
            KeySpan::Between(k, e) => Some((Bound::Included(k), Bound::Excluded(e))),
            KeySpan::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeySpan;
    use crate::Error;

    #[test]
    fn parses_etcd_range_ends() {
        assert_eq!(KeySpan::parse(b"a", b"").unwrap(), KeySpan::One(b"a"));
        assert_eq!(KeySpan::parse(b"a", b"\0").unwrap(), KeySpan::From(b"a"));
        assert_eq!(KeySpan::parse(b"a", b"b").unwrap(), KeySpan::Between(b"a", b"b"));
        assert_eq!(KeySpan::parse(b"b", b"a").unwrap(), KeySpan::Empty);
        assert_eq!(KeySpan::parse(b"a", b"a").unwrap(), KeySpan::Empty);
        // "\0" is "from the key on" even though it sorts below every key.
        assert_eq!(KeySpan::parse(b"\0", b"\0").unwrap(), KeySpan::From(b"\0"));
        assert!(matches!(KeySpan::parse(b"", b""), Err(Error::EmptyKey)));
        assert!(matches!(KeySpan::parse(b"", b"\0"), Err(Error::EmptyKey)));
        assert!(matches!(KeySpan::parse_non_empty(b"b", b"a"), Err(Error::InvalidRange)));
        assert_eq!(KeySpan::parse_non_empty(b"a", b"b").unwrap(), KeySpan::Between(b"a", b"b"));
    }

    #[test]
    fn contains_and_overlaps_agree_with_a_key_by_key_reading() {
        let keys: Vec<Vec<u8>> = ["a", "a\0", "ab", "b", "c", "d"].iter().map(|k| k.as_bytes().to_vec()).collect();
        let spans = [
            KeySpan::One(b"a"),
            KeySpan::One(b"b"),
            KeySpan::From(b"b"),
            KeySpan::Between(b"a", b"b"),
            KeySpan::Between(b"a\0", b"ab"),
            KeySpan::Between(b"b", b"c"),
            KeySpan::Empty,
        ];
        assert!(KeySpan::Between(b"a", b"b").contains(b"ab") && !KeySpan::Between(b"a", b"b").contains(b"b"));
        assert!(KeySpan::From(b"b").contains(b"zz") && !KeySpan::From(b"b").contains(b"a"));
        for a in &spans {
            for b in &spans {
                // Over this key set every overlap has a witness key in it.
                let witness = keys.iter().any(|k| a.contains(k) && b.contains(k));
                assert_eq!(a.overlaps(b), witness, "{a:?} {b:?}");
            }
        }
    }
}
