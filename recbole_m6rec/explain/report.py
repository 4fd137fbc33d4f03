"""The grounding report: explanations and their controls for a fixed sample of users, the grounding rates with
intervals, the checkpoint's provenance and metrics, the machine, and a few explanations verbatim.

Written atomically into the report folder: ``report.md``, ``results.json`` (everything the report states) and
``explanations.jsonl`` (every explanation with its control and what each names).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.machine import machine_load

from .generation import SYSTEM_PROMPT, USER_PROMPT, Generator
from .grounding import summarise
from .pipeline import Explanation, explain_users, item_facts, mentions_of
from .ranking import Recommender, check_m6rec_checkpoint, load_recommender

__all__ = ["run_report", "rerender", "report_markdown", "checkpoint_facts", "evaluate_checkpoint"]

METRIC = "ndcg@10"
KINDS = (("title", "a history title"), ("genre", "a history-only genre"), ("any", "either"))


def checkpoint_facts(model_file: str, train_log: str | None = None) -> dict:
    """What the checkpoint file says about itself: hash, time, model, settings, epochs, recorded valid result."""
    checkpoint = check_m6rec_checkpoint(model_file)
    path = Path(model_file)
    facts = {
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        "written": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
        "model": checkpoint.get("model"),
        "dataset": checkpoint.get("dataset"),
        "settings": checkpoint.get("settings"),
        "best_epoch": checkpoint.get("epoch"),
        "recorded_best_valid_result": checkpoint.get("best_valid_result"),
    }
    if train_log:
        lines = Path(train_log).read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
        wanted = ("['run_recbole.py", "best valid", "test result", "epoch ")
        facts["train_log"] = {
            "file": train_log,
            "lines": [
                line.strip()
                for line in lines
                if any(w in line for w in wanted) and not any(n in line for n in ("Evaluate", "Resume point"))
            ],
        }
    return facts


def evaluate_checkpoint(recommender: Recommender) -> dict:
    """RecBole's valid and test metrics of the loaded model, under the checkpoint's own history-masking rule and
    under ``all`` (the user's known items masked, as for the explanations)."""
    from recbole_m6rec.trainer import build_trainer

    config = recommender.config
    own_rule = config["eval_history_mask"] or "recbole"
    results = {}
    for rule in dict.fromkeys((own_rule, "all")):
        config["eval_history_mask"] = rule
        trainer = build_trainer(
            config, recommender.model, recommender.train_data, recommender.valid_data, recommender.test_data
        )
        results[rule] = {
            split: {k: float(v) for k, v in trainer.evaluate(data, load_best_model=False).items()}
            for split, data in (("valid", recommender.valid_data), ("test", recommender.test_data))
        }
    config["eval_history_mask"] = own_rule
    return {"own_rule": own_rule, "results": results}


def run_report(args: argparse.Namespace, command: str) -> list:
    """Explain, control, score and write the report (see the module docstring); returns the explanations."""
    from recbole_m6rec.benchmarks.provenance import git_state, library_versions

    before = machine_load()
    started = time.perf_counter()
    recommender = load_recommender(args.model_file)
    genre_field = args.genre_field or None
    facts = item_facts(recommender.train_dataset, args.title_field, genre_field)
    if args.user_list is not None:
        users = args.user_list
        recommender.resolve_users(users)
    else:
        pool = recommender.users
        if args.n_users > len(pool):
            raise ValueError(
                f"n_users must be at most the {len(pool)} users with a validation row (got {args.n_users})"
            )
        users = [pool[i] for i in np.random.default_rng(args.seed).choice(len(pool), args.n_users, replace=False)]
    generator = Generator(args.plm, args.max_new_tokens)
    rows = explain_users(
        recommender, generator, users, args.top_k, args.history_items, args.noun, control_seed=args.seed, facts=facts
    )
    generated_at = machine_load()
    summary = summarise(mentions_of(rows), mentions_of(rows, "control"), seed=args.seed)
    metrics = evaluate_checkpoint(recommender)
    record = {
        "command": command,
        "settings": {
            "plm": args.plm,
            "max_new_tokens": args.max_new_tokens,
            "top_k": args.top_k,
            "history_items": args.history_items,
            "noun": args.noun,
            "seed": args.seed,
            "users": users,
            "title_field": args.title_field,
            "genre_field": genre_field,
            "system_prompt": SYSTEM_PROMPT,
            "user_prompt": USER_PROMPT,
            "chat_template": generator.chat,
            "decoding": "greedy",
            "examples": args.examples,
        },
        "generation": {
            "explanations": 2 * len(rows),  # each with its control
            "tokens_written": generator.tokens_written,
            "seconds": round(generator.seconds, 1),
            "tokens_per_second": round(generator.tokens_per_second, 2),
        },
        "grounding": summary,
        "checkpoint": {
            **checkpoint_facts(args.model_file, args.train_log),
            "train_commit": args.train_commit,
            "metrics": metrics,
        },
        "code": {**git_state([str(Path(__file__).parent)]), "versions": library_versions()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "before": before,
            "after_generation": generated_at,
            "after": machine_load(),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    folder = Path(args.report)
    atomic_write_text(folder / "explanations.jsonl", "".join(json.dumps(r.to_json()) + "\n" for r in rows))
    atomic_write_text(folder / "results.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(folder / "report.md", report_markdown(record, rows, args.examples))
    print(f"wrote {folder / 'report.md'}", flush=True)
    return rows


def rerender(folder: str | Path) -> Path:
    """Write ``report.md`` again from the folder's ``results.json`` and ``explanations.jsonl`` (after a change to
    the report's wording; the numbers and the command that made them are the stored ones)."""
    folder = Path(folder)
    record = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    lines = (folder / "explanations.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [Explanation(**json.loads(line)) for line in lines if line.strip()]
    note = (
        "Text re-rendered from the stored results.json and explanations.jsonl by `python -m recbole_m6rec.explain "
        f"--rerender={folder}`; every number and explanation is the run's."
    )
    return atomic_write_text(
        folder / "report.md", report_markdown(record, rows, record["settings"].get("examples", 6), note)
    )


# ------------------------------------------------------------------------------------------------------ markdown
def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _interval(triple, n: int) -> str:
    rate, low, high = triple
    return f"{_pct(rate)} ({round(rate * n)}/{n}) [{_pct(low)}, {_pct(high)}]"


def _epochs(settings: dict) -> str:
    epochs = settings.get("epochs")
    if epochs is None:
        return "the default number of epochs"
    return f"{epochs} epochs" + (" only, a short run for a demonstration, far from converged" if epochs < 10 else "")


def _verdict(difference) -> str:
    _, low, high = difference
    if low > 0:
        return "above the control (the difference's interval excludes 0)"
    if high < 0:
        return "below the control"
    return "not clearly above the control (the difference's interval includes 0)"


def _title_hits(rows) -> list[str]:
    """Each explanation, and each control, that names a title of the true user's history, verbatim."""
    lines = []
    for row in rows:
        for who, text, found in (
            ("explanation", row.explanation, row.mentions),
            (
                f"control (from user {(row.control or {}).get('donor')})",
                (row.control or {}).get("explanation"),
                (row.control or {}).get("mentions"),
            ),
        ):
            if found and found["titles"]:
                lines.append(
                    f"- user {row.user}, rank {row.rank}, *{_title(row.item_text)}*, {who}, names "
                    f"{found['titles']}: \"{text}\""
                )
    return [*(lines or ["none"]), ""]


def _points(triple) -> str:
    rate, low, high = triple
    return f"{100 * rate:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _title(text: str) -> str:
    """An item text without its genre list, to keep the examples short."""
    return text.split(". Genres:")[0]


def _examples(rows, count: int) -> list[str]:
    """The top item of the first ``count`` users, verbatim, with its control and what each names."""
    picked = [row for row in rows if row.rank == 1][:count]
    lines = []
    for row in picked:
        control = row.control or {}
        lines += [
            f"**User {row.user}**, history shown (oldest first): {'; '.join(_title(t) for t in row.history_texts)}",
            "",
            f"Recommended (rank 1): *{row.item_text}*",
            "",
            f"> {row.explanation}",
            "",
            f"Names from the history: titles {row.mentions['titles'] or 'none'}, genres {row.mentions['genres'] or 'none'}.",
            f"Control, from user {control.get('donor')}'s history:",
            "",
            f"> {control.get('explanation', '')}",
            "",
            f"Control names from user {row.user}'s history: titles {control['mentions']['titles'] or 'none'}, "
            f"genres {control['mentions']['genres'] or 'none'}.",
            "",
        ]
    return lines


def report_markdown(record: dict, rows, examples: int = 6, note: str | None = None) -> str:
    s, g, c, m = record["settings"], record["grounding"], record["checkpoint"], record["machine"]
    metrics = c["metrics"]
    own = metrics["own_rule"]

    def metric(rule: str, split: str) -> str:
        value = metrics["results"].get(rule, {}).get(split, {}).get(METRIC)
        return "–" if value is None else f"{value:.4f}"

    settings = c.get("settings") or {}
    lines = [
        "# Explanations of M6Rec's recommendations: are they grounded in the user's history?",
        "",
        f"Made by `{record['command']}`.",
        "",
        *([note, ""] if note else []),
        f"{g['users']} users of {c['dataset']}, their top-{s['top_k']} items each ({g['explanations']} explanations), "
        f"every explanation also written from another user's history (the control). Generator `{s['plm']}`, greedy, "
        f"at most {s['max_new_tokens']} new tokens, the {s['history_items']} most recent history items shown.",
        "",
        f"The recommender: M6Rec trained for {_epochs(settings)}, best after epoch {c['best_epoch'] + 1}; valid "
        f"NDCG@10 {metric('all', 'valid')}, test {metric('all', 'test')} with the user's known items masked "
        f"({metric(own, 'valid')} and {metric(own, 'test')} under its own rule `{own}`). It decides which items get "
        "explained; the grounding below is the generator's.",
        "",
        "## Grounding",
        "",
        "Share of explanations that name something from the user's own shown history (a title, or a genre of a "
        "history item that is not a genre of the recommended item), against the control: the same recommended items "
        "explained from another user's history (a fixed random derangement of these users) and scored against the "
        "true user's history. 95% intervals from 2,000 bootstrap resamples of users; the difference is paired.",
        "",
        "| names | explanations | control | difference (points) |",
        "|---|---:|---:|---:|",
    ]
    n = g["explanations"]
    for kind, label in KINDS:
        lines.append(
            f"| {label} | {_interval(g[kind]['rate'], n)} | {_interval(g[kind]['control'], n)} | "
            f"{_points(g[kind]['difference'])} |"
        )
    lines += ["", "Read: " + "; ".join(f"{label}: {_verdict(g[kind]['difference'])}" for kind, label in KINDS) + "."]
    lines += [
        "",
        "Title matching: whole titles (articles moved to the front, brackets dropped), one-word titles only when "
        "capitalised inside a sentence or quoted, or two consecutive non-stopword title words; the candidate's own "
        "title is blanked first, and genre words inside a named title do not count "
        "(`recbole_m6rec/explain/grounding.py`).",
        "",
        "## Every explanation that named a history title",
        "",
        *_title_hits(rows),
        "## Examples (verbatim, rank 1 of the first users drawn)",
        "",
        "Every explanation with its control is in `explanations.jsonl`, which the run writes beside this file. It "
        "lists the users' shown histories: keep it out of a repository when the dataset's terms forbid "
        "redistribution (MovieLens).",
        "",
        *_examples(rows, examples),
        "## Settings",
        "",
        f"- prompt (system): `{s['system_prompt'].format(noun=s['noun'])}`",
        f"- prompt (user): `{s['user_prompt']!r}`, the history a bulleted list of M6Rec's item texts",
        f"- chat template: {'the model' + chr(39) + 's own' if s['chat_template'] else 'none (plain text)'}; "
        f"decoding: {s['decoding']}; items called '{s['noun']}'",
        f"- users: {len(s['users'])} drawn with seed {s['seed']} (also the control's derangement and the bootstrap)",
        f"- grounding fields: title `{s['title_field']}`, genres `{s['genre_field']}`",
        f"- generation: {record['generation']['explanations']} texts, {record['generation']['tokens_written']:,} "
        f"tokens in {record['generation']['seconds']:.0f} s ({record['generation']['tokens_per_second']:.1f} tokens/s)",
        "",
        "## The recommender",
        "",
        f"- checkpoint `{c['file']}` (sha256 {c['sha256']}, written {c['written']}), model {c['model']}, dataset "
        f"{c['dataset']}, best after epoch {c['best_epoch'] + 1} (counting from 1)",
        f"- trained at git commit {c['train_commit'] or 'not given'}; settings given at training: `{json.dumps(settings)}`",
        "- every setting not listed there: M6Rec's defaults (`recbole_m6rec/properties/model/M6Rec.yaml`) and the "
        f"dataset's yaml at that commit; backbone `{settings.get('plm_name_or_path', 'smollm2-135m')}`",
        f"- NDCG@10 recomputed from the checkpoint: valid {metric(own, 'valid')}, test {metric(own, 'test')} under its "
        f"own masking rule `{own}`; valid {metric('all', 'valid')}, test {metric('all', 'test')} with known items "
        "masked (`all`, the rule the explanations' rankings use)",
    ]
    if c.get("recorded_best_valid_result"):
        lines.append(f"- valid result recorded in the checkpoint: {c['recorded_best_valid_result']}")
    if c.get("train_log"):
        lines += [f"- training log `{c['train_log']['file']}`:", ""]
        lines += [f"      {line}" for line in c["train_log"]["lines"]]
    code = record["code"]
    lines += [
        "",
        "## Code and machine",
        "",
        f"- report made at git commit {code.get('git_commit')}; uncommitted changes to the explanation code: "
        f"{', '.join(code.get('dirty_code') or []) or 'none'} (elsewhere in the tree: {code.get('git_dirty')}); "
        f"{', '.join(f'{k} {v}' for k, v in code['versions'].items())}",
        f"- {m['cpus']} CPUs, {m['platform']}, torch threads: {m['torch_threads']}; {m['seconds']:.0f} s in all",
        "- the machine is shared: other jobs ran beside this one, so times are this run's, not the method's",
        f"- load average (1, 5, 15 min) before: {m['before']['load_average']}, after generating: "
        f"{m['after_generation']['load_average']}, at the end: {m['after']['load_average']}",
        f"- busiest other processes before: {', '.join(m['before']['busiest_other_processes']) or 'none seen'}",
        f"- busiest other processes after generating: "
        f"{', '.join(m['after_generation']['busiest_other_processes']) or 'none seen'}",
        "",
    ]
    return "\n".join(lines)
