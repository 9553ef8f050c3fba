"""`ringkv admin ...`: plan tables, progress lines and bars, following a change, exit codes.

Most tests run the CLI in-process against a tiny aiohttp server (in a thread, on 127.0.0.1)
that answers the admin endpoints with canned JSON: they test rendering and exit codes only,
not ring changes. The last test runs the real thing against a 4-node cluster.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from ringkv import cli
from ringkv import progress as progress_ui
from ringkv.client import RingkvError
from ringkv.core.ring import Ring
from ringkv.core.streaming import plan_transfers
from tests.cluster import free_ports, wait_until
from tests.conftest import MakeCluster
from tests.fake_http import ThreadedApp

Reply = Callable[[dict[str, Any]], web.Response]

# --------------------------------------------------------------------------- canned answers

PLAN = {
    "op": "decommission",
    "node": "n4",
    "ring_nodes_before": 4,
    "ring_nodes_after": 3,
    "transfers": [
        {"start": "1", "end": "5", "source": "n4", "target": "n1", "keys": 10, "bytes": 2048},
        {"start": "9", "end": "12", "source": "n4", "target": "n1", "keys": 5, "bytes": 1024},
        {"start": "20", "end": "30", "source": "n2", "target": "n1", "keys": 1, "bytes": 100},
        {"start": "40", "end": "50", "source": "n4", "target": "n3", "keys": 7, "bytes": 700},
        {"start": "60", "end": "70", "source": None, "target": "n3", "keys": None, "bytes": None},
    ],
    "unsourced": 1,
    "keys": 23,
    "bytes": 3872,
    "moved_fraction_of_one_copy": 0.2512,
}


def report(state: str, done: int = 0, sent: int = 0, **extra: Any) -> dict[str, Any]:
    """A change report as GET /v1/admin/progress lists it (4 transfers, 4000 bytes)."""
    return {
        "reported_by": "n4", "op": "decommission", "node": "n4", "driver": "n4",
        "state": state, "transfers": 4, "transfers_done": done, "unsourced": 0,
        "keys_sent": sent // 100, "bytes_sent": sent, "keys_total": 40, "bytes_total": 4000,
        "rate_bytes_per_second": 2048.0, "eta_seconds": (4000 - sent) / 2048,
        "started_ms": 5_000, "updated_ms": 5_000 + 10 * done + sent,
        **({"finished_ms": 9_000} if state != "running" else {}), **extra,
    }  # fmt: skip


OLD_DONE = {**report("done", 4, 4000), "op": "join", "updated_ms": 1_000, "finished_ms": 1_000}


def progress(in_progress: str | None, *reports: dict[str, Any]) -> dict[str, Any]:
    return {"in_progress": in_progress, "changes": list(reports)}


LEAVING = "n4 is leaving"


class FakeAdmin:
    """Answers the admin endpoints with canned JSON; GET /v1/admin/progress walks through
    `progress_docs` (one per request, then repeats the last); records every request."""

    def __init__(self) -> None:
        self.plan: Reply = lambda body: web.json_response(PLAN)
        self.action: Reply = lambda body: web.json_response(
            {"accepted": True, "driver": body.get("node") or "n4"}, status=202
        )
        self.progress_docs: list[dict[str, Any]] = [progress(None, OLD_DONE)]
        self.status: dict[str, Any] = {"members": []}
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ThreadedApp(app)
        self.url = self._server.url

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self.seen.append((request.method, request.path, body))
        if request.path == "/v1/admin/plan":
            return self.plan(body)
        if request.path == "/v1/admin/progress":
            doc = self.progress_docs[0]
            if len(self.progress_docs) > 1:
                self.progress_docs.pop(0)
            return web.json_response(doc)
        if request.path == "/v1/status":
            return web.json_response(self.status)
        if request.path.startswith("/v1/admin/"):
            return self.action(body)
        return web.json_response({"error": "not_found", "message": "no route"}, status=404)

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [body for method, p, body in self.seen if p == path and method == "POST"]

    def close(self) -> None:
        self._server.close()


def error(status: int, code: str, message: str) -> Reply:
    return lambda body: web.json_response({"error": code, "message": message}, status=status)


@pytest.fixture
def fake() -> Iterator[FakeAdmin]:
    node = FakeAdmin()
    yield node
    node.close()


@pytest.fixture
def closed_url() -> str:
    """A URL nobody listens on."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll quickly, and let every changed plain line through (throttling is tested apart)."""
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(progress_ui, "PLAIN_LINE_SECONDS", 0.0)


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(fake: FakeAdmin, *args: str) -> int:
    return cli.main([*args, "--endpoint", fake.url, "--timeout", "2"])


