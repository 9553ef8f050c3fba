"""ringkv.backup's pure pieces: the rate limit, the progress report, object keys."""

from __future__ import annotations

from ringkv.backup import Progress, RateLimit, Store


def test_rate_limit_sleeps_for_what_exceeds_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limit = RateLimit(1000.0, clock=lambda: now[0], sleep=sleep)
    limit.take(1000)  # the first second's budget
    assert slept == []
    limit.take(500)
    assert slept == [0.5]
    now[0] += 10  # idle: the budget refills, but only one second deep
    limit.take(1000)
    limit.take(1000)
    assert slept[-1] == 1.0
    unlimited = RateLimit(0, clock=lambda: 0.0, sleep=lambda s: slept.append(-1))
    unlimited.take(10**9)
    assert -1 not in slept


def test_progress_report_rate_and_eta() -> None:
    progress = Progress("backup", "b1", bytes_total=1000, bytes_done=250, files_total=4)
    progress.started -= 1.0
    report = progress.report()
    assert 200 < report["rate_bytes_per_second"] <= 250
    assert 2.9 < report["eta_seconds"] < 3.8
    progress.state = "done"
    assert progress.report()["eta_seconds"] is None


def test_object_keys() -> None:
    assert Store("b", "prod/").key("id", "n1", "000012.sst") == "prod/id/n1/000012.sst"
    assert Store("b", "").key("id", "manifest.json") == "id/manifest.json"
    assert "secret" not in repr(Store("b", "p", access_key="AK", secret_key="secret"))
