//! JSON in and out as etcd's gateway (grpc-gateway's `JSONPb` over Go's
//! `encoding/json`) reads and writes it; the field mapping itself is pbjson's
//! (`build.rs`).
//!
//! Out: compact, with Go's string escapes ([`GoFormatter`]). In: the values of a
//! body one after another, as a Go `json.Decoder` reads them ([`Values`]); a
//! message from one ([`message`]), with Go's words for the common syntax errors.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
use serde_json::Value;

/// What Go's `json.Decoder` answers for a value cut short by the end of the body.
pub const UNEXPECTED_EOF: &str = "unexpected EOF";

/// Go's `encoding/json` string escapes, which etcd's gateway writes: `<`, `>`, `&`,
/// U+2028 and U+2029 as `\u` escapes, and backspace and form feed as `\u0008` and
/// `\u000c` (serde_json writes `\b` and `\f`); otherwise serde_json's compact
/// output, which is Go's.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()> {
        match escape {
            CharEscape::Backspace => writer.write_all(b"\\u0008"),
            CharEscape::FormFeed => writer.write_all(b"\\u000c"),
            other => CompactFormatter.write_char_escape(writer, other),
        }
    }
}

/// Appends `value` as JSON to `out`.
///
/// # Errors
///
/// What the serializer refused (pbjson refuses an enum field holding a number that
/// is not one of its values).
pub fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    let mut ser = serde_json::Serializer::with_formatter(out, GoFormatter);
    value.serialize(&mut ser).map_err(|e| e.to_string())
}

/// `value` as JSON.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write(value, &mut out)?;
    Ok(out)
}

/// A request message from a JSON value, as etcd's gateway (jsonpb) reads it:
/// `null` is the empty message, fields set to `null` are left at their defaults,
/// unknown fields are skipped (pbjson, `build.rs`).
///
/// # Errors
///
/// Why the value is not such a message (Go's words when it is not an object).
pub fn message<M: DeserializeOwned + Default>(mut value: Value) -> Result<M, String> {
    match &value {
        Value::Null => return Ok(M::default()),
        Value::Object(_) => {}
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type map[string]json.RawMessage",
                go_kind(other)
            ))
        }
    }
    strip_nulls(&mut value);
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// How Go's `encoding/json` names the kind of a value in an unmarshal error.
fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Removes every object member whose value is `null` (jsonpb leaves such a field
/// at its default; pbjson would refuse most of them).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The first JSON value of a whole body, `None` if it holds only white space (a
/// Go decoder's `io.EOF`, which etcd's gateway reads as the empty message). What
/// follows the first value is not read, as in etcd.
///
/// # Errors
///
/// The syntax error, in Go's words where [`go_syntax_error`] knows them.
pub fn first_value(body: &[u8]) -> Result<Option<Value>, String> {
    let mut values = Values::new(usize::MAX);
    values.push(body);
    match values.next(true)? {
        Next::Value(v) => Ok(Some(v)),
        Next::End | Next::More => Ok(None),
    }
}

/// What [`Values::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A complete value.
    Value(Value),
    /// Nothing complete yet: more bytes are needed.
    More,
    /// The body ended with nothing but white space left.
    End,
}

