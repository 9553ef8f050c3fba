"""`ringkv bench`: an asyncio load generator for a ringkv cluster.

    ringkv bench --endpoint http://127.0.0.1:7001,http://127.0.0.1:7002 --preload
    ringkv bench --rate 2000 --zipf 0.99 --keys 100000 --duration 30 --json out.json
    ringkv bench --self-test          # the generator's own ceiling on this machine

Two ways to apply load:

- closed loop (default): `--concurrency` workers, each sending its next request as soon as the
  previous one answered. Throughput is what the store (or the generator) can take; latency is
  each request's own round trip.
- open loop (`--rate R`): request i is due at start + i/R whatever happened before. Its latency
  is counted from that intended time, not from when it was actually sent, so a stall of the
  store shows up as the whole backlog it delayed (no "coordinated omission"). `--concurrency`
  then caps the requests in flight; the time a due request waits for a free slot counts too.
  The time from actual send (service time) and the send lag are reported beside it.

Keys are `{--key-prefix}{i}` for i in 0..--keys-1, chosen uniformly or with a zipfian law of
exponent `--zipf` (rank 1 is key 0). Each request is a read with probability R/(R+1) and a
write otherwise (`--read-write-ratio R`, default 10). A write sends the context last seen for
its key, as a read-modify-write client would, so values do not pile up as siblings. Requests
go round-robin over the `--endpoint`s. Latencies go into HdrHistogram histograms (the
`hdrhistogram` package, 3 significant digits: quantiles within 0.1 %, a fixed array whatever
the run length; `--json` also stores each in HdrHistogram's own encoding). Only answers (2xx,
and 300/404 for reads) enter the latency figures; errors are counted by status or kind.

A single Python process drives the load, so it has a ceiling: `--self-test` measures it against
a trivial aiohttp server in a subprocess (answers at once). Numbers near that ceiling measure
the generator, not the store. Every loop is bounded by --duration and --max-requests (preload by
--keys and --preload-timeout); requests by --timeout.

This is the user's tool, for any running cluster, and the only benchmarking code installed;
the project's own measurements (clusters started from a checkout, comparisons with etcd and
Redis, A/B runs) live in the repository's benchmarks/ folder, whose README says what is where.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import random
import select
import signal
import socket
import subprocess
import sys
import time
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp
import yarl

from ringkv import __version__
from ringkv.client import CONTEXT_HEADER, _get_result, parse_endpoints
from ringkv.client_cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, ClientCache

__all__ = [
    "Histogram",
    "TrivialServer",
    "ZipfSampler",
    "add_arguments",
    "run",
]

DEFAULT_ENDPOINT = "http://127.0.0.1:7001"
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
OPS = ("read", "write")
TTY_PROGRESS_SECONDS = 0.5  # a \r line this often on a terminal
PLAIN_PROGRESS_SECONDS = 2.0  # a plain line this often otherwise
DEFAULT_CLOSED_CONCURRENCY = 16
DEFAULT_OPEN_CONCURRENCY = 256  # open loop: a cap on requests in flight, not a pace
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_ERRORS = 3  # every request failed, or the preload could not write
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------- histogram


class Histogram:
    """Latencies in integer microseconds: an HdrHistogram (the ``hdrhistogram`` package) with
    3 significant digits, so every quantile is within 0.1 % of the exact one, in a fixed array
    (about 23,500 counters for values up to ``highest``, one hour) whatever the run length.
    Values outside 0..highest are clamped; min and max are exact."""

    SIGNIFICANT_DIGITS = 3

    def __init__(self, highest: int = 3_600_000_000) -> None:
        # imported here: every `ringkv` command imports this module for its flags
        from hdrh.histogram import HdrHistogram

        self.highest = highest
        self.hdr = HdrHistogram(1, highest, self.SIGNIFICANT_DIGITS)

    def record(self, value: int) -> None:
        if 0 <= value <= self.highest:
            self.hdr.record_value(value)
        else:
            self.hdr.record_value(0 if value < 0 else self.highest)

    def merge(self, other: Histogram) -> None:
        if other.highest != self.highest:
            raise ValueError("histograms of different ranges")
        mine, theirs = self.hdr, other.hdr
        low, high = min(mine.min_value, theirs.min_value), max(mine.max_value, theirs.max_value)
        mine.add(theirs)
        mine.min_value, mine.max_value = low, high  # add() keeps only bucket bounds

    @property
    def count(self) -> int:
        return int(self.hdr.total_count)

    @property
    def min(self) -> int:
        return int(self.hdr.min_value) if self.count else self.highest

    @property
    def max(self) -> int:
        return int(self.hdr.max_value)

    def quantile(self, percent: float) -> float:
        """The value at `percent` (0..100) by nearest rank, as the midpoint of its bucket
        (clamped to the exact min and max); 0.0 when empty."""
        if not self.count:
            return 0.0
        hdr = self.hdr
        rank = max(1, math.ceil(percent / 100.0 * self.count))
        seen = 0
        for index, n in enumerate(hdr.counts):
            seen += n
            if seen >= rank:
                value = hdr.get_value_from_index(index)
                low = float(hdr.get_lowest_equivalent_value(value))
                high = float(hdr.get_highest_equivalent_value(value))
                return min(max((low + high) / 2.0, float(self.min)), float(self.max))
        return float(self.max)

    def mean(self) -> float:
        return float(self.hdr.get_mean_value()) if self.count else 0.0

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(lowest value, highest value, count) of every non-empty bucket, in order."""
        hdr = self.hdr
        for index, n in enumerate(hdr.counts):
            if n:
                value = hdr.get_value_from_index(index)
                low = int(hdr.get_lowest_equivalent_value(value))
                yield low, int(hdr.get_highest_equivalent_value(value)), int(n)

    def summary_ms(self) -> dict[str, float | int]:
        """count, min, mean, the PERCENTILES and max, in milliseconds (from microseconds)."""
        out: dict[str, float | int] = {"count": self.count}
        if not self.count:
            return out
        out["min"] = round(self.min / 1000.0, 3)
        out["mean"] = round(self.mean() / 1000.0, 3)
        for p in PERCENTILES:
            out[f"p{p:g}"] = round(self.quantile(p) / 1000.0, 3)
        out["max"] = round(self.max / 1000.0, 3)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": "us",
            "significant_digits": self.SIGNIFICANT_DIGITS,
            "count": self.count,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "mean": self.mean(),
            # [lowest value, highest value, count] of every non-empty bucket
            "buckets": [list(bucket) for bucket in self.buckets()],
            # the whole histogram in HdrHistogram's compressed encoding (base64), which the
            # HdrHistogram tools of other languages read as well
            "hdr": self.hdr.encode().decode("ascii"),
        }


