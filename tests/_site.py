"""Build the documentation site once per test session (tests/test_site_*.py share it)."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "site-test"

MKDOCS_MISSING = (
    "mkdocs is not installed: pip install -e '.[docs]' (the README's test command does) to "
    "build and check the documentation site"
)


def have_mkdocs() -> bool:
    return importlib.util.find_spec("mkdocs") is not None


@dataclass(frozen=True)
class Build:
    returncode: int
    log: str
    site: Path


@functools.cache
def build_site() -> Build:
    """``mkdocs build --strict`` into build/site-test/ (git-ignored), once."""
    shutil.rmtree(OUT, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(OUT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # no banner in the log
        timeout=900,
    )
    return Build(proc.returncode, proc.stdout + proc.stderr, OUT)
