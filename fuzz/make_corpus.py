"""Write the committed seed corpus (``fuzz/corpus/<target>/``): one valid (or nearly valid)
input of each kind a target should explore, so the fuzzer starts past the first parse.

    python fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from targets import ADMIN_TOKEN, WALL_MS, WRITE_TOKEN

from ringkv.core.versions import (
    VClock,
    Version,
    encode_context,
    encode_record,
    version_to_wire,
)
from ringkv.node.messaging import REQUEST, encode_frame

HERE = os.path.dirname(os.path.abspath(__file__))


def _versions() -> list[Version]:
    ts = WALL_MS << 16
    context = VClock({"n2#7": (ts - 5, WALL_MS - 1)})
    return [
        Version("n1#3", ts, context, b"value", ts),
        Version("n2#7", ts + 1, VClock({}), None, ts + 1),
    ]


def _http() -> list[bytes]:
    ctx = encode_context(VClock({"f1#1": (3, WALL_MS - 10)}))
    w, a = f"Authorization: Bearer {WRITE_TOKEN}", f"Authorization: Bearer {ADMIN_TOKEN}"
    plan = b'{"op": "join", "node": "n4"}'
    requests = [
        f"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n{w}\r\n\r\n".encode(),
        f"PUT /v1/kv/a?w=1 HTTP/1.1\r\nHost: x\r\n{w}\r\nContent-Length: 3\r\n"
        f"X-Ringkv-Context: {ctx}\r\n\r\nabc".encode(),
        f"PUT /v1/kv/b HTTP/1.1\r\nHost: x\r\n{w}\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"3\r\nabc\r\n0\r\nX-Ringkv-Context: {ctx}\r\n\r\n".encode(),
        f"PUT /v1/kv/c HTTP/1.1\r\nHost: x\r\n{w}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        "Content-Length: 2\r\n\r\nhi".encode(),
        f"POST /v1/admin/plan HTTP/1.1\r\nHost: x\r\n{a}\r\n"
        f"Content-Length: {len(plan)}\r\n\r\n".encode()
        + plan,
        f"DELETE /v1/kv/a HTTP/1.1\r\nHost: x\r\n{w}\r\n\r\n"
        f"GET /v1/status HTTP/1.1\r\nHost: x\r\n{w}\r\n\r\n".encode(),
        f"PUT http://x/v1/kv/d HTTP/1.1\r\nHost: x\r\n{w}\r\nExpect: 100-continue\r\n"
        "Content-Length: 1\r\n\r\nz".encode(),
        f"GET /v1/kv/%00%ff?r=all&consistency=eventual HTTP/1.0\r\n{w}\r\n\r\n".encode(),
    ]
    return [bytes([128]) + r for r in requests]


def _frames() -> list[bytes]:
    wire = [version_to_wire(v) for v in _versions()]
    return [
        encode_frame(
            REQUEST, 0, "hello", {"node": "n2", "nonce": b"n" * 16, "features": ["record"]}
        ),
        encode_frame(REQUEST, 1, "replicate", {"key": b"k", "versions": wire}),
        encode_frame(REQUEST, 2, "replicate", {"key": b"k", "record": encode_record(_versions())}),
        encode_frame(REQUEST, 3, "replicate_batch", {"items": [[b"k", wire], [b"j", wire[:1]]]}),
        encode_frame(REQUEST, 4, "replicate", {"key": b"k", "versions": wire, "hint_for": "n3"}),
        bytes.fromhex("0000000481910102"),  # the report's frame: a map keyed by a list
    ]


def corpus() -> dict[str, list[bytes]]:
    versions = _versions()
    return {
        "http": _http(),
        "context": [
            encode_context(VClock({"n1#3": (12, WALL_MS - 1)})).encode(),
            encode_context(versions[0].clock().merge(versions[1].clock())).encode(),
            b"gaF4kgHPf_________8",
        ],
        "record": [
            encode_record(versions),
            encode_record(versions[:1]),
            msgpack.packb([WALL_MS, [version_to_wire(v) for v in versions]], use_bin_type=True),
        ],
        "frame": _frames(),
        "admin_json": [
            b"[" * 5000,  # the report's body
            b'{"op": "join", "node": "n4"}',
            b'{"node": "n2"}',
            b"[[[[{}]]]]",
            b'{"a": "\\u00e9[[[", "b": [1, 2.5e3, null, true]}',
        ],
        "tokens": [
            json.dumps(
                {
                    "tokens": [
                        {"token": WRITE_TOKEN, "role": "readwrite", "name": "svc"},
                        {"token": ADMIN_TOKEN, "role": "admin"},
                    ]
                }
            ).encode()
        ],
    }


def main() -> None:
    for target, inputs in corpus().items():
        directory = os.path.join(HERE, "corpus", target)
        os.makedirs(directory, exist_ok=True)
        for data in inputs:
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
