"""The compression benchmark's report (:mod:`recbole_m6rec.benchmarks.compression`), from its measurement record."""

from __future__ import annotations

import statistics

from recbole_m6rec.benchmarks.compression_accuracy import epochs_text
from recbole_m6rec.benchmarks.compression_sources import ACCURACY_PHASES, accuracy_sources, source_lines

__all__ = ["report_markdown", "summary"]


def _full_depth(record: dict) -> tuple[int, dict, dict]:
    """The number of lower layers and the fp32 and int8 item encodings that ran all of them."""
    n_lower = record["encoding"][0]["lower_layers"]
    enc = {(r["quantize"], r["item_layers"]): r for r in record["encoding"]}
    return n_lower, enc[("none", n_lower)], enc[("int8", n_lower)]


def summary(record: dict) -> dict:
    """The report's headline numbers under flat names, for README figures (``summary.<name>`` in report.json):
    speeds and their ratios, and each setting's relative change in NDCG@10 (M6Rec) and AUC (M6RecCTR)."""
    n_lower, fp32, int8 = _full_depth(record)
    mix = record["matmul"]["layer_mix_gflops"]
    out = {
        "plm": record["settings"]["plm"],
        "accuracy_plm": record["accuracy_plm"],
        "matmul_fp32_gflops": mix["fp32"],
        "matmul_int8_gflops": mix["int8_linear"],
        "encoding_fp32_useful_gflops": fp32["useful_gflops"],
        "encoding_fp32_share_of_matmul": round(fp32["useful_gflops"] / mix["fp32"], 3),
        "encoding_fp32_items_per_s": fp32["items_per_s"],
        "encoding_int8_items_per_s": int8["items_per_s"],
        "encoding_int8_speedup": round(int8["items_per_s"] / fp32["items_per_s"], 3),
        "encoding_int8_speedup_paired": record["paired_encoding"]["int8_speedup_median"],
        **_compiled_summary(record, mix["fp32"]),
        "latency_fp32_ms_per_1000": record["latency"]["median_fp32"],
        "latency_int8_ms_per_1000": record["latency"]["median_int8"],
        "latency_int8_speedup": record["latency"]["int8_speedup_median"],
        "activation_max_over_median": {
            kind: row["max_over_median"]
            for kind, row in (record.get("activation_ranges") or {}).get("kinds", {}).items()
        },
        **{f"int8_{key}": value for key, value in (record.get("state_separation") or {}).items() if key != "items"},
        "early_exit_encoding": [
            {
                "layers": r["item_layers"],
                "items_per_s": r["items_per_s"],
                "speedup": round(r["items_per_s"] / fp32["items_per_s"], 3),
            }
            for r in record["encoding"]
            if r["quantize"] == "none" and r["item_layers"] != n_lower
        ],
    }
    for result in record["accuracy"]:
        prefix = "m6rec" if result["model"] == "M6Rec" else "ctr"
        for row in result["rows"]:
            if row["setting"] == "fp32":
                name = "fp32" if row["base"] == "trained" else "fp32_short"
                out[f"{prefix}_{name}_valid"], out[f"{prefix}_{name}_test"] = row["valid"], row["test"]
                continue
            name = row["setting"].replace("early exit k=", "exit").replace(" ", "_")
            if row["base"] == "short":
                name += "_afresh"
            out[f"{prefix}_{name}_valid_change"] = row["valid_change"]
            out[f"{prefix}_{name}_test_change"] = row["test_change"]
    return out


def _compiled_summary(record: dict, matmul_fp32: float) -> dict:
    compiled = record.get("compiled_encoding")
    if not compiled:
        return {}
    return {
        "encoding_compiled_speedup": compiled["compiled_speedup_median"],
        "encoding_compiled_share_of_matmul": round(compiled["compiled_useful_gflops"] / matmul_fp32, 3),
        "encoding_compile_s": _compile_seconds(compiled),
    }


def _goal(met: bool) -> str:
    return "**met**" if met else "**missed**"


