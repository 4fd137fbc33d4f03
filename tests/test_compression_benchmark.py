"""The compression benchmark's measurements on a tiny random model: rates and counts that must hold whatever the
machine's speed, the encoding timed from a fresh computation, and the report's sentence on what ran beside it."""

import os
import shutil

import pytest
import torch
from conftest import TINY_SLICE

from recbole_m6rec.benchmarks.compression_accuracy import early_exit_layers
from recbole_m6rec.benchmarks.compression_report import _sharing_sentence
from recbole_m6rec.benchmarks.compression_speed import (
    activation_ranges,
    encode_items,
    matmul_rates,
    paired_encoding,
    state_separation,
)

SETTINGS = {"late_interaction_layers": 2, "segment_tokens": 4, "text_max_tokens": 32, "encode_batch_size": 8}
# lengths differ within a batch (5 of them in 24 texts, 8 a batch): length-sorted batches still pad
TEXTS = [""] + [f"Movie {i}, a {'comedy' if i % 2 else 'drama'}" + " and more" * (i % 5) for i in range(24)]


def test_early_exit_steps_are_distinct_and_start_with_every_layer():
    assert early_exit_layers(28) == [28, 21, 14, 7]
    assert early_exit_layers(2) == [2, 1]
    assert early_exit_layers(1) == [1]


def test_matmul_rates_cover_every_shape_and_their_mix():
    rates = matmul_rates(rows=16, shapes=[(32, 64), (64, 32)], repeats=1)
    assert [(s["K"], s["N"]) for s in rates["shapes"]] == [(32, 64), (64, 32)]
    for shape in rates["shapes"]:
        assert shape["fp32_gflops"] > 0 and shape["int8_linear_gflops"] > 0
    mix = rates["layer_mix_gflops"]
    low = min(s["fp32_gflops"] for s in rates["shapes"])
    high = max(s["fp32_gflops"] for s in rates["shapes"])
    assert low * 0.99 <= mix["fp32"] <= high * 1.01  # total FLOPs over total time lies between the shapes' rates


@pytest.mark.parametrize("quantize, layers", [("none", None), ("int8", None), ("none", 1)])
def test_item_encoding_is_timed_from_a_fresh_computation_with_its_counts(tmp_path, quantize, layers):
    result = encode_items("tiny-random-llama", SETTINGS, TEXTS, layers, quantize, str(tmp_path))
    assert result["items"] == len(TEXTS) - 1 and result["items_per_s"] > 0
    assert result["item_layers"] == (layers or result["lower_layers"])
    assert 0 <= result["padding_share"] < 1 and result["valid_tokens"] < result["padded_tokens"]
    assert result["executed_gflops"] >= result["useful_gflops"] > 0
    assert all(seconds >= 0 for name, seconds in result["split_s"].items() if name != "rest")
    assert sum(result["split_s"].values()) == pytest.approx(result["seconds"], abs=0.05)
    with pytest.raises(RuntimeError, match="from a cache"):  # the same states again: a timing would be a cache read
        encode_items("tiny-random-llama", SETTINGS, TEXTS, layers, quantize, str(tmp_path))


def test_paired_encoding_alternates_both_settings_on_the_same_batches():
    torch.manual_seed(0)
    result = paired_encoding("tiny-random-llama", SETTINGS, TEXTS, n_batches=2, rounds=2)
    assert result["batches"] == 2 and 2 <= result["rows"] <= 2 * SETTINGS["encode_batch_size"]
    assert len(result["seconds_fp32"]) == len(result["seconds_int8"]) == 2 and result["int8_speedup_median"] > 0


def test_activation_ranges_cover_every_linear_kind_over_real_tokens_only():
    result = activation_ranges("tiny-random-llama", SETTINGS, TEXTS, n_texts=16)
    assert result["texts"] == 16 and 0 < result["tokens"] < 16 * 32
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(result["kinds"])
    for row in result["kinds"].values():
        assert row["max_abs"] >= row["median_abs"] > 0
        assert row["max_over_median"] == pytest.approx(row["max_abs"] / row["median_abs"], rel=0.01)


