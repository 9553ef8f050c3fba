"""``benchmarks/paced`` (a small Go HTTP load generator) built and run for the benchmarks.

``ringkv bench --rate`` is Python: on a two-core machine its own CPU per request is of the
order of the nodes', so it cannot offer a cluster half its capacity without taking the cores
the cluster needs. ``paced`` costs a fraction of that. It uses only Go's standard library;
``ensure`` builds it once with ``go build`` into a cache outside the repository, keyed by the
source's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[1] / "paced" / "main.go"


def ensure() -> Path:
    """The built generator for the current source (built first if missing; needs ``go``)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = base / "ringkv" / "tools" / f"paced-{digest}" / "paced"
    if binary.exists():
        return binary
    # Go's own installer puts it in /usr/local/go/bin, not always on PATH
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise RuntimeError("benchmarks/paced is built with `go build`, and go is not on PATH")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".tmp")
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOWORK="off",
               GOFLAGS="-buildvcs=false")  # fmt: skip
    subprocess.run([go, "build", "-o", str(partial), str(SOURCE)], env=env, check=True,
                   timeout=600, cwd=SOURCE.parent)  # fmt: skip
    partial.rename(binary)
    return binary


def run(binary: Path, urls: list[str], *, method: str, query: str, keys: int,
        value_bytes: int, rate: float, connections: int, duration: float, warmup: float,
        timeout: float, out: Path, seed: int = 1) -> dict[str, Any]:  # fmt: skip
    """One run (open loop at ``rate``, closed loop when it is 0); its JSON result."""
    cmd = [
        str(binary), "-endpoints", ",".join(urls), "-keys", str(keys), "-method", method,
        "-query", query, "-value-bytes", str(value_bytes), "-rate", f"{rate:.3f}",
        "-connections", str(connections), "-duration", f"{duration:g}s",
        "-warmup", f"{warmup:g}s", "-timeout", f"{timeout:g}s", "-seed", str(seed),
        "-out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=warmup + duration + 2 * timeout + 60)
    result: dict[str, Any] = json.loads(out.read_text())
    return result