# --------------------------------------------------------------------------- rendering


def test_format_plan_groups_by_target_with_sources_totals_and_fraction() -> None:
    text = cli.format_plan(PLAN)
    lines = text.splitlines()
    assert lines[0].startswith("plan: decommission n4  (ring nodes 4 -> 3)")
    table = {line.split()[0]: line for line in lines if line.split()[:1] in (["n1"], ["n3"])}
    header = next(line for line in lines if line.startswith("TARGET"))
    assert header.split() == ["TARGET", "RANGES", "KEYS", "BYTES", "FROM", "(RANGES)"]
    # n1 gets 3 ranges (16 keys, 3172 bytes): 2 from n4, 1 from n2
    assert table["n1"].split()[:5] == ["n1", "3", "16", "3.1", "KiB"]
    assert table["n1"].endswith("n4 (2), n2 (1)")
    # n3: one range with counts, one without a live source: the sums are lower bounds
    assert table["n3"].split()[:4] == ["n3", "2", ">=7", ">=700"]
    assert table["n3"].endswith("n4 (1), no live source (1)")
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[:5] == ["total", "5", ">=23", ">=3.8", "KiB"]
    assert "moves 25.1% of one copy of the data" in text
    assert "warning: 1 ranges have no live source" in text

    empty = cli.format_plan({**PLAN, "transfers": [], "unsourced": 0})
    assert empty.splitlines()[-1] == "no data moves"


def test_format_bytes_and_progress_fraction() -> None:
    assert [progress_ui.format_bytes(v) for v in (0, 1023, 1536, 5 * 1024**3, None)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 GiB", "?",
    ]  # fmt: skip
    assert progress_ui.progress_fraction(report("running", 1, 1000)) == 0.25  # by bytes
    by_transfers = {**report("running", 3, 0), "bytes_total": 0}
    assert progress_ui.progress_fraction(by_transfers) == 0.75  # no byte total: by transfers
    assert progress_ui.progress_fraction({**by_transfers, "transfers": 0}) is None
    assert progress_ui.progress_fraction({"state": "done"}) == 1.0


def test_progress_bar_and_plain_line() -> None:
    bar = progress_ui.progress_bar(report("running", 2, 1000), width=200, bar=20)
    assert bar.startswith("decommission n4 [#####---------------]  25.0%")
    assert "2/4 transfers" in bar and "2.0 KiB/s" in bar and "ETA 0m01s" in bar
    narrow = progress_ui.progress_bar(report("running", 2, 1000), width=70)  # the bar gives way
    assert narrow == "decommission n4 [##------]  25.0%  2/4 transfers  2.0 KiB/s  ETA 0m01s"
    assert len(progress_ui.progress_bar(report("running", 2, 1000), width=30)) == 30  # then clipped
    assert "(failed; retrying)" in progress_ui.progress_bar(report("failed", 1, 10), width=200)

    line = progress_ui.plain_progress_line(report("running", 2, 1000))
    assert line == (
        "decommission n4: running  transfers 2/4  keys 10/40  bytes 1000 B/3.9 KiB  25.0%  "
        "rate 2.0 KiB/s  ETA 0m01s"
    )
    # a change cancelled before streaming publishes only its state
    assert progress_ui.plain_progress_line({"reported_by": "n4", "state": "cancelled"}) == (
        "the change driven by n4: cancelled"
    )


def test_plain_display_prints_changed_lines_at_most_every_two_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_ui, "PLAIN_LINE_SECONDS", 2.0)
    now = [100.0]
    out = io.StringIO()
    display = progress_ui.ProgressDisplay(out, progress_ui.CHANGE_VIEW, clock=lambda: now[0])
    assert not display.tty  # a StringIO is no terminal
    display.show(report("running", 0, 0), "-")
    display.show(report("running", 0, 0), "-")  # unchanged: not repeated
    now[0] += 0.5
    display.show(report("running", 1, 500), "-")  # changed, but too soon
    now[0] += 2.0
    display.show(report("running", 1, 500), "-")  # now it is printed
    now[0] += 3.0
    display.show(report("running", 1, 500), "-")  # unchanged
    display.finish("decommission n4 done")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "transfers 0/4" in lines[0] and "transfers 1/4" in lines[1]
    assert lines[2] == "decommission n4 done"
    assert "\r" not in out.getvalue()


