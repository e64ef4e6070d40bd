//! Reads the fields of an etcd `WatchResponse` the load generator needs straight
//! from its protobuf bytes, without allocating: the header revision, the watch id,
//! the flags, and per event its type, key, value and `mod_revision`.
//!
//! ```text
//! WatchResponse { 1 header { 3 revision }, 2 watch_id, 3 created, 4 canceled,
//!                 5 compact_revision, 6 cancel_reason, 7 fragment,
//!                 11 events { 1 type, 2 kv { 1 key, 2 create_revision,
//!                             3 mod_revision, 4 version, 5 value, 6 lease }, 3 prev_kv } }
//! ```
//!
//! Fields are accepted in any order and unknown fields skipped, as protobuf requires.

/// The per-response fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// `header.revision`.
    pub revision: i64,
    /// `watch_id`.
    pub watch_id: i64,
    /// `created`.
    pub created: bool,
    /// `canceled`.
    pub canceled: bool,
    /// `compact_revision`.
    pub compact_revision: i64,
    /// `fragment`.
    pub fragment: bool,
    /// Number of events.
    pub events: u32,
}

/// One event, borrowed from the response bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// 0 PUT, 1 DELETE.
    pub kind: i32,
    /// `kv.key`.
    pub key: &'a [u8],
    /// `kv.value`.
    pub value: &'a [u8],
    /// `kv.mod_revision`.
    pub mod_revision: i64,
}

/// A malformed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

fn varint(b: &mut &[u8]) -> Result<u64, Malformed> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or(Malformed("truncated varint"))?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(Malformed("varint longer than 10 bytes"))
}

fn bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    let n = usize::try_from(varint(b)?).map_err(|_| Malformed("length overflow"))?;
    if n > b.len() {
        return Err(Malformed("truncated length-delimited field"));
    }
    let (v, rest) = b.split_at(n);
    *b = rest;
    Ok(v)
}

/// Skips a field of `wire_type` whose key was read.
fn skip(b: &mut &[u8], wire_type: u64) -> Result<(), Malformed> {
    let n = match wire_type {
        0 => {
            varint(b)?;
            return Ok(());
        }
        1 => 8,
        2 => {
            bytes(b)?;
            return Ok(());
        }
        5 => 4,
        _ => return Err(Malformed("unsupported wire type")),
    };
    if n > b.len() {
        return Err(Malformed("truncated fixed field"));
    }
    *b = &b[n..];
    Ok(())
}

/// Iterates the (field number, wire type) keys of a message, calling `f` with the
/// rest of the bytes positioned at each value; `f` must consume the value (or
/// return `false` to have it skipped).
fn fields<'a>(
    mut b: &'a [u8],
    mut f: impl FnMut(u64, u64, &mut &'a [u8]) -> Result<bool, Malformed>,
) -> Result<(), Malformed> {
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wt) = (key >> 3, key & 7);
        if !f(field, wt, &mut b)? {
            skip(&mut b, wt)?;
        }
    }
    Ok(())
}

fn event(b: &[u8]) -> Result<EventRef<'_>, Malformed> {
    let mut e = EventRef { kind: 0, key: &[], value: &[], mod_revision: 0 };
    fields(b, |field, wt, b| match (field, wt) {
        (1, 0) => {
            e.kind = varint(b)? as i32;
            Ok(true)
        }
        (2, 2) => {
            let kv = bytes(b)?;
            fields(kv, |field, wt, b| match (field, wt) {
                (1, 2) => {
                    e.key = bytes(b)?;
                    Ok(true)
                }
                (3, 0) => {
                    e.mod_revision = varint(b)? as i64;
                    Ok(true)
                }
                (5, 2) => {
                    e.value = bytes(b)?;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(e)
}

/// Parses a `WatchResponse`, calling `on_event` for each event in order.
///
/// # Errors
///
/// The first malformation found.
pub fn parse<'a>(b: &'a [u8], mut on_event: impl FnMut(EventRef<'a>)) -> Result<Head, Malformed> {
    let mut h = Head::default();
    fields(b, |field, wt, b| {
        match (field, wt) {
            (1, 2) => {
                let header = bytes(b)?;
                fields(header, |field, wt, b| {
                    if (field, wt) == (3, 0) {
                        h.revision = varint(b)? as i64;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?;
            }
            (2, 0) => h.watch_id = varint(b)? as i64,
            (3, 0) => h.created = varint(b)? != 0,
            (4, 0) => h.canceled = varint(b)? != 0,
            (5, 0) => h.compact_revision = varint(b)? as i64,
            (7, 0) => h.fragment = varint(b)? != 0,
            (11, 2) => {
                on_event(event(bytes(b)?)?);
                h.events += 1;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_server::proto::etcdserverpb as pb;
    use argus_server::proto::mvccpb;
    use prost::Message;

    #[test]
    fn reads_what_prost_writes() {
        let kv = |k: &str, v: &str, rev| mvccpb::KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            lease: 0,
        };
        let resp = pb::WatchResponse {
            header: Some(pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 77, raft_term: 3 }),
            watch_id: -1,
            created: true,
            canceled: false,
            compact_revision: 5,
            cancel_reason: "why".into(),
            fragment: true,
            events: vec![
                mvccpb::Event { r#type: 0, kv: Some(kv("/a", "x", 70)), prev_kv: Some(kv("/a", "w", 60)) },
                mvccpb::Event { r#type: 1, kv: Some(kv("/b", "", 71)), prev_kv: None },
            ],
        };
        let bytes = resp.encode_to_vec();
        let mut seen = Vec::new();
        let h = parse(&bytes, |e| seen.push((e.kind, e.key.to_vec(), e.value.to_vec(), e.mod_revision))).unwrap();
        assert_eq!(
            h,
            Head {
                revision: 77,
                watch_id: -1,
                created: true,
                canceled: false,
                compact_revision: 5,
                fragment: true,
                events: 2
            }
        );
        assert_eq!(seen, vec![(0, b"/a".to_vec(), b"x".to_vec(), 70), (1, b"/b".to_vec(), Vec::new(), 71)]);
        assert!(parse(&bytes[..bytes.len() - 1], |_| {}).is_err());
    }
}