def iter_buckets(histogram: dict[str, Any]) -> Iterator[tuple[int, int, int]]:
    """(low, high, count) of each bucket of a histogram as written by `Histogram.to_json`."""
    for low, high, count in histogram["buckets"]:
        yield int(low), int(high), int(count)


# --------------------------------------------------------------------------- keys


class ZipfSampler:
    """Ranks 0..n-1 with P(rank k) proportional to 1/(k+1)**s, by bisection in a precomputed
    cumulative table (8 bytes per key; 10 million keys take about 2 s and 80 MB)."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if n < 1 or s <= 0:
            raise ValueError("zipf needs n >= 1 keys and an exponent s > 0")
        self.n = n
        self.s = s
        self.cdf = array("d", itertools.accumulate(k**-s for k in range(1, n + 1)))
        self.norm = self.cdf[-1]
        self._random = rng.random
        self._last = n - 1

    def probability(self, rank: int) -> float:
        """The theoretical P(rank) (0-based)."""
        return float((rank + 1) ** -self.s / self.norm)

    def __call__(self) -> int:
        i = bisect_right(self.cdf, self._random() * self.norm)
        return i if i < self._last else self._last


def uniform_sampler(n: int, rng: random.Random) -> Callable[[], int]:
    rand = rng.random
    return lambda: int(rand() * n)


# --------------------------------------------------------------------------- configuration


@dataclass
class Settings:
    endpoints: list[str]
    concurrency: int
    rate: float | None
    duration: float
    max_requests: int | None
    warmup: float
    keys: int
    zipf: float
    key_prefix: str
    value_bytes: int
    read_write_ratio: float
    consistency: str | None
    r: str | None
    w: str | None
    preload: bool
    preload_timeout: float
    timeout: float
    blind_writes: bool
    seed: int | None
    token: str | None
    progress: bool
    cache: bool = False
    max_staleness: float | None = None
    cache_bytes: int = DEFAULT_MAX_BYTES
    cache_entries: int = DEFAULT_MAX_ENTRIES

    @property
    def write_fraction(self) -> float:
        ratio = self.read_write_ratio
        return 0.0 if math.isinf(ratio) else 1.0 / (ratio + 1.0)

    def describe(self) -> str:
        ratio = self.read_write_ratio
        if math.isinf(ratio):
            mix = "reads only"
        elif ratio == 0:
            mix = "writes only"
        else:
            mix = f"{ratio:g} reads per write"
        levels = " ".join(
            f"{name}={value}"
            for name, value in (("consistency", self.consistency), ("r", self.r), ("w", self.w))
            if value
        )
        loop = (
            f"open loop at {self.rate:g} req/s (up to {self.concurrency} in flight)"
            if self.rate
            else f"closed loop, {self.concurrency} in flight"
        )
        keys = f"zipf {self.zipf:g}" if self.zipf > 0 else "uniform"
        ends = len(self.endpoints)
        cache = ""
        if self.cache:
            cache = ", client cache (revalidating" + (
                f", max staleness {self.max_staleness:g} s)" if self.max_staleness else ")"
            )
        return (
            f"{loop}, {ends} endpoint{'s' if ends > 1 else ''}, {self.keys} keys ({keys}), "
            f"{self.value_bytes}-byte values, {mix}" + (f", {levels}" if levels else "") + cache
        )


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError("must be >= 0 (0: writes only, inf: reads only)")
    return value


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid number: {text!r}") from None
        if not value > 0 or (isinstance(value, float) and math.isinf(value)):
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ringkv bench` flags (the caller sets the handler to `run`)."""
    if parser.description is None:
        parser.description = (
            "Load generator: throughput and latency percentiles of a ringkv cluster "
            "(closed or open loop). --self-test measures the generator's own ceiling."
        )
    where = parser.add_argument_group("target")
    where.add_argument(
        "--endpoint",
        default=os.environ.get("RINGKV_ENDPOINT", DEFAULT_ENDPOINT),
        help="node URL, or several comma separated; requests go round-robin over them "
        f"(default: $RINGKV_ENDPOINT or {DEFAULT_ENDPOINT}). $RINGKV_TOKEN is sent if set",
    )
    where.add_argument(
        "--self-test",
        action="store_true",
        help="ignore --endpoint: run against a trivial server on 127.0.0.1 that answers at "
        "once, and report the generator's maximum throughput and latency floor",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=_positive(int),
        metavar="C",
        help=f"closed loop: requests in flight (default {DEFAULT_CLOSED_CONCURRENCY}); "
        f"with --rate: the most in flight (default {DEFAULT_OPEN_CONCURRENCY})",
    )
    load.add_argument(
        "--rate",
        type=_positive(float),
        metavar="REQ_PER_S",
        help="open loop: send at this rate whatever the answers, and measure latency from "
        "each request's intended send time (default: closed loop)",
    )
    load.add_argument(
        "--duration",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="measured time (default 10)",
    )
    load.add_argument(
        "--max-requests",
        type=_positive(int),
        metavar="N",
        help="stop after N requests, if before --duration",
    )
    load.add_argument(
        "--warmup",
        type=_non_negative_float,
        default=1.0,
        metavar="SECONDS",
        help="run this long first, not counted (default 1)",
    )
    load.add_argument(
        "--timeout",
        type=_positive(float),
        default=5.0,
        metavar="SECONDS",
        help="per request (default 5)",
    )
    load.add_argument("--seed", type=int, help="random seed (keys, operations, values)")
    work = parser.add_argument_group("workload")
    work.add_argument(
        "--keys", type=_positive(int), default=10000, metavar="N", help="key count (default 10000)"
    )
    work.add_argument(
        "--zipf",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="zipfian key popularity with exponent S (e.g. 0.99); default uniform",
    )
    work.add_argument(
        "--key-prefix", default="bench:", help="keys are PREFIX0..PREFIX{N-1} (default bench:)"
    )
    work.add_argument(
        "--value-bytes",
        type=int,
        default=1024,
        metavar="BYTES",
        help="size of written values (default 1024)",
    )
    work.add_argument(
        "--read-write-ratio",
        type=_ratio,
        default=10.0,
        metavar="R",
        help="reads per write (default 10; 0: writes only; inf: reads only)",
    )
    work.add_argument(
        "--consistency", choices=["strong", "balanced", "eventual"], help="preset for r and w"
    )
    work.add_argument("--r", metavar="LEVEL", help="read quorum: one, quorum, all or 1..N")
    work.add_argument("--w", metavar="LEVEL", help="write quorum: one, quorum, all or 1..N")
    work.add_argument(
        "--blind-writes",
        action="store_true",
        help="send writes without the last seen context (siblings then pile up on hot keys "
        "unless the cluster runs --conflict-mode lww)",
    )
    work.add_argument(
        "--preload", action="store_true", help="first write every key once (not measured)"
    )
    work.add_argument(
        "--preload-timeout",
        type=_positive(float),
        default=600.0,
        metavar="SECONDS",
        help="give up preloading after this long (default 600)",
    )
    cache = parser.add_argument_group("client cache (ringkv.client_cache)")
    cache.add_argument(
        "--cache",
        action="store_true",
        help="reads go through a client cache: revalidated with If-None-Match (304 reuses the "
        "cached value); writes drop the key's entry",
    )
    cache.add_argument(
        "--max-staleness",
        type=_non_negative_float,
        metavar="SECONDS",
        help="with --cache: serve entries confirmed at most this long ago without asking "
        "(a weaker read)",
    )
    cache.add_argument(
        "--cache-bytes",
        type=_positive(int),
        default=DEFAULT_MAX_BYTES,
        metavar="BYTES",
        help=f"cache size bound in bytes (default {DEFAULT_MAX_BYTES})",
    )
    cache.add_argument(
        "--cache-entries",
        type=_positive(int),
        default=DEFAULT_MAX_ENTRIES,
        metavar="N",
        help=f"cache size bound in entries (default {DEFAULT_MAX_ENTRIES})",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write settings, results and histograms")
    out.add_argument("--quiet", action="store_true", help="no progress lines")


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.consistency and (args.r or args.w):
        raise ValueError("--consistency and --r/--w are alternatives (a node answers 400)")
    if args.value_bytes < 0:
        raise ValueError("--value-bytes must be >= 0")
    if args.max_staleness is not None and not args.cache:
        raise ValueError("--max-staleness needs --cache")
    endpoints = [str(e) for e in parse_endpoints(args.endpoint)]
    default_concurrency = DEFAULT_OPEN_CONCURRENCY if args.rate else DEFAULT_CLOSED_CONCURRENCY
    return Settings(
        endpoints=endpoints,
        concurrency=args.concurrency or default_concurrency,
        rate=args.rate,
        duration=args.duration,
        max_requests=args.max_requests,
        warmup=args.warmup,
        keys=args.keys,
        zipf=args.zipf,
        key_prefix=args.key_prefix,
        value_bytes=args.value_bytes,
        read_write_ratio=args.read_write_ratio,
        consistency=args.consistency,
        r=args.r,
        w=args.w,
        preload=args.preload,
        preload_timeout=args.preload_timeout,
        timeout=args.timeout,
        blind_writes=args.blind_writes,
        seed=args.seed,
        token=os.environ.get("RINGKV_TOKEN") or None,
        progress=not args.quiet,
        cache=args.cache,
        max_staleness=args.max_staleness,
        cache_bytes=args.cache_bytes,
        cache_entries=args.cache_entries,
    )


# --------------------------------------------------------------------------- recording


@dataclass
class PhaseStats:
    """What one phase recorded. Latencies in microseconds."""

    open_loop: bool
    latency: dict[str, Histogram] = field(default_factory=lambda: {op: Histogram() for op in OPS})
    service: dict[str, Histogram] = field(default_factory=lambda: {op: Histogram() for op in OPS})
    send_lag: Histogram = field(default_factory=Histogram)
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: {op: Counter() for op in OPS})
    errors: dict[str, Counter[str]] = field(default_factory=lambda: {op: Counter() for op in OPS})
    done: int = 0
    failed: int = 0
    unsent: int = 0  # open loop: due requests never sent (backlog left when the time ran out)
    in_flight: int = 0  # open loop: requests sent and not answered yet
    max_in_flight: int = 0
    started: float = 0.0
    ended: float = 0.0
    cpu_seconds: float = 0.0
    interrupted: bool = False
    per_endpoint: dict[str, int] = field(default_factory=dict)
    read_bytes: int = 0  # bytes of read answers received (head and body)
    cache: dict[str, int] = field(default_factory=dict)  # cache counters during the phase

    @property
    def elapsed(self) -> float:
        return max(self.ended - self.started, 1e-9)


