"""The live progress display: one rich table, redrawn every tick."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


class LiveProgress:
    """A context manager whose instances are called with each timeline row."""

    def __init__(self, title: str, *, console: Console | None = None) -> None:
        self.title = title
        self._live = Live(console=console, auto_refresh=False, transient=False)
        self._previous: dict[str, Any] | None = None

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)

    def __call__(self, row: dict[str, Any]) -> None:
        previous, self._previous = self._previous, row
        offered_rate = acked_rate = 0.0
        if previous is not None and row["t"] > previous["t"]:
            span = row["t"] - previous["t"]
            offered_rate = (row["offered"] - previous["offered"]) / span
            acked_rate = (row["acked"] - previous["acked"]) / span
        table = Table(title=self.title, show_header=False, min_width=60)
        table.add_column(justify="right")
        table.add_column(justify="right")
        for name, value in (
            ("elapsed", f"{row['t']:.1f} s"),
            ("offered", f"{row['offered']:,} ({offered_rate:,.0f}/s)"),
            ("acknowledged", f"{row['acked']:,} ({acked_rate:,.0f}/s)"),
            ("not yet acknowledged", f"{row['offered'] - row['acked']:,}"),
            ("retries / overloaded", f"{row['retries']:,} / {row['overloaded']:,}"),
            ("server RSS", _mib(row["server_rss"])),
            ("PostgreSQL", _mib(row["postgres_rss"])),
            ("largest worker", _mib(row["worker_rss"])),
        ):
            table.add_row(name, value)
        self._live.update(table, refresh=True)


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"
