"""One text per RecBole internal id, rebuilt from the dataset's own feature tables.

RecBole remaps every token to an internal id and keeps the vocabulary in ``dataset.field2id_token[field]``
(index 0 is ``[PAD]``). ``dataset.item_feat`` (resp. ``user_feat``) is an :class:`~recbole.data.interaction.Interaction`
whose row ``i`` holds the features of internal id ``i`` (row 0 is the padding id), so a text list built here is aligned
with every item (user) id RecBole hands to a model: ``texts[item_id]`` is that item's text.

How each feature type is rendered:

* ``token``: the raw token; id 0 (padding, also what RecBole stores for a missing cell) renders as ``""``.
* ``token_seq``: the raw tokens joined with one space, padding ids skipped. RecBole has already split the cell on
  ``seq_separator`` (a space for ml-100k), so ``"Toy Story"`` comes back as ``"Toy Story"``; runs of separators in the
  file collapse to one space, and a per-field ``seq_len`` truncates the cell.
* ``float``: integers without a decimal point (``1995.0`` -> ``"1995"``), other values as the shortest float32
  representation (``2.5`` -> ``"2.5"``); NaN renders as ``""``. RecBole fills a missing float cell with the column mean
  and, when ``normalize_all``/``normalize_field`` cover the field (ml-100k's own yaml sets ``normalize_all: True``),
  min-max normalises it before we ever see it; a warning is logged in that case.
* ``float_seq``: like ``float``, joined with one space; trailing zeros are dropped because RecBole pads with 0.0 and
  the padding cannot be told from a real trailing 0.
"""

from __future__ import annotations

import logging
import re
import string
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch
from recbole.utils import FeatureType

__all__ = ["PAD_TEXT", "SEQ_JOINER", "build_item_texts", "build_user_texts", "render_template"]

logger = logging.getLogger(__name__)

PAD_TEXT = "[PAD]"
"""Text of row 0, RecBole's padding id."""

SEQ_JOINER = " "
"""Joins the tokens of a ``token_seq`` / values of a ``float_seq`` field."""

NO_TEMPLATE_JOINER = ". "
"""Joins the non-empty field values when no template is given."""

_MAX_EXAMPLES = 5
_ASCII_SPACE_RUN = re.compile(r"[ \t\n\r\f\v]+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+(?=[.,;:!?])")
_DANGLING_SEP = re.compile(r"[,;:]\s*(?=[.,;:!?])")
_LEADING_SEP = re.compile(r"^[\s.,;:!?]+")
_TRAILING_SEP = re.compile(r"[\s,;:]+$")


def build_item_texts(dataset, fields: Sequence[str], template: str | None = None) -> list[str]:
    """One text per internal item id: ``len(result) == dataset.item_num`` and ``result[0] == PAD_TEXT``.

    Args:
        dataset: a loaded RecBole ``Dataset`` (or ``SequentialDataset``) whose ``load_col`` includes ``fields``
            for the ``item`` file.
        fields: item feature names, rendered in this order when ``template`` is None.
        template: optional ``str.format`` template keyed by field name, e.g.
            ``"{movie_title} ({release_year}). Genres: {class}."``. It may only reference names in ``fields``.

    Without a template the non-empty values are joined with ``". "``. See :func:`render_template` for how empty values
    inside a template are cleaned up. Items whose text is empty after rendering (every field empty, or only
    punctuation left) get the fallback ``f"item {raw_id}"``; one warning reports how many.
    """
    return _build_texts(dataset, fields, template, kind="item")


