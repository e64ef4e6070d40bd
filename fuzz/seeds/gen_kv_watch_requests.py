#!/usr/bin/env python3
"""Writes the committed seed corpus of the kv_watch_requests fuzz target
(fuzz/seeds/kv_watch_requests/): valid etcd requests in the target's input format
(`tag: u8, len: u16 LE, payload`; see fuzz_targets/kv_watch_requests.rs), so the
fuzzer starts from inputs that reach the server's validation rather than from
random bytes. Protobuf is encoded by hand (field numbers from server/proto/rpc.proto).

    python3 fuzz/seeds/gen_kv_watch_requests.py
"""
import hashlib
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kv_watch_requests")


def varint(n):
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vint(field, n):
    return varint(field << 3) + varint(n) if n else b""


def vbytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(field << 3 | 2) + varint(len(b)) + b


def rng(key=b"", end=b"", limit=0, rev=0, sort_order=0, sort_target=0, keys_only=0, count_only=0,
        min_mod=0, max_mod=0, min_create=0, max_create=0):
    return (vbytes(1, key) + (vbytes(2, end) if end else b"") + vint(3, limit) + vint(4, rev)
            + vint(5, sort_order) + vint(6, sort_target) + vint(8, keys_only) + vint(9, count_only)
            + vint(10, min_mod) + vint(11, max_mod) + vint(12, min_create) + vint(13, max_create))


def put(key, value=b"", lease=0, prev_kv=0, ignore_value=0, ignore_lease=0):
    return (vbytes(1, key) + (vbytes(2, value) if value else b"") + vint(3, lease) + vint(4, prev_kv)
            + vint(5, ignore_value) + vint(6, ignore_lease))


def delete(key, end=b"", prev_kv=0):
    return vbytes(1, key) + (vbytes(2, end) if end else b"") + vint(3, prev_kv)


def compare(key, target, result=0, value=None, end=b""):
    # target: 0 VERSION, 1 CREATE, 2 MOD, 3 VALUE, 4 LEASE; value in the matching field
    field = {0: 4, 1: 5, 2: 6, 3: 7, 4: 8}[target]
    v = b""
    if value is not None:
        v = vbytes(field, value) if target == 3 else varint(field << 3) + varint(value)
    return vint(1, result) + vint(2, target) + vbytes(3, key) + v + (vbytes(64, end) if end else b"")


def op(kind, msg):
    return vbytes({"range": 1, "put": 2, "delete": 3, "txn": 4}[kind], msg)


def txn(compares=(), success=(), failure=()):
    return (b"".join(vbytes(1, c) for c in compares) + b"".join(vbytes(2, o) for o in success)
            + b"".join(vbytes(3, o) for o in failure))


def compaction(rev, physical=0):
    return vint(1, rev) + vint(2, physical)


def wcreate(key, end=b"", start=0, progress=0, filters=(), prev_kv=0, watch_id=0, fragment=0):
    c = (vbytes(1, key) + (vbytes(2, end) if end else b"") + vint(3, start) + vint(4, progress)
         + (vbytes(5, b"".join(varint(f) for f in filters)) if filters else b"") + vint(6, prev_kv)
         + vint(7, watch_id) + vint(8, fragment))
    return vbytes(1, c)


def wcancel(watch_id):
    return vbytes(2, vint(1, watch_id))


def wprogress():
    return vbytes(3, b"")


TAGS = {"range": 0, "put": 1, "delete": 2, "txn": 3, "compact": 4, "watch": 5}


def item(kind, payload, raw=False):
    tag = TAGS[kind] | (0x80 if raw else 0)
    return bytes([tag]) + struct.pack("<H", len(payload)) + payload


def watch(*msgs):
    body = b""
    for m in msgs:
        assert len(m) < 256
        body += bytes([len(m)]) + m
    return item("watch", body)


def grpc_frame(*msgs):
    return b"".join(b"\0" + struct.pack(">I", len(m)) + m for m in msgs)


