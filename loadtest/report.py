"""The outputs of a load test: the JSON result and a self-contained HTML report.

The HTML page has no scripts and loads nothing: its plots are inline SVG
(throughput over time with the fault window shaded, the latency
distributions, and memory over time), so it opens offline.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import orjson
from runstream.loadtest.measure import Histogram, bucket_upper
from runstream.loadtest.svg import line_chart

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 800px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.pass { color: #1a7f37; } .fail { color: #cf222e; }
figure { margin: 1.5em 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
"""


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


def write_html(result: dict[str, Any], path: Path) -> None:
    path.write_text(render_html(result), encoding="utf-8")


def render_html(result: dict[str, Any]) -> str:
    """The report page for one result, as a string."""
    verdict = "passed" if result["passed"] else "FAILED"
    css = "pass" if result["passed"] else "fail"
    scenario = result["scenario"]
    title = (
        f"runstream load test: {scenario['name']}, {result['driver']} driver "
        f"against {result['target']['kind']}"
    )
    sections = [
        f"<h1>{escape(title)}</h1>",
        (
            f"<p class='{css}'><b>{verdict}</b>: {result['missing']} missing, "
            f"{result['duplicated']} duplicated, {result['points']['unacked']} "
            "unacknowledged points</p>"
        ),
        _table("Points", result["points"]),
        _table("Throughput (points/s)", result["throughput"]),
        _latency_table(result["latency"]),
        _resources_table(result["resources"], result["storage"]),
        _table("Scenario", _scenario_rows(scenario)),
        _table("Workload", {**result["workload"], **result["options"]}),
        _table("Requests", result["requests"]),
        _throughput_chart(result),
        _latency_chart(result),
        _memory_chart(result),
    ]
    if result["errors"]:
        items = "".join(f"<li>{escape(str(e))}</li>" for e in result["errors"])
        sections.append(f"<h2>First errors</h2><ul>{items}</ul>")
    if result["verification"]["examples"]:
        items = "".join(
            f"<li>{escape(e)}</li>" for e in result["verification"]["examples"]
        )
        sections.append(f"<h2>Series that failed</h2><ul>{items}</ul>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )


def _table(caption: str, rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(_format(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<h2>{escape(caption)}</h2><table>{cells}</table>"


def _latency_table(latency: dict[str, dict[str, float]]) -> str:
    head = "<tr><th></th><th>count</th><th>p50</th><th>p99</th><th>p99.9</th>"
    head += "<th>max</th></tr>"
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{s['count']}</td>"
        + "".join(f"<td>{_seconds(s[q])}</td>" for q in ("p50", "p99", "p999", "max"))
        + "</tr>"
        for name, s in latency.items()
    )
    return f"<h2>Latency</h2><table>{head}{rows}</table>"


def _resources_table(resources: dict[str, Any], storage: dict[str, Any]) -> str:
    rows = {}
    for side, usage in resources.items():
        for name, value in usage.items():
            rows[f"{side} {name}"] = _bytes(value) if name.endswith("bytes") else value
    rows["bytes stored per point"] = storage["bytes_per_point"]
    return _table("Resources", rows)


def _scenario_rows(scenario: dict[str, Any]) -> dict[str, Any]:
    rows = {k: v for k, v in scenario.items() if k not in ("events", "recovery")}
    for name, value in scenario["recovery"].items():
        rows[f"recovery {name} (s)"] = value
    rows["events"] = "; ".join(f"{t:.2f}s {what}" for t, what in scenario["events"])
    return rows


def _columns(result: dict[str, Any], *names: str) -> list[list[float]]:
    timeline = result["timeline"]
    index = [timeline["columns"].index(name) for name in names]
    return [[row[i] for row in timeline["rows"]] for i in index]


def _throughput_chart(result: dict[str, Any]) -> str:
    t, offered, acked = _columns(result, "t", "offered", "acked")
    lines = [
        ("offered points/s", t[1:], _rates(t, offered)),
        ("acknowledged points/s", t[1:], _rates(t, acked)),
    ]
    return line_chart(
        lines,
        title="Throughput over time",
        x_label="seconds since start",
        y_label="points/s",
        bands=_fault_bands(result["scenario"]),
    )


def _latency_chart(result: dict[str, Any]) -> str:
    lines = []
    for name, data in result["histograms"].items():
        histogram = Histogram.from_json(data)
        if not histogram.total:
            continue
        buckets = sorted(histogram.counts)
        xs = [bucket_upper(b) / 1e9 for b in buckets]
        ys = [100.0 * histogram.counts[b] / histogram.total for b in buckets]
        lines.append((f"{name} latency", xs, ys))
    return line_chart(
        lines,
        title="Latency distribution (share of calls per bucket)",
        x_label="latency (log scale)",
        y_label="% of calls",
        log_x=True,
    )


def _memory_chart(result: dict[str, Any]) -> str:
    t, server, postgres, worker = _columns(
        result, "t", "server_rss", "postgres_rss", "worker_rss"
    )
    lines = [
        ("server", t, [b / 2**20 for b in server]),
        ("PostgreSQL", t, [b / 2**20 for b in postgres]),
        ("largest worker (peak)", t, [b / 2**20 for b in worker]),
    ]
    return line_chart(
        lines,
        title="Memory over time",
        x_label="seconds since start",
        y_label="MiB",
        bands=_fault_bands(result["scenario"]),
    )


def _rates(t: list[float], counts: list[float]) -> list[float]:
    return [
        (counts[i] - counts[i - 1]) / (t[i] - t[i - 1]) if t[i] > t[i - 1] else 0.0
        for i in range(1, len(t))
    ]


def _fault_bands(scenario: dict[str, Any]) -> list[tuple[float, float, str]]:
    if scenario["injected_at"] is None or scenario["restored_at"] is None:
        return []
    return [(scenario["injected_at"], scenario["restored_at"], scenario["name"])]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def _bytes(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"
