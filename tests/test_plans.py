"""The committed CPU benchmark plans (`configs/*.yaml`) are valid runs before a campaign starts: a typo in a row or
a search key would otherwise surface hours into a campaign, or never (RecBole reads an unknown key as None).
The GPU plans have their own test in test_gpu_campaign.py."""

import sys
from pathlib import Path

import pytest

from recbole_m6rec import registry
from recbole_m6rec.benchmarks import tuning
from recbole_m6rec.benchmarks.borrowed_tuning import NotTunedYet, borrowed_record, borrows
from recbole_m6rec.benchmarks.plan import job_spec, load_plan
from recbole_m6rec.config import PluginConfig

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CPU_PLANS = sorted(path.name for path in CONFIGS_DIR.glob("*.yaml") if not path.name.startswith("gpu_"))


def first_point(space: dict) -> dict:
    """One point of a checked search space: each key at its first choice or its lower bound."""
    return {key: spec[1] for key, spec in space.items()}


def check_row(plan: dict, name: str) -> None:
    """Build the row's config, at one point of its search space if it has one, and, for a plugin model on a
    language model, validate its settings the way the model's constructor does."""
    row = plan["rows"][name]
    point = {}
    if "search" in row:
        point = first_point(tuning.validate_search(name, row["search"], plan["tuning"].get("algo", "random")))
    spec = job_spec(plan, name, plan["seeds"][0], overrides=point)
    config = PluginConfig(model=spec["model"], dataset=spec["dataset"], config_dict=spec["config_dict"])
    for key in point:  # a searched key must be a setting with a default somewhere, or RecBole ignores it silently
        assert key in config.internal_config_dict, f"row '{name}': search key '{key}' is no setting of {spec['model']}"
    settings_class = getattr(registry.get_model(spec["model"]), "settings_class", None)
    if settings_class is not None:
        settings_class.from_config(config)


@pytest.mark.parametrize("plan_file", CPU_PLANS)
def test_committed_plan_rows_are_valid_runs(plan_file, monkeypatch):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    plan = load_plan(str(CONFIGS_DIR / plan_file), {}, None, None)
    if "tuning" in plan:
        tuning.validate_tuning(plan)
    for name in plan["rows"]:
        check_row(plan, name)
    if borrows(plan):  # the source report's tuning, where it has run, is the one the plan states
        monkeypatch.chdir(CONFIGS_DIR.parent)
        for name in [name for name, row in plan["rows"].items() if row.get("search")]:
            try:
                borrowed_record(plan, name)
            except NotTunedYet:
                pass


def test_a_misspelt_row_key_is_caught(monkeypatch):
    """The checks above can fail: a typo in a row's M6Rec key, a value M6Rec refuses, a search key RecBole ignores."""
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    plan = load_plan(str(CONFIGS_DIR / "levers_ml-100k.yaml"), {}, None, None)
    plan["rows"]["M6Rec-itemadapter"] = {"model": "M6Rec", "item_adaptor_rank": 256}
    with pytest.raises(ValueError, match="item_adapter_rank"):
        check_row(plan, "M6Rec-itemadapter")
    plan["rows"]["M6Rec-bad-window"] = {"model": "M6Rec", "window_stride": 0}
    with pytest.raises(ValueError, match="window_stride"):
        check_row(plan, "M6Rec-bad-window")
    plan = load_plan(str(CONFIGS_DIR / "bench_ml-100k.yaml"), {}, None, None)
    plan["rows"]["SASRec"]["search"]["hiden_size"] = plan["rows"]["SASRec"]["search"].pop("hidden_size")
    with pytest.raises(AssertionError, match="search key 'hiden_size' is no setting of SASRec"):
        check_row(plan, "SASRec")


def write_plan(tmp_path, rows: dict, seeds=(2020, 2021)) -> str:
    import yaml

    path = tmp_path / "plan.yaml"
    path.write_text(
        yaml.safe_dump({"dataset": "ml-100k", "seeds": list(seeds), "common": {}, "rows": rows}, sort_keys=False)
    )
    return str(path)


