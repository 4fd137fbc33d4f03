"""``config_hash`` counts the plugin's yaml defaults by value, and ``rehash`` carries results hashed the older way
(yaml text) over to it only where their settings are provably today's."""

import json
import re

import pytest

from recbole_m6rec.benchmarks import job, plan, rehash

PLAN = {
    "dataset": "ml-100k",
    "seeds": [2020],
    "tuning": {"trials": 1, "seed": 2020},
    "common": {"epochs": 3},
    "rows": {
        "M6Rec": {"model": "M6Rec"},
        "M6Rec-t05": {"model": "M6Rec", "temperature": 0.05},
        "SASRec": {"model": "SASRec", "search": {"learning_rate": ["choice", 0.001]}},
    },
}
DEFAULTS = "# the defaults\ntemperature: 0.05   # (float) softmax temperature\nadapter_rank: 256\n"


@pytest.fixture
def defaults(tmp_path, monkeypatch):
    """One yaml of defaults in place of the plugin's files, for every model."""
    path = tmp_path / "defaults.yaml"
    path.write_text(DEFAULTS)
    for module in (plan, rehash):
        monkeypatch.setattr(module, "default_files", lambda model, dataset, dataset_yaml_dirs=None: [path])
    return path


def hashes() -> dict[str, str]:
    return {name: plan.job_spec(PLAN, name, 2020)["config_hash"] for name in PLAN["rows"]}


def test_config_hash_counts_defaults_by_value(defaults):
    before = hashes()
    defaults.write_text(DEFAULTS.replace("# the defaults", "# the defaults, reworded").replace("  # (float)", " #"))
    assert hashes() == before  # comments and layout do not count
    defaults.write_text(DEFAULTS.replace("temperature: 0.05", "temperature: 0.07"))
    after = hashes()
    assert after["M6Rec"] != before["M6Rec"]  # a default the row reads
    assert after["M6Rec-t05"] == before["M6Rec-t05"]  # a default the row overrides
    assert plan.job_spec(PLAN, "M6Rec", 2021)["config_hash"] != after["M6Rec"]


def write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_rehash_carries_only_results_whose_settings_are_today(defaults, tmp_path):
    report = tmp_path / "report"
    for name in ("M6Rec", "M6Rec-t05"):
        write(
            report / "results" / f"{name}-seed2020.json",
            {"status": "ok", "config_hash": rehash.text_hash(PLAN, name, 2020)},
        )
    stale = report / "results" / "SASRec-seed2020.json"
    write(stale, {"status": "ok", "config_hash": "0123456789abcdef"})  # settings that are not today's
    params = {"learning_rate": 0.001}
    old_trial = report / "tuning" / "SASRec" / f"trial-{rehash.text_hash(PLAN, 'SASRec', 2020, params)}.json"
    write(old_trial, {"status": "ok", "config_hash": rehash.text_hash(PLAN, "SASRec", 2020, params)})
    write(
        report / "tuning" / "SASRec-tuning.json", {"seed": 2020, "trials": [{"params": params}], "best_params": params}
    )
    partial = job.partial_folder(report / "results" / "M6Rec-t05-seed2020.json")
    write(partial / "partial.json", {"config_hash": rehash.text_hash(PLAN, "M6Rec-t05", 2020), "seed": 2020})

    done = rehash.carry_over(PLAN, report)

    new = hashes()
    assert done["left"] == ["results/SASRec-seed2020.json"]
    assert json.loads(stale.read_text())["config_hash"] == "0123456789abcdef"
    for name in ("M6Rec", "M6Rec-t05"):
        record = json.loads((report / "results" / f"{name}-seed2020.json").read_text())
        assert record["config_hash"] == new[name] and record["config_hash_text"] == rehash.text_hash(PLAN, name, 2020)
    trial_hash = plan.job_spec(PLAN, "SASRec", 2020, params)["config_hash"]
    assert not old_trial.exists()
    assert json.loads((old_trial.parent / f"trial-{trial_hash}.json").read_text())["config_hash"] == trial_hash
    assert json.loads((partial / "partial.json").read_text())["config_hash"] == new["M6Rec-t05"]
    assert len(done["carried"]) == 3 and done["partial"] == ["results/.partial/M6Rec-t05-seed2020"]
    assert rehash.carry_over(PLAN, report) == {"carried": [], "partial": [], "left": ["results/SASRec-seed2020.json"]}

    # settings that changed since: nothing is carried
    for name in ("M6Rec", "M6Rec-t05"):
        write(
            report / "results" / f"{name}-seed2020.json",
            {"status": "ok", "config_hash": rehash.text_hash(PLAN, name, 2020)},
        )
    defaults.write_text(DEFAULTS.replace("adapter_rank: 256", "adapter_rank: 64"))
    assert rehash.carry_over(PLAN, report)["carried"] == []