def test_tty_display_redraws_one_line() -> None:
    out = TTY()
    display = progress_ui.ProgressDisplay(out, progress_ui.CHANGE_VIEW, width=100)
    assert display.tty
    display.show(None, "decommission n4: waiting for every member to see the change")
    display.show(report("running", 1, 1000), "-")
    display.show(report("running", 4, 4000), "-")
    assert "\n" not in out.getvalue()  # one line, redrawn
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert "[######------------------]  25.0%" in frames[1]
    assert "[########################] 100.0%" in frames[2]
    display.finish("done")
    last = out.getvalue().split("\r")[-1]
    # the shorter summary blanks out the rest of the longer bar, then ends the line
    assert last.startswith("done ") and last.endswith("\n") and not last[4:-1].strip()


def test_summary_lines() -> None:
    done = cli.Outcome("done", report("done", 4, 4000), None)
    assert cli.summary_line(done, "x", 10) == (
        "decommission n4 done in 4.0 s: 4/4 transfers, 40 keys, 3.9 KiB sent (1000 B/s on average)"
    )
    cancelled = cli.Outcome("cancelled", {"reported_by": "n4", "state": "cancelled"}, None)
    assert cli.summary_line(cancelled, "decommission n4", 10).startswith(
        "decommission n4 cancelled"
    )
    timeout = cli.Outcome("timeout", report("running", 1, 100), None)
    assert "still running after 10.0 s" in cli.summary_line(timeout, "x", 10)
    assert "stalled" in cli.summary_line(cli.Outcome("stalled", None, None), "join n5", 10)


def test_outcome_exit_codes() -> None:
    assert [cli.outcome_exit_code(s) for s in ("done", "cancelled", "failed", "stalled")] == [
        0, 1, 3, 3,
    ]  # fmt: skip
    assert cli.outcome_exit_code("timeout") == 3
    assert cli.outcome_exit_code("cancelled", cancelling=True) == 0
    assert cli.outcome_exit_code("done", cancelling=True) == 1


# --------------------------------------------------------------------------- commands


def test_plan_table_and_json(fake: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "admin", "plan", "decommission", "n4") == 0
    assert "n4 (2), n2 (1)" in capsys.readouterr().out
    assert fake.requests("/v1/admin/plan") == [{"op": "decommission", "node": "n4"}]
    assert run(fake, "admin", "plan", "decommission", "n4", "--json") == 0
    assert json.loads(capsys.readouterr().out) == PLAN
    assert cli.main(["admin", "plan", "shrink", "n4"]) == 2  # not an operation
    assert cli.main(["admin", "plan", "join"]) == 2  # no node


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (409, "change_in_progress", 4),
        (409, "conflict", 4),
        (404, "unknown_node", 1),
        (400, "bad_request", 2),
        (503, "unavailable", 3),
        (500, "internal", 5),
    ],
)
def test_admin_error_exit_codes(
    fake: FakeAdmin,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: str,
    expected: int,
) -> None:
    fake.plan = fake.action = error(status, code, f"refused ({code})")
    assert run(fake, "admin", "plan", "join", "n5") == expected
    assert run(fake, "admin", "decommission", "n4", "--wait") == expected
    assert run(fake, "admin", "cancel") == expected
    err = capsys.readouterr().err
    assert f"ringkv: error: refused ({code}) (HTTP {status} {code})" in err
    assert ("ringkv admin progress --watch" in err) == (code == "change_in_progress")


def test_exit_code_mapping_is_admin_only(closed_url: str) -> None:
    """409 and 404 keep meaning "other error" (5) for the key commands, as before."""
    conflict = RingkvError(409, "change_in_progress", "busy", {})
    unknown = RingkvError(404, "unknown_node", "no member named 'n9'", {})
    assert (cli.report_error(conflict, admin=True), cli.report_error(conflict)) == (4, 5)
    assert (cli.report_error(unknown, admin=True), cli.report_error(unknown)) == (1, 5)
    assert cli.main(["admin", "progress", "--endpoint", closed_url, "--timeout", "1"]) == 3


