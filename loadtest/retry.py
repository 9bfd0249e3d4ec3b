"""When to try a request again: exponential backoff under a deadline."""

from __future__ import annotations

import random
import time

FIRST_DELAY = 0.05
MAX_DELAY = 1.0
MAX_RETRY_AFTER = 5.0


class Backoff:
    """Delays for one request's retries; ``next_delay`` is None past the deadline.

    A server's Retry-After wins over the exponential delay, capped at
    ``MAX_RETRY_AFTER`` so that a fault scenario still recovers quickly.
    """

    def __init__(self, retry_for: float) -> None:
        self._deadline = time.monotonic() + retry_for
        self._delay = FIRST_DELAY
        self.attempts = 0

    def next_delay(self, retry_after: float | None = None) -> float | None:
        self.attempts += 1
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        else:
            # Full jitter, so that workers cut off together do not return together.
            delay = random.uniform(self._delay / 2, self._delay)
            self._delay = min(self._delay * 2, MAX_DELAY)
        if time.monotonic() + delay > self._deadline:
            return None
        return delay


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; None when absent or a date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None
