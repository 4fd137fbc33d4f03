"""A GGUF checkpoint -> a plain float32 Hugging Face folder, built atomically and checked for completeness.

The quantised weights are dequantised once and saved with ``save_pretrained``, so later loads read an ordinary folder
(about a second) instead of dequantising again (~15 s). :func:`converted_folder_problem` tells a complete folder from
one a crashed or interrupted run left behind; :func:`discard_folder` removes such a folder so it can be rebuilt.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..cache import atomic_directory

__all__ = ["convert_gguf", "converted_folder_problem", "discard_folder", "safetensors_ok"]

logger = logging.getLogger(__name__)


def safetensors_ok(path: Path) -> bool:
    """Cheap integrity check: the header parses and the file is long enough for every tensor it lists."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                return False
            header = json.loads(handle.read(header_len))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        return bool(ends) and 8 + header_len + max(ends) <= size
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def converted_folder_problem(folder: Path) -> str | None:
    """Why a converted folder is unusable, or None if it looks complete."""
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "config.json is not valid JSON"
    if not safetensors_ok(folder / "model.safetensors"):
        return "model.safetensors is truncated or corrupt"
    return None


def convert_gguf(gguf: Path, final: Path) -> None:
    """Dequantise the GGUF to float32 and save it as a plain Hugging Face folder at ``final``, atomically."""
    started = time.perf_counter()
    logger.info("Converting %s to a float32 Hugging Face folder at %s (once; ~15-30 s)", gguf, final)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
    )
    logger.info("Dequantised %s in %.1f s", gguf.name, time.perf_counter() - started)
    # transformers 5 refuses save_pretrained on a GGUF-loaded model: rebuild a plain one from config + weights.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.random.fork_rng(devices=[]):  # from_config initialises weights randomly; keep the caller's RNG
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    del gguf_model
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unset (~1e30)
    with atomic_directory(final) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _make_readable(tmp)
        problem = converted_folder_problem(tmp)
        if problem is not None:
            raise RuntimeError(f"conversion of '{gguf}' produced an incomplete folder: {problem}")
    size_mb = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / 2**20
    logger.info("Converted %s in %.1f s (%.0f MiB at %s)", gguf.name, time.perf_counter() - started, size_mb, final)


def _make_readable(folder: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; a shared model cache should be readable by other users."""
    os.chmod(folder, 0o755)
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def discard_folder(folder: Path) -> None:
    """Move a bad folder aside (atomic), then delete it; tolerate another process doing the same."""
    aside = folder.with_name(f".{folder.name}.discard-{os.getpid()}.tmp")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