def writes():
    return (item("put", put("/a", "1")) + item("put", put("/b", "2", prev_kv=1))
            + item("put", put("/a/x", "3")) + item("delete", delete("/b", prev_kv=1)))


SEEDS = [
    # KV, one request each, valid and refused
    item("range", rng("/a")),
    item("range", rng("", b"\0")),
    item("range", rng("/a", "/b", limit=1)),
    item("range", rng("/a", "/a")),
    item("range", rng("", "")),
    writes() + item("range", rng("/", b"\0", sort_order=2, sort_target=4)),
    writes() + item("range", rng("/", b"\0", count_only=1, min_mod=2, max_create=3)),
    writes() + item("range", rng("/", b"\0", keys_only=1, rev=2)),
    writes() + item("range", rng("/a", rev=99)),
    item("put", put("", "v")),
    item("put", put("/k", "v", lease=7)),
    item("put", put("/k", "", ignore_value=1)),
    item("put", put("/k", "v", ignore_value=1)),
    item("put", put("/k", "v", ignore_lease=1)),
    item("put", put("/k", "x" * 300)),
    item("delete", delete("/a", b"\0", prev_kv=1)),
    item("delete", delete("", "")),
    item("delete", delete("/z", "/a")),
    writes() + item("delete", delete("/", "0", prev_kv=1)),
    # txns
    writes() + item("txn", txn([compare("/a", 0, 0, 1)], [op("put", put("/t", "1"))], [op("range", rng("/a"))])),
    writes() + item("txn", txn([compare("/a", 3, 3, "1")], [op("delete", delete("/a"))])),
    writes() + item("txn", txn([compare("/a", 2, 1, 1, end=b"\0")], [op("range", rng("/", b"\0"))])),
    item("txn", txn([compare("/a", 4, 0, 1)])),
    item("txn", txn([], [op("put", put("/d", "1")), op("put", put("/d", "2"))])),
    item("txn", txn([], [op("txn", txn())])),
    item("txn", txn([], [b""])),
    item("txn", txn([], [op("put", put("/p", "1")), op("delete", delete("/q")), op("range", rng("/p"))])),
    # compaction
    writes() + item("compact", compaction(3)) + item("range", rng("/a", rev=2)),
    writes() + item("compact", compaction(99)),
    writes() + item("compact", compaction(3, 1)) + item("compact", compaction(2)),
    # watch streams
    watch(wcreate("/a")),
    writes() + watch(wcreate("/", b"\0", start=1, prev_kv=1)),
    writes() + watch(wcreate("/", "0", start=2, filters=[0]), wcreate("/a", start=1, filters=[1], watch_id=5)),
    writes() + watch(wcreate("/a", watch_id=3), wcreate("/b", watch_id=3)),
    watch(wcreate("")),
    watch(wcreate("/z", "/a")),
    watch(wcreate("/a", start=-1)),
    writes() + watch(wcreate("/a", start=1, progress=1, fragment=1), wprogress(), wcancel(1), wcancel(9)),
    writes() + watch(wprogress(), wcreate("/", b"\0", start=3), wprogress(), wprogress()),
    writes() + item("compact", compaction(4)) + watch(wcreate("/", b"\0", start=2)),
    writes() + watch(wcreate("/a", watch_id=1), wcancel(1), wcreate("/a", watch_id=1, start=1)),
    # raw request bodies: framed, truncated, compressed flag, oversized length
    item("watch", grpc_frame(wcreate("/a", start=1), wprogress()), raw=True),
    item("watch", grpc_frame(wcreate("/a"))[:-2], raw=True),
    item("watch", b"\x01" + struct.pack(">I", 3) + b"abc", raw=True),
    item("watch", b"\0" + struct.pack(">I", 0xFFFFFFF0), raw=True),
    item("watch", b"\0\0\0\0\0", raw=True),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    for s in SEEDS:
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(s)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
