//! Fuzz target: the record and file-header decoders of the revision log
//! (`engine/src/log/record.rs`, format in `engine/FORMAT.md`).
//!
//! Holds the decoder to what its documentation promises: any byte string gives a
//! record or an error, never a panic or an out-of-bounds read; and to the format:
//!
//! 1. bytes → `decode` → `encode` → the same bytes. A decoded record re-encodes to
//!    exactly the input's header, key and value (every byte the CRC covers), its
//!    length is `encoded_len`, and decoding the re-encoding gives the same record.
//!    The padding (at most 7 bytes after the value) is the one part the re-encoding
//!    may differ in: FORMAT.md writes it as zeros, but neither the CRC nor the
//!    validity rules cover it, so the decoder accepts any padding.
//! 2. the same input decoded as consecutive records from offset 0, as recovery
//!    scans a segment.
//! 3. `decode_file_header` with both magics; when it accepts, re-encoding the
//!    header reproduces its magic, version and first revision. (The reserved bytes
//!    12..16 and 24..28 are not compared: FORMAT.md says they are 0, but the
//!    decoder does not check them — they are only covered by the header's CRC.)
//! 4. record fields → `encode` → `decode` → the same fields, with the fields taken
//!    from the input, so the encoder is checked on arbitrary keys and values too.
//! 5. the value of every AUTH record decoded (`argus_engine::auth::record`):
//!    never a panic, and a value that decodes re-encodes to the same bytes.
//!
//! A fuzzer almost never guesses a CRC-32C, so 1–3 also run on a copy of the input
//! whose checksums were recomputed (each record's, as the scan goes, and the file
//! header's): that copy reaches every check behind the CRC.

#![no_main]

use argus_engine::log::record::{
    decode, decode_file_header, encode, encode_file_header, encoded_len, peek_len, DecodeError, RecordData, RecordKind,
    RecordRef, FILE_HEADER, RECORD_HEADER, SEGMENT_MAGIC, SNAPSHOT_MAGIC,
};
use argus_engine::auth::record as auth_record;
use libfuzzer_sys::fuzz_target;

fn data_of<'a>(r: &RecordRef<'a>) -> RecordData<'a> {
    RecordData {
        main: r.main,
        sub: r.sub,
        kind: r.kind,
        last: r.last,
        create_revision: r.create_revision,
        mod_revision: r.mod_revision,
        version: r.version,
        lease: r.lease,
        key: r.key,
        value: r.value,
    }
}

/// Checks one decode of `bytes`; returns the record's length when it decoded.
fn check_decode(bytes: &[u8]) -> Option<usize> {
    let _ = peek_len(bytes);
    match decode(bytes) {
        Ok((r, len)) => {
            assert!(len >= RECORD_HEADER && len % 8 == 0 && len <= bytes.len(), "bad length {len}");
            assert_eq!(len, encoded_len(r.key.len(), r.value.len()));
            assert_eq!(peek_len(bytes), Some(len));
            let body = RECORD_HEADER + r.key.len() + r.value.len();
            let mut out = Vec::new();
            encode(&data_of(&r), &mut out);
            assert_eq!(out.len(), len, "re-encoded length");
            assert_eq!(&out[..body], &bytes[..body], "re-encoding differs from the decoded bytes");
            assert!(out[body..].iter().all(|&b| b == 0), "encode writes zero padding");
            // The canonical encoding decodes to the same record, and so does the
            // record alone, without the bytes after it.
            assert_eq!(decode(&out), Ok((r, len)));
            assert_eq!(decode(&bytes[..len]), Ok((r, len)));
            // One byte short is truncated, not some other record.
            assert_eq!(decode(&bytes[..len - 1]).unwrap_err(), DecodeError::Truncated);
            if r.kind == RecordKind::Auth {
                check_auth_value(r.value);
            }
            Some(len)
        }
        Err(DecodeError::Empty) => {
            assert!(bytes.len() >= 4 && bytes[..4] == [0; 4], "Empty only for a zero length field");
            None
        }
        Err(DecodeError::Truncated) => {
            let short = bytes.len() < 4 || peek_len(bytes).is_some_and(|l| l > bytes.len());
            assert!(short, "Truncated only when the input is shorter than 4 bytes or than the length field");
            None
        }
        Err(_) => None,
    }
}

