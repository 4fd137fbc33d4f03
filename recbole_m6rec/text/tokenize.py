"""Tokenise id-aligned texts once, into padded tensors, with an optional content-keyed file cache.

Row 0 of an id-aligned text list is RecBole's padding id (text :data:`PAD_TEXT`). Its attention mask covers only its
first token: every row then has at least one valid token, because a row with no valid token makes softmax attention
divide by zero (an all ``-inf`` row gives NaN), and NaN item vectors would be ranked first by ``torch.topk``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..cache import atomic_torch_save, stable_hash, tensor_checksum
from .item_text import PAD_TEXT

__all__ = ["FORMAT_VERSION", "TokenizedTexts", "tokenize_texts", "token_cache_path"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the payload carries a content checksum and its settings
"""Bump when the layout of a cache file or the tokenisation rules change."""

BATCH_SIZE = 512
"""Texts per tokenizer call."""


@dataclass(frozen=True)
class TokenizedTexts:
    """Padded token ids of N texts.

    ``input_ids`` and ``attention_mask`` are ``torch.long`` tensors of shape ``[N, L]``; positions past a row's
    length hold ``pad_token_id`` with mask 0. Every row has at least one position with mask 1.
    """

    input_ids: torch.LongTensor  # [N L]
    attention_mask: torch.LongTensor  # [N L]

    @property
    def lengths(self) -> torch.LongTensor:
        """Number of valid (attended) tokens per row, ``[N]``."""
        return self.attention_mask.sum(dim=1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def token_cache_path(cache_dir: Path | str, key: str) -> Path:
    return Path(cache_dir) / f"tokens-{key[:16]}.pt"


def tokenize_texts(
    texts: Sequence[str],
    tokenizer,
    max_tokens: int,
    *,
    cache_dir: Path | None = None,
    tokenizer_id: str = "",
    add_special_tokens: bool = True,
) -> TokenizedTexts:
    """Tokenise ``texts`` with a HuggingFace tokenizer, truncating every row at ``max_tokens`` tokens.

    ``L`` is the longest row after truncation (``1 <= L <= max_tokens``). When ``texts[0] == PAD_TEXT`` (the id-aligned
    lists of :mod:`recbole_m6rec.text.item_text`), row 0 keeps its tokens but attends only to the first one; see the
    module docstring for why. Any other text that tokenises to nothing raises ``ValueError``.

    With ``cache_dir``, the result is stored in ``cache_dir/tokens-<key[:16]>.pt``, keyed on the texts, ``tokenizer_id``
    (give the model path or name: two vocabularies of the same class and size must not share a file), the tokenizer's
    class, size and pad id, ``max_tokens``, ``add_special_tokens`` and :data:`FORMAT_VERSION`. A file that cannot be
    read or does not match is rebuilt (with a warning) and replaced atomically.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1 (got {max_tokens!r})")
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must all be str; row {bad[0]} is {type(texts[bad[0]]).__name__}")
    if not texts:
        raise ValueError("texts is empty: nothing to tokenise")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no pad token; set one first, e.g. "
            "`tokenizer.pad_token = tokenizer.eos_token`"
        )

    if cache_dir is None:
        return _tokenize(texts, tokenizer, max_tokens, add_special_tokens, pad_id)

    key = stable_hash(
        [texts, tokenizer_id, type(tokenizer).__name__, len(tokenizer), pad_id, max_tokens, add_special_tokens,
         FORMAT_VERSION]
    )
    path = token_cache_path(cache_dir, key)
    if path.exists():
        loaded, reason = _load(path, key, len(texts), max_tokens)
        if loaded is not None:
            logger.info("token cache hit: %s (%d texts)", path, len(texts))
            return loaded
        logger.warning("token cache file %s is unusable (%s); rebuilding it", path, reason)
    else:
        logger.info("token cache miss: %s (%d texts)", path, len(texts))

    result = _tokenize(texts, tokenizer, max_tokens, add_special_tokens, pad_id)
    settings = {"tokenizer_id": tokenizer_id, "tokenizer_class": type(tokenizer).__name__, "vocab": len(tokenizer),
                "pad_id": pad_id, "max_tokens": max_tokens, "add_special_tokens": add_special_tokens,
                "n_texts": len(texts)}
    atomic_torch_save(
        path,
        {"format": FORMAT_VERSION, "key": key, "settings": settings, "input_ids": result.input_ids,
         "attention_mask": result.attention_mask,
         "checksum": tensor_checksum(result.input_ids, result.attention_mask)},
    )
    return result


def _tokenize(texts: list[str], tokenizer, max_tokens: int, add_special_tokens: bool, pad_id: int) -> TokenizedTexts:
    rows: list[list[int]] = []
    for start in range(0, len(texts), BATCH_SIZE):
        encoded = tokenizer(
            texts[start : start + BATCH_SIZE],
            add_special_tokens=add_special_tokens,
            truncation=True,
            max_length=max_tokens,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        rows.extend(list(ids)[:max_tokens] for ids in encoded["input_ids"])

    pad_row = texts[0] == PAD_TEXT
    if pad_row and not rows[0]:
        rows[0] = [pad_id]
    empty = [i for i, ids in enumerate(rows) if not ids]
    if empty:
        raise ValueError(
            f"{len(empty)} text(s) tokenise to zero tokens (rows {empty[:5]}, e.g. {texts[empty[0]]!r}); "
            "give them non-empty text or use add_special_tokens=True"
        )

    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [N L]
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [N L]
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    if pad_row:
        attention_mask[0, 1:] = 0
    return TokenizedTexts(input_ids=input_ids, attention_mask=attention_mask)


def _load(path: Path, key: str, n_rows: int, max_tokens: int) -> tuple[TokenizedTexts | None, str]:
    """The cached tensors, or ``None`` and the reason the file cannot be used."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, garbage or foreign file: all mean "rebuild"
        return None, f"cannot be loaded: {type(exc).__name__}: {exc}"
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not a dict"
    if data.get("format") != FORMAT_VERSION:
        return None, f"format {data.get('format')!r}, expected {FORMAT_VERSION}"
    if data.get("key") != key:
        return None, "key does not match the texts and tokenizer settings"
    input_ids, attention_mask = data.get("input_ids"), data.get("attention_mask")
    for name, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.long or tensor.dim() != 2:
            return None, f"{name} is not a 2-d torch.long tensor"
        if tensor.shape[0] != n_rows or not 1 <= tensor.shape[1] <= max_tokens:
            return None, f"{name} has shape {list(tensor.shape)}, expected [{n_rows}, 1..{max_tokens}]"
    if data.get("checksum") != tensor_checksum(input_ids, attention_mask):
        return None, "content checksum does not match (the file was altered or damaged after it was written)"
    if input_ids.shape != attention_mask.shape:
        return None, f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} differ"
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()) or not bool((attention_mask.sum(1) > 0).all()):
        return None, "attention_mask is not 0/1 with at least one valid token per row"
    return TokenizedTexts(input_ids=input_ids, attention_mask=attention_mask), ""