def test_a_row_with_its_own_seeds_runs_those_and_the_others_the_plans(tmp_path):
    from recbole_m6rec.benchmarks.plan import jobs

    rows = {
        "Pop": {"model": "MostPop"},
        "Key": {"model": "BPR", "seeds": [2020, 2021, 2022]},
        "One": {"model": "BPR", "seeds": [2021]},
    }
    plan = load_plan(write_plan(tmp_path, rows), {}, None, None)
    # seed by seed, so that an interrupted plan has every row on its first seed; the extra seed comes last
    assert jobs(plan) == [("Pop", 2020), ("Key", 2020), ("Pop", 2021), ("Key", 2021), ("One", 2021), ("Key", 2022)]
    # a row's seeds are not a setting: listing them leaves the row's finished results valid
    plain = load_plan(write_plan(tmp_path, {"Key": {"model": "BPR"}}), {}, None, None)
    assert job_spec(plan, "Key", 2020)["config_hash"] == job_spec(plain, "Key", 2020)["config_hash"]
    assert "seeds" not in job_spec(plan, "Key", 2020)["config_dict"]
    # --seeds replaces every row's seeds, as it does the plan's
    cut = load_plan(write_plan(tmp_path, rows), {}, None, [2020])
    assert jobs(cut) == [("Pop", 2020), ("Key", 2020), ("One", 2020)]


@pytest.mark.parametrize("seeds", [[], 2020, [2020, "2021"], [2020, 2020], [True]])
def test_a_row_seed_list_that_is_not_distinct_integers_is_refused(tmp_path, seeds):
    path = write_plan(tmp_path, {"Key": {"model": "BPR", "seeds": seeds}})
    with pytest.raises(ValueError, match=r"row 'Key': seeds must|row 'Key': seeds lists a seed twice"):
        load_plan(path, {}, None, None)


def write_plan_with(tmp_path, rows: dict, **keys) -> str:
    import yaml

    plan = {"dataset": "ml-100k", "seeds": [2020], "common": {}, "rows": rows, **keys}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return str(path)


ROWS = {"A": {"model": "BPR"}, "B": {"model": "MostPop"}, "C": {"model": "BPR"}}


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([["A", "B"]], "pairs must map a name to \\[row, reference\\]"),
        ({"x": ["A"]}, "pair 'x' must be \\[row, reference\\]"),
        ({"x": "A B"}, "pair 'x' must be \\[row, reference\\]"),
        ({"x": ["A", "Z"]}, "pair 'x' names \\['Z'\\], not rows of the plan; known rows: A, B, C"),
        ({"x": ["A", "A"]}, "pair 'x' compares row 'A' with itself"),
        ({"a over b": ["A", "B"]}, "pair name 'a over b' must be letters, digits, '-' and '_' only"),
        ({"a/b": ["A", "B"]}, "pair name 'a/b' must be letters"),
        ({7: ["A", "B"]}, "pair name 7 must be letters"),
    ],
)
def test_a_malformed_pair_is_refused_naming_it(tmp_path, pairs, message):
    with pytest.raises(ValueError, match=message):
        load_plan(write_plan_with(tmp_path, ROWS, pairs=pairs), {}, None, None)


def test_pairs_follow_the_rows_a_run_keeps_and_leave_the_settings_alone(tmp_path):
    pairs = {"a-over-b": ["A", "B"], "c_over_a": ["C", "A"]}
    plan = load_plan(write_plan_with(tmp_path, ROWS, pairs=pairs), {}, None, None)
    assert plan["pairs"] == pairs
    assert load_plan(write_plan_with(tmp_path, ROWS, pairs=pairs), {}, ["A", "C"], None)["pairs"] == {
        "c_over_a": ["C", "A"]
    }
    plain = load_plan(write_plan_with(tmp_path, ROWS), {}, None, None)
    assert plain["pairs"] == {}
    assert job_spec(plan, "A", 2020)["config_hash"] == job_spec(plain, "A", 2020)["config_hash"]
    labelled = {"eval_args": {"mode": "labeled"}}  # a click-through plan's pairs compare AUC differences
    assert load_plan(write_plan_with(tmp_path, ROWS, pairs=pairs, common=labelled), {}, None, None)["pairs"] == pairs


