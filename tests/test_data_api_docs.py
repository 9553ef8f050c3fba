"""docs/api.md repeats numbers and codes of the data API (TTL, conditions, batches, listing):
check each copy against the constant it comes from."""

from __future__ import annotations

import re
from pathlib import Path

from ringkv import cli
from ringkv.core.batching import MAX_BATCH_KEYS
from ringkv.core.conditions import PRECONDITION_FAILED
from ringkv.core.expiry import MAX_TTL_SECONDS
from ringkv.core.listing import (
    DEFAULT_LIST_LIMIT,
    LIST_SCAN_RATE,
    MAX_LIST_LIMIT,
    MAX_SCAN_PER_CALL,
    PAGE_SECONDS,
)
from ringkv.node.kv_options import TTL_HEADER

API = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()


def test_error_and_exit_code_tables() -> None:
    assert re.search(rf"^\| `412` \| `{PRECONDITION_FAILED}` \|", API, re.M)
    assert re.search(rf"^\| {cli.EXIT_CONDITION} \| .*412", API, re.M)
    assert re.search(rf"^  {cli.EXIT_CONDITION}  .*412", cli.EPILOG, re.M)


def test_limits_and_numbers() -> None:
    assert f"Up to **{MAX_BATCH_KEYS} keys** per request (`MAX_BATCH_KEYS`)" in API
    assert f"1 to {MAX_LIST_LIMIT}, default\n{DEFAULT_LIST_LIMIT})" in API
    assert f"0 to {MAX_TTL_SECONDS} = ten years" in API
    assert MAX_TTL_SECONDS == 10 * 365 * 86400
    assert f"examines at most {MAX_SCAN_PER_CALL}" in API
    assert f"throttled to {LIST_SCAN_RATE:.0f}\n  per second" in API
    assert f"after about {PAGE_SECONDS:.0f} seconds" in API
    assert f"`{TTL_HEADER}: <seconds>`" in API
