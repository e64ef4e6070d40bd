//! Encoding and decoding of one log record, exactly as `engine/FORMAT.md` specifies.
//!
//! The decoder is total: any byte string gives either a borrowed [`RecordRef`] or a
//! [`DecodeError`] naming the failed check; it never panics and never reads out of
//! bounds (`fuzz/fuzz_targets/record_decode.rs` holds it to that).

/// Size of the fixed record header.
pub const RECORD_HEADER: usize = 56;
/// Size of a file header (segment or snapshot).
pub const FILE_HEADER: usize = 32;
/// Magic of a log segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ARGUSLOG";
/// Magic of a snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"ARGUSNAP";
/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Flag bit: the last record of its main revision.
pub const FLAG_LAST: u8 = 1;
/// Flag bit (PUT only): bytes 40..48 hold the key's lease, not its mod revision
/// (which is then the record's main revision).
pub const FLAG_LEASE: u8 = 2;

/// Kind of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A key was written.
    Put,
    /// A key was deleted.
    Delete,
    /// Snapshot trailer.
    End,
    /// A lease was granted (a lease record: between revisions, not an event).
    LeaseGrant,
    /// A lease was revoked (a lease record: between revisions, not an event).
    LeaseRevoke,
    /// A change of the auth state (an auth record: between revisions like a lease
    /// record, not an event; its value is decoded by `crate::auth`).
    Auth,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Put => 0,
            RecordKind::Delete => 1,
            RecordKind::End => 2,
            RecordKind::LeaseGrant => 3,
            RecordKind::LeaseRevoke => 4,
            RecordKind::Auth => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(RecordKind::Put),
            1 => Some(RecordKind::Delete),
            2 => Some(RecordKind::End),
            3 => Some(RecordKind::LeaseGrant),
            4 => Some(RecordKind::LeaseRevoke),
            5 => Some(RecordKind::Auth),
            _ => None,
        }
    }

    /// Whether this is a lease record, which sits between revisions and is no event.
    pub fn is_lease(self) -> bool {
        matches!(self, RecordKind::LeaseGrant | RecordKind::LeaseRevoke)
    }

    /// Whether this record sits between revisions (a lease or an auth record,
    /// FORMAT.md): no event, skipped by readers of revisions.
    pub fn is_between_revisions(self) -> bool {
        matches!(self, RecordKind::LeaseGrant | RecordKind::LeaseRevoke | RecordKind::Auth)
    }
}

/// The value of a LEASE_GRANT record: lease ID and TTL in seconds.
pub fn lease_grant_value(id: i64, ttl: i64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..8].copy_from_slice(&id.to_le_bytes());
    v[8..16].copy_from_slice(&ttl.to_le_bytes());
    v
}

/// What a lease record says: `(id, Some(ttl))` for a grant, `(id, None)` for a
/// revoke; `None` if `r` is no lease record or its value has the wrong size.
pub fn lease_op(r: &RecordRef<'_>) -> Option<(i64, Option<i64>)> {
    let word = |at: usize| r.value.get(at..at + 8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
    match r.kind {
        RecordKind::LeaseGrant if r.value.len() == 16 => Some((word(0)?, Some(word(8)?))),
        RecordKind::LeaseRevoke if r.value.len() == 8 => Some((word(0)?, None)),
        _ => None,
    }
}

/// A decoded record borrowing its key and value from the bytes it was read from
/// (a memory-mapped segment: reading one copies nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Main revision.
    pub main: u64,
    /// Sub revision: position of the event inside its main revision.
    pub sub: u32,
    /// PUT, DELETE or END.
    pub kind: RecordKind,
    /// Whether this is the last record of its main revision.
    pub last: bool,
    /// Revision that created the key's current generation (0 for DELETE).
    pub create_revision: u64,
    /// Revision of this change.
    pub mod_revision: u64,
    /// Puts since creation (0 for DELETE).
    pub version: u64,
    /// The lease the key is attached to (PUT; 0: none).
    pub lease: i64,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for DELETE).
    pub value: &'a [u8],
}

