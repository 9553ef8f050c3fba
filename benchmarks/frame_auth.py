"""CPU cost of peer-frame authentication per replicated write (a microbenchmark).

One replicated write is two frames on the peer link: the coordinator's ``replicate`` request
(the encoded record, a 100-byte value by default) and the replica's reply. For each, the sender
encodes (and, with a cluster secret, seals: a keyed-BLAKE2b tag) and the receiver decodes (and
checks the tag). Rounds alternate plain and authenticated, interleaved; the medians and spread
of the per-write cost are printed.

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/frame_auth.py [--value-bytes 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ringkv.core.versions import VClock, Version, encode_record
from ringkv.node.frame_auth import FrameOpener, FrameSealer
from ringkv.node.messaging import MAX_FRAME, REPLY, REQUEST, encode_frame, take_frames


def one_round(writes: int, value: bytes, sealed: bool) -> float:
    """Seconds per replicated write: both frames, both sides."""
    key = b"user:000000000042"
    record = encode_record([Version("n1#1", 1 << 40, VClock({}), value, 1 << 40)])
    body = {"key": key, "record": record}
    keys = (b"k" * 32, b"j" * 32)
    out_seal, out_open = FrameSealer(keys[0]), FrameOpener(keys[0])
    back_seal, back_open = FrameSealer(keys[1]), FrameOpener(keys[1])
    buffer = bytearray()
    started = time.perf_counter()
    for request_id in range(writes):
        frame = encode_frame(REQUEST, request_id, "replicate", body)
        buffer += out_seal.seal(frame) if sealed else frame
        take_frames(buffer, MAX_FRAME, out_open if sealed else None)
        reply = encode_frame(REPLY, request_id, "replicate", True)
        buffer += back_seal.seal(reply) if sealed else reply
        take_frames(buffer, MAX_FRAME, back_open if sealed else None)
    return (time.perf_counter() - started) / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    value = b"v" * args.value_bytes
    plain: list[float] = []
    sealed: list[float] = []
    one_round(1000, value, True)  # warm-up
    for _ in range(args.rounds):
        plain.append(one_round(args.writes, value, False))
        sealed.append(one_round(args.writes, value, True))
    extra = [s - p for p, s in zip(plain, sealed, strict=True)]
    result = {
        "value_bytes": args.value_bytes,
        "writes_per_round": args.writes,
        "plain_us": [round(x * 1e6, 3) for x in plain],
        "sealed_us": [round(x * 1e6, 3) for x in sealed],
        "median_plain_us": round(statistics.median(plain) * 1e6, 3),
        "median_sealed_us": round(statistics.median(sealed) * 1e6, 3),
        "median_extra_us": round(statistics.median(extra) * 1e6, 3),
        "extra_spread_us": [round(min(extra) * 1e6, 3), round(max(extra) * 1e6, 3)],
    }
    for name in ("median_plain_us", "median_sealed_us", "median_extra_us", "extra_spread_us"):
        print(f"{name}: {result[name]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