/// The value decoders of AUTH records (`engine/src/auth/record.rs`): total, and a
/// decoded value re-encodes to the same bytes (one encoding per change or state).
fn check_auth_value(value: &[u8]) {
    if let Ok((revision, change)) = auth_record::decode_change(value) {
        assert_eq!(auth_record::encode_change(revision, &change), value, "auth change re-encoding");
    }
    if let Ok(state) = auth_record::decode_state(value) {
        assert_eq!(auth_record::encode_state(&state), value, "auth state re-encoding");
    }
}

fn check_header(bytes: &[u8]) {
    for magic in [SEGMENT_MAGIC, SNAPSHOT_MAGIC] {
        if let Ok(rev) = decode_file_header(bytes, magic) {
            assert!(bytes.len() >= FILE_HEADER);
            let enc = encode_file_header(magic, rev);
            assert_eq!(&enc[0..12], &bytes[0..12], "magic and version");
            assert_eq!(&enc[16..24], &bytes[16..24], "first revision");
            assert_eq!(decode_file_header(&enc, magic), Ok(rev));
        }
    }
}

/// Little-endian integer from the front of `b` (zeros past its end), advancing it.
fn take(b: &mut &[u8], n: usize) -> u64 {
    let mut v = 0u64;
    for i in 0..n {
        v |= u64::from(b.get(i).copied().unwrap_or(0)) << (8 * i);
    }
    *b = b.get(n..).unwrap_or(&[]);
    v
}

fn check_encode(input: &[u8]) {
    let mut b = input;
    let main = take(&mut b, 8);
    let sub = take(&mut b, 4) as u32;
    let flags = take(&mut b, 1);
    let kind = match flags % 6 {
        0 => RecordKind::Put,
        1 => RecordKind::Delete,
        2 => RecordKind::LeaseGrant,
        3 => RecordKind::LeaseRevoke,
        4 => RecordKind::Auth,
        _ => RecordKind::End,
    };
    let create_revision = take(&mut b, 8);
    let version = take(&mut b, 8);
    // A PUT may carry a lease; then its mod revision is its main revision.
    let lease = if kind == RecordKind::Put { take(&mut b, 8) as i64 } else { 0 };
    let mod_revision = if lease != 0 { main } else { take(&mut b, 8) };
    let split = (take(&mut b, 2) as usize).min(b.len());
    let (key, value) = b.split_at(split);
    let rec =
        RecordData { main, sub, kind, last: flags & 4 != 0, create_revision, mod_revision, version, lease, key, value };
    let mut out = vec![0xAA; (flags >> 3) as usize % 8]; // records need not start at offset 0
    let start = out.len();
    encode(&rec, &mut out);
    assert_eq!(out.len() - start, encoded_len(key.len(), value.len()));
    let (r, len) = decode(&out[start..]).expect("an encoded record decodes");
    assert_eq!(len, out.len() - start);
    assert_eq!(
        (r.main, r.sub, r.kind, r.last, r.create_revision, r.mod_revision, r.version, r.lease, r.key, r.value),
        (main, sub, kind, rec.last, create_revision, mod_revision, version, lease, key, value)
    );
}

/// Rewrites the CRC of the record at the start of `b` to match its bytes, when
/// its key and value lengths lie within `b`.
fn fix_record_crc(b: &mut [u8]) {
    if b.len() < RECORD_HEADER {
        return;
    }
    let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
    let body = RECORD_HEADER.checked_add(le32(24)).and_then(|x| x.checked_add(le32(28)));
    if let Some(body) = body.filter(|&e| e <= b.len()) {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..body]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Rewrites the CRC of the file header at the start of `b`.
fn fix_header_crc(b: &mut [u8]) {
    if b.len() >= FILE_HEADER {
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes consecutive records from offset 0, as a segment scan reads them;
/// with `fix`, repairing each record's CRC before decoding it.
fn scan(b: &mut [u8], fix: bool) {
    let mut off = 0;
    while off < b.len() {
        if fix {
            fix_record_crc(&mut b[off..]);
        }
        match check_decode(&b[off..]) {
            Some(n) => off += n,
            None => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut copy = data.to_vec();
    scan(&mut copy, false);
    check_header(data);
    check_encode(data);

    // The same with valid checksums.
    scan(&mut copy, true);
    let mut copy = data.to_vec();
    fix_header_crc(&mut copy);
    check_header(&copy);
});
