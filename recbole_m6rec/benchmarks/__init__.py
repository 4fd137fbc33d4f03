"""Benchmarks: commands that measure and print tables (never timed tests)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def publish(module: str, argv: Sequence[str] | None, body: str, data: Any, report: str | None, stem: str) -> str:
    """Print ``body`` under the command line that produced it; with ``report``, also write ``<stem>.md`` (that text)
    and ``<stem>.json`` (``data``) into that folder, atomically. Returns the text."""
    from recbole_m6rec.cache import write_report_files

    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"Command: `{command.strip()}`\n\n{body}\n"
    print(text)
    if report:
        write_report_files(report, stem, data, text)
    return text
