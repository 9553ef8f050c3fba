"""The fuzz targets (fuzz/targets.py) run briefly under atheris, from the committed corpus.

A longer run is recorded in docs/security.md; inputs that once broke a target live in
``fuzz/corpus/<target>/`` (so every run replays them) and in regression tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
TARGETS = ["http", "context", "record", "frame", "admin_json", "tokens"]
SECONDS = 3


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_runs_clean(target: str, tmp_path: Path) -> None:
    corpus = FUZZ / "corpus" / target
    assert any(corpus.iterdir()), f"no committed corpus for {target}"
    new = tmp_path / "new"  # what this run finds stays out of the repository
    new.mkdir()
    result = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), target, f"-max_total_time={SECONDS}",
         "-rss_limit_mb=2048", "-max_len=8192", str(new), str(corpus)],
        cwd=tmp_path, capture_output=True, timeout=SECONDS + 120,
    )  # fmt: skip
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, log[-4000:]
    assert "Done" in log and " runs in " in log, log[-2000:]
    assert not list(tmp_path.glob("crash-*"))


def test_each_committed_input_passes_its_target() -> None:
    sys.path.insert(0, str(FUZZ))
    try:
        import targets
    finally:
        sys.path.remove(str(FUZZ))
    for name in TARGETS:
        if name == "http":
            continue  # needs a node: covered by the run above
        for path in sorted((FUZZ / "corpus" / name).iterdir()):
            targets.TARGETS[name](path.read_bytes())
