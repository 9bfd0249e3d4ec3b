"""mypy over the whole distribution, as part of the suite (STYLE: mypy runs in CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ingest", "client", "registry", "loadtest", "cli")


@pytest.mark.timeout(600)
def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    # The folders map to runstream.<name> only through the installed package;
    # mypy reads sources, so it gets the same layout as links.
    namespace = tmp_path / "runstream"
    namespace.mkdir()
    for name in PACKAGES:
        (namespace / name).symlink_to(ROOT / name)

    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "-p", "runstream"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