def test_state_separation_compares_each_item_with_itself_and_the_others():
    result = state_separation("tiny-random-llama", SETTINGS, TEXTS, n_texts=20)
    assert result["items"] == 20
    assert -1 <= result["fp32_between_items_cosine"] < 1 and 0 < result["int8_to_fp32_same_item_cosine"] <= 1
    assert 0 <= result["int8_nearest_is_own_share"] <= 1
    # int8 moves a state less than the distance between two items on this model: most stay nearest to themselves
    assert result["int8_to_fp32_same_item_cosine"] > result["fp32_between_items_cosine"]


def _record(other_cores=None, loads=(2.0, 2.1)):
    phase = {
        "seconds": 10.0,
        "before": {"load_average": [loads[0], 1.0, 1.0], "busiest_other_processes": []},
        "after": {"load_average": [loads[1], 1.0, 1.0], "busiest_other_processes": []},
    }
    if other_cores is not None:
        phase["other_cores"] = other_cores
    return {"settings": {"threads": 2}, "phases": {"matmul rates": phase}}


def test_the_report_says_whether_other_jobs_ran_beside_it():
    assert _sharing_sentence(_record(other_cores=0.05)).startswith("Nothing else ran beside")
    shared = _sharing_sentence(_record(other_cores=1.4))
    assert "Other jobs shared this CPU" in shared and "1.4 to 1.4 cores" in shared
    # older records without the measured cores: the load average against the run's own threads
    assert "stayed within" in _sharing_sentence(_record(loads=(2.0, 2.3)))
    assert "load average reached 4.2" in _sharing_sentence(_record(loads=(4.2, 2.0)))


def test_the_summary_names_each_setting_for_readme_figures():
    from recbole_m6rec.benchmarks.compression_report import summary

    def encoding(quantize, layers, items_per_s):
        return {
            "quantize": quantize,
            "item_layers": layers,
            "lower_layers": 4,
            "items_per_s": items_per_s,
            "useful_gflops": 20.0,
        }

    def accuracy(model):
        rows = [
            {"setting": "fp32", "base": "trained", "valid": 0.1, "test": 0.09},
            {"setting": "fp32", "base": "short", "valid": 0.08, "test": 0.07},
            {"setting": "int8", "base": "trained", "valid_change": -0.004, "test_change": 0.002},
            {"setting": "early exit k=2", "base": "trained", "valid_change": -0.5, "test_change": -0.4},
            {"setting": "early exit k=2", "base": "short", "valid_change": -0.05, "test_change": -0.03},
        ]
        return {"model": model, "rows": rows}

    record = {
        "settings": {"plm": "p"},
        "accuracy_plm": "p",
        "encoding": [encoding("none", 4, 10.0), encoding("int8", 4, 15.0), encoding("none", 2, 19.0)],
        "matmul": {"layer_mix_gflops": {"fp32": 40.0, "int8_linear": 60.0}},
        "paired_encoding": {"int8_speedup_median": 1.4},
        "latency": {"median_fp32": 900.0, "median_int8": 600.0, "int8_speedup_median": 1.5},
        "accuracy": [accuracy("M6Rec"), accuracy("M6RecCTR")],
    }
    out = summary(record)
    assert out["encoding_int8_speedup"] == 1.5 and out["encoding_fp32_share_of_matmul"] == 0.5
    assert out["early_exit_encoding"] == [{"layers": 2, "items_per_s": 19.0, "speedup": 1.9}]
    assert "encoding_compiled_speedup" not in out  # records from before the compiled phase
    record["compiled_encoding"] = {
        "compiled_speedup_median": 1.25,
        "compiled_useful_gflops": 34.0,
        "compile_and_first_pass_s": 99.0,
        "seconds_compiled": [40.0, 42.0, 41.0],
    }
    compiled = summary(record)
    assert compiled["encoding_compiled_speedup"] == 1.25 and compiled["encoding_compiled_share_of_matmul"] == 0.85
    assert compiled["encoding_compile_s"] == 58.0  # the first pass less a compiled pass
    assert (out["m6rec_fp32_valid"], out["m6rec_fp32_short_valid"]) == (0.1, 0.08)
    assert out["m6rec_int8_valid_change"] == -0.004 and out["ctr_int8_test_change"] == 0.002
    assert out["m6rec_exit2_valid_change"] == -0.5 and out["m6rec_exit2_afresh_valid_change"] == -0.05


