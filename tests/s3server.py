"""A real S3-compatible object store for the backup tests: the Versity S3 Gateway.

    with S3Server(tmp_path / "s3") as s3:      # builds (or reuses) e2e/s3/build.sh's binary
        s3.create_bucket("backups")
        env = s3.env()                          # AWS_ACCESS_KEY_ID, ... for `ringkv admin backup`

The gateway serves a fresh directory (its subdirectories are the buckets) on a loopback port
with a random root key pair, and is killed on ``stop()`` (and at interpreter exit).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

from tests.cluster import HOST, LIVE, free_ports

BUILD = Path(__file__).resolve().parent.parent / "e2e" / "s3" / "build.sh"


@cache
def binary() -> str:
    """The gateway binary (built once per machine, cached outside the repository)."""
    out = subprocess.run(
        ["bash", str(BUILD)], check=True, capture_output=True, text=True, timeout=1800
    )
    return out.stdout.strip().splitlines()[-1]


class S3Server:
    def __init__(self, root: Path, host: str = HOST, nice: int = 0, idle: bool = False) -> None:
        self.nice = nice
        self.idle = idle  # SCHED_IDLE: only CPU time nothing else wants (benchmarks)
        self.root = Path(root)
        self.host = host
        self.port = free_ports(1)[0]
        self.access_key = "ringkv" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a client of this store needs (the standard AWS variables)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, deadline: float = 60) -> S3Server:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        log = (self.root / "versitygw.log").open("ab")
        niced = ["nice", "-n", str(self.nice)] if self.nice else []
        if self.idle:  # every thread of the gateway inherits it from the first
            niced = ["chrt", "--idle", "0", *niced]
        self.process = subprocess.Popen(
            [*niced, binary(), "--access", self.access_key, "--secret", self.secret_key,
             "--port", f"{self.host}:{self.port}", "--quiet", "posix", str(data)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        LIVE.add(self.process)
        end = time.monotonic() + deadline
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"versitygw exited: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1),
            ):
                return self
            if time.monotonic() > end:
                raise AssertionError(f"versitygw not listening after {deadline} s")
            time.sleep(0.05)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )  # fmt: skip

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def log_tail(self) -> str:
        path = self.root / "versitygw.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            LIVE.discard(self.process)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
