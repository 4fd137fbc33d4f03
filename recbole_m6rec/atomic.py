"""Atomic file writes and a stable hash, with no heavy imports (the benchmark runner uses them before torch loads).

A writer puts the data in a temporary file in the destination folder and ``os.replace`` s it into place, which is
atomic on POSIX and Windows: a reader sees the old file or the new one, never half of one. Two processes writing the
same file race harmlessly: both write complete files and the last rename wins. The file gets the permissions a plain
``open(path, "w")`` would give (``tempfile`` creates it readable by its owner only).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "stable_hash"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def stable_hash(parts: Iterable[Any]) -> str:
    """SHA-256 over a sequence of JSON-serialisable parts (strings, numbers, lists, dicts)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\x1e")  # record separator: ["ab", "c"] and ["a", "bc"] must differ
    return digest.hexdigest()


def atomic_write(path: Path | str, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path`` (opened with ``mode``), then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, _FILE_MODE)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), "wb")


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), "w")