def test_accuracy_from_an_earlier_record_keeps_its_settings_and_phases_and_says_so(tmp_path):
    import json

    from recbole_m6rec.benchmarks.compression_sources import source_lines, take_accuracy

    settings = {
        "accuracy_plm": "auto",
        "max_epoch_minutes": 15.0,
        "epochs": 3,
        "retrain_epochs": 1,
        "accuracy_threads": 1,
    }
    phase = {"seconds": 1.0, "before": {}, "after": {}}
    earlier = {
        "settings": {**settings, "plm": "p"},
        "machine": {"start": {"load_average": [3.0, 2.0, 1.0]}},
        "phases": {"matmul rates": phase, "epoch estimate": phase, "accuracy M6Rec": phase},
        "accuracy_plm": "p",
        "accuracy": [{"model": "M6Rec", "rows": []}],
    }
    earlier_file = tmp_path / "record.json"
    earlier_file.write_text(json.dumps(earlier))
    record = {"settings": {**settings, "epochs": 9, "plm": "p"}, "phases": {"matmul rates": {"seconds": 2.0}}}
    assert take_accuracy(record, str(earlier_file)) == earlier["accuracy"] and record["settings"]["epochs"] == 3
    assert set(record["phases"]) == {"matmul rates", "epoch estimate", "accuracy M6Rec"}
    assert record["phases"]["matmul rates"] == {"seconds": 2.0}  # this run's speed phases stay its own
    assert "M6Rec comes from an earlier run" in " ".join(source_lines(record))
    # a run cut short after M6Rec: its saved phase results still count
    cut = {**earlier, "accuracy": None, "results": {"accuracy M6Rec": earlier["accuracy"][0]}}
    earlier_file.write_text(json.dumps(cut))
    assert take_accuracy(record, str(earlier_file)) == earlier["accuracy"]
    assert [source["models"] for source in record["accuracy_sources"]] == [["M6Rec"]]
    earlier_file.write_text(json.dumps({**earlier, "accuracy": None}))
    with pytest.raises(ValueError, match="has no accuracy part"):
        take_accuracy(record, str(earlier_file))


def _record_file(tmp_path, name: str, record: dict) -> str:
    import json

    path = tmp_path / name
    path.write_text(json.dumps(record))
    return str(path)


def test_results_taken_from_a_run_that_took_them_keep_their_first_origin(tmp_path):
    from recbole_m6rec.benchmarks.compression_sources import take_accuracy

    machine = {"start": {"load_average": [1.0, 1.0, 1.0]}}
    settings = {"accuracy_plm": "p", "max_epoch_minutes": 1.0, "epochs": 1, "retrain_epochs": 1, "accuracy_threads": 1}
    first = _record_file(
        tmp_path,
        "first.json",
        {"settings": settings, "machine": machine, "phases": {}, "accuracy": [{"model": "M6Rec"}]},
    )
    # the second run took M6Rec from the first and measured M6RecCTR itself
    second_record = {
        "settings": settings,
        "machine": {"start": {"load_average": [2.0, 2.0, 2.0]}},
        "phases": {},
        "code": {"git_commit": "abc"},
        "accuracy_source": {"record": first, "started_load": [1.0], "code": {}, "models": ["M6Rec"]},
        "accuracy": [{"model": "M6Rec"}, {"model": "M6RecCTR"}],
    }
    second = _record_file(tmp_path, "second.json", second_record)
    record = {"settings": {}, "phases": {}}
    take_accuracy(record, second)
    origins = {source["record"]: source["models"] for source in record["accuracy_sources"]}
    assert origins == {first: ["M6Rec"], second: ["M6RecCTR"]}
    assert record["accuracy_sources"][1]["code"]["git_commit"] == "abc"
    # records from before phases were tagged: an accuracy phase is credited to the source holding its model
    from recbole_m6rec.benchmarks.compression_report import _phase_run

    untagged = {"accuracy_sources": record["accuracy_sources"]}
    assert _phase_run("accuracy M6RecCTR", {}, untagged) == f"`{second}`"
    assert _phase_run("accuracy M6Rec", {}, untagged) == f"`{first}`"
    assert _phase_run("matmul rates", {}, untagged) == "this one"


