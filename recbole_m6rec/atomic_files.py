"""Checks on a dataset's atomic files before RecBole reads them, so that bad files fail with a message that names
the file and the fix instead of a pandas traceback (``max() arg is an empty sequence``, ``not enough values to
unpack``, a ``UnicodeDecodeError`` without a file name) or, worse, silently shifted item features.

Checked for each of ``<name>.inter``, ``.item`` and ``.user`` that exists: it decodes in the configured ``encoding``;
it has a header of ``name:type`` columns with RecBole's types; it has at least one row; no field is longer
than RecBole's reader accepts; every column ``load_col``
asks for is in the header; ``.item`` / ``.user`` ids are unique. Results are remembered per (file, size, mtime),
so building many configs over one dataset reads each file once.

:func:`check_time_field`: when the run orders interactions by time (a sequential model's histories, or
``eval_args.order: TO``), the ``.inter`` file has, and ``load_col`` loads, the ``TIME_FIELD`` column.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

__all__ = ["check_atomic_files", "check_time_field", "ATOMIC_TYPES"]

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
        raise ValueError(
            f"'{path}' is empty: an atomic file needs a header line of `name:type` columns "
            f"(types: {', '.join(ATOMIC_TYPES)}) and at least one row; see datasets/README.md"
        )
    header = lines[0].lstrip("\ufeff").split(separator)
    columns = []
    for column in header:
        field, _, kind = column.strip().partition(":")
        if not field or kind not in ATOMIC_TYPES:
            raise ValueError(
                f"'{path}': header column {column!r} is not `name:type` with a type in "
                f"{', '.join(ATOMIC_TYPES)} (header: {lines[0]!r}; field_separator {separator!r})"
            )
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
                    f"{MAX_FIELD_CHARS:,}. Shorten it (M6Rec reads only the first text_max_tokens tokens anyway)"
                )
    missing = [field for field in wanted if field not in columns]
    if missing:
        raise ValueError(
            f"load_col asks for {missing} from '{path}', whose columns are {columns}; fix the "
            f"`load_col: {{{suffix}: [...]}}` setting or the file's header"
        )
    if id_field is not None and id_field in columns:
        position = columns.index(id_field)
        ids = Counter(row.split(separator)[position] if len(row.split(separator)) > position else "" for row in rows)
        repeated = [(value, count) for value, count in ids.items() if count > 1]
        if repeated:
            shown = ", ".join(f"{value!r} ×{count}" for value, count in repeated[:5])
            raise ValueError(
                f"'{path}' lists {len(repeated)} {id_field} value(s) more than once ({shown}); each "
                f"{suffix} needs exactly one row, or its features (and its text) would be ambiguous"
            )


def _time_order_reason(config) -> str | None:
    """Why this run sorts interactions by time, or None when it does not."""
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return f"{config['model']} is a sequential model (RecBole orders each user's history by time)"
    eval_args = config["eval_args"] if isinstance(config["eval_args"], dict) else {}
    if eval_args.get("order") == "TO":
        return "eval_args.order is 'TO' (RecBole orders all interactions by time before splitting)"
    return None


def check_time_field(name: str, folder: str | os.PathLike, config) -> None:
    """Raise a ValueError naming the file and the ways out when the run needs ``TIME_FIELD`` and ``.inter`` lacks it
    (RecBole itself fails late, inside ``Interaction.sort``: ``[timestamp] is not exist in interaction``)."""
    reason = _time_order_reason(config)
    path = Path(folder) / f"{name}.inter"
    if reason is None or not path.is_file():
        return
    time_field = config["TIME_FIELD"]
    fix = (
        f"Add a time column to the file, or set TIME_FIELD to a column it has; if the file's row order is the "
        f"order the interactions happened in, `python -m recbole_m6rec.row_order_time {path} <new_data_path>` "
        f"writes a copy whose time column is the row number (see datasets/README.md)"
    )
    if not time_field:
        raise ValueError(f"TIME_FIELD is not set, but {reason}. Set TIME_FIELD to " f"the time column of '{path}'")
    encoding = config["encoding"] or "utf-8"
    separator = config["field_separator"] or "\t"
    with open(path, encoding=encoding) as handle:
        header = handle.readline().lstrip("\ufeff").rstrip("\r\n").split(separator)
    columns = [column.strip().partition(":")[0] for column in header]
    if time_field not in columns:
        raise ValueError(
            f"'{path}' has no time field '{time_field}' (its columns: {', '.join(columns)}), but "
            f"{reason}. {fix}. A general model (e.g. BPR) with eval_args.order 'RO' needs "
            "no time field."
        )
    load_col = config["load_col"] if isinstance(config["load_col"], dict) else {}
    if "inter" in load_col and time_field not in (load_col["inter"] or []):
        raise ValueError(
            f"load_col.inter {load_col['inter']} leaves out the time field '{time_field}' of '{path}', "
            f"but {reason}. Add '{time_field}' to `load_col: {{inter: [...]}}` in the dataset's yaml or "
            "your config (RecBole's default, for a dataset without one, loads only user_id and item_id)"
        )
