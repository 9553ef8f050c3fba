"""Progress of long operations, as the `ringkv` command shows it.

- ``ProgressDisplay``: follows an operation on a terminal as one line redrawn with \\r (a
  progress bar), elsewhere as one plain line per change at most every ``PLAIN_LINE_SECONDS``,
  and ends with a summary line. What a report looks like comes from a ``ProgressView`` (a bar
  renderer and a plain-line renderer), so any long operation can use it with its own view.
- ``bar_line``: the bar itself, narrowed to fit the terminal, for any view.
- Amounts in words: ``format_bytes``, ``format_rate``, ``format_seconds``, ``format_eta``,
  ``format_duration``, ``of`` (done/total).
- The ring change's view (``CHANGE_VIEW``: ``progress_bar``, ``plain_progress_line``, from a
  change report of ``GET /v1/admin/progress``: transfers, keys, bytes, rate, ETA) and the
  ``ringkv admin progress`` page (``format_progress``, ``format_cleanup``).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

PLAIN_LINE_SECONDS = 2.0  # at most one plain progress line this often (not a terminal)

Report = dict[str, Any]


@dataclass(frozen=True)
class ProgressView:
    """How one kind of operation's report is drawn: ``bar(report, width)`` for a terminal,
    ``line(report)`` for logs and pipes."""

    bar: Callable[[Report, int], str]
    line: Callable[[Report], str]


def bar_line(head: str, fraction: float | None, tail: str, width: int = 79, bar: int = 24) -> str:
    """``{head}[#####-----]{tail}``: the bar narrowed (down to 8 cells) to fit ``width``, the
    line clipped past that; an unknown fraction draws an empty bar."""
    cells = max(8, min(bar, width - len(head) - len(tail)))
    filled = round((fraction or 0.0) * cells)
    return f"{head}{'#' * filled}{'-' * (cells - filled)}{tail}"[:width]


def percent(fraction: float | None) -> str:
    return f"{fraction * 100:5.1f}%" if fraction is not None else "    ?%"


def format_seconds(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else format_seconds(seconds)


def format_bytes(size: object) -> str:
    if not isinstance(size, int | float):
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(rate: object) -> str:
    return f"{format_bytes(rate)}/s" if isinstance(rate, int | float) else "-"


def change_label(report: dict[str, Any]) -> str:
    if report.get("op") and report.get("node"):
        return f"{report['op']} {report['node']}"
    return f"the change driven by {report.get('driver') or report.get('reported_by')}"


def progress_fraction(report: dict[str, Any]) -> float | None:
    """Done share by bytes, else by transfers (None when neither is known)."""
    if report.get("state") == "done":
        return 1.0
    total, sent = report.get("bytes_total"), report.get("bytes_sent")
    if isinstance(total, int | float) and total > 0 and isinstance(sent, int | float):
        return min(1.0, sent / total)
    total, done = report.get("transfers"), report.get("transfers_done")
    if isinstance(total, int) and total > 0 and isinstance(done, int):
        return min(1.0, done / total)
    return None


def of(done: object, total: object, render: Callable[[object], str] = str) -> str:
    """done/total, with ? for an unknown side."""
    left = render(done) if done is not None else "?"
    right = render(total) if total is not None else "?"
    return f"{left}/{right}"


def format_eta(seconds: object) -> str:
    return format_seconds(seconds) if isinstance(seconds, int | float) else "-"


def plain_progress_line(report: dict[str, Any]) -> str:
    """One line for logs: state, transfers, keys, bytes, rate and ETA."""
    state = report.get("state")
    parts = [f"{change_label(report)}: {state}"]
    if report.get("transfers") is not None:
        parts.append(f"transfers {of(report.get('transfers_done'), report.get('transfers'))}")
        parts.append(f"keys {of(report.get('keys_sent'), report.get('keys_total'))}")
        parts.append(
            f"bytes {of(report.get('bytes_sent'), report.get('bytes_total'), format_bytes)}"
        )
        fraction = progress_fraction(report)
        if fraction is not None:
            parts.append(f"{fraction * 100:.1f}%")
        parts.append(f"rate {format_rate(report.get('rate_bytes_per_second'))}")
        parts.append(f"ETA {format_eta(report.get('eta_seconds'))}")
    if state == "failed":
        parts.append("the driver retries")
    return "  ".join(parts)


def progress_bar(report: dict[str, Any], width: int = 79, bar: int = 24) -> str:
    """`decommission n4 [#########---------]  45.2%  3/7 transfers  1.2 MiB/s  ETA 0m03s`,
    the bar narrowed (down to 8 cells) to fit `width`, the line clipped past that."""
    head = f"{change_label(report)} ["
    fraction = progress_fraction(report)
    tail = (
        f"] {percent(fraction)}  "
        f"{of(report.get('transfers_done'), report.get('transfers'))} transfers  "
        f"{format_rate(report.get('rate_bytes_per_second'))}  "
        f"ETA {format_eta(report.get('eta_seconds'))}"
    )
    if report.get("state") == "failed":
        tail += "  (failed; retrying)"
    return bar_line(head, fraction, tail, width, bar)


def format_progress(document: dict[str, Any]) -> str:
    """The current (or last) change in detail."""
    in_progress = document.get("in_progress")
    changes: list[dict[str, Any]] = document.get("changes", [])
    lines = [f"in progress  {in_progress}" if in_progress else "in progress  none"]
    if not changes:
        lines.append("no ring change has been reported")
        return "\n".join(lines + format_cleanup(document.get("cleanup") or []))
    report = changes[0]
    state = report.get("state")
    if state == "running" and not in_progress:
        state = "running? (no change is announced: is the driver down?)"
    elif in_progress and state != "running":
        lines.append("(not streaming yet: waiting for every member to see the change)")
    lines.append(f"change       {change_label(report)}  (driven by {report.get('reported_by')})")
    lines.append(f"state        {state}")
    if report.get("transfers") is not None:
        unsourced = report.get("unsourced") or 0
        lines.append(
            f"transfers    {of(report.get('transfers_done'), report.get('transfers'))} done"
            + (f"  ({unsourced} without a live source)" if unsourced else "")
        )
        lines.append(f"keys         {of(report.get('keys_sent'), report.get('keys_total'))} sent")
        fraction = progress_fraction(report)
        lines.append(
            "bytes        "
            f"{of(report.get('bytes_sent'), report.get('bytes_total'), format_bytes)} sent"
            + (f"  ({fraction * 100:.1f}%)" if fraction is not None else "")
        )
        lines.append(f"rate         {format_rate(report.get('rate_bytes_per_second'))}")
        lines.append(f"eta          {format_eta(report.get('eta_seconds'))}")
    for name, key in (("started", "started_ms"), ("updated", "updated_ms"),
                      ("finished", "finished_ms")):  # fmt: skip
        value = report.get(key)
        if isinstance(value, int | float):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value / 1000))
            lines.append(f"{name:<13}{stamp}")
    detail: list[dict[str, Any]] = document.get("transfers") or []
    if detail:  # per-transfer rows, given only by the node that drives the change
        states = Counter(str(row.get("state")) for row in detail)
        order = ("done", "running", "pending", "unsourced", "cancelled")
        counts = ", ".join(
            f"{states[name]} {name}"
            for name in sorted(states, key=lambda n: order.index(n) if n in order else 99)
        )
        lines.append(f"per transfer {counts}  (this node drives the change)")
        for row in detail:
            if row.get("state") == "running":
                lines.append(
                    f"now          {row.get('source')} -> {row.get('target')}: keys "
                    f"{of(row.get('keys_sent'), row.get('keys_total'))}, bytes "
                    f"{of(row.get('bytes_sent'), row.get('bytes_total'), format_bytes)}"
                )
    if len(changes) > 1:
        lines.append(f"({len(changes) - 1} earlier reports; see --json)")
    return "\n".join(lines + format_cleanup(document.get("cleanup") or []))


def format_cleanup(reports: list[dict[str, Any]]) -> list[str]:
    """One line per node: its cleanup of the ranges it gave away (GET /v1/admin/progress)."""
    if not reports:
        return []
    lines = ["cleanup"]
    for r in reports:
        state = str(r.get("state"))
        line = (
            f"  {r.get('node')}: {state}  ranges {of(r.get('ranges_done'), r.get('ranges_total'))}"
            f"  keys {of(r.get('keys_done'), r.get('keys_total'))}"
            f"  bytes {of(r.get('bytes_done'), r.get('bytes_total'), format_bytes)}"
            f"  reclaimed {format_bytes(r.get('reclaimed_bytes', 0))}"
        )
        if r.get("reason") and state != "done":
            line += f"  ({r.get('reason')})"
        lines.append(line)
    return lines


class ProgressDisplay:
    """Shows a followed operation: in a terminal one line redrawn with \\r (a progress bar);
    otherwise one plain line per update, only when it changed and at most every
    PLAIN_LINE_SECONDS; `finish` ends with a summary line."""

    def __init__(
        self,
        out: TextIO,
        view: ProgressView,
        *,
        tty: bool | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.out = out
        self.view = view
        self.tty = out.isatty() if tty is None else tty
        self.enabled = enabled
        self.clock = clock
        self.width = width
        self._drawn = 0  # characters on the current terminal line
        self._last_line: str | None = None
        self._last_at = float("-inf")

    def _columns(self) -> int:
        if self.width is not None:
            return self.width
        return max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def show(self, report: dict[str, Any] | None, note: str) -> None:
        """Display a report, or `note` while there is none (a failed report adds `note`)."""
        if not self.enabled:
            return
        if self.tty:
            line = self.view.bar(report, self._columns()) if report is not None else note
            self._redraw(line[: self._columns()])
            return
        line = self.view.line(report) if report is not None else note
        now = self.clock()
        if line != self._last_line and now - self._last_at >= PLAIN_LINE_SECONDS:
            print(line, file=self.out, flush=True)
            self._last_line, self._last_at = line, now

    def finish(self, summary: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self._redraw(summary)
            self.out.write("\n")
            self.out.flush()
            self._drawn = 0
        else:
            print(summary, file=self.out, flush=True)

    def close(self) -> None:
        """End a half-drawn terminal line (on Ctrl-C)."""
        if self.enabled and self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = 0

    def _redraw(self, line: str) -> None:
        if line == self._last_line and self._drawn:
            return  # unchanged: no need to repaint
        self._last_line = line
        self.out.write("\r" + line.ljust(self._drawn))
        self.out.flush()
        self._drawn = len(line)


CHANGE_VIEW = ProgressView(bar=progress_bar, line=plain_progress_line)