class Load:
    """The request loop: one aiohttp session, shared by every phase of a run."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.rng = random.Random(settings.seed)
        if settings.zipf > 0:
            self.next_key: Callable[[], int] = ZipfSampler(settings.keys, settings.zipf, self.rng)
        else:
            self.next_key = uniform_sampler(settings.keys, self.rng)
        prefix = quote(settings.key_prefix.encode(), safe="")
        self.bases = [f"{e}/v1/kv/{prefix}" for e in settings.endpoints]
        read_params = [("consistency", settings.consistency), ("r", settings.r)]
        write_params = [("consistency", settings.consistency), ("w", settings.w)]
        self.read_query = _query(read_params)
        self.write_query = _query(write_params)
        self.contexts: dict[int, str] = {}
        self.headers: dict[str, str] = {}
        if settings.token:
            self.headers["Authorization"] = f"Bearer {settings.token}"
        self._turn = itertools.count()
        self.sent_to = [0] * len(self.bases)  # requests per endpoint, since the start
        self.read_bytes = 0  # since the start
        self.cache = (
            ClientCache(
                settings.cache_bytes, settings.cache_entries, max_staleness=settings.max_staleness
            )
            if settings.cache
            else None
        )

    def value(self) -> bytes:
        return self.rng.randbytes(self.settings.value_bytes)

    async def request(self, write: bool, key: int) -> tuple[bool, str]:
        """Send one request; (answered as expected, status or error kind)."""
        turn = next(self._turn) % len(self.bases)
        self.sent_to[turn] += 1
        base = self.bases[turn]
        try:
            if write:
                url = yarl.URL(f"{base}{key}{self.write_query}", encoded=True)
                context = None if self.settings.blind_writes else self.contexts.get(key)
                headers = self.headers
                if context is not None:
                    headers = {**headers, CONTEXT_HEADER: context}
                try:
                    async with self.session.put(url, data=self.value(), headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                        ok = 200 <= status < 300
                finally:
                    if self.cache is not None:
                        self.cache.invalidate(str(key).encode())
            else:
                plan = self.cache.plan(str(key).encode()) if self.cache is not None else None
                if plan is not None and plan.serve:
                    return True, "cached"
                headers = (
                    {**self.headers, **plan.headers} if plan and plan.headers else self.headers
                )
                url = yarl.URL(f"{base}{key}{self.read_query}", encoded=True)
                try:
                    async with self.session.get(url, headers=headers) as resp:
                        body = await resp.read()
                        status = resp.status
                        ok = 200 <= status < 300 or status in (300, 304, 404)
                    self.read_bytes += (
                        len(body) + 19 + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers)
                    )
                    if plan is not None and ok:
                        lowered = {k.lower(): v for k, v in resp.headers.items()}
                        result = None if status == 304 else _get_result(status, lowered, body)
                        self.cache.complete(plan, status, lowered.get("etag"), result)  # type: ignore[union-attr]
                        plan = None
                finally:
                    if plan is not None:  # no answer to cache
                        self.cache.abandon(plan)  # type: ignore[union-attr]
            if ok and not self.settings.blind_writes and status != 404:
                context = resp.headers.get(CONTEXT_HEADER)
                if context is not None:
                    self.contexts[key] = context
            return ok, str(status)
        except TimeoutError:
            return False, "timeout"
        except aiohttp.ClientConnectionError:
            return False, "connection_error"
        except aiohttp.ClientError as exc:
            return False, type(exc).__name__

    # -- phases

    async def closed_phase(self, stats: PhaseStats, workers: int, limit: int, end: float) -> None:
        """`workers` loops, each sending its next request when the last one answered, until
        `limit` requests were sent or the clock passes `end` (perf_counter seconds)."""
        issued = 0
        write_fraction = self.settings.write_fraction
        rand = self.rng.random
        clock = time.perf_counter

        async def worker() -> None:
            nonlocal issued
            while issued < limit and clock() < end:
                issued += 1
                write = rand() < write_fraction
                op = "write" if write else "read"
                key = self.next_key()
                sent = clock()
                ok, outcome = await self.request(write, key)
                done = clock()
                stats.statuses[op][outcome] += 1
                stats.done += 1
                if ok:
                    stats.latency[op].record(int((done - sent) * 1e6))
                else:
                    stats.errors[op][outcome] += 1
                    stats.failed += 1

        await self._run_workers(stats, [worker() for _ in range(workers)], end)

    async def open_phase(
        self, stats: PhaseStats, workers: int, rate: float, limit: int, end: float
    ) -> None:
        """Request i is due at start + i/rate for i < min(limit, rate * duration). A free worker
        takes the next due request, waits for its time if it is early, and sends it; latency
        counts from the due time. Due requests left when the clock passes `end` + --timeout
        (a backlog the store never caught up with) are counted as unsent."""
        start = stats.started
        slots = min(limit, max(1, math.ceil(rate * (end - start))))
        interval = 1.0 / rate
        claim_until = end + self.settings.timeout
        next_slot = 0
        write_fraction = self.settings.write_fraction
        rand = self.rng.random
        clock = time.perf_counter
        sleep = asyncio.sleep

        async def worker() -> None:
            nonlocal next_slot
            while next_slot < slots:
                due = start + next_slot * interval
                now = clock()
                if now > claim_until:
                    return
                next_slot += 1
                # Wake up at the due time (timers may fire a little early: sleep again).
                while due > now:
                    await sleep(due - now)
                    now = clock()
                write = rand() < write_fraction
                op = "write" if write else "read"
                key = self.next_key()
                stats.in_flight += 1
                if stats.in_flight > stats.max_in_flight:
                    stats.max_in_flight = stats.in_flight
                ok, outcome = await self.request(write, key)
                stats.in_flight -= 1
                done = clock()
                stats.statuses[op][outcome] += 1
                stats.done += 1
                if ok:
                    stats.latency[op].record(int((done - due) * 1e6))
                    stats.service[op].record(int((done - now) * 1e6))
                    stats.send_lag.record(int((now - due) * 1e6))
                else:
                    stats.errors[op][outcome] += 1
                    stats.failed += 1

        await self._run_workers(stats, [worker() for _ in range(workers)], claim_until)
        stats.unsent = max(0, slots - next_slot)

    async def _run_workers(self, stats: PhaseStats, coros: list[Any], end: float) -> None:
        tasks = [asyncio.ensure_future(c) for c in coros]
        cpu = time.process_time()
        try:
            # Every worker stops by `end`; allow the last requests their --timeout, and a margin.
            budget = max(0.0, end - time.perf_counter()) + self.settings.timeout + 5.0
            _, pending = await asyncio.wait(tasks, timeout=budget)
            for task in pending:
                task.cancel()
        except asyncio.CancelledError:  # Ctrl-C: keep what was measured
            stats.interrupted = True
            for task in tasks:
                task.cancel()
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # a bug in the loop itself
        stats.ended = time.perf_counter()
        stats.cpu_seconds = time.process_time() - cpu

    async def phase(
        self,
        *,
        concurrency: int,
        rate: float | None,
        duration: float,
        max_requests: int | None,
        label: str,
        progress: bool,
    ) -> PhaseStats:
        stats = PhaseStats(open_loop=rate is not None)
        limit = max_requests if max_requests is not None else sys.maxsize
        stats.started = time.perf_counter()
        end = stats.started + duration
        sent_before = list(self.sent_to)
        bytes_before = self.read_bytes
        cache_before = self.cache.metrics.as_dict() if self.cache is not None else {}
        reporter = asyncio.ensure_future(_progress(stats, label, sys.stderr)) if progress else None
        try:
            if rate is None:
                await self.closed_phase(stats, concurrency, limit, end)
            else:
                await self.open_phase(stats, concurrency, rate, limit, end)
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                _progress_line(stats, label, sys.stderr, final=True)
            stats.read_bytes = self.read_bytes - bytes_before
            if self.cache is not None:
                after = self.cache.metrics.as_dict()
                stats.cache = {name: after[name] - cache_before[name] for name in after}
            stats.per_endpoint = {
                url: after - before
                for url, before, after in zip(
                    self.settings.endpoints, sent_before, self.sent_to, strict=True
                )
            }
        return stats

    async def preload(self, stop_at: float) -> dict[str, Any]:
        """Write every key once, --concurrency at a time; bounded by --keys and the time."""
        settings = self.settings
        statuses: Counter[str] = Counter()
        next_key = 0
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal next_key
            while next_key < settings.keys and time.perf_counter() < stop_at:
                key = next_key
                next_key += 1
                _, outcome = await self.request(True, key)
                statuses[outcome] += 1

        workers = min(settings.concurrency, settings.keys)
        tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
        budget = max(0.0, stop_at - time.perf_counter()) + settings.timeout + 5.0
        _, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        written = sum(n for s, n in statuses.items() if s.isdigit() and 200 <= int(s) < 300)
        return {
            "keys": settings.keys,
            "written": written,
            "seconds": round(time.perf_counter() - started, 3),
            "statuses": dict(statuses),
            "complete": written == settings.keys,
        }


def _query(params: list[tuple[str, str | None]]) -> str:
    pairs = [f"{name}={quote(value, safe='')}" for name, value in params if value]
    return "?" + "&".join(pairs) if pairs else ""


# --------------------------------------------------------------------------- progress


async def _progress(stats: PhaseStats, label: str, stream: TextIO) -> None:
    tty = stream.isatty()
    interval = TTY_PROGRESS_SECONDS if tty else PLAIN_PROGRESS_SECONDS
    last_done, last_time = 0, time.perf_counter()
    while True:
        await asyncio.sleep(interval)
        now = time.perf_counter()
        rate = (stats.done - last_done) / max(now - last_time, 1e-9)
        last_done, last_time = stats.done, now
        _progress_line(stats, label, stream, rate=rate)


def _progress_line(
    stats: PhaseStats, label: str, stream: TextIO, rate: float | None = None, final: bool = False
) -> None:
    tty = stream.isatty()
    if final and not tty:
        return
    elapsed = time.perf_counter() - stats.started
    p99 = "  ".join(
        f"{op} p99 {stats.latency[op].quantile(99) / 1000:.2f} ms"
        for op in OPS
        if stats.latency[op].count
    )
    shown_rate = rate if rate is not None else stats.done / max(elapsed, 1e-9)
    text = (
        f"{label}: {elapsed:5.1f} s  {stats.done} req  {shown_rate:,.0f} req/s"
        + (f"  {p99}" if p99 else "")
        + (f"  errors {stats.failed}" if stats.failed else "")
    )
    if tty:
        stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
    else:
        stream.write(text + "\n")
    stream.flush()


# --------------------------------------------------------------------------- results


def phase_result(
    stats: PhaseStats,
    *,
    name: str,
    concurrency: int,
    rate: float | None,
    server_cpu: float | None = None,
) -> dict[str, Any]:
    elapsed = stats.elapsed
    ops: dict[str, Any] = {}
    for op in OPS:
        hist = stats.latency[op]
        entry: dict[str, Any] = {
            "requests": sum(stats.statuses[op].values()),
            "ok": hist.count,
            "throughput": round(hist.count / elapsed, 1),
            "latency_ms": hist.summary_ms(),
            "statuses": dict(stats.statuses[op]),
            "errors": dict(stats.errors[op]),
            "histogram": hist.to_json(),
        }
        if op == "read":
            entry["bytes_per_read"] = round(stats.read_bytes / max(entry["requests"], 1), 1)
            if stats.cache:
                entry["cache"] = stats.cache
        if stats.open_loop:
            entry["service_ms"] = stats.service[op].summary_ms()
            entry["service_histogram"] = stats.service[op].to_json()
        ops[op] = entry
    both = Histogram()
    for op in OPS:
        both.merge(stats.latency[op])
    errors: Counter[str] = Counter()
    for op in OPS:
        errors.update(stats.errors[op])
    result: dict[str, Any] = {
        "name": name,
        "mode": "open" if stats.open_loop else "closed",
        "concurrency": concurrency,
        "target_rate": rate,
        "seconds": round(elapsed, 3),
        "requests": stats.done,
        "ok": both.count,
        "throughput": round(both.count / elapsed, 1),
        "latency_ms": both.summary_ms(),
        "errors": dict(errors),
        "error_count": stats.failed,
        "per_endpoint": stats.per_endpoint,
        "ops": ops,
        "generator_cpu_seconds": round(stats.cpu_seconds, 3),
        "generator_cpu_share": round(stats.cpu_seconds / elapsed, 3),
        "generator_cpu_ms_per_request": round(1000 * stats.cpu_seconds / max(stats.done, 1), 4),
        "interrupted": stats.interrupted,
    }
    if stats.open_loop:
        result["unsent"] = stats.unsent
        result["max_in_flight"] = stats.max_in_flight
        result["send_lag_ms"] = stats.send_lag.summary_ms()
    if server_cpu is not None:
        result["server_cpu_share"] = round(server_cpu / elapsed, 3)
        result["server_cpu_ms_per_request"] = round(1000 * server_cpu / max(stats.done, 1), 4)
    return result


def _ms(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def format_phase(result: dict[str, Any]) -> str:
    head = f"{'':6} {'requests':>9} {'req/s':>9}" + "".join(
        f" {'p' + format(p, 'g'):>8}" for p in PERCENTILES
    )
    lines = [head + f" {'max':>8}   (latency in ms)"]
    rows = [(op, result["ops"][op]) for op in OPS] + [("all", result)]
    for name, row in rows:
        lat = row["latency_ms"]
        if not lat.get("count") and name != "all":
            continue
        lines.append(
            f"{name:6} {row['ok']:>9} {row['throughput']:>9.1f}"
            + "".join(f" {_ms(lat.get(f'p{p:g}')):>8}" for p in PERCENTILES)
            + f" {_ms(lat.get('max')):>8}"
        )
    if result["mode"] == "open":
        lag = result["send_lag_ms"]
        for op in OPS:
            svc = result["ops"][op]["service_ms"]
            if svc.get("count"):
                lines.append(
                    f"{op} service time (from the actual send): "
                    + "  ".join(f"p{p:g} {_ms(svc.get(f'p{p:g}'))}" for p in PERCENTILES)
                )
        if lag.get("count"):
            lines.append(
                f"send lag behind schedule: p50 {_ms(lag.get('p50'))}  p99 {_ms(lag.get('p99'))}"
                f"  max {_ms(lag.get('max'))} ms"
            )
    read = result["ops"]["read"]
    if read["requests"]:
        cache = read.get("cache")
        lines.append(
            f"bytes received per read: {read['bytes_per_read']:,.0f}"
            + (
                "; cache: " + ", ".join(f"{name} {count}" for name, count in cache.items())
                if cache
                else ""
            )
        )
    for what in ("statuses", "errors"):
        counts = "; ".join(
            f"{op}: " + ", ".join(f"{s} {n}" for s, n in sorted(result["ops"][op][what].items()))
            for op in OPS
            if result["ops"][op][what]
        )
        lines.append(f"{what}: {counts or 'none'}")
    return "\n".join(lines)


def warnings_for(result: dict[str, Any], self_test: bool = False) -> list[str]:
    notes = []
    if result["generator_cpu_share"] >= 0.85 and not self_test:  # expected in a self-test
        notes.append(
            f"the generator kept {result['generator_cpu_share']:.0%} of a core busy: it is "
            "probably the bottleneck (compare with `ringkv bench --self-test`)"
        )
    target = result.get("target_rate")
    if target:
        sent = result["requests"] / result["seconds"]
        if sent < 0.95 * target or result.get("unsent"):
            if result.get("max_in_flight", 0) >= result["concurrency"]:
                why = (
                    f"all {result['concurrency']} slots were busy at times: the target (could "
                    "not keep up, or raise --concurrency)"
                )
            else:
                why = "the generator could not keep up (its CPU, or the machine's)"
            unsent = result.get("unsent")
            notes.append(
                f"behind schedule: {sent:,.0f} of {target:,.0f} req/s sent"
                + (f", {unsent} due requests never sent" if unsent else "")
                + f"; {why}. Latencies include the wait, as they should"
            )
    if result["requests"] and result["error_count"] == result["requests"]:
        notes.append("every request failed")
    return notes


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


# --------------------------------------------------------------------------- trivial server


class TrivialServer:
    """`python -m ringkv.bench --serve-trivial` in a subprocess on 127.0.0.1 (a free port):
    GET answers 200 with `value_bytes` bytes, PUT/DELETE 204, at once. `GET /_bench/stats` gives
    its CPU time. With `stall_after` > 0 it blocks its event loop for `stall_seconds` once, when
    that many requests have arrived (to test that the open loop counts the backlog)."""

    def __init__(
        self, value_bytes: int = 1024, stall_after: int = 0, stall_seconds: float = 0.0
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "ringkv.bench",
            "--serve-trivial",
            "--value-bytes",
            str(value_bytes),
            "--stall-after",
            str(stall_after),
            "--stall-seconds",
            str(stall_seconds),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, deadline: float = 20.0) -> TrivialServer:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], deadline)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the trivial server did not start (said {line!r})")
        self.url = line.removeprefix("listening on ")
        return self

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        self.process = None

    def __enter__(self) -> TrivialServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _EndOfInput(asyncio.Protocol):
    """Sets `stop` when the pipe it reads closes."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


