"""The clock and the sleep around ``ringkv.core.token_bucket``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ringkv.core.token_bucket import TokenBucket


class Throttle:
    """Paces a loop to ``rate()`` units a second; always yields so that a loop in credit cannot
    starve the event loop."""

    def __init__(self, rate: Callable[[], float], full: bool = False) -> None:
        self.rate = rate
        now = time.monotonic()
        self.bucket = TokenBucket(now, rate() if full else 0.0)

    async def __call__(self, amount: float) -> None:
        await asyncio.sleep(self.bucket.take(amount, self.rate(), time.monotonic()))