def test_rehash_refuses_a_missing_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="--report=.*no such folder"):
        rehash.main(["--config_files=configs/bench_ml-100k.yaml", f"--report={tmp_path / 'nope'}"])


def test_a_new_setting_at_its_former_behaviour_carries_results_and_any_other_value_does_not(defaults, tmp_path):
    """``--new_setting key=value``: a key added to the yaml since the results ran, at the value that does what the
    code did before; results are carried where today's settings without the key hash to theirs and the run reads
    the key at that value."""
    rows = {**PLAN["rows"], "M6Rec-pop": {"model": "M6Rec", "popularity_bias": True}}
    with_row = {**PLAN, "rows": rows}
    report = tmp_path / "report"
    params = {"learning_rate": 0.001}
    before = {name: plan.job_spec(with_row, name, 2020)["config_hash"] for name in rows}
    trial_before = plan.job_spec(with_row, "SASRec", 2020, params)["config_hash"]
    for name in rows:
        write(report / "results" / f"{name}-seed2020.json", {"status": "ok", "config_hash": before[name]})
    old_trial = report / "tuning" / "SASRec" / f"trial-{trial_before}.json"
    write(old_trial, {"status": "ok", "config_hash": trial_before})
    write(report / "tuning" / "SASRec-tuning.json", {"seed": 2020, "trials": [{"params": params}]})
    defaults.write_text(DEFAULTS + "popularity_bias: False   # (bool) the new key, off as before\n")
    after = {name: plan.job_spec(with_row, name, 2020)["config_hash"] for name in rows}
    assert all(after[name] != before[name] for name in ("M6Rec", "M6Rec-t05", "SASRec"))  # the yaml gained a key

    done = rehash.carry_over(with_row, report, {"popularity_bias": False})

    for name in ("M6Rec", "M6Rec-t05", "SASRec"):
        record = json.loads((report / "results" / f"{name}-seed2020.json").read_text())
        assert record["config_hash"] == after[name] and "config_hash_text" not in record
        assert record["config_hash_before"] == {"hash": before[name], "new_settings": {"popularity_bias": False}}
    trial_after = plan.job_spec(with_row, "SASRec", 2020, params)["config_hash"]
    assert not old_trial.exists() and (old_trial.parent / f"trial-{trial_after}.json").is_file()
    # a row that sets the key itself kept its hash (a default it overrides does not count): nothing to carry
    assert after["M6Rec-pop"] == before["M6Rec-pop"] and len(done["carried"]) == 4 and done["left"] == []
    # at a value other than the one the rows read, nothing is carried: they ran other settings and rerun
    for name in rows:
        write(report / "results" / f"{name}-seed2020.json", {"status": "ok", "config_hash": before[name]})
    wrong = rehash.carry_over(with_row, report, {"popularity_bias": True})
    assert wrong["carried"] == [] and len(wrong["left"]) == 3


@pytest.mark.parametrize("bad", ["popularity_bias", "=False"])
def test_a_new_setting_must_be_key_equals_value(tmp_path, bad, capsys):
    with pytest.raises(SystemExit):
        rehash.main(["--config_files=configs/bench_ml-100k.yaml", f"--report={tmp_path}", f"--new_setting={bad}"])
    assert "expected KEY=VALUE, e.g. popularity_bias=False" in capsys.readouterr().err


def test_a_new_setting_compares_by_type_and_must_be_read_by_some_row(defaults, tmp_path, capsys):
    defaults.write_text(DEFAULTS + "popularity_bias: False\n")
    older = rehash.hash_before({"popularity_bias": 0})  # 0 == False in Python, but another value in a yaml
    assert older(PLAN, "M6Rec", 2020) is None
    assert rehash.hash_before({"popularity_bias": False})(PLAN, "M6Rec", 2020) is not None
    (tmp_path / "report").mkdir()
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(json.dumps({k: v for k, v in PLAN.items() if k != "tuning"}))
    for option, message in (
        ("popularity_bais=False", "no row of .* reads a setting 'popularity_bais'"),
        ("popularity_bias=[", "the value is not yaml"),
    ):
        with pytest.raises(SystemExit):
            rehash.main([f"--config_files={plan_file}", f"--report={tmp_path / 'report'}", f"--new_setting={option}"])
        assert re.search(message, capsys.readouterr().err)
