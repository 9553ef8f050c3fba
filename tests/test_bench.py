"""`ringkv bench` (src/ringkv/bench.py): the zipf sampler, the histogram, the open loop's
accounting of a stall, and smoke runs against its trivial server and a real cluster."""

from __future__ import annotations

import argparse
import io
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from ringkv import bench
from ringkv.bench import Histogram, TrivialServer, ZipfSampler
from tests.cluster import Cluster

PERCENT_KEYS = ("p50", "p90", "p99", "p99.9")
# 3 significant digits: a bucket is at most 1/1000 of its values wide
RELATIVE_ERROR = 10**-Histogram.SIGNIFICANT_DIGITS


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ringkv bench")
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_json(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "bench.json"
    code = bench.run(parse(*argv, "--json", str(out)))
    return code, json.loads(out.read_text())


def count_at_least(histogram: dict[str, Any], micros: int) -> int:
    return sum(count for low, _, count in bench.iter_buckets(histogram) if low >= micros)


def check_run_fields(run: dict[str, Any]) -> None:
    for name in ("mode", "concurrency", "seconds", "requests", "ok", "throughput", "errors"):
        assert name in run, name
    assert run["throughput"] > 0
    assert run["generator_cpu_ms_per_request"] > 0
    for op in ("read", "write"):
        entry = run["ops"][op]
        assert entry["ok"] > 0, (op, entry["statuses"])
        assert entry["throughput"] > 0
        latency = entry["latency_ms"]
        assert set(PERCENT_KEYS) <= latency.keys()
        values = [latency[k] for k in PERCENT_KEYS]
        assert 0 <= latency["min"] <= values[0] and values == sorted(values)
        assert values[-1] <= latency["max"]
        assert sum(c for _, _, c in bench.iter_buckets(entry["histogram"])) == entry["ok"]


# --------------------------------------------------------------------------- zipf


@pytest.mark.parametrize(("n", "s"), [(1000, 0.99), (100, 1.5), (50000, 0.6)])
def test_zipf_rank_frequencies_match_the_theory(n: int, s: float) -> None:
    sampler = ZipfSampler(n, s, random.Random(7))
    harmonic = math.fsum(k**-s for k in range(1, n + 1))
    assert sampler.probability(0) == pytest.approx(1 / harmonic, rel=1e-9)

    samples = 200_000
    counts = Counter(sampler() for _ in range(samples))
    assert min(counts) >= 0 and max(counts) < n
    for rank in (0, 1, 9):
        expected = sampler.probability(rank)
        observed = counts[rank] / samples
        sigma = math.sqrt(expected * (1 - expected) / samples)
        assert abs(observed - expected) < 5 * sigma, (rank, observed, expected)
    # rank 1 is 2**s times as frequent as rank 2
    assert counts[0] / counts[1] == pytest.approx(2**s, rel=0.08)


def test_uniform_keys_cover_the_range() -> None:
    sample = bench.uniform_sampler(10, random.Random(3))
    counts = Counter(sample() for _ in range(20_000))
    assert sorted(counts) == list(range(10))
    assert max(counts.values()) / min(counts.values()) < 1.15


# --------------------------------------------------------------------------- histogram


def exact_quantile(ordered: list[int], percent: float) -> int:
    """Nearest rank, as Histogram.quantile defines it."""
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


@pytest.mark.parametrize("data", ["lognormal", "range", "bimodal", "small"])
def test_histogram_quantiles_match_exact_ones(data: str) -> None:
    rng = random.Random(11)
    if data == "lognormal":  # like latencies: 1 ms median, a long tail, in microseconds
        values = [int(rng.lognormvariate(math.log(1000), 1.2)) for _ in range(100_000)]
    elif data == "range":
        values = list(range(1, 100_001))
    elif data == "bimodal":  # mostly fast, 2 % stuck behind a 400 ms stall
        values = [rng.randint(200, 900) for _ in range(9800)]
        values += [rng.randint(380_000, 420_000) for _ in range(200)]
    else:
        values = [rng.randint(0, 255) for _ in range(5000)]  # one bucket per value: exact
    hist = Histogram()
    for v in values:
        hist.record(v)
    ordered = sorted(values)
    assert hist.count == len(values)
    assert hist.mean() == pytest.approx(sum(values) / len(values), rel=1e-3)
    assert hist.min == ordered[0] and hist.max == ordered[-1]
    for percent in (0, 1, 25, 50, 90, 99, 99.9, 99.99, 100):
        exact = exact_quantile(ordered, percent)
        got = hist.quantile(percent)
        if data == "small":
            assert got == exact, percent
        else:
            assert abs(got - exact) <= exact * RELATIVE_ERROR + 1, (percent, got, exact)


def test_histogram_buckets_are_narrow_ordered_and_merge() -> None:
    hist = Histogram()
    values = [int(1.01**k) for k in range(2300)]  # 1 us .. about 3 hours: clamped at 1 hour
    for v in values:
        hist.record(v)
    buckets = list(hist.buckets())
    assert sum(count for _, _, count in buckets) == len(values)
    previous_high = -1
    for low, high, count in buckets:
        assert previous_high < low <= high and count > 0
        assert high == low or (high - low + 1) / low <= RELATIVE_ERROR
        previous_high = high
    assert previous_high >= hist.highest  # what was above the range is counted at its top
    assert len(Histogram().hdr.counts) < 30_000  # bounded memory whatever the run length

    a, b, both = Histogram(), Histogram(), Histogram()
    for v in range(0, 50_000, 7):
        (a if v % 2 else b).record(v)
        both.record(v)
    a.merge(b)
    assert list(a.buckets()) == list(both.buckets()) and a.count == both.count
    assert (a.min, a.max, a.mean()) == (both.min, both.max, both.mean())
    with pytest.raises(ValueError):
        a.merge(Histogram(highest=1000))
    document = json.loads(json.dumps(a.to_json()))
    assert list(bench.iter_buckets(document)) == list(a.buckets())
    decoded = HdrHistogram.decode(document["hdr"])
    assert decoded.get_total_count() == a.count
    clamped = Histogram(highest=1000)
    clamped.record(10**9)
    clamped.record(-5)
    assert (clamped.max, clamped.min) == (1000, 0)


# --------------------------------------------------------------------------- open loop


def test_open_loop_latency_counts_the_backlog_of_a_stall(tmp_path: Path) -> None:
    """The server blocks for 0.5 s once, at its 100th request (0.5 s into a 200 req/s run).
    Every request due during the stall waits for it, so measured from its intended send time
    about 60 requests take 200 ms or more; measured from the actual send (what a generator
    with coordinated omission reports), only the few in flight at the stall do."""
    with TrivialServer(value_bytes=100, stall_after=100, stall_seconds=0.5) as server:
        code, document = run_json(
            tmp_path,
            "--endpoint", server.url,
            "--rate", "200",
            "--duration", "2",
            "--concurrency", "4",
            "--warmup", "0",
            "--keys", "100",
            "--value-bytes", "100",
            "--seed", "1",
        )  # fmt: skip
    assert code == 0
    run = document["runs"][0]
    assert run["mode"] == "open" and run["target_rate"] == 200
    assert run["requests"] == 400 and run["error_count"] == 0 and run["unsent"] == 0
    slow = sum(count_at_least(run["ops"][op]["histogram"], 200_000) for op in ("read", "write"))
    slow_service = sum(
        count_at_least(run["ops"][op]["service_histogram"], 200_000) for op in ("read", "write")
    )
    # due in the first ~0.3 s of the stall: ~60 of them (at most 4 were in flight)
    assert 40 <= slow <= 110, (slow, run["latency_ms"])
    assert slow_service <= 4, slow_service
    assert run["latency_ms"]["max"] >= 450
    assert run["send_lag_ms"]["max"] >= 400  # requests went out late, and it was counted
    assert run["latency_ms"]["p90"] >= 100  # > 10 % of the requests were held up


def test_closed_and_open_loop_stop_at_max_requests(tmp_path: Path) -> None:
    with TrivialServer(value_bytes=10) as server:
        for extra in ((), ("--rate", "500")):
            code, document = run_json(
                tmp_path,
                "--endpoint", f"{server.url},{server.url}",
                "--max-requests", "60",
                "--duration", "5",
                "--warmup", "0",
                "--read-write-ratio", "0",
                "--quiet",
                *extra,
            )  # fmt: skip
            assert code == 0
            run = document["runs"][0]
            assert run["requests"] == 60 and run["seconds"] < 4
            assert run["ops"]["write"]["ok"] == 60 and run["ops"]["read"]["requests"] == 0


# --------------------------------------------------------------------------- smoke runs


def test_self_test_reports_the_generator_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = run_json(tmp_path, "--self-test", "--duration", "1.2", "--warmup", "0.3")
    assert code == 0
    assert document["target"] == "self-test"
    names = [r["name"] for r in document["runs"]]
    assert names == ["max_throughput", "latency_floor"]
    for run in document["runs"]:
        check_run_fields(run)
        assert run["errors"] == {} and run["mode"] == "closed"
        assert run["server_cpu_share"] >= 0
    assert document["runs"][1]["concurrency"] == 1
    summary = document["self_test"]
    assert summary["max_throughput"] > 100
    assert 0 < summary["latency_floor_ms"]["p50"] <= summary["latency_floor_ms"]["p99"]
    out = capsys.readouterr()
    assert "generator ceiling on this machine" in out.out and "max throughput" in out.out


def test_bench_against_a_three_node_cluster(tmp_path: Path, cluster3: Cluster) -> None:
    code, document = run_json(
        tmp_path,
        "--endpoint", ",".join(cluster3.urls),
        "--preload",
        "--keys", "200",
        "--duration", "3",
        "--warmup", "0",
        "--concurrency", "8",
        "--consistency", "balanced",
        "--zipf", "0.99",
        "--quiet",
    )  # fmt: skip
    assert code == 0
    assert document["preload"]["complete"] and document["preload"]["written"] == 200
    run = document["runs"][0]
    check_run_fields(run)
    assert run["errors"] == {} and run["error_count"] == 0
    assert "404" not in run["ops"]["read"]["statuses"]  # every key was preloaded
    assert run["ops"]["write"]["statuses"].get("204", 0) == run["ops"]["write"]["ok"]
    assert document["settings"]["endpoints"] == cluster3.urls
    spread = run["per_endpoint"]  # round-robin over the three nodes
    assert sorted(spread) == sorted(cluster3.urls)
    assert max(spread.values()) - min(spread.values()) <= 1
    assert sum(spread.values()) == run["requests"]


# --------------------------------------------------------------------------- odds and ends


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.run(parse("--consistency", "strong", "--r", "one")) == 2
    assert "alternatives" in capsys.readouterr().err
    assert bench.run(parse("--endpoint", "ftp://x")) == 2
    with pytest.raises(SystemExit):
        parse("--rate", "0")
    with pytest.raises(SystemExit):
        parse("--read-write-ratio", "-1")


def test_progress_is_one_rewritten_line_on_a_terminal_and_plain_lines_otherwise() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stats = bench.PhaseStats(open_loop=False)
    stats.done = 10
    stats.latency["read"].record(1500)
    stream = Terminal()
    bench._progress_line(stats, "bench", stream, rate=123.0)
    text = stream.getvalue()
    assert text.startswith("\rbench:") and "\n" not in text
    assert "123 req/s" in text and "read p99 1.50 ms" in text
    bench._progress_line(stats, "bench", stream, final=True)
    assert stream.getvalue().endswith("\x1b[K\n")  # the last one ends the line

    plain = io.StringIO()
    bench._progress_line(stats, "bench", plain, rate=123.0)
    bench._progress_line(stats, "bench", plain, final=True)  # nothing more when not a terminal
    assert plain.getvalue().count("\n") == 1 and "\r" not in plain.getvalue()