/// A body's bytes as they arrive, split into the JSON values they hold, one after
/// another (white space between them, or none after an object), as a Go
/// `json.Decoder` reads a streaming request in etcd's gateway.
///
/// A value is parsed once its bytes are complete: a scan of each byte as it
/// arrives (strings, escapes, nesting) finds the end of an object or array, so a
/// large value arriving in many pieces is not parsed again for each; values taken
/// from the front are dropped from the buffer in bulk, not one by one.
pub struct Values {
    buf: Vec<u8>,
    /// Where the next value starts in `buf`.
    start: usize,
    limit: usize,
    /// Scan state over `buf[start..pos]`.
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Values {
    /// Values of at most `limit` bytes each.
    pub fn new(limit: usize) -> Values {
        Values { buf: Vec::new(), start: 0, limit, pos: 0, depth: 0, in_string: false, escaped: false }
    }

    /// Bytes that arrived.
    pub fn push(&mut self, data: &[u8]) {
        // Drop what was taken once it is most of the buffer (a copy of what is left,
        // less than what was taken).
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held (of a value not complete yet).
    pub fn held(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the bytes scanned so far may end a value: a top-level object, array
    /// or string closed, or anything else at the top level (a scalar, or a syntax
    /// error: the parser tells).
    fn scan(&mut self) -> bool {
        while self.pos < self.buf.len() {
            let c = self.buf[self.pos];
            self.pos += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return true;
                    }
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    if self.depth <= 1 {
                        self.depth = 0;
                        return true;
                    }
                    self.depth -= 1;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if self.depth == 0 => return true,
                _ => {}
            }
        }
        false
    }

    /// The next value; `ended`: the body has ended (no more bytes will come).
    ///
    /// # Errors
    ///
    /// A syntax error (Go's words where known), a value cut short by the end of the
    /// body ([`UNEXPECTED_EOF`]), or one larger than the limit.
    pub fn next(&mut self, ended: bool) -> Result<Next, String> {
        if !self.scan() && !ended {
            if self.held() > self.limit {
                return Err(format!("argus: a JSON message larger than max ({} bytes)", self.limit));
            }
            if self.buf[self.start..].iter().all(u8::is_ascii_whitespace) {
                self.clear();
            }
            return Ok(Next::More);
        }
        let rest = &self.buf[self.start..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        let found = stream.next();
        let used = stream.byte_offset();
        match found {
            None => {
                self.clear();
                Ok(if ended { Next::End } else { Next::More })
            }
            Some(Ok(v)) => {
                self.start += used;
                self.pos = self.start;
                self.depth = 0;
                self.in_string = false;
                self.escaped = false;
                Ok(Next::Value(v))
            }
            Some(Err(e)) if e.is_eof() => {
                if ended {
                    Err(UNEXPECTED_EOF.to_string())
                } else {
                    Ok(Next::More)
                }
            }
            Some(Err(e)) => Err(go_syntax_error(rest, &e)),
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.pos = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }
}

/// Go's `encoding/json` words for the common syntax errors (`invalid character 'x'
/// looking for beginning of value`, ...), from serde_json's error and the byte it
/// points at; serde_json's own words (without the position) for the others.
pub fn go_syntax_error(input: &[u8], e: &serde_json::Error) -> String {
    let full = e.to_string();
    let bare = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    // serde_json's position: 1-based line, and the byte's 1-based column in it.
    let offset =
        input.split_inclusive(|&b| b == b'\n').take(e.line().saturating_sub(1)).map(<[u8]>::len).sum::<usize>()
            + e.column().saturating_sub(1);
    let Some(&c) = input.get(offset) else { return bare.to_string() };
    let c = quote_char(c);
    match bare {
        "expected value" => format!("invalid character {c} looking for beginning of value"),
        "key must be a string" => format!("invalid character {c} looking for beginning of object key string"),
        "expected `:`" => format!("invalid character {c} after object key"),
        "expected `,` or `}`" => format!("invalid character {c} after object key:value pair"),
        "expected `,` or `]`" => format!("invalid character {c} after array element"),
        "trailing comma" if c == "'}'" => format!("invalid character {c} looking for beginning of object key string"),
        "trailing comma" => format!("invalid character {c} looking for beginning of value"),
        "invalid escape" => format!("invalid character {c} in string escape code"),
        b if b.starts_with("control character") => format!("invalid character {c} in string literal"),
        _ => bare.to_string(),
    }
}

/// A byte quoted as Go's `encoding/json` quotes it in an error (`quoteChar`).
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\\' => "'\\\\'".to_string(),
        0x07 => "'\\a'".to_string(),
        0x08 => "'\\b'".to_string(),
        0x0c => "'\\f'".to_string(),
        b'\n' => "'\\n'".to_string(),
        b'\r' => "'\\r'".to_string(),
        b'\t' => "'\\t'".to_string(),
        0x0b => "'\\v'".to_string(),
        0x20..=0x7e => format!("'{}'", c as char),
        0x00..=0x1f | 0x7f => format!("'\\x{c:02x}'"),
        // Go quotes the byte as the code point U+0080..U+00FF.
        0x80..=0x9f | 0xad => format!("'\\u{:04x}'", u32::from(c)),
        _ => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Result<Vec<Value>, String> {
        let mut v = Values::new(1 << 20);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            v.push(c);
            let last = i + 1 == chunks.len();
            while let Next::Value(x) = v.next(last)? {
                out.push(x);
            }
        }
        Ok(out)
    }

    #[test]
    fn values_split_across_chunks_and_between_each_other() {
        let body: &[u8] = br#" {"a":"}\"{"} {"b":[1,{"c":2}]}{"d":3}
 "x" "#;
        for cut in 0..body.len() {
            let got = all(&[&body[..cut], &body[cut..]]).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(got.len(), 4, "cut at {cut}: {got:?}");
            assert_eq!(got[0]["a"], "}\"{");
            assert_eq!(got[1]["b"][1]["c"], 2);
            assert_eq!(got[3], "x");
        }
    }

    #[test]
    fn a_value_cut_short_is_unexpected_eof_and_garbage_is_named_as_go_does() {
        assert_eq!(all(&[br#"{"a":1} {"b":"#]), Err(UNEXPECTED_EOF.to_string()));
        assert_eq!(first_value(b"  "), Ok(None));
        assert_eq!(first_value(b""), Ok(None));
        assert_eq!(first_value(b"xx"), Err("invalid character 'x' looking for beginning of value".into()));
        assert_eq!(first_value(b"{\n \"a\" 1}"), Err("invalid character '1' after object key".into()));
        assert_eq!(first_value(br#"{"a":1 "b":2}"#), Err("invalid character '\"' after object key:value pair".into()));
        assert_eq!(
            first_value(br#"{"a":1,}"#),
            Err("invalid character '}' looking for beginning of object key string".into())
        );
        assert_eq!(
            first_value(br#"{a:1}"#),
            Err("invalid character 'a' looking for beginning of object key string".into())
        );
        assert_eq!(first_value(b"[1,]"), Err("invalid character ']' looking for beginning of value".into()));
        // What follows the first value is not read.
        assert_eq!(first_value(br#"{"a":1} xx"#), Ok(Some(serde_json::json!({"a":1}))));
    }

    #[test]
    fn messages_take_null_and_refuse_other_kinds_as_go_does() {
        use crate::proto::etcdserverpb::RangeRequest;
        let r: RangeRequest = message(Value::Null).unwrap();
        assert_eq!(r, RangeRequest::default());
        let r: RangeRequest =
            message(serde_json::json!({"key": "YQ==", "range_end": null, "limit": "3", "keysOnly": true, "x": 1}))
                .unwrap();
        assert_eq!((r.key.as_slice(), r.limit, r.keys_only), (&b"a"[..], 3, true));
        assert_eq!(
            message::<RangeRequest>(serde_json::json!([])),
            Err("json: cannot unmarshal array into Go value of type map[string]json.RawMessage".into())
        );
    }

    #[test]
    fn output_escapes_as_go() {
        let s = to_vec("<a&b>\u{8}\u{c}\n\u{1}\u{2028}é\"\\").unwrap();
        assert_eq!(String::from_utf8(s).unwrap(), r#""\u003ca\u0026b\u003e\u0008\u000c\n\u0001\u2028é\"\\""#);
    }
}