def test_speed_from_an_earlier_record_keeps_its_measurements_settings_and_phases_and_says_so(tmp_path):
    from recbole_m6rec.benchmarks.compression_report import _sharing_sentence
    from recbole_m6rec.benchmarks.compression_sources import SPEED_RESULTS, SPEED_SETTINGS, source_lines, take_speed

    quiet = {"seconds": 1.0, "other_cores": 0.0}
    earlier = {
        "settings": {key: f"earlier {key}" for key in SPEED_SETTINGS} | {"epochs": 3},
        "machine": {"start": {"load_average": [0.1, 0.1, 0.1]}},
        "phases": {"matmul rates": quiet, "accuracy M6Rec": {"seconds": 9.0, "other_cores": 1.5}},
        "code": {"git_commit": "0123456789abcdef", "git_dirty": False, "code_hash": "h"},
        **{key: {"measured": key} for key in SPEED_RESULTS},
    }
    record = {
        "settings": {"threads": 1, "epochs": 9},
        "phases": {"accuracy M6RecCTR": {"seconds": 5.0, "other_cores": 1.2}},
    }
    take_speed(record, _record_file(tmp_path, "speed.json", earlier))
    assert all(record[key] == {"measured": key} for key in SPEED_RESULTS)
    assert record["settings"]["threads"] == "earlier threads" and record["settings"]["epochs"] == 9
    assert set(record["phases"]) == {"matmul rates", "accuracy M6RecCTR"}  # the earlier run's training stays there
    assert record["phases"]["matmul rates"]["run"].endswith("speed.json")
    assert "run" not in record["phases"]["accuracy M6RecCTR"]  # this run's own phase
    assert record["speed_source"]["code"]["git_commit"] == "0123456789abcdef"
    assert "speed part comes from an earlier run" in " ".join(source_lines(record))
    # load beside training does not make the speed measurements loaded
    assert _sharing_sentence(record).startswith("Nothing else ran beside the speed measurements")
    with pytest.raises(ValueError, match="lacks latency"):
        cut = {key: value for key, value in earlier.items() if key != "latency"}
        take_speed(record, _record_file(tmp_path, "cut.json", cut))
    with pytest.raises(ValueError, match="--speed_from=.*nowhere.json: no such file"):
        take_speed(record, str(tmp_path / "nowhere.json"))
    # a run that took its speed part from this one: taking from it again credits the run that measured
    relay = {
        **earlier,
        "phases": record["phases"],
        "speed_source": record["speed_source"],
        "code": {"git_commit": "fedcba9876543210"},
    }
    again = {"settings": {}, "phases": {}}
    take_speed(again, _record_file(tmp_path, "relay.json", relay))
    assert again["speed_source"]["code"]["git_commit"] == "0123456789abcdef"
    assert again["phases"]["matmul rates"]["run"].endswith("speed.json")