COLD = {"metrics": ["Recall", "NDCG"], "topk": [10, 100], "cold_items": 0.1}


@pytest.mark.parametrize(
    "table_metrics, common, message",
    [
        (
            "ndcg@10",
            COLD,
            "table_metrics must be a list of metric names, e.g. \\[recall@10, recall@100\\]; got 'ndcg@10'",
        ),
        (["NDCG@10"], COLD, "table_metrics names \\['NDCG@10'\\], not accuracy metrics the plan measures"),
        # coverage has its own table in the report: the main table would leave it out
        (["itemcoverage@10"], {"metrics": ["Recall", "ItemCoverage"]}, "names \\['itemcoverage@10'\\], not accuracy"),
        (
            ["ndcg@20"],
            COLD,
            "names \\['ndcg@20'\\], not accuracy metrics .* known: recall@10, recall@100, ndcg@10, ndcg@100, cold_",
        ),
        (
            ["cold_recall@10"],
            {"metrics": ["Recall"], "topk": [10]},
            "names \\['cold_recall@10'\\], not accuracy metrics .*known: recall@10$",
        ),
        (["recall@10", "recall@10"], COLD, "table_metrics lists a metric twice"),
    ],
)
def test_table_metrics_must_be_metrics_the_plan_measures(tmp_path, table_metrics, common, message):
    path = write_plan_with(tmp_path, ROWS, table_metrics=table_metrics, common=common)
    with pytest.raises(ValueError, match=message):
        load_plan(path, {}, None, None)


def test_table_metrics_leave_the_settings_alone(tmp_path):
    shown = ["ndcg@10", "cold_recall@100", "warm_recall@100"]
    plan = load_plan(write_plan_with(tmp_path, ROWS, table_metrics=shown, common=COLD), {}, None, None)
    plain = load_plan(write_plan_with(tmp_path, ROWS, common=COLD), {}, None, None)
    assert (plan["table_metrics"], plain["table_metrics"]) == (shown, [])
    assert job_spec(plan, "A", 2020)["config_hash"] == job_spec(plain, "A", 2020)["config_hash"]
    # without metrics / topk in common, RecBole's defaults are what a run measures
    assert load_plan(write_plan_with(tmp_path, ROWS, table_metrics=["hit@10"]), {}, None, None)["table_metrics"] == [
        "hit@10"
    ]


def test_the_settings_hash_follows_the_dataset_yaml_a_run_reads_and_the_plans_config_files(tmp_path):
    """Results are reused by their settings hash: it must change when the files the run reads do."""
    import shutil

    from recbole_m6rec.datasets import DATASETS_DIR

    own = tmp_path / "yamls"
    own.mkdir()
    shutil.copy(DATASETS_DIR / "ml-100k.yaml", own / "ml-100k.yaml")
    extra = tmp_path / "extra.yaml"
    extra.write_text("MAX_ITEM_LIST_LENGTH: 20\n")
    rows = {"Key": {"model": "BPR", "dataset_yaml_dirs": str(own)}}
    plan = load_plan(write_plan_with(tmp_path, rows, config_files=[str(extra)]), {}, None, None)
    before = job_spec(plan, "Key", 2020)["config_hash"]
    with open(own / "ml-100k.yaml", "a") as handle:
        handle.write("\nuser_inter_num_interval: '[10,inf)'\n")  # another split: its results must run again
    after_dataset = job_spec(plan, "Key", 2020)["config_hash"]
    extra.write_text("MAX_ITEM_LIST_LENGTH: 30\n")
    after_extra = job_spec(plan, "Key", 2020)["config_hash"]
    assert len({before, after_dataset, after_extra}) == 3
    extra.unlink()
    with pytest.raises(ValueError, match="config_files names '.*extra.yaml', which is not a file"):
        job_spec(plan, "Key", 2020)


def test_a_row_may_not_choose_its_own_validation_metric(tmp_path):
    rows = {"A": {"model": "BPR", "valid_metric": "Recall@10"}}
    with pytest.raises(ValueError, match="row 'A' sets valid_metric; .* set it once in `common`"):
        load_plan(write_plan_with(tmp_path, rows), {}, None, None)