def test_accepted_without_wait(fake: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "admin", "decommission", "n4") == 0
    assert capsys.readouterr().out == "accepted: n4 is leaving the ring (driven by n4)\n"
    assert run(fake, "admin", "remove", "n3", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"accepted": True, "driver": "n3"}
    fake.action = lambda body: web.json_response({"cancelled": True, "driver": "n4"}, status=202)
    assert run(fake, "admin", "cancel") == 0
    assert "the change driven by n4 is being undone" in capsys.readouterr().out
    assert run(fake, "admin", "cancel", "n4") == 0
    assert fake.requests("/v1/admin/decommission") == [{"node": "n4"}]
    assert fake.requests("/v1/admin/cancel") == [{}, {"node": "n4"}]  # no NODE: the running one


RUN_TO_DONE = [
    progress(None, OLD_DONE),  # the baseline, read before the request
    progress(LEAVING, OLD_DONE),  # announced, not streaming yet: the old report is not ours
    progress(LEAVING, report("running", 1, 1000), OLD_DONE),
    progress(LEAVING, report("running", 3, 3000), OLD_DONE),
    progress(None, report("done", 4, 4000), OLD_DONE),
]


def test_wait_plain_lines_until_done(fake: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    fake.progress_docs = list(RUN_TO_DONE)
    assert run(fake, "admin", "decommission", "n4", "--wait") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "accepted: n4 is leaving the ring (driven by n4)",
        "decommission n4: waiting for every member to see the change",
        progress_ui.plain_progress_line(report("running", 1, 1000)),
        progress_ui.plain_progress_line(report("running", 3, 3000)),
        "decommission n4 done in 4.0 s: 4/4 transfers, 40 keys, 3.9 KiB sent (1000 B/s on average)",
    ]