def test_accuracy_part_trains_once_and_compares_every_setting_with_fp32_trained_alike(tmp_path, capsys, monkeypatch):
    """The accuracy part end to end on the tiny model: one fp32 training, int8 and the early exit evaluated with its
    parameters and trained afresh, each row's change taken against the fp32 row of its own training budget."""
    from recbole_m6rec.benchmarks import compression_accuracy
    from recbole_m6rec.benchmarks.compression_accuracy import accuracy

    # M6Rec without its accuracy levers: on the tiny random model its best epoch is the first, so the two fp32 bases
    # below differ (with the levers the second epoch is the best, and both bases are the same model)
    # on the tests' slice of ml-100k (users with at most 40 ratings): the logic is the same, in a sixth of the time
    before_levers = {"use_item_id_embedding": False, "item_adapter_rank": 0, "window_stride": None, **TINY_SLICE}
    configured = compression_accuracy.plugin_config
    monkeypatch.setattr(
        compression_accuracy,
        "plugin_config",
        lambda *args, **overrides: configured(*args, **{**before_levers, **overrides}),
    )
    result = accuracy("M6Rec", "tiny-random-llama", 2, 2, str(tmp_path / "text"), 2)
    rows = {(row["setting"], row["base"]): row for row in result["rows"]}
    assert list(rows) == [
        ("fp32", "trained"),
        ("fp32", "short"),
        ("int8", "trained"),
        ("int8", "short"),
        ("early exit k=1", "trained"),
        ("early exit k=1", "short"),
    ]
    shown = capsys.readouterr().out
    # the short fp32 row holds the parameters of the last epoch, the trained one the best (here the first) epoch's
    assert f"M6Rec fp32 epoch 2/2: valid ndcg@10 {rows[('fp32', 'short')]['valid']:.4f}" in shown
    assert rows[("fp32", "short")]["valid"] != rows[("fp32", "trained")]["valid"]  # so the two bases differ
    for (_setting, base), row in rows.items():
        fp32 = rows[("fp32", base)]
        assert row["valid_change"] == pytest.approx((row["valid"] - fp32["valid"]) / fp32["valid"], abs=1e-4)
    assert len(result["epoch_seconds"]) == 2 and result["metric"] == "ndcg@10"
    assert "M6Rec int8: training afresh for 2 epochs" in shown


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile on a CPU needs a C++ compiler"
)
def test_compiled_encoding_matches_eager_states_and_times_both_on_the_same_texts():
    """``torch.compile`` of the tiny model's lower layers: states equal eager ones to float tolerance, both timed
    over every text, with the FLOPs the eager encoding counts (real tokens only)."""
    from recbole_m6rec.benchmarks.compression_compiled import compiled_encoding
    from recbole_m6rec.benchmarks.compression_speed import _layer_flops_per_token, segment_encoder, useful_flops

    result = compiled_encoding("tiny-random-llama", SETTINGS, TEXTS, rounds=1)
    assert result["items"] == len(TEXTS) - 1 and result["compiled_items_per_s"] > 0
    assert result["max_state_diff_over_max_state"] < 1e-4
    assert len(result["seconds_eager"]) == len(result["seconds_compiled"]) == 1
    assert result["eager_useful_gflops"] > 0 and result["compiled_speedup_median"] > 0
    encoder = segment_encoder("tiny-random-llama", SETTINGS, None)
    lengths = [int(n) for n in encoder.tokenize(TEXTS).lengths]
    k, d = encoder.item_layers, encoder.stack.hidden_size
    expected = _layer_flops_per_token(encoder.stack, k) * sum(lengths) + 4 * d * k * sum(n * n for n in lengths)
    assert useful_flops(encoder, encoder.tokenize(TEXTS)) == expected


def test_the_command_line_refuses_combinations_that_would_measure_nothing_or_be_ignored(tmp_path):
    from recbole_m6rec.benchmarks.compression import parse_args

    record = _record_file(tmp_path, "r.json", {})
    with pytest.raises(SystemExit):
        parse_args(["--report=x", f"--from_record={record}", f"--speed_from={record}"])
    with pytest.raises(SystemExit):
        parse_args(["--report=x", f"--speed_from={record}", "--accuracy_models="])
    with pytest.raises(SystemExit):
        parse_args(["--report=x", "--compile_rounds=-1"])
    assert parse_args(["--report=x", f"--speed_from={record}"]).accuracy_models == ["M6Rec", "M6RecCTR"]


def test_an_unfinished_records_saved_results_count_beside_its_finished_ones():
    from recbole_m6rec.benchmarks.compression_sources import earlier_accuracy

    record = {"accuracy": [{"model": "M6Rec"}], "results": {"accuracy M6RecCTR": {"model": "M6RecCTR"}}}
    assert [result["model"] for result in earlier_accuracy(record)] == ["M6Rec", "M6RecCTR"]