def report_markdown(record: dict) -> str:
    n_lower, fp32, int8 = _full_depth(record)
    mix = record["matmul"]["layer_mix_gflops"]
    latency, paired = record["latency"], record["paired_encoding"]
    by_model = {result["model"]: result for result in record.get("accuracy") or []}
    m6rec = by_model.get("M6Rec")
    int8_row = next(r for r in m6rec["rows"] if r["setting"] == "int8" and r["base"] == "trained") if m6rec else None
    speedup = int8["items_per_s"] / fp32["items_per_s"]
    lines = [
        "# Compression on a 2-core CPU: int8 and early exit of the item encoding (ml-100k)",
        "",
        f"Language model for speed: `{record['settings']['plm']}` ({n_lower} lower layers encode items, "
        f"{record['settings']['threads']} torch threads). Accuracy: `{record['accuracy_plm']}`"
        + (
            ""
            if record["accuracy_plm"] == record["settings"]["plm"]
            else f" (an M6Rec epoch on `{record['settings']['plm']}` was estimated at "
            f"{record['epoch_estimate']['epoch_s'] / 60:.0f} min under this load, over the "
            f"{record['settings']['max_epoch_minutes']}-minute limit)"
        )
        + ".",
        "",
        _sharing_sentence(record),
        *source_lines(record),
        "",
        "## Ratios within this run",
        "",
        "| what | ratio |",
        "|---|---:|",
        f"| fp32 item encoding, useful GFLOP/s / fp32 matmul rate (layer mix) | "
        f"{fp32['useful_gflops'] / mix['fp32']:.2f} |",
        f"| fp32 item encoding, linear layers' own GFLOP/s / fp32 matmul rate | "
        f"{fp32['linear_gflops'] / mix['fp32']:.2f} |",
        f"| int8 / fp32 matmul rate (torch's dynamic int8 linear, layer mix) | {mix['int8_linear'] / mix['fp32']:.2f} |",
    ]
    if "int_mm" in mix:
        lines.append(f"| int8 / fp32 matmul rate (`torch._int_mm`, layer mix) | {mix['int_mm'] / mix['fp32']:.2f} |")
    lines += [
        f"| int8 / fp32 item encoding throughput (whole catalogue, one run each) | {speedup:.2f} |",
        f"| int8 / fp32 item encoding throughput (paired: same {paired['batches']} batches alternated "
        f"{len(paired['seconds_fp32'])}×, median) | {paired['int8_speedup_median']:.2f} |",
        f"| fp32 / int8 scoring latency (M6RecCTR predict, alternated {len(latency['ms_per_1000_fp32'])}×, median) | "
        f"{latency['int8_speedup_median']:.2f} |",
    ]
    for row in record["encoding"][2:]:
        lines.append(
            f"| early exit k={row['item_layers']} / all {n_lower} layers, item encoding throughput | "
            f"{row['items_per_s'] / fp32['items_per_s']:.2f} |"
        )
    lines += [
        "",
        "## Goals",
        "",
        "| goal | result | |",
        "|---|---|---|",
        f"| fp32 encoding at >= 0.8x the measured fp32 matmul rate | {fp32['useful_gflops']} vs {mix['fp32']} GFLOP/s "
        f"({fp32['useful_gflops'] / mix['fp32']:.3f}x) | {_goal(fp32['useful_gflops'] >= 0.8 * mix['fp32'])} |",
        *_compiled_goal(record, mix["fp32"]),
        f"| int8 encoding >= 1.5x fp32 throughput | {speedup:.2f}x whole catalogue, {paired['int8_speedup_median']:.2f}x "
        f"paired | {_goal(min(speedup, paired['int8_speedup_median']) >= 1.5)} |",
        (
            f"| int8: < 1% relative change in NDCG@10 ({record['accuracy_plm']}) | valid "
            f"{100 * int8_row['valid_change']:+.2f}%, test {100 * int8_row['test_change']:+.2f}% | "
            f"{_goal(abs(int8_row['valid_change']) < 0.01 and abs(int8_row['test_change']) < 0.01)} |"
            if int8_row
            else "| int8: < 1% relative change in NDCG@10 | not measured in this report | |"
        ),
        "",
        "## Matrix-multiply rates (GFLOP/s)",
        "",
        f"`[{record['matmul']['shapes'][0]['rows']} x K] x [K x N]`: the rows are the median token slots of an "
        "encoding batch (64 texts, padded to the batch's longest); (K, N) each linear layer of one transformer layer.",
        "",
        "| K | N | fp32 matmul | int8 dynamic linear | torch._int_mm | fp32, 1 thread | int8 linear, 1 thread |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one = record["matmul_1_thread"]
    for row, single in zip(record["matmul"]["shapes"], one["shapes"]):
        lines.append(
            f"| {row['K']} | {row['N']} | {row['fp32_gflops']} | {row['int8_linear_gflops']} | "
            f"{row.get('int_mm_gflops', row.get('int_mm_error', '–'))} | {single['fp32_gflops']} | "
            f"{single['int8_linear_gflops']} |"
        )
    mix1 = one["layer_mix_gflops"]
    lines.append(
        f"| layer mix | | **{mix['fp32']}** | **{mix['int8_linear']}** | **{mix.get('int_mm', '–')}** | "
        f"{mix1['fp32']} | {mix1['int8_linear']} |"
    )
    lines += [
        "",
        "## Item encoding (every ml-100k item text, once each)",
        "",
        "Useful GFLOP/s count real tokens (2 FLOPs per weight of each linear layer that runs, plus attention's two "
        "products); executed GFLOP/s count every padded slot; linear GFLOP/s is the linear layers' FLOPs over their "
        "own time. Seconds split by forward hooks.",
        "",
        "| setting | layers | s | items/s | useful GFLOP/s | executed GFLOP/s | linear GFLOP/s | padding | "
        "attention linears s | attention core s | MLP linears s | MLP activation s | rest s | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in record["encoding"]:
        split = row["split_s"]
        lines.append(
            f"| {'int8' if row['quantize'] == 'int8' else 'fp32'} | {row['item_layers']} | {row['seconds']} | "
            f"{row['items_per_s']} | {row['useful_gflops']} | {row['executed_gflops']} | {row['linear_gflops']} | "
            f"{100 * row['padding_share']:.0f}% | {split['attention_linear']} | {split['attention_core']} | "
            f"{split['mlp_linear']} | {split['mlp_activation']} | {split['rest']} | "
            f"{row['machine']['load_average'][0]} |"
        )
    lines += [
        "",
        f"Paired check: {paired['rows']} texts in {paired['batches']} batches, seconds per round fp32 "
        f"{paired['seconds_fp32']}, int8 {paired['seconds_int8']}.",
        "",
        *_compiled_lines(record),
        *_activation_lines(record),
        "## Scoring latency (M6RecCTR predict, ms per 1,000 candidates)",
        "",
        f"{latency['candidates_timed']} labelled test candidates per round, untrained models; rounds alternated.",
        "",
        "| | rounds | median |",
        "|---|---|---:|",
        f"| fp32 | {latency['ms_per_1000_fp32']} | {latency['median_fp32']} |",
        f"| int8 | {latency['ms_per_1000_int8']} | {latency['median_int8']} |",
        "",
    ]
    for name in ("M6Rec", "M6RecCTR"):
        if name in by_model:
            lines += _accuracy_lines(by_model[name], record)
        else:
            lines += [
                f"## Accuracy: {name}",
                "",
                "Not measured in this report: the run that measured accuracy ended before it. "
                "`--accuracy_from=<this report.json> --accuracy_models=" + name + "` measures it and keeps the rest.",
                "",
            ]
    lines += _machine_lines(record)
    return "\n".join(lines)


def _compiled_goal(record: dict, matmul_fp32: float) -> list[str]:
    compiled = record.get("compiled_encoding")
    if not compiled:
        return []
    share = compiled["compiled_useful_gflops"] / matmul_fp32
    return [
        f"| the same, compiled (`torch.compile`) | {compiled['compiled_useful_gflops']} vs {matmul_fp32} GFLOP/s "
        f"({share:.3f}x; eager in the same phase {compiled['eager_useful_gflops']}, "
        f"{compiled['eager_useful_gflops'] / matmul_fp32:.3f}x) | {_goal(share >= 0.8)} |"
    ]


def _compile_seconds(compiled: dict) -> float:
    """Compiling alone: the first compiled pass less a compiled pass's median time."""
    return round(compiled["compile_and_first_pass_s"] - statistics.median(compiled["seconds_compiled"]), 1)


def _compiled_lines(record: dict) -> list[str]:
    compiled = record.get("compiled_encoding")
    if not compiled:
        return []
    return [
        "## Compiled fp32 encoding",
        "",
        f"`torch.compile` (dynamic shapes) of the fp32 lower layers with pooling, over all {compiled['items']} item "
        f"texts in {compiled['batches']} batches: compiling and the first pass took "
        f"{compiled['compile_and_first_pass_s']} s (compiling about {_compile_seconds(compiled)} s); then full passes "
        "alternated, eager "
        f"{compiled['seconds_eager']} s, compiled {compiled['seconds_compiled']} s: compiled is "
        f"**{compiled['compiled_speedup_median']:.2f}×** eager (median of the rounds), "
        f"{compiled['eager_useful_gflops']} against {compiled['compiled_useful_gflops']} useful GFLOP/s. Largest state "
        f"difference from eager: {compiled['max_state_diff_over_max_state']:.1e} of the largest state. M6Rec does not "
        "compile: its item encoding runs once and is cached, and compiling costs more than the encoding it would "
        "save.",
        "",
    ]


def _sharing_sentence(record: dict) -> str:
    """Whether other jobs ran beside the speed measurements (accuracy does not depend on load): from the cores other
    processes kept busy in each phase, or (records without that) from the load average against its own threads."""
    phases = [phase for name, phase in record["phases"].items() if not name.startswith(ACCURACY_PHASES)]
    cores = [phase["other_cores"] for phase in phases if phase.get("other_cores") is not None]
    if cores:
        which = "every phase" if len(cores) == len(phases) else f"each of the {len(cores)} phases that measured it"
        if max(cores) < 0.25:
            return f"Nothing else ran beside the speed measurements: other processes kept under 0.25 cores busy in {which}."
        measured = f"other processes kept {min(cores):.1f} to {max(cores):.1f} cores busy on average, by phase"
    else:
        loads = [phase[when]["load_average"][0] for phase in phases for when in ("before", "after")]
        own = record["settings"]["threads"]
        if max(loads) <= own + 0.5:
            return f"The load average stayed within this run's own {own} threads (+0.5) before and after every phase."
        measured = f"the 1-minute load average reached {max(loads):.1f} with this run's own {own} threads"
    return (
        f"**Other jobs shared this CPU during the run**: {measured} (see Machine below). Absolute times are "
        "inflated by them and drift between phases; the ratios within one phase (the paired fp32 / int8 rounds, the "
        "alternated latency rounds) are the firmest numbers."
    )


def _accuracy_lines(result: dict, record: dict) -> list[str]:
    metric = {"ndcg@10": "NDCG@10", "auc": "AUC"}[result["metric"]]
    settings = record["settings"]
    lines = [
        f"## Accuracy: {result['model']} {metric} ({result['plm']})",
        "",
        f"Trained once in fp32, default settings, {epochs_text(settings['epochs'])} (seconds per epoch, training and "
        f"validation, {settings['accuracy_threads']} torch thread(s): {result['epoch_seconds']}). Rows \"not retrained\" evaluate those same trained parameters with "
        "the setting's item states (items re-encoded; with int8 the online layers run int8 as well). Rows "
        f"\"afresh\" train the setting from scratch for {epochs_text(settings['retrain_epochs'])}, compared with fp32 "
        "after as many epochs (same seed and batches). Change is relative to the matching fp32 row.",
        "",
        f"| setting | trained | valid {metric} | change | test {metric} | change |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['setting']} | {row['trained']} | {row['valid']:.4f} | {_change(row['valid_change'])} | "
            f"{row['test']:.4f} | {_change(row['test_change'])} |"
        )
    afresh = {row["setting"] for row in result["rows"] if row["base"] == "short"}
    if settings["retrain_epochs"] and "int8" not in afresh:
        lines += ["", "No int8 row trained afresh: the run that measured this model predates that row."]
    return lines + [""]


def _change(value) -> str:
    return "–" if value is None else f"{100 * value:+.2f}%"


def _activation_lines(record: dict) -> list[str]:
    ranges = record.get("activation_ranges")
    if not ranges:
        return []
    lines = [
        "## What int8 has to represent: the input range of each linear layer",
        "",
        f"Over {ranges['texts']} item texts ({ranges['tokens']} real tokens), every lower layer. Dynamic quantisation "
        "gives each input tensor one scale: with the largest value r times the median, typical values are rounded "
        "in steps of about r/127 of their own size (below one step from r ~ 127 on).",
        "",
        "| linear layer | largest abs input | median abs input | largest / median |",
        "|---|---:|---:|---:|",
    ]
    for kind, row in ranges["kinds"].items():
        lines.append(f"| {kind} | {row['max_abs']} | {row['median_abs']} | {row['max_over_median']} |")
    separation = record.get("state_separation")
    if separation:
        lines += [
            "",
            f"Whether int8 states still tell items apart ({separation['items']} items, pooled states): two different "
            f"items' fp32 states have cosine {separation['fp32_between_items_cosine']} on average; an item's int8 "
            f"state has cosine {separation['int8_to_fp32_same_item_cosine']} with its own fp32 state; and "
            f"{100 * separation['int8_nearest_is_own_share']:.0f}% of int8 states are nearest to their own item's "
            "fp32 state.",
        ]
    return lines + [""]


def _code_line(record: dict) -> list[str]:
    settings = ", ".join(f"`{key}={value}`" for key, value in record["settings"].items())
    code = record.get("code")
    if not code:
        return [f"Settings of the measuring run: {settings}.", ""]
    versions = ", ".join(f"{k} {v}" for k, v in (code.get("versions") or {}).items())
    dirty = " + uncommitted changes" if code.get("git_dirty") else ""
    return [
        f"Code: commit `{(code.get('git_commit') or 'unknown')[:10]}`{dirty}, plugin code hash "
        f"`{(code.get('code_hash') or '')[:10]}`; {versions}. Settings of the measuring run: {settings}.",
        "",
    ]


def _phase_run(name: str, phase: dict, record: dict) -> str:
    """The record a phase ran in: its tag, or for accuracy phases of records from before phases were tagged, the
    source that holds the model (the epoch estimate went with the first)."""
    if phase.get("run"):
        return f"`{phase['run']}`"
    sources = accuracy_sources(record)
    if name.startswith(ACCURACY_PHASES) and sources:
        model = name.removeprefix("accuracy ")
        holding = [source for source in sources if model in (source.get("models") or [])]
        return f"`{(holding or sources)[0]['record']}`"
    return "this one"


def _machine_lines(record: dict) -> list[str]:
    machine = record["machine"]
    lines = [
        "## Machine",
        "",
        *_code_line(record),
        f"{machine['cpus']} CPUs ({machine['processor'] or 'x86_64'}), {machine['platform']}, torch {machine['torch']} "
        f"({machine['threads']} threads, quantized engine {machine['quantized_engine']}). The machine may be shared: "
        "the cores other processes kept busy during each phase (the machine's CPU time less this run's, over the phase's "
        "wall time), the load average (1, 5, 15 min) and the busiest other processes before and after.",
        "",
        "| phase | run | s | other processes' cores | load before | load after | busiest other processes before |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for name, phase in record["phases"].items():
        other = phase.get("other_cores")
        run = _phase_run(name, phase, record)
        lines.append(
            f"| {name} | {run} | {phase['seconds']} | {'–' if other is None else other} | "
            f"{phase['before']['load_average']} | "
            f"{phase['after']['load_average']} | "
            f"{', '.join(phase['before']['busiest_other_processes'][:3]) or 'none seen'} |"
        )
    return lines + [""]