def test_wait_shows_a_bar_in_a_terminal(fake: FakeAdmin, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.progress_docs = list(RUN_TO_DONE)
    out = TTY()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("COLUMNS", "121")  # the terminal's width
    assert run(fake, "admin", "decommission", "n4", "--wait") == 0
    text = out.getvalue()
    accepted, rest = text.split("\n", 1)
    assert accepted == "accepted: n4 is leaving the ring (driven by n4)"
    assert rest.count("\n") == 1 and rest.endswith("\n")  # one redrawn line, then the summary
    frames = [frame.rstrip() for frame in rest.split("\r")[1:]]
    assert "[######------------------]  25.0%" in frames[1]
    assert "[##################------]  75.0%" in frames[-2]
    assert frames[-1].startswith("decommission n4 done in 4.0 s")


def test_wait_json_prints_one_document(fake: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    fake.progress_docs = list(RUN_TO_DONE)
    assert run(fake, "admin", "decommission", "n4", "--wait", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["outcome"] == "done"
    assert document["driver"] == "n4" and document["change"]["transfers_done"] == 4


@pytest.mark.parametrize(
    ("docs", "expected", "words"),
    [
        # cancelled by somebody else: exit 1
        ([progress(LEAVING, report("running", 1, 1000)),
          progress(None, report("cancelled", 1, 1000))], 1, "cancelled"),
        # failed and no longer announced: exit 3
        ([progress(LEAVING, report("running", 1, 1000)),
          progress(None, report("failed", 1, 1000))], 3, "failed"),
        # failed while still announced: the driver retries, and this time it completes
        ([progress(LEAVING, report("failed", 1, 1000)),
          progress(LEAVING, {**report("running", 2, 2000), "updated_ms": 99_999}),
          progress(None, {**report("done", 4, 4000), "updated_ms": 100_000})], 0, "done"),
    ],
)  # fmt: skip
def test_wait_outcomes(
    fake: FakeAdmin,
    capsys: pytest.CaptureFixture[str],
    docs: list[dict[str, Any]],
    expected: int,
    words: str,
) -> None:
    fake.progress_docs = [progress(None, OLD_DONE), *docs]
    assert run(fake, "admin", "decommission", "n4", "--wait") == expected
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"decommission n4 {words}")


def test_wait_timeout_and_stall(
    fake: FakeAdmin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.progress_docs = [progress(None), progress(LEAVING, report("running", 1, 1000))]
    assert run(fake, "admin", "decommission", "n4", "--wait", "--wait-timeout", "0.3") == 3
    assert "still running after 0.3 s" in capsys.readouterr().out

    # running, but nothing is announced any more: the driver is gone
    monkeypatch.setattr(cli, "STALL_SECONDS", 0.1)
    fake.progress_docs = [progress(None), progress(None, report("running", 1, 1000))]
    assert run(fake, "admin", "decommission", "n4", "--wait", "--wait-timeout", "30") == 3
    assert "stalled" in capsys.readouterr().out.splitlines()[-1]

    # nothing to stream (the first node of a cluster): no report, but the node is normal
    fake.progress_docs = [progress(None)]
    fake.status = {"members": [{"id": "n5", "state": "normal"}]}
    assert run(fake, "admin", "join", "n5", "--wait", "--wait-timeout", "30") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "join n5 done"


def test_cancel_wait_exits_0_once_cancelled(
    fake: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.action = lambda body: web.json_response({"cancelled": True, "driver": "n4"}, status=202)
    cancelled = {"reported_by": "n4", "state": "cancelled", "updated_ms": 50_000}
    fake.progress_docs = [
        progress(LEAVING, report("running", 1, 1000)),
        progress(LEAVING, report("running", 1, 1000)),
        progress(None, cancelled),
    ]
    assert run(fake, "admin", "cancel", "--wait") == 0
    assert capsys.readouterr().out.splitlines() == [
        "cancel requested: the change driven by n4 is being undone",
        "the change driven by n4: waiting for n4 to stop after its current batch",
        "the change driven by n4 cancelled; the ring is as it was before",
    ]
    # the change completed before the cancel took effect: exit 1
    fake.progress_docs = [progress(LEAVING, report("running", 1, 1000)),
                          progress(None, report("done", 4, 4000))]  # fmt: skip
    assert run(fake, "admin", "cancel", "n4", "--wait") == 1


def test_progress_show_and_watch(
    fake: FakeAdmin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.progress_docs = [progress(None)]
    assert run(fake, "admin", "progress") == 0
    assert "no ring change has been reported" in capsys.readouterr().out
    assert run(fake, "admin", "progress", "--watch") == 0  # nothing runs: show and return
    capsys.readouterr()

    fake.progress_docs = [progress(LEAVING, report("running", 2, 1000), OLD_DONE)]
    assert run(fake, "admin", "progress") == 0
    shown = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert shown["in"] == "in progress  n4 is leaving"
    assert shown["change"].split()[:3] == ["change", "decommission", "n4"]
    assert shown["state"].split() == ["state", "running"]
    assert shown["transfers"].split()[:2] == ["transfers", "2/4"]
    assert shown["keys"].split()[:2] == ["keys", "10/40"]
    assert "(25.0%)" in shown["bytes"]
    assert shown["rate"].split()[1:] == ["2.0", "KiB/s"]
    assert shown["eta"].split()[1] == "0m01s"
    assert run(fake, "admin", "progress", "--json") == 0
    assert json.loads(capsys.readouterr().out) == fake.progress_docs[0]

    # asked of the driver itself, the document also has one row per transfer
    row = {"start": "1", "end": "2", "source": "n4", "target": "n1", "keys_sent": 3,
           "bytes_sent": 300, "keys_total": 10, "bytes_total": 1000}  # fmt: skip
    rows = [{**row, "state": s} for s in ("done", "done", "running", "pending", "unsourced")]
    fake.progress_docs = [{**progress(LEAVING, report("running", 2, 1000)), "transfers": rows}]
    assert run(fake, "admin", "progress") == 0
    shown_text = capsys.readouterr().out
    assert "per transfer 2 done, 1 running, 1 pending, 1 unsourced" in shown_text
    assert "now          n4 -> n1: keys 3/10, bytes 300 B/1000 B" in shown_text

    fake.progress_docs = list(RUN_TO_DONE[2:])
    out = TTY()
    monkeypatch.setattr(sys, "stdout", out)
    assert run(fake, "admin", "progress", "--watch") == 0
    assert "\r" in out.getvalue()
    assert out.getvalue().rstrip().split("\r")[-1].startswith("decommission n4 done")


def test_cleanup_command_progress_lines_and_disk_in_status(
    fake: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.action = lambda body: web.json_response(
        {"nodes": [{"accepted": True, "node": body.get("node") or "n1", "state": "done"}]},
        status=202,
    )
    assert run(fake, "admin", "cleanup", "--node", "n2") == 0
    assert fake.requests("/v1/admin/cleanup") == [{"node": "n2"}]
    assert "cleanup on n2: started" in capsys.readouterr().out
    assert run(fake, "admin", "cleanup") == 0
    assert fake.requests("/v1/admin/cleanup")[-1] == {}
    capsys.readouterr()

    cleaning = {"node": "n1", "state": "running", "ranges_done": 3, "ranges_total": 85,
                "keys_done": 500, "keys_total": 1202, "bytes_done": 51200,
                "bytes_total": 123000, "reclaimed_bytes": 0}  # fmt: skip
    held = {"node": "n2", "state": "held", "reason": "n4 does not see ring 4fa2 yet",
            "ranges_done": 0, "ranges_total": 0, "keys_done": 0, "keys_total": 0,
            "bytes_done": 0, "bytes_total": 0}  # fmt: skip
    fake.progress_docs = [{**progress(None, OLD_DONE), "cleanup": [cleaning, held],
                           "cleanup_pending": ["n1", "n2"]}]  # fmt: skip
    assert run(fake, "admin", "progress") == 0
    out = capsys.readouterr().out
    assert "  n1: running  ranges 3/85  keys 500/1202  bytes 50.0 KiB/120.1 KiB" in out
    assert "  n2: held" in out and "(n4 does not see ring 4fa2 yet)" in out

    fake.status = {"node": {"id": "n1"}, "cluster": {}, "members": [],
                   "cleanup": {"state": "done", "disk_bytes": 2 * 1024 * 1024,
                               "reclaimed_bytes": 3 * 1024 * 1024, "keys_done": 1202}}  # fmt: skip
    assert run(fake, "status") == 0
    out = capsys.readouterr().out
    assert "disk     2.0 MiB  cleanup done  reclaimed 3.0 MiB  (1202 keys removed" in out


# --------------------------------------------------------------------------- a real cluster


def ringkv(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return subprocess.run(
        [sys.executable, "-m", "ringkv", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_plan_and_decommission_on_a_real_cluster(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(nodes=4, zones=3)
    n1 = cluster.node("n1").url
    client = cluster.client("n1")
    keys = [f"key-{i}" for i in range(200)]
    for key in keys:
        client.put(key, key.encode() * 20, w="all")

    # What the plan should say, from the ring layout: n4 (zone z1) hands its ranges to n1,
    # the only other node of z1 (replicas go to distinct zones).
    layout = client.ring()
    members = [n for n in layout["nodes"] if n["tokens"]]
    ring = Ring({n["id"]: [int(t) for t in n["tokens"]] for n in members},
                {n["id"]: n["zone"] for n in members})  # fmt: skip
    expected = plan_transfers(ring, ring.without_node("n4"), 3, set(ring.nodes), "n4")
    assert {x.target for x in expected} == {"n1"} and {x.source for x in expected} == {"n4"}

    plan = ringkv("admin", "plan", "decommission", "n4", "--endpoint", n1)
    assert plan.returncode == 0, plan.stderr
    rows = {line.split()[0]: line.split() for line in plan.stdout.splitlines() if line.strip()}
    assert set(rows) & {"n1", "n2", "n3", "n4"} == {"n1"}  # one target row: n1
    assert int(rows["n1"][1]) == len(expected)
    assert rows["n1"][-2:] == ["n4", f"({len(expected)})"]
    assert "(ring nodes 4 -> 3)" in plan.stdout
    raw = json.loads(ringkv("admin", "plan", "decommission", "n4", "--json",
                            "--endpoint", n1).stdout)  # fmt: skip
    assert [
        (int(t["start"]), int(t["end"]), t["source"], t["target"]) for t in raw["transfers"]
    ] == [(x.start, x.end, x.source, x.target) for x in expected]
    assert 0 < raw["keys"] <= len(keys)  # n4's share of the keys, one copy each

    done = ringkv("admin", "decommission", "n4", "--wait", "--endpoint", n1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("accepted: n4 is leaving the ring (driven by n4)")
    assert "decommission n4 done" in done.stdout.splitlines()[-1]
    assert f"{raw['keys']} keys" in done.stdout.splitlines()[-1]

    def left() -> bool:
        status = client.status()
        states = {m["id"]: m["state"] for m in status["members"]}
        return bool(states["n4"] == "left" and status["cluster"]["ring_nodes"] == 3)

    wait_until(left, 15, message="n1 sees n4 left and a 3-node ring")
    for key in keys:
        assert client.get(key, r="quorum").value == key.encode() * 20

    again = ringkv("admin", "decommission", "n4", "--endpoint", n1)
    assert again.returncode == 4, again.stderr  # 409: n4 is left, not normal
    shown = ringkv("admin", "progress", "--endpoint", n1)
    assert shown.returncode == 0
    assert "decommission n4" in shown.stdout and "state        done" in shown.stdout
