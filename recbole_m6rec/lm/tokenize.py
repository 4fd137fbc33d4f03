"""Texts -> padded token ids, exactly as the language model reads them.

Two kinds of text:

* **id-aligned texts** (:func:`tokenize_texts`): one per item or user, row 0 = RecBole's padding id (text
  :data:`~recbole_m6rec.text.item_text.PAD_TEXT`), with an optional content-keyed file cache. Row 0 keeps its tokens
  but attends only to its first one: every row then has at least one valid token, because a row with no valid token
  makes softmax attention divide by zero (an all ``-inf`` row gives NaN), and NaN item vectors would be ranked first
  by ``torch.topk``.
* **phrases** (:func:`tokenize_phrases`): short texts that are not items (recency phrases, the prompt text, option
  words), no padding row, no file cache.

Both put ``bos_id`` in front of every row (after truncation at ``max_tokens``) unless every row already starts with
it: a decoder's first position is its attention sink, so the model must always find BOS there, and the cache holds
what the model reads. :func:`continuation_ids` gives the plain token list of a text that continues a prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cache import TENSOR_CACHE_FORMAT, load_tensors, save_tensors, source_digest, stable_hash
from ..text.item_text import PAD_TEXT

__all__ = ["TokenizedTexts", "tokenize_texts", "tokenize_phrases", "continuation_ids", "token_cache_path"]

logger = logging.getLogger(__name__)

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
    bos_id: int | None = None,
    cache_dir: Path | None = None,
    tokenizer_id: str = "",
    add_special_tokens: bool = True,
) -> TokenizedTexts:
    """Tokenise id-aligned ``texts``, truncating every row at ``max_tokens`` tokens, then prepend ``bos_id``.

    ``L`` is the longest row (``1 <= L <= max_tokens``, one more with ``bos_id``). When ``texts[0] == PAD_TEXT``,
    row 0 keeps its tokens but attends only to the first one (see the module docstring). Any other text that
    tokenises to nothing raises ``ValueError``.

    With ``cache_dir``, the result is stored in ``cache_dir/tokens-<key[:16]>.pt``, keyed on the texts,
    ``tokenizer_id`` (give the model path or name: two vocabularies of the same class and size must not share a
    file), the tokenizer's class, size and pad id, ``max_tokens``, ``bos_id``, ``add_special_tokens`` and the source
    of the ``lm`` package (tokens made by other code are never read back). A file that cannot be read or does not
    match is rebuilt (with a warning) and replaced atomically.
    """
    texts = _checked_texts(texts, max_tokens)
    pad_id = _pad_id(tokenizer)
    if cache_dir is None:
        return _tokenize(texts, tokenizer, max_tokens, add_special_tokens, pad_id, bos_id, pad_row=True)

    key = stable_hash(
        [
            texts,
            tokenizer_id,
            type(tokenizer).__name__,
            len(tokenizer),
            pad_id,
            max_tokens,
            bos_id,
            add_special_tokens,
            TENSOR_CACHE_FORMAT,
            source_digest(Path(__file__).parent),
        ]
    )
    path = token_cache_path(cache_dir, key)
    width = max_tokens + (bos_id is not None)
    if path.exists():
        loaded, reason = load_tensors(
            path, key, ("input_ids", "attention_mask"), lambda tensors: _token_problem(tensors, len(texts), width)
        )
        if loaded is not None:
            logger.info("token cache hit: %s (%d texts)", path, len(texts))
            return TokenizedTexts(**loaded)
        logger.warning("token cache file %s is unusable (%s); rebuilding it", path, reason)
    else:
        logger.info("token cache miss: %s (%d texts)", path, len(texts))

    result = _tokenize(texts, tokenizer, max_tokens, add_special_tokens, pad_id, bos_id, pad_row=True)
    settings = {
        "tokenizer_id": tokenizer_id,
        "tokenizer_class": type(tokenizer).__name__,
        "vocab": len(tokenizer),
        "pad_id": pad_id,
        "bos_id": bos_id,
        "max_tokens": max_tokens,
        "add_special_tokens": add_special_tokens,
        "n_texts": len(texts),
    }
    save_tensors(path, key, {"input_ids": result.input_ids, "attention_mask": result.attention_mask}, settings)
    return result


def tokenize_phrases(
    phrases: Sequence[str], tokenizer, max_tokens: int, *, bos_id: int | None = None
) -> TokenizedTexts:
    """Tokenise phrases that are not items (no padding row), as :func:`tokenize_texts` tokenises item texts."""
    phrases = _checked_texts(phrases, max_tokens)
    return _tokenize(phrases, tokenizer, max_tokens, True, _pad_id(tokenizer), bos_id, pad_row=False)


def continuation_ids(tokenizer, text: str, limit: int) -> list[int]:
    """Token ids of ``text`` as it continues a prefix (no special tokens), at most ``limit``; never empty (EOS)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
    return ids or [tokenizer.eos_token_id]


def _checked_texts(texts: Sequence[str], max_tokens: int) -> list[str]:
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
    return texts


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no pad token; set one first, e.g. "
            "`tokenizer.pad_token = tokenizer.eos_token`"
        )
    return tokenizer.pad_token_id


def _tokenize(
    texts: list[str],
    tokenizer,
    max_tokens: int,
    add_special_tokens: bool,
    pad_id: int,
    bos_id: int | None,
    pad_row: bool,
) -> TokenizedTexts:
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

    pad_row = pad_row and texts[0] == PAD_TEXT
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
    if bos_id is not None and not bool((input_ids[:, 0] == bos_id).all()):
        bos = torch.full((len(rows), 1), bos_id, dtype=torch.long)
        input_ids = torch.cat([bos, input_ids], dim=1)  # [N L+1]
        attention_mask = torch.cat([torch.ones_like(bos), attention_mask], dim=1)
    return TokenizedTexts(input_ids=input_ids, attention_mask=attention_mask)


def _token_problem(tensors: dict[str, torch.Tensor], n_rows: int, max_width: int) -> str | None:
    """Why cached token tensors cannot be what :func:`_tokenize` returns, or None."""
    input_ids, attention_mask = tensors["input_ids"], tensors["attention_mask"]
    for name, tensor in tensors.items():
        if tensor.dtype != torch.long or tensor.dim() != 2:
            return f"{name} is not a 2-d torch.long tensor"
        if tensor.shape[0] != n_rows or not 1 <= tensor.shape[1] <= max_width:
            return f"{name} has shape {list(tensor.shape)}, expected [{n_rows}, 1..{max_width}]"
    if input_ids.shape != attention_mask.shape:
        return f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} differ"
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()) or not bool((attention_mask.sum(1) > 0).all()):
        return "attention_mask is not 0/1 with at least one valid token per row"
    return None
