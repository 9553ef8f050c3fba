"""ringkv.backup's pure pieces: the rate limit, the progress report, object keys."""

from __future__ import annotations

import hashlib
import os
from typing import Any
from urllib.parse import parse_qsl

import pytest

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


def test_a_file_copy_follows_short_answers_and_charges_what_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node may answer less than asked (it serves at most 1 MiB a request): the copy asks
    again from where the answer ended, the bytes uploaded are the file's, and the rate limit
    is charged for the bytes that came, not those asked for."""
    import ringkv.backup as backup

    blob = os.urandom(3 * 1024 * 1024 + 5)

    def answer(
        client: object, method: str, path: str, *_: object
    ) -> tuple[int, dict[str, str], bytes]:
        query = dict(parse_qsl(path.partition("?")[2]))
        offset, length = int(query["offset"]), int(query["length"])
        return 200, {}, blob[offset : offset + min(length, 700_000)]

    uploaded: dict[str, bytes] = {}

    class Bucket:
        def upload_fileobj(self, f: Any, bucket: str, key: str, ExtraArgs: Any) -> None:
            uploaded[key] = f.read()

    class Limit:
        taken: list[int] = []

        def take(self, size: int) -> None:
            self.taken.append(size)

    monkeypatch.setattr(backup, "_call", answer)
    store = Store("b", "p")
    store._client = Bucket()
    limit = Limit()
    listed = {"path": "000001.sst", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    backup._copy_file(None, "snap", listed, store, "p/k", limit)  # type: ignore[arg-type]
    assert uploaded == {"p/k": blob}
    assert sum(limit.taken) == len(blob) and max(limit.taken) <= 700_000
