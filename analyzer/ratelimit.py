"""A per-process cap on requests that cost money (model-written explanations)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from analyzer.exceptions import RateLimited


class SlidingWindowLimit:
    """At most `limit` admissions in any `window` seconds; past that, `RateLimited` says when to retry.

    One instance per process: replicas each have their own, so the cap scales with them.
    """

    def __init__(
        self, *, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[float] = deque()

    def admit(self, what: str) -> None:
        now = self._clock()
        while self._admitted and now - self._admitted[0] >= self.window:
            self._admitted.popleft()
        if len(self._admitted) >= self.limit:
            retry_after = max(1, math.ceil(self.window - (now - self._admitted[0])))
            raise RateLimited(
                f"{what} is limited to {self.limit} requests per {self.window:g} s; retry in {retry_after} s",
                retry_after=retry_after,
            )
        self._admitted.append(now)
