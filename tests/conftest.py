"""Shared test fixtures: real public data beside the checkout, a CLI runner, offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never let anything reach the network from a test run.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL = (ROOT / ".." / "shared" / "data" / "real").resolve()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real``; tests needing it skip (with the reason) when it is absent."""
    if not SHARED_REAL.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_REAL}")
    return SHARED_REAL


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()
