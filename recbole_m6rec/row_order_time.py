"""Give an ``.inter`` file that has no time column one: each row's position in the file.

RecBole orders interactions by ``TIME_FIELD`` for a sequential model (each user's history) and for
``eval_args.order: TO`` (the global split). Many rating datasets have no time column, but list each user's
interactions in the order they happened; this command makes that order explicit:

    python -m recbole_m6rec.row_order_time data/my-shop/my-shop.inter ordered
    recbole-m6rec --model=SASRec --dataset=my-shop --data_path=ordered --dataset_yaml_dirs=datasets

where ``datasets/my-shop.yaml`` loads the new column (RecBole's default loads only ``user_id`` and ``item_id``)::

    load_col:
      inter: [user_id, item_id, rating, timestamp]

Protocol (the file's row order is the sequence order):

* data row k of the file (1-based; the header and blank lines are not counted) gets time k, in a new
  ``timestamp:float`` column (``--field`` renames it). No two rows tie, so every order RecBole derives comes from
  the file alone: a user's history is that user's rows from top to bottom, and a ``TO`` split puts the last rows of
  the file into the test set;
* the numbers are positions, not times: a setting that reads real time gaps (M6Rec's ``recency_words``) means
  nothing on them. Say "row order of <file>" wherever you report results on such data.

It writes ``<data_path>/<name>/<name>.inter`` and copies ``<name>.item`` and ``<name>.user`` from the input's
folder when they exist; the input is never changed. A file that already has the column, or a row whose number of
fields differs from the header's (the new value would land in the wrong column), is an error.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_row_order_time", "main"]


def add_row_order_time(
    inter_path: str | Path,
    data_path: str | Path,
    field: str = "timestamp",
    encoding: str = "utf-8",
    separator: str = "\t",
) -> Path:
    """Write ``<data_path>/<name>/<name>.inter``: ``inter_path`` with ``field`` = row number; returns its path."""
    source = Path(inter_path)
    if source.suffix != ".inter" or not source.is_file():
        raise FileNotFoundError(f"expected an existing <name>.inter atomic file, got '{source}'")
    name = source.stem
    target_dir = Path(data_path) / name
    if target_dir.resolve() == source.parent.resolve():
        raise ValueError(
            f"'{target_dir}' is the input's own folder: give another data_path, so that " f"'{source}' is kept as it is"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    with (
        open(source, encoding=encoding, newline=None) as reader,
        open(target, "w", encoding=encoding, newline="\n") as writer,
    ):
        header_line = reader.readline().rstrip("\n")
        header = header_line.lstrip("\ufeff").split(separator)
        if field in [column.strip().partition(":")[0] for column in header]:
            raise ValueError(f"'{source}' already has a '{field}' column (header: {header_line!r}); " "nothing to add")
        writer.write(f"{header_line}{separator}{field}:float\n")
        row = 0
        for number, line in enumerate(reader, start=2):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            fields = line.split(separator)
            if len(fields) != len(header):
                raise ValueError(
                    f"'{source}' line {number} has {len(fields)} fields, the header {len(header)}: "
                    f"{line!r}. Fix the row first (the time value would land in the wrong column)"
                )
            row += 1
            writer.write(f"{line}{separator}{row}\n")
    for suffix in (".item", ".user"):
        side = source.with_suffix(suffix)
        if side.is_file():
            shutil.copyfile(side, target_dir / side.name)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_m6rec.row_order_time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inter", help="the <name>.inter file without a time column")
    parser.add_argument("data_path", help="where to write <name>/<name>.inter (and copies of .item, .user)")
    parser.add_argument("--field", default="timestamp", help="name of the new column (RecBole's TIME_FIELD)")
    parser.add_argument("--encoding", default="utf-8", help="the file's encoding (RecBole's `encoding`)")
    parser.add_argument("--field_separator", default="\t", help="column separator (RecBole's `field_separator`)")
    args = parser.parse_args(argv)
    target = add_row_order_time(args.inter, args.data_path, args.field, args.encoding, args.field_separator)
    name = target.stem
    time_setting = "" if args.field == "timestamp" else f" --TIME_FIELD={args.field}"
    print(
        f"wrote '{target}' (time = row number). Run with --dataset={name} --data_path={Path(args.data_path)}"
        f"{time_setting}, and load the column: `load_col: {{inter: [..., {args.field}]}}`"
    )


if __name__ == "__main__":
    main()
