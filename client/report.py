"""What became of the logged points: failure counts and the flush report."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class Failures:
    """Counts failures by kind and logs the first of each kind, once.

    Logging per kind instead of per failure keeps a training loop that logs
    a bad value a million times from writing a million log lines.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, count: int, example: str) -> None:
        with self._lock:
            first = kind not in self._counts
            self._counts[kind] += count
        if first:
            logger.warning(
                "%s (%s): %s; later ones of this kind are counted, not logged, "
                "and flush() reports them",
                self.group,
                kind,
                example,
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True)
class FlushReport:
    """Where the points stand when flush() returns; counts are cumulative.

    ``pending`` points are neither acknowledged nor refused yet: in memory,
    in flight, or in the spool (``spooled`` of them, under ``spool_path``).
    ``rejected`` counts points the server refused with a 4xx, by error code;
    ``invalid`` counts points dropped at the client, by kind; ``errors``
    counts failed attempts that were retried (connection errors, 5xx...).
    """

    acknowledged: int
    pending: int
    spooled: int
    rejected: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    spool_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is pending and nothing was rejected or dropped."""
        return self.pending == 0 and not self.rejected and not self.invalid

    def summary(self) -> str:
        parts = [f"{self.acknowledged} points acknowledged"]
        if self.pending:
            parts.append(f"{self.pending} pending")
        if self.spooled:
            parts.append(f"{self.spooled} spooled in {self.spool_path}")
        for title, counts in (("rejected", self.rejected), ("invalid", self.invalid)):
            if counts:
                detail = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
                parts.append(f"{sum(counts.values())} {title} ({detail})")
        return "; ".join(parts)
