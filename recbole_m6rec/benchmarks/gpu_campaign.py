"""The results that two CPU cores cannot produce, in one command sized for one large GPU and about 8 minutes.

    python -m recbole_m6rec.benchmarks.gpu_campaign --out=reports/gpu [--budget_s=480] [--resume | --fresh]
    python -m recbole_m6rec.benchmarks.gpu_campaign --out=runs/gpu-tiny --tiny --fresh    # the CPU check, ~1 min

Three parts, each a leaderboard plan in ``configs/gpu_*.yaml`` (:data:`PARTS`), each written as an ordinary report
folder under ``--out`` (same ``report.md``, ``results.csv``, ``results/<row>-seed<N>.json`` with split fingerprints
and provenance as :mod:`recbole_m6rec.benchmarks.leaderboard` writes; its functions do the work):

* ``ml-1m``: MostPop, BPR, GRU4Rec, SASRec, M6Rec and M6Rec-hybrid, one seed, no tuning, early stopping on valid;
* ``ctr_ml-100k``: M6RecCTR with 1, 2 and 3 online layers next to the joined model (every layer online over every
  token, ``late_interaction_layers: all``, resolved here to the backbone's layer count);
* ``zero-shot_ml-100k``: M6RecZeroShot ranking every item for every user (no re-ranking), next to MostPop.

Time budget. The parts run at the same time, each row in its own job process, ``workers`` rows of a part at once.
A plan's ``campaign`` block gives each row a share of ``--budget_s`` (``row_budget``) and the part one
(``budget``, counted from the campaign's start). A row still running when its share or its part's runs out is
stopped and recorded with status ``cut``; a row that could not start before its part's end is recorded ``cut``
too; every finished row is kept and reported. A second try with ``--resume`` reuses every finished result that is
still current and reruns the rest.

Device. Without CUDA the full campaign refuses to start (it names what it found) unless ``--allow_cpu``.
``--tiny`` runs the same parts on the CPU in about a minute with each plan's ``tiny`` settings (a tiny random
backbone, a slice of ml-100k standing in for ml-1m, one epoch): the test suite's check that the command works
before it meets a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks import leaderboard
from recbole_m6rec.benchmarks.provenance import REPO_ROOT

__all__ = [
    "PARTS",
    "ALL_LAYERS",
    "main",
    "load_part",
    "run_part",
    "device_summary",
    "device_refusal",
    "modules_off_device",
    "layer_comparison",
]

CONFIGS_DIR = REPO_ROOT / "configs"
PARTS = {  # report folder under --out: plan
    "ml-1m": "gpu_ml-1m.yaml",
    "ctr_ml-100k": "gpu_ctr_ml-100k.yaml",
    "zero-shot_ml-100k": "gpu_zero-shot_ml-100k.yaml",
}
ALL_LAYERS = "all"  # late_interaction_layers: all = every layer of the row's backbone online
MIN_ROW_SECONDS = 5.0  # a row is not started with less time than this left in its part
DEFAULT_BUDGET_S = 480.0


# --- plans --------------------------------------------------------------------------------------------------------
def load_part(path: Path | str, tiny: bool, overrides: dict | None = None) -> dict:
    """A GPU plan as the leaderboard reads it, with its ``campaign`` block checked; with ``tiny`` its ``tiny``
    settings replace the dataset, extend ``common`` and each row; ``late_interaction_layers: all`` resolved."""
    plan = leaderboard.load_plan(str(path), overrides or {}, None, None)
    campaign = plan.get("campaign") or {}
    missing = [key for key in ("budget", "workers", "row_budget") if key not in campaign]
    if missing:
        raise ValueError(
            f"plan '{path}' needs a campaign block with {missing} (budget: share of --budget_s for the "
            "part, workers: rows at once, row_budget: {row: share of --budget_s})"
        )
    unbudgeted = [row for row in plan["rows"] if row not in campaign["row_budget"]]
    if unbudgeted:
        raise ValueError(f"plan '{path}': rows {unbudgeted} have no row_budget (a share of --budget_s)")
    small = plan.pop("tiny", None) or {}
    if tiny:
        plan["dataset"] = small.get("dataset", plan["dataset"])
        plan["campaign"] = {**campaign, "workers": small.get("workers", campaign["workers"])}
        plan["common"] = {**plan["common"], **(small.get("common") or {}), **(overrides or {})}
        for name, extra in (small.get("rows") or {}).items():
            plan["rows"][name] = {**plan["rows"][name], **extra}
        if small.get("method"):
            plan["method"] = f"{plan.get('method', '').strip()} {small['method'].strip()}".strip()
    for row in plan["rows"].values():
        if row.get("late_interaction_layers") == ALL_LAYERS:
            row["late_interaction_layers"] = backbone_layers(
                row.get("plm_name_or_path") or plan["common"].get("plm_name_or_path")
            )
    return plan


def backbone_layers(plm_name_or_path: str | None) -> int:
    """The number of layers of a backbone (the plugin's default one when None), as M6Rec's layer split counts
    them."""
    from recbole_m6rec.config import PLUGIN_PROPERTIES_DIR
    from recbole_m6rec.lm import load_plm
    from recbole_m6rec.lm.backbone import LayerStack

    if plm_name_or_path is None:
        defaults = yaml.safe_load((PLUGIN_PROPERTIES_DIR / "model" / "M6Rec.yaml").read_text(encoding="utf-8"))
        plm_name_or_path = defaults["plm_name_or_path"]
    return LayerStack(load_plm(plm_name_or_path)[1]).num_layers


# --- device -------------------------------------------------------------------------------------------------------
def device_summary() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda": cuda,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "devices": torch.cuda.device_count() if cuda else 0,
        "name": torch.cuda.get_device_name(0) if cuda else None,
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu_cores": os.cpu_count(),
    }


def device_refusal(device: dict) -> str | None:
    """Why the full campaign should not start on this machine (None with a CUDA device)."""
    if device["cuda"]:
        return None
    build = f"built with CUDA {device['torch_cuda']}" if device["torch_cuda"] else "built without CUDA"
    visible = device["cuda_visible_devices"]
    return (
        f"no CUDA device: torch {device['torch']} ({build}) reports torch.cuda.is_available() = False "
        f"(CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}; {device['cpu_cores']} CPU "
        "cores). This campaign is sized for one large GPU in about 8 minutes; on this machine its budgets "
        "would cut most rows. Run --tiny for the CPU check of the command, or pass --allow_cpu to run the full "
        "campaign here anyway."
    )


def describe(device: dict) -> str:
    if device["cuda"]:
        return (
            f"{device['name']} ({device['memory_gib']} GiB; {device['devices']} visible), torch {device['torch']} "
            f"with CUDA {device['torch_cuda']}, {device['cpu_cores']} CPU cores"
        )
    return f"CPU only ({device['cpu_cores']} cores), torch {device['torch']}"


def modules_off_device(model, device) -> list[str]:
    """Attributes of ``model`` holding torch modules (registered or kept aside, as M6RecZeroShot keeps its language
    model out of the state dict) whose parameters are not on ``device`` after ``model.to(device)``."""
    import torch

    device = torch.device(device)
    left = []
    for name, value in vars(model).items():
        candidates = value.items() if name == "_modules" else [(name, value)]
        for attribute, module in candidates:
            if not isinstance(module, torch.nn.Module):
                continue
            places = {p.device for p in module.parameters()}
            if any(p.type != device.type or (device.index is not None and p.index != device.index) for p in places):
                left.append(f"{attribute} on {', '.join(sorted(str(p) for p in places))}")
    return left


def model_device_problem(model_name: str, plan: dict, device: str) -> str | None:
    """Build ``model_name`` on a small slice of the plan's dataset with a tiny backbone, move it to ``device`` and
    say which of its modules stayed behind (None when everything moved)."""
    from recbole.data import create_dataset

    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.registry import get_model

    argv, sys.argv = sys.argv, [sys.argv[0]]  # RecBole reads sys.argv
    try:
        config = PluginConfig(
            model=model_name,
            dataset=plan["dataset"],
            config_dict={
                "user_inter_num_interval": "[0,20]",
                "item_inter_num_interval": "[8,inf)",
                "plm_name_or_path": "tiny-random-llama",
                "state": "ERROR",
                "show_progress": False,
            },
        )
        model = get_model(model_name)(config, create_dataset(config)).to(device)
    finally:
        sys.argv = argv
    left = modules_off_device(model, device)
    if not left:
        return None
    return (
        f"{model_name} keeps modules off {device} after .to({device}): {'; '.join(left)}. Its scoring would run "
        "on the CPU, far past any GPU budget, so it was not started (the model must move its language model "
        "with the module and build its tensors on that device)."
    )


# --- one part -----------------------------------------------------------------------------------------------------
def _not_run(spec: dict, out: Path, status: str, error: str) -> dict:
    record = {
        **{k: spec[k] for k in ("row", "model", "dataset", "seed", "config_hash")},
        "status": status,
        "error": error,
    }
    atomic_write_text(out, json.dumps(record, indent=1))
    return record


def _reusable(spec: dict, out: Path) -> dict | None:
    try:
        previous = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous if leaderboard.reuse_verdict(previous, spec) is None else None


def run_part(
    name: str,
    plan: dict,
    report_dir: Path,
    budget_s: float,
    started: float,
    command: str,
    resume: bool = True,
    refused: dict[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict]:
    """Run one plan's rows within their budgets (see the module docstring) and write its report; returns the
    records in the plan's row order. ``refused``: ``{model: why}`` for models not to start (recorded ``skipped``)."""
    campaign = plan["campaign"]
    deadline = started + float(campaign["budget"]) * budget_s
    jobs = [(row, seed) for seed in plan["seeds"] for row in plan["rows"]]
    # longest budgets first: the rows that need the most time start at once
    order = sorted(jobs, key=lambda job: -float(campaign["row_budget"][job[0]]))
    records: dict[tuple, dict] = {}

    def run_one(job: tuple[str, int]) -> None:
        row, seed = job
        spec = leaderboard.job_spec(plan, row, seed)
        out = report_dir / "results" / f"{row}-seed{seed}.json"
        label = f"[{name}] {row} seed {seed}"
        if (refused or {}).get(spec["model"]):
            print(f"{label}: not started: {refused[spec['model']]}", flush=True)
            records[job] = _not_run(spec, out, "skipped", refused[spec["model"]])
            return
        limit = min(float(campaign["row_budget"][row]) * budget_s, deadline - clock())
        if limit < MIN_ROW_SECONDS:
            previous = _reusable(spec, out) if resume else None
            if previous is not None:
                print(f"{label}: reusing finished result {out}", flush=True)
                records[job] = previous
                return
            print(f"{label}: not started, {max(limit, 0):.0f} s left of the part's budget", flush=True)
            records[job] = _not_run(
                spec,
                out,
                "cut",
                f"not started: the part's time budget " f"({float(campaign['budget']) * budget_s:.0f} s) was spent",
            )
            return
        records[job] = leaderboard.run_or_reuse(
            spec, out, f"{name}, {label.split('] ')[1]}, limit {limit:.0f} s", resume, timeout=limit
        )

    with ThreadPoolExecutor(max_workers=int(campaign["workers"]), thread_name_prefix=name) as pool:
        for future in [pool.submit(run_one, job) for job in order]:
            future.result()
    ordered = [records[job] for job in jobs]
    leaderboard.write_report(plan, ordered, report_dir, command)
    return ordered


# --- the campaign's own summary -----------------------------------------------------------------------------------
def layer_comparison(plan: dict, records: list[dict], metric: str = "auc") -> list[str]:
    """Each row's test ``metric`` relative to the joined row (every layer online over every token), by online
    layers: the late-interaction table's line."""

    def layers(row: str):
        return plan["rows"][row].get("late_interaction_layers", plan["common"].get("late_interaction_layers", 2))

    done = {r["row"]: r for r in records if r.get("status") == "ok" and metric in (r.get("test") or {})}
    joined = [row for row, settings in plan["rows"].items() if str(settings.get("segment_tokens")) == "all"]
    if not joined or joined[0] not in done:
        return [f"- Joined model: no finished result, so no comparison ({joined[0] if joined else 'no joined row'})."]
    reference = done[joined[0]]["test"][metric]
    lines = [
        f"- {joined[0]} ({layers(joined[0])} online layers, every token): test {metric.upper()} " f"{reference:.4f}."
    ]
    for row in sorted((r for r in plan["rows"] if r != joined[0]), key=layers):
        if row not in done:
            lines.append(f"- {row} ({layers(row)} online layers): no finished result.")
            continue
        value = done[row]["test"][metric]
        gap = 100 * (value - reference) / reference
        lines.append(
            f"- {row} ({layers(row)} online layer{'s' if layers(row) != 1 else ''}): test "
            f"{metric.upper()} {value:.4f}, {abs(gap):.1f}% {'above' if gap > 0 else 'below'} the joined "
            "model's."
        )
    return lines


def summary_text(
    command: str, device: dict, budget_s: float, wall: float, parts: dict[str, tuple[dict, list]], tiny: bool
) -> str:
    lines = [
        "# GPU campaign",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {describe(device)}.",
        "",
        f"Budget: {budget_s:.0f} s for the whole campaign (parts at the same time); wall time {wall:.0f} s."
        + (" Tiny mode: the CPU check of the command, not results." if tiny else ""),
        "",
    ]
    for name, (plan, records) in parts.items():
        campaign = plan["campaign"]
        lines += [
            f"## {name}",
            "",
            f"Report: [{name}/report.md]({name}/report.md); part budget "
            f"{float(campaign['budget']) * budget_s:.0f} s, {campaign['workers']} rows at a time.",
            "",
            "| row | status | row budget s | wall s | epochs (cap) | valid | test |",
            "|---|---|---|---|---|---|---|",
        ]
        main_metric = str(plan["common"].get("valid_metric", "")).lower()
        for r in records:
            valid, test = (r.get("valid") or {}).get(main_metric), (r.get("test") or {}).get(main_metric)
            epochs = f"{r.get('epochs_run')} ({r.get('epoch_cap')})" if r.get("trains") else "–"
            lines.append(
                f"| {r['row']} | {r['status']} | {float(campaign['row_budget'][r['row']]) * budget_s:.0f} | "
                f"{r.get('wall_seconds', '–')} | {epochs if r['status'] == 'ok' else '–'} | "
                f"{'–' if valid is None else f'{valid:.4f}'} | {'–' if test is None else f'{test:.4f}'} |"
            )
        if name.startswith("ctr"):
            lines += ["", *layer_comparison(plan, records)]
        lines.append("")
    return "\n".join(lines)


# --- command ------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the parts' report folders and campaign.md")
    parser.add_argument(
        "--budget_s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="wall-clock seconds for the whole campaign; every part and row gets its share",
    )
    parser.add_argument("--tiny", action="store_true", help="the CPU check: each plan's tiny settings")
    parser.add_argument("--allow_cpu", action="store_true", help="run the full campaign without CUDA anyway")
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of {', '.join(PARTS)}")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="reuse the finished results that are still current")
    resume.add_argument("--fresh", action="store_true", help="delete earlier results first")
    args = parser.parse_args(argv)
    parts = args.parts.split(",") if args.parts else list(PARTS)
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; the campaign's parts are {', '.join(PARTS)}")
    device = device_summary()
    refusal = device_refusal(device)
    if refusal and not (args.tiny or args.allow_cpu):
        raise SystemExit(refusal)
    print(
        f"gpu campaign on {describe(device)}; budget {args.budget_s:.0f} s{' (tiny)' if args.tiny else ''}", flush=True
    )
    out = Path(args.out)
    plans = {part: load_part(CONFIGS_DIR / PARTS[part], args.tiny) for part in parts}
    for part in parts:
        leaderboard.prepare_report_dir(out / part, args.resume, args.fresh)
    # rows run side by side: split the CPU threads between them rather than each taking every core
    at_once = sum(int(plans[part]["campaign"]["workers"]) for part in parts)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // min(at_once, 4))))
    command = "python -m recbole_m6rec.benchmarks.gpu_campaign " + " ".join(argv)
    started = time.monotonic()
    results: dict[str, list] = {}

    def run(part: str) -> None:
        plan = plans[part]
        plan["method"] = f"{plan.get('method', '').strip()} Ran on {describe(device)}.".strip()
        refused = {}
        if device["cuda"]:
            for model in plan["campaign"].get("device_check") or []:
                problem = model_device_problem(model, plan, "cuda")
                if problem:
                    refused[model] = problem
        results[part] = run_part(part, plan, out / part, args.budget_s, started, command, resume=True, refused=refused)

    threads = [threading.Thread(target=run, args=(part,), name=part) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missing = [part for part in parts if part not in results]
    text = summary_text(
        command,
        device,
        args.budget_s,
        time.monotonic() - started,
        {part: (plans[part], results[part]) for part in parts if part in results},
        args.tiny,
    )
    if missing:
        text += f"\nParts that stopped with an error before their report: {', '.join(missing)} (see the log).\n"
    atomic_write_text(out / "campaign.md", text)
    atomic_write_text(
        out / "campaign.json",
        json.dumps(
            {
                "command": command,
                "device": device,
                "budget_s": args.budget_s,
                "tiny": args.tiny,
                "parts": {
                    part: [
                        {k: r.get(k) for k in ("row", "seed", "status", "wall_seconds", "error")}
                        for r in results.get(part, [])
                    ]
                    for part in parts
                },
            },
            indent=1,
        ),
    )
    print(text, flush=True)
    records = [r for part in results.values() for r in part]
    return 0 if not missing and all(r.get("status") == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
