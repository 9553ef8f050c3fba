"""``ringkv node`` start-up: the open-files limit is raised for --max-client-connections."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ringkv.node.config import parse_args

SCRIPT = """
import resource, sys
from ringkv.node.main import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
got = raise_open_files_limit(int(sys.argv[1]))
now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
print(got, now, hard)
"""


@pytest.mark.parametrize("wanted", [200, 1000])
def test_open_files_limit_is_raised_up_to_the_hard_limit(wanted: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(wanted)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    got, now, hard = (int(x) for x in out.stdout.split())
    assert got == now  # what it reports is what is in force
    expected = max(256, wanted if hard < 0 else min(wanted, hard))  # RLIM_INFINITY is -1
    assert now == expected


def test_max_client_connections_flag() -> None:
    base = ["--node-id", "n1", "--no-auth", "true", "--no-peer-auth", "true"]
    assert parse_args(base).max_client_connections == 4096
    assert parse_args([*base, "--max-client-connections", "10"]).max_client_connections == 10
    with pytest.raises(SystemExit):
        parse_args([*base, "--max-client-connections", "0"])
