"""Tests for ringkv.core.failure_detector: the phi accrual failure detector on synthetic times."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.failure_detector import (
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    ArrivalWindow,
    PhiAccrualFailureDetector,
    phi_normal,
)

INTERVAL = 0.5
JITTER = 0.05


def feed(
    fd: PhiAccrualFailureDetector,
    peer: str = "p",
    beats: int = 100,
    start: float = 1000.0,
    seed: int = 7,
) -> list[float]:
    """Regular 0.5 s heartbeats with +-50 ms of jitter; returns the arrival times."""
    rng = random.Random(seed)
    times = []
    now = start
    for _ in range(beats):
        now += INTERVAL + rng.uniform(-JITTER, JITTER)
        fd.heartbeat(peer, now)
        times.append(now)
    return times


def crossing_time(fd: PhiAccrualFailureDetector, peer: str, last: float) -> float:
    """The silence after which phi first exceeds the threshold (bisection, 1 us resolution)."""
    low, high = 0.0, 60.0
    assert fd.phi(peer, last + high) > fd.threshold
    while high - low > 1e-6:
        mid = (low + high) / 2
        if fd.phi(peer, last + mid) > fd.threshold:
            high = mid
        else:
            low = mid
    return high


def test_defaults() -> None:
    fd = PhiAccrualFailureDetector()
    assert fd.threshold == DEFAULT_THRESHOLD == 8.0
    assert fd.window == DEFAULT_WINDOW


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"threshold": -1},
        {"window": 1},
        {"min_std_dev": 0},
        {"acceptable_pause": -0.1},
    ],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PhiAccrualFailureDetector(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_phi_is_low_right_after_each_heartbeat(seed: int) -> None:
    fd = PhiAccrualFailureDetector()
    rng = random.Random(seed)
    now = 50.0
    for _ in range(200):
        now += INTERVAL + rng.uniform(-JITTER, JITTER)
        fd.heartbeat("p", now)
        assert fd.phi("p", now) < 1
        assert fd.phi("p", now + INTERVAL) < 1  # when the next beat is due
        assert fd.phi("p", now + INTERVAL + JITTER) < 1  # a late beat is no cause for alarm
        assert fd.is_available("p", now + INTERVAL)


def test_phi_grows_monotonically_with_silence() -> None:
    fd = PhiAccrualFailureDetector()
    last = feed(fd)[-1]
    previous = -1.0
    for step in range(0, 3001):  # 0 .. 30 s of silence in 10 ms steps
        phi = fd.phi("p", last + step / 100)
        assert phi >= previous
        assert math.isfinite(phi)
        previous = phi
    # Past the expected arrival (mean + acceptable pause) it grows strictly.
    expected = fd._windows["p"].mean() + fd.acceptable_pause
    samples = [fd.phi("p", last + expected - 0.5 + k * 0.1) for k in range(50)]
    assert all(a < b for a, b in pairwise(samples))


def z_at_threshold(threshold: float) -> float:
    """How many standard deviations past the expected arrival phi reaches ``threshold``."""
    low, high = 0.0, 50.0
    while high - low > 1e-9:
        mid = (low + high) / 2
        low, high = (low, mid) if phi_normal(mid, 0.0, 1.0) > threshold else (mid, high)
    return high


@pytest.mark.parametrize("seed", range(5))
def test_phi_crosses_the_threshold_after_a_few_seconds_of_silence(seed: int) -> None:
    fd = PhiAccrualFailureDetector()  # the defaults the node uses
    last = feed(fd, seed=seed)[-1]
    crossing = crossing_time(fd, "p", last)
    # Measured with the defaults (min_std_dev 0.25 s, acceptable_pause 2 s): ~3.81 s for every
    # seed. The expected arrival is mean interval (~0.5 s) + acceptable pause; the jitter
    # (std ~0.03 s) is below min_std_dev, so phi = 8 comes ~5.22 min_std_devs later.
    assert 1.0 < crossing < 10.0
    window = fd._windows["p"]
    std = max(window.std_dev(), fd.min_std_dev)
    expected = window.mean() + fd.acceptable_pause + z_at_threshold(fd.threshold) * std
    assert crossing == pytest.approx(expected, abs=1e-3)
    assert fd.is_available("p", last + window.mean() + fd.acceptable_pause)
    assert fd.is_available("p", crossing + last - 0.05)
    assert not fd.is_available("p", crossing + last + 0.05)
    assert fd.phi("p", last + 3 * crossing) > 100


@pytest.mark.parametrize("seed", range(3))
def test_phi_crossing_with_tighter_parameters(seed: int) -> None:
    fd = PhiAccrualFailureDetector(min_std_dev=0.1, acceptable_pause=1.0)
    last = feed(fd, seed=seed)[-1]
    # Measured: ~2.02 s (0.5 s mean + 1 s pause + 5.22 * 0.1 s).
    assert 1.9 < crossing_time(fd, "p", last) < 2.2
    assert fd.is_available("p", last + 1.9)
    assert not fd.is_available("p", last + 2.2)


def test_crossing_scales_with_the_heartbeat_interval() -> None:
    """A peer that beats every 2 s is convicted later than one that beats every 0.5 s."""
    fast = PhiAccrualFailureDetector()
    slow = PhiAccrualFailureDetector()
    for i in range(1, 101):
        fast.heartbeat("p", i * 0.5)
        slow.heartbeat("p", i * 2.0)
    fast_crossing = crossing_time(fast, "p", 50.0)
    slow_crossing = crossing_time(slow, "p", 200.0)
    assert slow_crossing > fast_crossing + 1.0


def test_never_heard_peer() -> None:
    fd = PhiAccrualFailureDetector()
    assert fd.phi("ghost", 123.0) == math.inf
    assert not fd.is_available("ghost", 123.0)
    assert not fd.known("ghost")


def test_single_heartbeat_uses_the_first_interval_estimate() -> None:
    fd = PhiAccrualFailureDetector(first_interval=0.5)
    fd.heartbeat("p", 10.0)
    assert fd.known("p")
    assert fd.phi("p", 10.0) < 1
    assert fd.is_available("p", 11.5)
    assert not fd.is_available("p", 20.0)
    # The second beat seeds the window with the estimate, so one interval does not decide.
    fd.heartbeat("p", 13.0)
    window = fd._windows["p"]
    assert list(window.intervals) == [0.5, 3.0]
    assert window.mean() == pytest.approx(1.75)


def test_forget() -> None:
    fd = PhiAccrualFailureDetector()
    feed(fd)
    assert fd.known("p")
    fd.forget("p")
    assert not fd.known("p")
    assert fd.phi("p", 0.0) == math.inf
    fd.forget("p")  # forgetting an unknown peer is fine


def test_peers_are_independent() -> None:
    fd = PhiAccrualFailureDetector()
    last = feed(fd, peer="a")[-1]
    feed(fd, peer="b", start=last + 10)
    assert not fd.is_available("a", last + 20)
    assert fd.is_available("b", last + 10 + 100 * INTERVAL)


@pytest.mark.parametrize("window", [2, 3, 10, 50])
def test_window_is_bounded(window: int) -> None:
    fd = PhiAccrualFailureDetector(window=window)
    rng = random.Random(window)
    now = 0.0
    recent: list[float] = []
    for _ in range(1000):
        interval = rng.uniform(0.1, 2.0)
        now += interval
        fd.heartbeat("p", now)
        recent.append(interval)
        state = fd._windows["p"]
        assert len(state.intervals) <= window
    state = fd._windows["p"]
    assert len(state.intervals) == window
    assert list(state.intervals) == pytest.approx(recent[-window:])
    # The running sums track the window (no drift after many evictions).
    assert state.mean() == pytest.approx(sum(recent[-window:]) / window, rel=1e-9)
    mean = sum(recent[-window:]) / window
    variance = sum((x - mean) ** 2 for x in recent[-window:]) / window
    assert state.std_dev() == pytest.approx(math.sqrt(variance), rel=1e-6, abs=1e-9)


def test_arrival_window_statistics() -> None:
    window = ArrivalWindow(max_size=100, first_interval=1.0)
    assert window.mean() == 1.0
    assert window.std_dev() == 0.0
    window.add(0.0)
    assert window.mean() == 1.0  # no interval yet
    window.add(2.0)
    assert list(window.intervals) == [1.0, 2.0]
    assert window.mean() == pytest.approx(1.5)
    assert window.std_dev() == pytest.approx(0.5)


def test_returning_peer_is_available_again() -> None:
    fd = PhiAccrualFailureDetector()
    last = feed(fd)[-1]
    assert not fd.is_available("p", last + 60)
    # It comes back after a minute and beats regularly again.
    now = last + 60
    for _ in range(5):
        fd.heartbeat("p", now)
        assert fd.is_available("p", now)
        assert fd.is_available("p", now + INTERVAL)
        assert fd.phi("p", now) < 1
        now += INTERVAL
    # And after it has been regular for a while, silence is detected again.
    times = feed(fd, start=now, beats=DEFAULT_WINDOW)
    assert not fd.is_available("p", times[-1] + 10)


def test_clock_going_backwards_is_ignored() -> None:
    fd = PhiAccrualFailureDetector()
    last = feed(fd)[-1]
    window = fd._windows["p"]
    intervals = list(window.intervals)
    before = fd.phi("p", last + 1.0)
    fd.heartbeat("p", last - 5.0)
    assert window.last == last
    assert list(window.intervals) == intervals
    assert fd.phi("p", last + 1.0) == before
    # A later heartbeat is measured from the newest arrival, not the backwards one.
    fd.heartbeat("p", last + 0.5)
    assert window.intervals[-1] == pytest.approx(0.5)


def test_phi_before_the_last_heartbeat_is_zero_not_an_error() -> None:
    fd = PhiAccrualFailureDetector()
    last = feed(fd)[-1]
    assert fd.phi("p", last - 100.0) == pytest.approx(0.0)
    assert fd.is_available("p", last - 100.0)


# --- phi_normal ------------------------------------------------------------------------------

elapsed_values = st.floats(min_value=0.0, max_value=1e5, allow_nan=False)
means = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)
std_devs = st.floats(min_value=0.01, max_value=10.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(elapsed_values, elapsed_values, means, std_devs)
def test_phi_normal_is_finite_non_negative_and_monotone(
    e1: float, e2: float, mean: float, std: float
) -> None:
    low, high = sorted((e1, e2))
    phi_low = phi_normal(low, mean, std)
    phi_high = phi_normal(high, mean, std)
    for phi in (phi_low, phi_high):
        assert math.isfinite(phi)
        assert phi >= 0
    assert phi_low <= phi_high


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-8.0, max_value=8.0, allow_nan=False))
def test_phi_normal_approximates_the_normal_tail(y: float) -> None:
    approx = 10 ** -phi_normal(y, 0.0, 1.0)
    exact = 0.5 * math.erfc(y / math.sqrt(2))
    assert abs(approx - exact) < 2e-4


def test_phi_normal_reference_points() -> None:
    assert phi_normal(1.0, 1.0, 0.1) == pytest.approx(math.log10(2))  # P = 1/2 at the mean
    assert phi_normal(0.0, 10.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    # Far tails stay finite and keep growing instead of saturating at inf.
    far = [phi_normal(e, 1.0, 0.1) for e in (10.0, 100.0, 1000.0, 10_000.0)]
    assert all(math.isfinite(x) for x in far)
    assert far == sorted(far)
    assert far[0] > 300  # beyond where exp() would underflow
