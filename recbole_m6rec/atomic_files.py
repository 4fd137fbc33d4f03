"""Checks on a dataset's atomic files before RecBole reads them, so that bad files fail with a message that names
the file and the fix instead of a pandas traceback (``max() arg is an empty sequence``, ``not enough values to
unpack``, a ``UnicodeDecodeError`` without a file name) or, worse, silently shifted item features.

Checked for each of ``<name>.inter``, ``.item`` and ``.user`` that exists: it decodes in the configured ``encoding``;
it has a header of ``name:type`` columns with RecBole's types; it has at least one row; no field is longer
than RecBole's reader accepts; every column ``load_col``
asks for is in the header; ``.item`` / ``.user`` ids are unique. Results are remembered per (file, size, mtime),
so building many configs over one dataset reads each file once.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

__all__ = ["check_atomic_files", "ATOMIC_TYPES"]

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
# RecBole reads atomic files with pandas' python engine, which inherits the csv module's field size limit.
MAX_FIELD_CHARS = 131_072
_checked: set[tuple[str, int, int, str, str]] = set()


def check_atomic_files(name: str, folder: str | os.PathLike, config) -> None:
    encoding = config["encoding"] or "utf-8"
    separator = config["field_separator"] or "\t"
    load_col = config["load_col"] if isinstance(config["load_col"], dict) else {}
    id_fields = {"item": config["ITEM_ID_FIELD"], "user": config["USER_ID_FIELD"]}
    for suffix in ("inter", "item", "user"):
        path = Path(folder) / f"{name}.{suffix}"
        if not path.is_file():
            continue
        stat = path.stat()
        wanted = list(load_col.get(suffix) or [])
        memo = (str(path), stat.st_size, stat.st_mtime_ns, encoding, repr((separator, wanted, id_fields)))
        if memo in _checked:
            continue
        _check_file(path, suffix, encoding, separator, wanted, id_fields.get(suffix))
        _checked.add(memo)


def _check_file(path: Path, suffix: str, encoding: str, separator: str, wanted: list[str], id_field: str | None):
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"'{path}' is not valid {encoding}: byte {raw[error.start:error.start + 1]!r} at line {line} cannot be "
            f"decoded. Convert the file to {encoding}, or set `encoding: <the file's encoding>` (e.g. latin-1) in "
            "the config."
        ) from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"'{path}' is empty: an atomic file needs a header line of `name:type` columns "
                         f"(types: {', '.join(ATOMIC_TYPES)}) and at least one row; see datasets/README.md")
    header = lines[0].lstrip("\ufeff").split(separator)
    columns = []
    for column in header:
        field, _, kind = column.strip().partition(":")
        if not field or kind not in ATOMIC_TYPES:
            raise ValueError(f"'{path}': header column {column!r} is not `name:type` with a type in "
                             f"{', '.join(ATOMIC_TYPES)} (header: {lines[0]!r}; field_separator {separator!r})")
        columns.append(field)
    rows = [line for line in lines[1:] if line.strip()]
    if not rows:
        raise ValueError(f"'{path}' has a header but no rows")
    for number, line in enumerate(lines[1:], start=2):
        if len(line) > MAX_FIELD_CHARS:
            longest = max(len(field) for field in line.split(separator))
            if longest > MAX_FIELD_CHARS:
                raise ValueError(
                    f"'{path}' line {number} has a field of {longest:,} characters; RecBole's reader accepts at most "
                    f"{MAX_FIELD_CHARS:,}. Shorten it (M6Rec reads only the first text_max_tokens tokens anyway)")
    missing = [field for field in wanted if field not in columns]
    if missing:
        raise ValueError(f"load_col asks for {missing} from '{path}', whose columns are {columns}; fix the "
                         f"`load_col: {{{suffix}: [...]}}` setting or the file's header")
    if id_field is not None and id_field in columns:
        position = columns.index(id_field)
        ids = Counter(row.split(separator)[position] if len(row.split(separator)) > position else "" for row in rows)
        repeated = [(value, count) for value, count in ids.items() if count > 1]
        if repeated:
            shown = ", ".join(f"{value!r} ×{count}" for value, count in repeated[:5])
            raise ValueError(f"'{path}' lists {len(repeated)} {id_field} value(s) more than once ({shown}); each "
                             f"{suffix} needs exactly one row, or its features (and its text) would be ambiguous")