def _serve_trivial(value_bytes: int, stall_after: int, stall_seconds: float) -> int:
    from aiohttp import web

    body = b"x" * value_bytes
    seen = 0

    async def kv(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        if seen == stall_after:
            time.sleep(stall_seconds)  # block the whole loop, like a long GC pause
        if request.method == "GET":
            return web.Response(body=body)
        await request.read()
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"cpu_seconds": time.process_time(), "requests": seen})

    async def main() -> None:
        app = web.Application(client_max_size=max(value_bytes, 1024) * 2 + 1024)
        app.router.add_route("*", "/v1/kv/{key}", kv)
        app.router.add_get("/_bench/stats", stats)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Stop too when the parent goes away without a SIGTERM: its end of our stdin closes.
        await loop.connect_read_pipe(lambda: _EndOfInput(stop), sys.stdin)
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    # Ctrl-C in a terminal reaches the whole process group: leave it to the parent, which
    # reports what it measured and then stops this server.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _new_runner().run(main())
    return 0


async def _server_cpu(session: aiohttp.ClientSession, url: str) -> float | None:
    try:
        async with session.get(f"{url}/_bench/stats") as resp:
            return float((await resp.json())["cpu_seconds"])
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
        return None


# --------------------------------------------------------------------------- run


def _new_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover
        return "asyncio"
    return "uvloop"


