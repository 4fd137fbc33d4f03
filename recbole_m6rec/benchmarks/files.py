"""Atomic writes and a stable hash for the benchmark files (results, reports, plots)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "stable_hash"]


def stable_hash(parts: Iterable[Any]) -> str:
    """SHA-256 over a sequence of JSON-serialisable parts (strings, numbers, lists, dicts)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\x1e")  # record separator: ["ab", "c"] and ["a", "bc"] must differ
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return _atomic_write(Path(path), data)


def atomic_write_text(path: Path | str, text: str) -> Path:
    return _atomic_write(Path(path), text.encode("utf-8"))