/// What a record to encode holds; the borrowed twin of [`RecordRef`].
#[derive(Clone, Copy, Debug)]
pub struct RecordData<'a> {
    /// Main revision.
    pub main: u64,
    /// Sub revision.
    pub sub: u32,
    /// Kind.
    pub kind: RecordKind,
    /// Sets the `LAST` flag.
    pub last: bool,
    /// Create revision.
    pub create_revision: u64,
    /// Mod revision.
    pub mod_revision: u64,
    /// Version.
    pub version: u64,
    /// The key's lease (PUT; 0: none). Nonzero sets `LEASE` and is written in place
    /// of `mod_revision`, which must then equal `main`.
    pub lease: i64,
    /// Key.
    pub key: &'a [u8],
    /// Value.
    pub value: &'a [u8],
}

impl<'a> RecordData<'a> {
    /// A lease record (FORMAT.md, Lease records): `kind` LEASE_GRANT or
    /// LEASE_REVOKE (or AUTH, framed the same: FORMAT.md, Auth records), after
    /// revision `main`, with its `value`.
    pub fn lease_record(main: u64, kind: RecordKind, value: &'a [u8]) -> RecordData<'a> {
        debug_assert!(kind.is_between_revisions());
        RecordData {
            main,
            sub: 0,
            kind,
            last: true,
            create_revision: 0,
            mod_revision: 0,
            version: 0,
            lease: 0,
            key: b"",
            value,
        }
    }
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length field is zero: nothing was ever written here.
    Empty,
    /// Fewer bytes remain than a header, or than the length field says.
    Truncated,
    /// The length field or the key/value lengths are inconsistent.
    BadLength,
    /// Unknown kind or flag bits, or nonzero reserved bytes.
    BadField,
    /// The checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Empty => "zero length (unwritten space)",
            DecodeError::Truncated => "record runs past the end of the file",
            DecodeError::BadLength => "inconsistent record length",
            DecodeError::BadField => "unknown kind, flags or reserved bits",
            DecodeError::BadChecksum => "checksum mismatch",
        })
    }
}

/// Bytes a record with a `key_len`-byte key and a `value_len`-byte value occupies.
pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    (RECORD_HEADER + key_len + value_len).next_multiple_of(8)
}

