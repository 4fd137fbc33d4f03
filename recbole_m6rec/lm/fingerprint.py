"""Content fingerprints of models, for cache keys and checkpoint checks, without loading the model.

A local folder is known by the SHA-256 of its weight and tokenizer files' contents. Hashing SmolLM2-sized weights
takes a second or two, so :func:`file_digest` memoises digests in the process and on disk, under a key that every
change of a file's contents changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from ..cache import atomic_write_text, cache_root, stable_hash
from .resolve import KNOWN_PLMS, TOKENIZER_FILES, is_tiny_plm, resolve_plm_path, smollm2_folder, smollm2_gguf

__all__ = ["plm_fingerprint", "file_digest", "RACY_SECONDS"]

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

RACY_SECONDS = 2.0
"""A digest is memoised only for a file last changed this long before hashing began (see :func:`file_digest`)."""

_DIGESTS: dict[str, str] = {}  # in-process memo, on top of the on-disk one


def plm_fingerprint(name_or_path: str) -> str:
    """Stable short id of a model for cache keys and checkpoint checks; never loads the model.

    Tiny models: their short name. ``smollm2-135m``: its converted folder's name (keyed by the GGUF file and the
    transformers major version; the folder need not exist yet). Folders: ``<name>-<hash>`` over config.json's
    contents plus the name and the SHA-256 of the contents of every weight and tokenizer file, so a file rewritten
    with other bytes of the same size gives another id (see :func:`file_digest` for what is memoised).
    """
    name_or_path = str(name_or_path)
    if is_tiny_plm(name_or_path):
        return name_or_path
    if name_or_path == "smollm2-135m":
        return smollm2_folder(smollm2_gguf()).name
    folder = resolve_plm_path(name_or_path)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"config.json in folder '{folder}' is not valid JSON: {err}") from err
    files = _weight_files(folder) + [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
    listing = sorted((p.name, file_digest(p)) for p in files)
    label = name_or_path if name_or_path in KNOWN_PLMS else folder.resolve().name
    return f"{label}-{stable_hash([config, listing])[:16]}"


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))


def _digest_memo_path() -> Path:
    return cache_root() / "plm" / "file-digests.json"


def _stat_key(path: Path) -> tuple[str, os.stat_result]:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
    return key, stat


def file_digest(path: Path) -> str:
    """SHA-256 of a file's contents, memoised in this process and in ``cache_root()/"plm"/"file-digests.json"``.

    The memo is keyed by (path, device, inode, size, mtime_ns, ctime_ns). Every write to a file, and every
    ``utime`` that sets its mtime back, sets its ctime to the current time, and no call sets a ctime back, so a
    change of content after the digest was taken changes the key. One gap remains: timestamps are coarse (a clock
    tick, up to ~10 ms), so a file written again within the tick in which it was hashed keeps its key. As git does
    for its index ("racily clean" entries), a digest is therefore memoised only when the file's mtime and ctime
    are more than :data:`RACY_SECONDS` older than the moment hashing began; a fresher file is hashed on every call.
    """
    path = Path(path)
    key, stat = _stat_key(path)
    if key in _DIGESTS:
        return _DIGESTS[key]
    memo_path = _digest_memo_path()
    memo = _read_digest_memo(memo_path)
    if key in memo:
        _DIGESTS[key] = memo[key]
        return memo[key]
    started_ns = time.time_ns()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    settled = max(stat.st_mtime_ns, stat.st_ctime_ns) < started_ns - int(RACY_SECONDS * 1e9)
    if settled and _stat_key(path)[0] == key:  # unchanged while it was read
        _DIGESTS[key] = value
        here = key.rsplit("|", 5)[0]  # this file's older entries are stale: drop them
        memo = {k: v for k, v in _read_digest_memo(memo_path).items() if k.rsplit("|", 5)[0] != here}
        memo[key] = value
        try:
            atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True))
        except OSError as err:  # a read-only cache folder costs a re-hash next time, nothing else
            logger.debug("could not write %s: %s", memo_path, err)
    return value


def _read_digest_memo(path: Path) -> dict[str, str]:
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}
