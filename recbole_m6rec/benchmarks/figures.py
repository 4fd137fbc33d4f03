"""Single numbers in the README's prose, written from a report's JSON file (the tables are :mod:`.headline`'s).

A figure is a value between two markers, on one line:

    int8 encodes <!-- figure:compression_ml-100k/report.json:summary.encoding_int8_speedup fmt=.2f -->1.73<!-- /figure -->x
    faster, about <!-- figure:ctr_serving_ml-100k/latency.json:0.ms_per_1000_candidates/0.serving.ms_per_1000_candidates fmt=.0f -->90<!-- /figure -->x

``FILE:EXPR`` names a JSON file under the reports folder and a value in it. ``EXPR`` is a path, or two paths with
``/`` between them (their ratio). A path's steps are separated by ``.``: a key of an object, an index of a list, or
``key=value``, the first object of a list whose ``key`` is ``value`` (``accuracy.model=M6Rec.rows.setting=int8``),
or ``#``, the number of elements of a list (``trials.#``: how many trials a tuning file holds).
Options: ``fmt=`` a Python format spec (default: an integer as it is, a float as ``g``: 6 significant digits),
``scale=`` a factor applied first (``100`` for a percentage). ``atleast=T say=YES/NO`` shows a word instead of the
number: ``YES`` when the (scaled, unrounded) value is at least ``T``, else ``NO`` (words without spaces, e.g.
``atleast=1.1 say=met/missed``), so that a verdict in the prose follows its number. ``python -m
recbole_m6rec.benchmarks.headline`` rewrites figures with the tables; ``--check`` fails when one differs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["FIGURE", "FIGURE_OPENING", "figure_value", "render_figures"]

FIGURE = re.compile(
    r"<!-- figure:(?P<file>[\w.\-/]+):(?P<expr>[^\s>]+)(?P<options>(?: [a-z]+=[^\s>]+)*)\s*-->"
    r"(?P<body>(?:(?!<!--)[^\n])*?)<!-- /figure -->"  # the body never crosses another marker
)
FIGURE_OPENING = re.compile(r"<!-- figure:[^\n]*?-->")


def _step(value, step: str, where: str):
    if step == "#":
        if isinstance(value, list):
            return len(value)
        raise ValueError(f"{where}: '#' counts a list's elements, not a {type(value).__name__}'s")
    if isinstance(value, list):
        if step.lstrip("-").isdigit():
            index = int(step)
            if -len(value) <= index < len(value):
                return value[index]
            raise ValueError(f"{where}: index {index} is outside the list of {len(value)}")
        key, sep, wanted = step.partition("=")
        if sep:
            for element in value:
                if isinstance(element, dict) and str(element.get(key)) == wanted:
                    return element
            seen = sorted({str(e.get(key)) for e in value if isinstance(e, dict)})
            raise ValueError(f"{where}: no element with {key}={wanted} (has: {', '.join(seen) or 'none'})")
        raise ValueError(f"{where}: {step!r} on a list; use an index, key=value or #")
    if isinstance(value, dict):
        if step in value:
            return value[step]
        raise ValueError(f"{where}: no key {step!r} (has: {', '.join(map(str, value)) or 'none'})")
    raise ValueError(f"{where}: {step!r} goes below a plain value ({value!r})")


def _lookup(document, path: str, where: str) -> int | float:
    value = document
    for step in path.split("."):
        value = _step(value, step, f"{where} at {step!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {path} is {value!r}, not a number")
    return value


def figure_value(reports_dir: Path | str, file: str, expr: str) -> int | float:
    """The number ``expr`` names in ``<reports_dir>/<file>`` (a path, or ``path/path`` for a ratio)."""
    source = Path(reports_dir) / file
    where = f"figure {file}:{expr}"
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{where}: cannot read {source} ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: {source} is not JSON ({error})") from None
    paths = expr.split("/")
    if len(paths) > 2 or not all(paths):
        raise ValueError(f"{where}: expected PATH or PATH/PATH")
    values = [_lookup(document, path, where) for path in paths]
    if len(values) == 2:
        if values[1] == 0:
            raise ValueError(f"{where}: the denominator is 0")
        return values[0] / values[1]
    return values[0]


def _options(text: str, where: str) -> dict[str, str]:
    options = dict(item.split("=", 1) for item in text.split())
    unknown = set(options) - {"fmt", "scale", "atleast", "say"}
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {', '.join(sorted(unknown))}; valid: fmt=, scale=, atleast= with say="
        )
    if ("atleast" in options) != ("say" in options):
        raise ValueError(f"{where}: atleast= and say= go together (say=WORD/WORD, atleast=NUMBER)")
    if "atleast" in options and "fmt" in options:  # the verdict compares the value itself, not a rounded one
        raise ValueError(f"{where}: fmt= does nothing with atleast= (a word is shown, compared unrounded); drop it")
    if "say" in options and (len(options["say"].split("/")) != 2 or not all(options["say"].split("/"))):
        raise ValueError(f"{where}: say={options['say']!r}: expected two words, WORD/WORD (e.g. say=met/missed)")
    return options


def render_figures(text: str, reports_dir: Path | str) -> str:
    """``text`` with every figure rewritten from the reports; a marker that does not parse is an error."""
    if len(FIGURE_OPENING.findall(text)) != len(FIGURE.findall(text)):
        broken = next(
            (m.group(0) for m in FIGURE_OPENING.finditer(text) if not FIGURE.match(text, m.start())), "a figure"
        )
        raise ValueError(
            f"figure marker {broken!r}: expected FILE:EXPR [fmt=..] [scale=..] [atleast=.. say=..] and, on the "
            "same line, <!-- /figure -->"
        )

    def replace(match: re.Match) -> str:
        where = f"figure {match.group('file')}:{match.group('expr')}"
        options = _options(match.group("options"), where)
        value = figure_value(reports_dir, match.group("file"), match.group("expr"))
        try:
            if "scale" in options:
                value *= float(options["scale"])
            if "atleast" in options:  # a verdict that follows the number: the first word at or above the bar
                shown = options["say"].split("/")[0 if value >= float(options["atleast"]) else 1]
            else:
                shown = format(value, options.get("fmt", "g" if isinstance(value, float) else ""))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        opening = match.group(0)[: match.start("body") - match.start(0)]
        return f"{opening}{shown}<!-- /figure -->"

    return FIGURE.sub(replace, text)