/// Appends the encoding of `r` to `out`.
pub fn encode(r: &RecordData<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let len = encoded_len(r.key.len(), r.value.len());
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&r.main.to_le_bytes());
    out.extend_from_slice(&r.sub.to_le_bytes());
    out.push(r.kind.to_byte());
    let leased = r.lease != 0;
    debug_assert!(!leased || (r.kind == RecordKind::Put && r.mod_revision == r.main), "only a PUT carries a lease");
    out.push(if r.last { FLAG_LAST } else { 0 } | if leased { FLAG_LEASE } else { 0 });
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.create_revision.to_le_bytes());
    if leased {
        out.extend_from_slice(&r.lease.to_le_bytes());
    } else {
        out.extend_from_slice(&r.mod_revision.to_le_bytes());
    }
    out.extend_from_slice(&r.version.to_le_bytes());
    out.extend_from_slice(r.key);
    out.extend_from_slice(r.value);
    out.resize(start + len, 0);
    let body_end = start + RECORD_HEADER + r.key.len() + r.value.len();
    let crc = crc32c::crc32c(&out[start..start + 4]);
    let crc = crc32c::crc32c_append(crc, &out[start + 8..body_end]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Length field of the record at the start of `bytes`, if 4 bytes are there.
pub fn peek_len(bytes: &[u8]) -> Option<usize> {
    (bytes.len() >= 4).then(|| u32_at(bytes, 0) as usize)
}

/// Decodes the record at the start of `bytes` (which may continue past it).
/// Returns the record and its encoded length.
///
/// # Errors
///
/// [`DecodeError`] names the first check that failed.
pub fn decode(bytes: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::Truncated);
    }
    let len = u32_at(bytes, 0) as usize;
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len < RECORD_HEADER || !len.is_multiple_of(8) {
        return Err(DecodeError::BadLength);
    }
    if bytes.len() < len {
        return Err(DecodeError::Truncated);
    }
    let key_len = u32_at(bytes, 24) as usize;
    let value_len = u32_at(bytes, 28) as usize;
    let body =
        RECORD_HEADER.checked_add(key_len).and_then(|x| x.checked_add(value_len)).ok_or(DecodeError::BadLength)?;
    if body > len || len - body >= 8 {
        return Err(DecodeError::BadLength);
    }
    let kind = RecordKind::from_byte(bytes[20]).ok_or(DecodeError::BadField)?;
    let flags = bytes[21];
    if flags & !(FLAG_LAST | FLAG_LEASE) != 0 || bytes[22] != 0 || bytes[23] != 0 {
        return Err(DecodeError::BadField);
    }
    let leased = flags & FLAG_LEASE != 0;
    if leased && kind != RecordKind::Put {
        return Err(DecodeError::BadField);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), &bytes[8..body]);
    if crc != u32_at(bytes, 4) {
        return Err(DecodeError::BadChecksum);
    }
    let main = u64_at(bytes, 8);
    let at40 = u64_at(bytes, 40);
    // A lease of 0 is written without the flag: one encoding per record.
    if leased && at40 == 0 {
        return Err(DecodeError::BadField);
    }
    let rec = RecordRef {
        main,
        sub: u32_at(bytes, 16),
        kind,
        last: flags & FLAG_LAST != 0,
        create_revision: u64_at(bytes, 32),
        mod_revision: if leased { main } else { at40 },
        version: u64_at(bytes, 48),
        lease: if leased { at40 as i64 } else { 0 },
        key: &bytes[RECORD_HEADER..RECORD_HEADER + key_len],
        value: &bytes[RECORD_HEADER + key_len..body],
    };
    Ok((rec, len))
}

