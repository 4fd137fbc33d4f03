"""The step-time benchmark on the tiny backbone: padded catalogues, one row per (catalogue, loss), the report files."""

import json

import pytest
import torch

from recbole_m6rec.benchmarks import step_time

MODEL = "M6Rec"  # the model of conftest's make_config / data / make_model


def test_padded_catalogue_reuses_the_real_items_segment_states(data, make_model):
    model = make_model()
    real = model.n_items - 1
    states = model._item_segments.states.clone()
    step_time.pad_catalogue(model, real + 5)
    assert model.n_items == real + 6 and len(model.cold.seen) == real + 6
    assert torch.equal(model._item_segments.states[real + 1], states[1])
    assert torch.equal(model._item_segments.states[real + 5], states[5])
    assert model.item_vectors().shape[0] == real + 6
    with pytest.raises(ValueError, match=r"smaller than the dataset's"):
        step_time.pad_catalogue(model, 3)


def test_the_benchmark_writes_one_row_per_catalogue_and_loss_and_its_command(tmp_path, no_foreign_argv):
    folder = tmp_path / "report"
    argv = [
        f"--report={folder}",
        "--plm",
        "tiny-random-llama",
        "--sizes",
        "1682",
        "3000",
        "--losses",
        "CE",
        "BPR",
        "sampled_softmax",
        "--negatives",
        "16",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--batch_size",
        "8",
        "--max_history",
        "10",
        "--precisions",
        "float32",
        "bfloat16",
    ]
    step_time.main(argv)
    record = json.loads((folder / "results.json").read_text())
    assert len(record["results"]) == 2 * 3 * 2  # catalogues x losses x precisions
    rows = {(r["items"], r["loss"]): r for r in record["results"] if r["precision"] == "float32"}
    assert set(rows) == {(n, loss) for n in (1682, 3000) for loss in ("CE", "BPR", "sampled_softmax")}
    assert rows[(1682, "CE")]["items_scored"] == 1682 and rows[(3000, "CE")]["items_scored"] == 3000
    positions = record["settings"]["scored_positions"]
    assert rows[(3000, "BPR")]["items_scored"] <= 2 * positions  # targets and one negative each, never the catalogue
    assert rows[(3000, "sampled_softmax")]["items_scored"] <= positions + 16
    assert all(r["median_s"] > 0 and r["final_loss"] == r["final_loss"] for r in record["results"])
    report = (folder / "report.md").read_text()
    assert record["command"] in report and "--sizes 1682 3000" in record["command"]
    assert "| 3,000 |" in report and "load average" in report
    assert "| items | CE float32 | CE bfloat16 | BPR float32 |" in report and "torch.autocast" in report
    bf16 = {(r["items"], r["loss"]): r for r in record["results"] if r["precision"] == "bfloat16"}
    # bfloat16 really ran under autocast: the same step from the same seed ends at a slightly different loss
    first, first_bf16 = rows[(1682, "CE")]["final_loss"], bf16[(1682, "CE")]["final_loss"]
    assert first_bf16 != first and abs(first_bf16 - first) < 0.05 * abs(first)
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files
