"""Explain a trained M6Rec's top-k recommendations in words, or measure how grounded such explanations are.

    python -m recbole_m6rec.explain --model_file=saved/M6Rec-<time>.pth --users=196,186 --top_k=3
    python -m recbole_m6rec.explain --model_file=saved/M6Rec-<time>.pth --users=196 --out=explanations.jsonl
    python -m recbole_m6rec.explain --model_file=saved/M6Rec-<time>.pth --report=reports/explanations_ml-100k \\
        --n_users=50 --top_k=3

Each user's items are ranked as RecBole's full-ranking evaluation ranks them (their training history as the model's
input, their training items masked); the generator (``--plm``, SmolLM2-135M-Instruct by default) writes one
explanation per item from the user's ``--history_items`` most recent history items, greedily. Readable text goes to
stdout, progress to stderr, and with ``--out`` one JSON line per explanation (user, rank, item, item_text, score,
explanation, history, history_texts) to that file.

``--report=FOLDER`` also writes each explanation's control (the same item explained from another user's history)
and scores both for grounding (``recbole_m6rec/explain/grounding.py``), then writes ``report.md``,
``explanations.jsonl`` and ``results.json`` there: users are ``--users`` or ``--n_users`` drawn with ``--seed``.
``--rerender=FOLDER`` writes such a ``report.md`` again from the stored results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["build_parser", "main", "console_main"]

PROG = "python -m recbole_m6rec.explain"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_file", default=None, help="a trained M6Rec checkpoint (saved/M6Rec-<time>.pth)")
    parser.add_argument("--users", default=None, help="raw user ids, comma separated")
    parser.add_argument("--top_k", type=int, default=3, help="items explained per user (>= 1)")
    parser.add_argument("--max_new_tokens", type=int, default=60, help="tokens written per explanation at most (>= 1)")
    parser.add_argument("--plm", default="smollm2-135m", help="the generator: a generative model name or local folder")
    parser.add_argument("--history_items", type=int, default=10, help="most recent history items shown (>= 1)")
    parser.add_argument("--noun", default="movie", help="what the prompt calls an item")
    parser.add_argument("--out", default=None, help="write the explanations here as JSON lines")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    report = parser.add_argument_group("grounding report")
    report.add_argument("--report", default=None, help="folder for report.md, explanations.jsonl and results.json")
    report.add_argument("--n_users", type=int, default=50, help="users drawn when --users is not given (>= 2)")
    report.add_argument("--seed", type=int, default=2020, help="draws the users and the control's donors")
    report.add_argument("--title_field", default="movie_title", help="item field holding the title")
    report.add_argument("--genre_field", default="class", help="item field holding the genres ('' for none)")
    report.add_argument("--examples", type=int, default=6, help="explanations quoted in report.md")
    report.add_argument("--train_commit", default=None, help="git commit the checkpoint was trained at, for the report")
    report.add_argument("--train_log", default=None, help="the checkpoint's training log, quoted in the report")
    report.add_argument("--rerender", default=None, help="write FOLDER/report.md again from its stored results")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parsed flags, with bad values refused before anything loads."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    args.argv = list(argv)
    if args.rerender is not None:
        return args
    if args.model_file is None:
        parser.error("--model_file is required (a trained M6Rec checkpoint, e.g. saved/M6Rec-<time>.pth)")
    minimum = {"top_k": 1, "max_new_tokens": 1, "history_items": 1, "n_users": 2, "examples": 0, "threads": 1}
    for name, low in minimum.items():
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name} must be >= {low} (got {value})")
    if args.users is not None:
        args.user_list = [u.strip() for u in args.users.split(",") if u.strip()]
        if not args.user_list:
            parser.error(f"--users holds no user id (got {args.users!r}); give raw ids separated by commas")
    elif args.report is None:
        parser.error("--users is required (raw user ids, comma separated) unless --report draws them")
    else:
        args.user_list = None
    return args


def _readable(rows) -> str:
    lines, user = [], None
    for row in rows:
        if row.user != user:
            user = row.user
            lines += ["", f"user {row.user}, history shown (oldest first):"]
            lines += [f"    - {text} [item {item}]" for item, text in zip(row.history, row.history_texts)]
            lines.append("  recommended:")
        lines.append(f"  {row.rank}. {row.item_text} [item {row.item}, score {row.score:.3f}]")
        lines.append(f"     {row.explanation}")
        if row.control is not None:
            lines.append(f"     control (history of user {row.control['donor']}): {row.control['explanation']}")
    return "\n".join(lines).lstrip("\n")


def main(argv: Sequence[str] | None = None) -> list:
    """Run from command-line flags (``sys.argv[1:]`` by default); returns the explanations."""
    import json

    from recbole_m6rec.atomic import atomic_write_text

    from .generation import Generator
    from .pipeline import explain_users
    from .ranking import load_recommender

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rerender is not None:
        from .report import rerender

        print(f"wrote {rerender(args.rerender)}", flush=True)
        return []
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report is not None:
        from .report import run_report

        return run_report(args, command=f"{PROG} " + " ".join(shlex.quote(a) for a in args.argv))

    recommender = load_recommender(args.model_file)
    recommender.resolve_users(args.user_list)  # an unknown id fails before the generator loads
    generator = Generator(args.plm, args.max_new_tokens)
    rows = explain_users(recommender, generator, args.user_list, args.top_k, args.history_items, args.noun)
    if args.out:
        atomic_write_text(Path(args.out), "".join(json.dumps(row.to_json()) + "\n" for row in rows))
    print(_readable(rows), flush=True)
    return rows


def console_main() -> int:
    """``python -m recbole_m6rec.explain``: :func:`main`, with bad input reported in one line (exit status 2)."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0