/// Encodes a 32-byte file header.
pub fn encode_file_header(magic: &[u8; 8], first_rev: u64) -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[0..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_rev.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header and returns its `first_rev`.
///
/// # Errors
///
/// A sentence naming the failed check.
pub fn decode_file_header(bytes: &[u8], magic: &[u8; 8]) -> Result<u64, String> {
    if bytes.len() < FILE_HEADER {
        return Err("file is shorter than its 32-byte header".into());
    }
    if &bytes[0..8] != magic {
        return Err(format!(
            "bad magic {:?}, expected {:?}",
            String::from_utf8_lossy(&bytes[0..8]),
            String::from_utf8_lossy(magic)
        ));
    }
    if crc32c::crc32c(&bytes[0..28]) != u32_at(bytes, 28) {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(u64_at(bytes, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(key: &'a [u8], value: &'a [u8]) -> RecordData<'a> {
        RecordData {
            main: 7,
            sub: 3,
            kind: RecordKind::Put,
            last: true,
            create_revision: 5,
            mod_revision: 7,
            version: 2,
            lease: 0,
            key,
            value,
        }
    }

    #[test]
    fn a_lease_is_carried_in_place_of_the_mod_revision() {
        let mut buf = Vec::new();
        encode(&RecordData { lease: -5, ..sample(b"k", b"v") }, &mut buf);
        encode(&RecordData { lease: 0x694d_7c3b_3f5c_2b0a, ..sample(b"k", b"v") }, &mut buf);
        let (a, n) = decode(&buf).unwrap();
        let (b, _) = decode(&buf[n..]).unwrap();
        assert_eq!((a.lease, a.mod_revision, b.lease, b.mod_revision), (-5, 7, 0x694d_7c3b_3f5c_2b0a, 7));
        // A record without a lease is byte for byte what the format wrote before leases.
        let mut plain = Vec::new();
        encode(&sample(b"k", b"v"), &mut plain);
        assert_eq!(plain[21], FLAG_LAST);
        assert_eq!(decode(&plain).unwrap().0.lease, 0);
        // The LEASE flag on a DELETE is not a known value.
        let mut del = Vec::new();
        encode(&RecordData { kind: RecordKind::Delete, ..sample(b"k", b"") }, &mut del);
        del[21] |= FLAG_LEASE;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&del[0..4]), &del[8..RECORD_HEADER + 1]);
        del[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&del).unwrap_err(), DecodeError::BadField);
        // The LEASE flag with lease 0 is not a known value either (found by the
        // fuzzer: it would decode to a record that encodes to other bytes).
        let mut zero = Vec::new();
        encode(&RecordData { lease: 9, ..sample(b"k", b"v") }, &mut zero);
        zero[40..48].fill(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&zero[0..4]), &zero[8..RECORD_HEADER + 2]);
        zero[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&zero).unwrap_err(), DecodeError::BadField);
    }

    #[test]
    fn lease_records_round_trip() {
        let grant = lease_grant_value(42, 60);
        let revoke = 42i64.to_le_bytes();
        let mut buf = Vec::new();
        encode(&RecordData::lease_record(9, RecordKind::LeaseGrant, &grant), &mut buf);
        encode(&RecordData::lease_record(9, RecordKind::LeaseRevoke, &revoke), &mut buf);
        let (g, n) = decode(&buf).unwrap();
        let (r, _) = decode(&buf[n..]).unwrap();
        assert!(g.kind.is_lease() && r.kind.is_lease() && !RecordKind::Put.is_lease());
        assert_eq!(lease_op(&g), Some((42, Some(60))));
        assert_eq!(lease_op(&r), Some((42, None)));
        assert_eq!(
            lease_op(
                &decode(&{
                    let mut b = Vec::new();
                    encode(&sample(b"k", b"v"), &mut b);
                    b
                })
                .unwrap()
                .0
            ),
            None
        );
    }

    #[test]
    fn round_trip_and_alignment() {
        for (k, v) in [(&b"k"[..], &b""[..]), (b"key", b"value!!"), (b"abcdefgh", b"12345678")] {
            let mut buf = Vec::new();
            encode(&sample(k, v), &mut buf);
            assert_eq!(buf.len() % 8, 0);
            assert_eq!(buf.len(), encoded_len(k.len(), v.len()));
            let (r, len) = decode(&buf).unwrap();
            assert_eq!(len, buf.len());
            assert_eq!((r.main, r.sub, r.kind, r.last), (7, 3, RecordKind::Put, true));
            assert_eq!((r.create_revision, r.mod_revision, r.version), (5, 7, 2));
            assert_eq!((r.key, r.value), (k, v));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&sample(b"some-key", b"some-value"), &mut buf);
        let body = RECORD_HEADER + 8 + 10;
        for byte in 0..body {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn zeros_are_empty_and_short_input_is_truncated() {
        assert_eq!(decode(&[0u8; 64]).unwrap_err(), DecodeError::Empty);
        let mut buf = Vec::new();
        encode(&sample(b"k", b"v"), &mut buf);
        assert_eq!(decode(&buf[..buf.len() - 1]).unwrap_err(), DecodeError::Truncated);
        assert_eq!(decode(&buf[..2]).unwrap_err(), DecodeError::Truncated);
    }

    #[test]
    fn file_header_round_trip() {
        let h = encode_file_header(SEGMENT_MAGIC, 42);
        assert_eq!(decode_file_header(&h, SEGMENT_MAGIC), Ok(42));
        assert!(decode_file_header(&h, SNAPSHOT_MAGIC).is_err());
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_file_header(&bad, SEGMENT_MAGIC).is_err());
    }
}