def build_user_texts(dataset, fields: Sequence[str], template: str | None = None) -> list[str]:
    """One text per internal user id, like :func:`build_item_texts` but from ``dataset.user_feat``.

    ``len(result) == dataset.user_num``, ``result[0] == PAD_TEXT``, fallback text ``f"user {raw_id}"``.
    """
    return _build_texts(dataset, fields, template, kind="user")


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill ``template`` with ``values`` (``str.format_map``) and tidy the result.

    Whitespace runs (ASCII whitespace only: CJK ideographic spaces and NBSP inside values are kept) collapse to one
    space and the ends are stripped. Only when some referenced value is empty, a simple punctuation clean-up runs
    so that ``"{title} ({year}). Genres: {class}."`` with an empty year reads ``"Title. Genres: ..."``:

    1. empty brackets ``()`` / ``[]`` are removed;
    2. spaces before ``. , ; : ! ?`` are removed;
    3. a ``, ; :`` directly followed by another separator is dropped (``"Genres: ."`` -> ``"Genres."``);
    4. separators at the start, and ``, ; :`` at the end, are stripped.

    Labels whose value is empty stay (``"Genres."``); text with nothing but punctuation and spaces left counts as
    empty for the caller's fallback.
    """
    values = {name: _collapse(str(value)) for name, value in values.items()}  # whitespace-only values count as empty
    text = template.format_map(values)
    if any(values.get(name, "") == "" for name in _template_fields(template)):
        text = _EMPTY_BRACKETS.sub("", text)
        text = _collapse(text)
        text = _SPACE_BEFORE_PUNCT.sub("", text)
        text = _DANGLING_SEP.sub("", text)
        text = _LEADING_SEP.sub("", text)
        text = _TRAILING_SEP.sub("", text)
    return _collapse(text)


# ---------------------------------------------------------------------------------------------------------------------


def _build_texts(dataset, fields: Sequence[str], template: str | None, kind: str) -> list[str]:
    if isinstance(fields, str):
        raise ValueError(f"`fields` must be a sequence of field names, not the string {fields!r}")
    fields = list(fields)
    if not fields:
        raise ValueError(f"`fields` is empty: name at least one {kind} feature to build {kind} texts from")
    if kind == "item":
        feat, id_field, count = dataset.item_feat, dataset.iid_field, dataset.item_num
    else:
        feat, id_field, count = dataset.user_feat, dataset.uid_field, dataset.user_num

    available = list(feat.columns) if feat is not None else []
    missing = [f for f in fields if f not in available]
    if missing:
        raise ValueError(
            f"{kind} field(s) {missing} are not loaded in dataset {dataset.dataset_name!r}; its {kind} fields are "
            f"{available}. Add them to `load_col: {{{kind}: [...]}}` in the config (and check the .{kind} file "
            f"header names them)."
        )
    if template is not None:
        unknown = [name for name in _template_fields(template) if name not in fields]
        if unknown:
            raise ValueError(f"template references {unknown}, which are not in fields {fields}")
    if len(feat) != count:
        raise ValueError(f"{kind}_feat has {len(feat)} rows but the dataset has {count} {kind} ids")

    _warn_if_normalised(dataset, fields)
    columns = {field: _render_column(dataset, feat, field) for field in fields}

    texts = [PAD_TEXT]
    fallbacks: list[tuple[int, str]] = []
    for i in range(1, count):
        values = {field: columns[field][i] for field in fields}
        if template is None:
            text = _collapse(NO_TEMPLATE_JOINER.join(v for v in map(_collapse, values.values()) if v))
        else:
            text = render_template(template, values)
        if _is_blank(text):
            raw_id = str(dataset.id2token(id_field, i))
            text = f"{kind} {raw_id}"
            fallbacks.append((i, raw_id))
        texts.append(text)

    if fallbacks:
        examples = ", ".join(f"{i} (raw {raw!r})" for i, raw in fallbacks[:_MAX_EXAMPLES])
        logger.warning(
            "%d %s(s) of dataset %r have empty text in fields %s and got the fallback text '%s <raw id>'; "
            "examples (internal id): %s",
            len(fallbacks),
            kind,
            dataset.dataset_name,
            fields,
            kind,
            examples,
        )
    return texts


def _render_column(dataset, feat, field: str) -> list[str]:
    """Text of ``field`` for every row of ``feat``.

    ``feat`` is a pandas DataFrame right after ``create_dataset`` and an ``Interaction`` (padded tensors) once
    ``dataset.build()`` has run (``data_preparation`` calls it); both give the same text.
    """
    ftype = dataset.field2type[field]
    numerical = field in (dataset.config["numerical_features"] or [])
    values = feat[field]
    if ftype == FeatureType.TOKEN:
        vocab = [str(t) for t in dataset.field2id_token[field]]
        # before build() the column is float (the left merge that aligns rows to ids introduced NaN, filled with 0)
        return [vocab[int(i)] if i > 0 else "" for i in _flat_list(values)]
    if ftype == FeatureType.TOKEN_SEQ:
        vocab = [str(t) for t in dataset.field2id_token[field]]
        return [SEQ_JOINER.join(vocab[int(i)] for i in row if i > 0) for row in _row_lists(values, numerical=False)]
    if ftype == FeatureType.FLOAT:
        if numerical:  # stored as (value, bucket index) pairs
            values = values[:, 0] if isinstance(values, torch.Tensor) else [pair[0] for pair in values]
        return [_format_float(v) for v in _flat_list(values)]
    if ftype == FeatureType.FLOAT_SEQ:
        padded = isinstance(values, torch.Tensor)
        out = []
        for row in _row_lists(values, numerical=numerical):
            while padded and row and row[-1] == 0.0:
                row.pop()
            out.append(SEQ_JOINER.join(s for s in (_format_float(v) for v in row) if s))
        return out
    raise ValueError(f"field {field!r} has unsupported type {ftype}")


def _flat_list(values) -> list:
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).tolist()
    return [v.item() if hasattr(v, "item") else v for v in np.asarray(values).reshape(-1)]


def _row_lists(values, numerical: bool) -> list[list]:
    """Rows of a sequence field as Python lists (padding still in for tensors)."""
    if isinstance(values, torch.Tensor):
        if numerical:  # [N seq_len 2]: value, bucket index
            values = values[..., 0]
        return values.reshape(len(values), -1).tolist()
    if numerical:
        values = [row[0] for row in values]
    return [np.asarray(row).reshape(-1).tolist() for row in values]


def _format_float(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):  # NaN / inf: nothing sensible to say
        return ""
    if float(value).is_integer():
        return str(int(value))
    return np.format_float_positional(np.float32(value), trim="-")


def _warn_if_normalised(dataset, fields: list[str]) -> None:
    float_fields = [f for f in fields if dataset.field2type[f] in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ)]
    if not float_fields:
        return
    config = dataset.config
    explicit = config["normalize_field"] or []
    normalised = float_fields if config["normalize_all"] else [f for f in float_fields if f in explicit]
    if normalised:
        logger.warning(
            "float field(s) %s were min-max normalised by RecBole (normalize_all / normalize_field), so their text "
            "shows values in [0, 1], not the raw numbers; set `normalize_all: False` to keep raw values",
            normalised,
        )


def _template_fields(template: str) -> list[str]:
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError(f"template {template!r} has a positional placeholder; use field names, e.g. {{title}}")
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in names:
            names.append(base)
    return names


def _collapse(text: str) -> str:
    return _ASCII_SPACE_RUN.sub(" ", text).strip(" \t\n\r\f\v")


def _is_blank(text: str) -> bool:
    """True when ``text`` has nothing but whitespace, separators and punctuation (emoji count as content)."""
    return all(unicodedata.category(ch)[0] in "PZC" for ch in text)