def run(args: argparse.Namespace) -> int:
    """`ringkv bench`: returns the exit code (0 ok, 2 usage, 3 every request failed or the
    preload failed, 130 interrupted)."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"ringkv bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    server: TrivialServer | None = None
    if args.self_test:
        try:
            server = TrivialServer(settings.value_bytes).start()
        except (OSError, RuntimeError) as exc:
            print(f"ringkv bench: error: {exc}", file=sys.stderr)
            return EXIT_ERRORS
        settings.endpoints = [server.url]
    try:
        with _new_runner() as runner:
            document, code = runner.run(_main(settings, server))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if server is not None:
            server.stop()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    return code


@dataclass
class _PhasePlan:
    name: str
    label: str
    concurrency: int
    rate: float | None


async def _main(settings: Settings, server: TrivialServer | None) -> tuple[dict[str, Any], int]:
    self_test = server is not None
    document: dict[str, Any] = {
        "tool": "ringkv bench",
        "version": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": "self-test" if self_test else "endpoints",
        "settings": {k: v for k, v in vars(settings).items() if k != "token"},
        "auth": bool(settings.token),
        "event_loop": _event_loop_name(),
        "machine": machine_info(),
        "preload": None,
        "runs": [],
    }
    if self_test:
        plans = [
            _PhasePlan(
                "max_throughput",
                "self-test max throughput",
                settings.concurrency if not settings.rate else DEFAULT_CLOSED_CONCURRENCY,
                None,
            ),
            _PhasePlan("latency_floor", "self-test latency floor", 1, None),
        ]
        if settings.rate:
            plans.append(
                _PhasePlan("open_loop", "self-test open loop", settings.concurrency, settings.rate)
            )
    else:
        plans = [_PhasePlan("load", "bench", settings.concurrency, settings.rate)]
    workers = max(p.concurrency for p in plans)
    connector = aiohttp.TCPConnector(limit=workers, limit_per_host=0)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
    code = EXIT_OK
    out = sys.stdout
    async with session:
        load = Load(settings, session)
        print(
            (
                "ringkv bench --self-test: the generator against a trivial server "
                f"({server.url}) that answers at once\n"
                if server
                else ""
            )
            + f"ringkv bench: {settings.describe()}",
            file=out,
            flush=True,
        )
        try:
            if settings.preload:
                print(f"preloading {settings.keys} keys ...", file=out, flush=True)
                preload = await load.preload(time.perf_counter() + settings.preload_timeout)
                document["preload"] = preload
                print(
                    f"preloaded {preload['written']} of {preload['keys']} keys in "
                    f"{preload['seconds']:.1f} s"
                    + ("" if preload["complete"] else f" (statuses {preload['statuses']})"),
                    file=out,
                    flush=True,
                )
                if preload["written"] == 0:
                    print("ringkv bench: error: the preload wrote nothing", file=sys.stderr)
                    return document, EXIT_ERRORS
            if settings.warmup > 0:
                first = plans[0]
                await load.phase(
                    concurrency=first.concurrency,
                    rate=first.rate,
                    duration=settings.warmup,
                    max_requests=None,
                    label="warm-up",
                    progress=False,
                )
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return document, EXIT_INTERRUPTED
        for plan in plans:
            cpu_before = await _server_cpu(session, server.url) if server else None
            stats = await load.phase(
                concurrency=plan.concurrency,
                rate=plan.rate,
                duration=settings.duration,
                max_requests=settings.max_requests,
                label=plan.label,
                progress=settings.progress,
            )
            cpu_after = await _server_cpu(session, server.url) if server else None
            server_cpu = (
                cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
            )
            result = phase_result(
                stats,
                name=plan.name,
                concurrency=plan.concurrency,
                rate=plan.rate,
                server_cpu=server_cpu,
            )
            result["warnings"] = warnings_for(result, self_test)
            document["runs"].append(result)
            print_phase(result, plan, out)
            if stats.interrupted:
                code = EXIT_INTERRUPTED
                break
            if result["requests"] and result["error_count"] == result["requests"]:
                code = EXIT_ERRORS
        if self_test and code == EXIT_OK:
            document["self_test"] = self_test_summary(document["runs"])
            print(format_self_test(document["self_test"]), file=out, flush=True)
    document["machine"]["loadavg_after"] = machine_info().get("loadavg")
    return document, code


def print_phase(result: dict[str, Any], plan: _PhasePlan, out: TextIO) -> None:
    loop = (
        f"open loop at {plan.rate:g} req/s, up to {plan.concurrency} in flight"
        if plan.rate
        else f"closed loop, {plan.concurrency} in flight"
    )
    cpu = (
        f"generator CPU {result['generator_cpu_share']:.0%} of a core "
        f"({result['generator_cpu_ms_per_request']:.3f} ms/request)"
    )
    if "server_cpu_share" in result:
        cpu += f", trivial server CPU {result['server_cpu_share']:.0%} of a core"
    lines = [
        "",
        f"== {plan.label}: {loop}; {result['seconds']:.1f} s measured"
        + (" (interrupted)" if result["interrupted"] else ""),
        format_phase(result),
        cpu,
    ]
    lines += [f"warning: {note}" for note in result.get("warnings", [])]
    print("\n".join(lines), file=out, flush=True)


def self_test_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {r["name"]: r for r in runs}
    top = by_name.get("max_throughput", {})
    floor = by_name.get("latency_floor", {})
    summary: dict[str, Any] = {
        "max_throughput": top.get("throughput"),
        "max_throughput_concurrency": top.get("concurrency"),
        "generator_cpu_share_at_max": top.get("generator_cpu_share"),
        "server_cpu_share_at_max": top.get("server_cpu_share"),
        "latency_floor_ms": {
            k: v for k, v in floor.get("latency_ms", {}).items() if k in ("p50", "p99", "p99.9")
        },
    }
    if "open_loop" in by_name:
        run_ = by_name["open_loop"]
        summary["open_loop"] = {
            "target_rate": run_["target_rate"],
            "throughput": run_["throughput"],
            "unsent": run_.get("unsent"),
            "latency_ms": {k: run_["latency_ms"].get(k) for k in ("p50", "p99", "p99.9")},
        }
    return summary


def format_self_test(summary: dict[str, Any]) -> str:
    floor = summary["latency_floor_ms"]
    lines = [
        "",
        "== generator ceiling on this machine",
        f"max throughput: {summary['max_throughput'] or 0:,.0f} req/s "
        f"({summary['max_throughput_concurrency']} in flight)",
        f"latency floor (1 in flight): p50 {_ms(floor.get('p50'))} ms, "
        f"p99 {_ms(floor.get('p99'))} ms, p99.9 {_ms(floor.get('p99.9'))} ms",
    ]
    if "open_loop" in summary:
        ol = summary["open_loop"]
        lines.append(
            f"open loop at {ol['target_rate']:g} req/s: {ol['throughput']:,.0f} req/s answered, "
            f"p50 {_ms(ol['latency_ms'].get('p50'))} ms, p99 {_ms(ol['latency_ms'].get('p99'))} ms"
        )
    lines.append(
        "Results near this throughput, or near this latency, measure the generator, not the store."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def _main_module(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ringkv bench")
    add_arguments(parser)
    parser.add_argument("--serve-trivial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stall-after", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stall-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_trivial:
        return _serve_trivial(args.value_bytes, args.stall_after, args.stall_seconds)
    return run(args)


if __name__ == "__main__":
    sys.exit(_main_module(sys.argv[1:]))
