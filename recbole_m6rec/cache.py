"""Atomic, content-keyed files: nothing half-written is ever visible under the final name.

Files are written through :mod:`recbole_m6rec.atomic` (a temporary file renamed into place); a directory through
:class:`atomic_directory`.

Tensor caches (token ids, segment states) share one file layout, :func:`save_tensors` / :func:`load_tensors`: the
format version, the key of the inputs, the settings in plain words, the named tensors and a checksum over them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recbole_m6rec.atomic import atomic_write, atomic_write_bytes, atomic_write_text, stable_hash

__all__ = [
    "cache_root",
    "stable_hash",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "atomic_directory",
    "TENSOR_CACHE_FORMAT",
    "save_tensors",
    "load_tensors",
    "source_digest",
]

TENSOR_CACHE_FORMAT = 3
"""Bump when the layout of a tensor cache file or the rules of what goes into one change."""


def cache_root() -> Path:
    """Folder for caches that outlive a run: ``$RECBOLE_M6REC_CACHE``, else ``$XDG_CACHE_HOME/recbole_m6rec``,
    else ``~/.cache/recbole_m6rec``."""
    explicit = os.environ.get("RECBOLE_M6REC_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "recbole_m6rec"


@functools.cache
def source_digest(folder: Path) -> str:
    """SHA-256 over the names and contents of the ``.py`` files in ``folder``: part of a cache key, so that numbers
    computed by other code (another version of the modules that compute them) are never read back."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.py")):
        digest.update(path.name.encode() + b"\x1e" + path.read_bytes() + b"\x1e")
    return digest.hexdigest()


def tensor_checksum(*tensors: torch.Tensor) -> str:
    """SHA-256 over the dtype, shape and bytes of each tensor: a cache file whose payload was altered after it was
    written (bit rot, a partial copy, a hand edit) no longer matches the checksum stored beside it."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def atomic_torch_save(path: Path | str, obj: Any) -> Path:
    """``torch.save`` through a temporary file; ``obj`` should be plain data (tensors, dicts, lists, numbers)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle), "wb")


class atomic_directory:
    """Build a directory under a temporary name and rename it into place on success.

    >>> with atomic_directory(final) as tmp:
    ...     write_files_into(tmp)

    If ``final`` appears meanwhile (another process won the race) the new copy is discarded. On error the
    temporary directory is removed and ``final`` is left untouched.
    """

    def __init__(self, final: Path | str):
        self.final = Path(final)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not self.final.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)  # lost the race: the other copy is complete too
        return False


def save_tensors(path: Path | str, key: str, tensors: dict[str, torch.Tensor], settings: dict) -> Path:
    """Write named tensors under ``key`` (a hash of every input they were computed from), atomically."""
    return atomic_torch_save(
        path,
        {
            "format": TENSOR_CACHE_FORMAT,
            "key": key,
            "settings": settings,
            "tensors": dict(tensors),
            "checksum": tensor_checksum(*tensors.values()),
        },
    )


def load_tensors(
    path: Path | str, key: str, names: tuple[str, ...], check: Callable[[dict[str, torch.Tensor]], str | None]
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The named tensors of a file written by :func:`save_tensors`, or ``None`` and why the file cannot be used.

    A file is usable when it loads with ``weights_only``, has this format and ``key``, holds every name in ``names``
    as a tensor, matches its checksum, and ``check`` (the caller's rules on shapes and values) returns no reason.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, garbage or foreign file: all mean "rebuild"
        return None, f"unreadable: {type(error).__name__}: {error}"
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not a dict"
    if data.get("format") != TENSOR_CACHE_FORMAT:
        return None, f"format {data.get('format')!r}, expected {TENSOR_CACHE_FORMAT}"
    if data.get("key") != key:
        return None, "written by other settings: its key does not match the inputs and settings"
    stored = data.get("tensors")
    if (
        not isinstance(stored, dict)
        or list(stored) != list(names)
        or not all(isinstance(stored[name], torch.Tensor) for name in names)
    ):
        return None, f"does not hold the tensors {list(names)}"
    if data.get("checksum") != tensor_checksum(*stored.values()):
        return None, "content checksum does not match (the file was altered or damaged after it was written)"
    reason = check(stored)
    return (None, reason) if reason else (stored, "")


def write_report_files(folder: Path | str, stem: str, data, markdown_text: str) -> None:
    """``<stem>.json`` and ``<stem>.md`` in ``folder``, each written atomically (a side table of a report)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{stem}.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(folder / f"{stem}.md", markdown_text)
