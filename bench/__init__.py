"""Benchmarks: one command per reported figure (see docs/*.md)."""

from __future__ import annotations

import json
from pathlib import Path


def print_report(report: dict, path: Path | None = None) -> None:
    """Print a benchmark's JSON report, and write it to ``path`` when given."""
    text = json.dumps(report, indent=1)
    print(text)
    if path:
        path.write_text(text + "\n")
