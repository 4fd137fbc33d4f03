"""The README's headline tables come from report files: rewriting, and ``--check`` catching a hand-edited number."""

import json
from pathlib import Path

import pytest

from recbole_m6rec.benchmarks import headline

PROVENANCE = {"commit": "0123456789abcdef0123", "dirty": False, "code_hash": "feedfacecafe"}


def _result(row, seed, valid, test, *, provenance=None, status="ok", new_layout=True, epochs=10, hit_cap=None):
    record = {
        "row": row,
        "model": row.split("-")[0],
        "seed": seed,
        "status": status,
        "split_fingerprint": "abcd1234abcd1234",
        "train_seconds": 1.0,
    }
    if new_layout:
        record.update(best_valid_result=valid, test_result=test, epochs_run=epochs)
    else:  # the layout of the reports written before provenance was recorded
        record.update(valid=valid, test=test, extra={"epochs_run": epochs})
    if provenance is not None:
        record["provenance"] = provenance
    if hit_cap is not None:
        record["hit_cap"] = hit_cap
    return record


def _write(folder, name, record):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture
def project(tmp_path):
    """A README with two headline blocks and a reports folder: 'rank' (two seeds, one row without provenance, one
    failed run) and 'ctr' (a labelled plan, default metrics)."""
    rank = tmp_path / "reports" / "rank" / "results"
    _write(
        rank,
        "M6Rec-seed1.json",
        _result(
            "M6Rec",
            1,
            {"ndcg@10": 0.10, "recall@10": 0.20},
            {"NDCG@10": 0.08, "recall@10": 0.16},
            provenance=PROVENANCE,
            hit_cap=True,
        ),
    )
    _write(
        rank,
        "M6Rec-seed2.json",
        _result(
            "M6Rec",
            2,
            {"ndcg@10": 0.12, "recall@10": 0.22},
            {"ndcg@10": 0.10, "recall@10": 0.18},
            provenance=PROVENANCE,
            epochs=7,
            hit_cap=False,
        ),
    )
    _write(
        rank,
        "SASRec-seed1.json",
        _result(
            "SASRec", 1, {"ndcg@10": 0.11, "recall@10": 0.21}, {"ndcg@10": 0.09, "recall@10": 0.17}, new_layout=False
        ),
    )
    _write(rank, "Pop-seed1.json", _result("Pop", 1, {}, {}, status="failed"))
    ctr = tmp_path / "reports" / "ctr" / "results"
    _write(
        ctr,
        "M6RecCTR-seed1.json",
        _result(
            "M6RecCTR",
            1,
            {"auc": 0.75, "logloss": 0.58},
            {"auc": 0.78, "logloss": 0.56},
            provenance={**PROVENANCE, "dirty": True},
        ),
    )
    _write(ctr, "DIN-seed1.json", _result("DIN", 1, {"auc": 0.76, "logloss": 0.57}, {"auc": 0.77, "logloss": 0.57}))
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\nText before.\n\n"
        "<!-- headline:rank metrics=ndcg@10,recall@10 rows=SASRec,M6Rec,Pop -->\nold table\n<!-- /headline:rank -->\n\n"
        "Between.\n\n<!-- headline:ctr -->\n<!-- /headline:ctr -->\n\nText after.\n",
        encoding="utf-8",
    )
    return readme


def _row(text, name):
    return next(line for line in text.splitlines() if line.startswith(f"| {name} |"))


def test_rewrites_the_blocks_from_the_reports(project, capsys):
    assert headline.main(["--readme", str(project)]) == 0
    text = project.read_text(encoding="utf-8")
    assert "old table" not in text
    assert text.startswith(
        "# Title\n\nText before.\n\n<!-- headline:rank metrics=ndcg@10,recall@10 rows=SASRec,M6Rec,Pop -->\n"
    )
    assert "Between.\n" in text and text.endswith("Text after.\n")
    # mean ± standard deviation over the two seeds of valid and test, per metric; epochs with the cap mark; the code
    assert _row(text, "M6Rec") == (
        "| M6Rec | 2 | 0.1100 ± 0.0141 | 0.0900 ± 0.0141 | 0.2100 ± 0.0141 | 0.1700 ± 0.0141 | 10†, 7 | `0123456789` |"
    )
    # the older layout (valid/test, extra.epochs_run) without provenance, nor whether it reached its cap
    assert _row(text, "SASRec") == (
        "| SASRec | 1 | 0.1100 | 0.0900 | 0.2100 | 0.1700 | 10* | " "no provenance (older code) |"
    )
    assert "† = stopped at its epoch cap, * = the result does not record whether it did" in text
    # rows= orders the rows; a row with no finished result says so; the failed run is named
    assert text.index("| SASRec |") < text.index("| M6Rec |") < text.index("| Pop |")
    assert _row(text, "Pop") == "| Pop | 0 | – | – | – | – | – | no finished result |"
    assert "Failed, left out: Pop seed 1." in text
    assert "`abcd1234abcd1234`" in text
    # a labelled plan defaults to AUC and LogLoss, best valid AUC first; a dirty tree is marked
    assert "| row | seeds | valid auc | test auc | valid logloss | test logloss | epochs run | code |" in text
    assert text.index("| DIN |") < text.index("| M6RecCTR |")
    assert "`0123456789` + uncommitted changes (code feedfaceca)" in _row(text, "M6RecCTR")
    assert "no provenance (older code)" in capsys.readouterr().out
    # a second run changes nothing, and --check agrees
    assert headline.main(["--readme", str(project)]) == 0
    assert project.read_text(encoding="utf-8") == text
    assert headline.main(["--readme", str(project), "--check"]) == 0


def test_check_fails_on_a_hand_edited_number(project, capsys):
    headline.main(["--readme", str(project)])
    text = project.read_text(encoding="utf-8")
    edited = text.replace("| M6Rec | 2 | 0.1100 ± 0.0141 | 0.0900 ±", "| M6Rec | 2 | 0.1100 ± 0.0141 | 0.0990 ±")
    assert edited != text
    project.write_text(edited, encoding="utf-8")
    capsys.readouterr()
    assert headline.main(["--readme", str(project), "--check"]) == 1
    err = capsys.readouterr().err
    assert "-| M6Rec | 2 | 0.1100 ± 0.0141 | 0.0990 ±" in err and "+| M6Rec | 2 | 0.1100 ± 0.0141 | 0.0900 ±" in err
    assert project.read_text(encoding="utf-8") == edited  # --check writes nothing
    # a new result file also makes the README stale
    headline.main(["--readme", str(project)])
    _write(
        project.parent / "reports" / "ctr" / "results",
        "FM-seed1.json",
        _result("FM", 1, {"auc": 0.70, "logloss": 0.6}, {"auc": 0.71, "logloss": 0.6}),
    )
    assert headline.main(["--readme", str(project), "--check"]) == 1


def test_bad_markers_and_missing_reports_are_errors(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- headline:nowhere -->\n<!-- /headline:nowhere -->\n", encoding="utf-8")
    assert headline.main(["--readme", str(readme)]) == 2
    assert "no results folder" in capsys.readouterr().err
    readme.write_text("<!-- headline:rank -->\nno closing marker\n", encoding="utf-8")
    assert headline.main(["--readme", str(readme)]) == 2
    assert "has no closing" in capsys.readouterr().err
    _write(tmp_path / "reports" / "rank" / "results", "A-seed1.json", _result("A", 1, {"ndcg@10": 0.1}, {}))
    readme.write_text("<!-- headline:rank colour=red -->\n<!-- /headline:rank -->\n", encoding="utf-8")
    assert headline.main(["--readme", str(readme)]) == 2
    assert "expected metrics=a,b or rows=A,B" in capsys.readouterr().err
    readme.write_text("no markers here\n", encoding="utf-8")
    assert headline.main(["--readme", str(readme), "--check"]) == 2


def _figures_project(tmp_path, body):
    report = tmp_path / "reports" / "speed"
    report.mkdir(parents=True)
    (report / "report.json").write_text(
        json.dumps({"rows": [{"setting": "fp32", "ms": 300.0}, {"setting": "int8", "ms": 120.0}], "share": 0.0417}),
        encoding="utf-8",
    )
    readme = tmp_path / "README.md"
    readme.write_text(body, encoding="utf-8")
    return readme


def test_figures_in_the_prose_are_written_and_checked_from_a_report(tmp_path, capsys):
    ratio = "<!-- figure:speed/report.json:rows.setting=fp32.ms/rows.setting=int8.ms fmt=.1f -->"
    share = "<!-- figure:speed/report.json:share scale=100 fmt=.1f -->"
    readme = _figures_project(tmp_path, f"int8 is {ratio}?<!-- /figure -->x faster; {share}?<!-- /figure -->% of it.\n")
    assert headline.main(["--readme", str(readme), "--check"]) == 1  # placeholders differ from the report
    assert headline.main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert f"{ratio}2.5<!-- /figure -->x faster; {share}4.2<!-- /figure -->% of it." in text
    assert headline.main(["--readme", str(readme), "--check"]) == 0
    readme.write_text(text.replace(">2.5<", ">2.6<"), encoding="utf-8")  # a hand-edited figure
    capsys.readouterr()
    assert headline.main(["--readme", str(readme), "--check"]) == 1
    assert "-int8 is" in capsys.readouterr().err


@pytest.mark.parametrize(
    "marker, message",
    [
        ("speed/report.json:rows.setting=bf16.ms", "no element with setting=bf16 (has: fp32, int8)"),
        ("speed/report.json:rows.5.ms", "index 5 is outside the list of 2"),
        ("speed/report.json:speed", "no key 'speed' (has: rows, share)"),
        ("speed/report.json:rows.0.setting", "is 'fp32', not a number"),
        ("speed/report.json:share.#", "'#' counts a list's elements, not a float's"),
        ("speed/report.json:rows.first", "use an index, key=value or #"),
        ("speed/missing.json:share", "cannot read"),
        ("speed/report.json:share colour=red", "unknown option(s) colour"),
        ("speed/report.json:share/share/share", "expected PATH or PATH/PATH"),
        ("speed/report.json:share atleast=1", "atleast= and say= go together"),
        ("speed/report.json:share atleast=1 say=met", "expected two words, WORD/WORD"),
        ("speed/report.json:share atleast=1 say=met/missed fmt=.2f", "fmt= does nothing with atleast="),
    ],
)
def test_bad_figures_name_what_is_wrong(tmp_path, capsys, marker, message):
    readme = _figures_project(tmp_path, f"<!-- figure:{marker} -->1<!-- /figure -->\n")
    assert headline.main(["--readme", str(readme)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "body",
    [
        "<!-- figure:speed/report.json:share -->4\n<!-- /figure -->\n",  # closing marker on the next line
        # one figure lost its closing marker, the next on the line has one
        "<!-- figure:speed/report.json:share -->1 and <!-- figure:speed/report.json:share -->2<!-- /figure -->\n",
        "<!-- figure:speed/report.json:share fmt=>6.1f -->4<!-- /figure -->\n",  # an option the marker cannot hold
    ],
)
def test_a_figure_that_does_not_parse_is_an_error(tmp_path, capsys, body):
    readme = _figures_project(tmp_path, body)
    assert headline.main(["--readme", str(readme)]) == 2
    assert "on the same line" in capsys.readouterr().err


def test_a_count_figure_says_how_many_elements_a_list_holds(tmp_path):
    from recbole_m6rec.benchmarks.figures import render_figures

    readme = _figures_project(tmp_path, "")
    rendered = render_figures(
        "<!-- figure:speed/report.json:rows.# -->?<!-- /figure --> rows", readme.parent / "reports"
    )
    assert rendered == "<!-- figure:speed/report.json:rows.# -->2<!-- /figure --> rows"


def test_a_verdict_figure_says_its_first_word_at_or_above_the_bar(tmp_path):
    from recbole_m6rec.benchmarks.figures import render_figures

    readme = _figures_project(tmp_path, "")
    ratio = "speed/report.json:rows.setting=fp32.ms/rows.setting=int8.ms"  # 2.5
    text = " ".join(
        f"<!-- figure:{ratio} atleast={bar} say=met/missed -->?<!-- /figure -->" for bar in ("2.4", "2.5", "2.6")
    )
    rendered = render_figures(text, readme.parent / "reports")
    assert [part.split("-->")[1] for part in rendered.split("<!-- /figure -->")[:3]] == ["met", "met", "missed"]


def test_default_figure_formats(tmp_path):
    from recbole_m6rec.benchmarks.figures import render_figures

    readme = _figures_project(tmp_path, "")
    data = json.loads((readme.parent / "reports" / "speed" / "report.json").read_text())
    data["count"] = 5
    (readme.parent / "reports" / "speed" / "report.json").write_text(json.dumps(data))
    text = (
        "<!-- figure:speed/report.json:count -->?<!-- /figure --> "
        "<!-- figure:speed/report.json:share scale=100 -->?<!-- /figure -->"
    )
    rendered = render_figures(text, readme.parent / "reports")
    assert ">5<" in rendered and ">4.17<" in rendered


def test_provenance_labels_in_both_layouts():
    label = headline.provenance_label
    assert label(None) == label({}) == "no provenance (older code)"
    assert label(PROVENANCE) == "`0123456789`"
    # the job's layout: git_commit, git_dirty for the tree, dirty_code for the row's own files
    job = {"git_commit": "abcdef0123456789", "git_dirty": True, "dirty_code": [], "code_hash": "1234567890abc"}
    assert label(job) == "`abcdef0123`"  # another file changed, not this row's code
    assert (
        label({**job, "dirty_code": ["recbole_m6rec/model/m6rec.py"]})
        == "`abcdef0123` + uncommitted changes (code 1234567890)"
    )
    assert label({**job, "changed_during_run": ["recbole_m6rec/model/m6rec.py"]}).endswith(
        "code changed during the run"
    )
    assert label({"git_commit": None, "code_hash": "1234567890abc"}) == "code 1234567890 (no git commit)"


def test_the_readme_tables_match_the_committed_reports(capsys):
    """The repository's own README: a hand-edited number, or a report regenerated without rerunning the command,
    fails here."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert headline.main(["--readme", str(readme), "--check"]) == 0, capsys.readouterr().err


def test_results_on_different_splits_are_refused(tmp_path):
    rank = tmp_path / "reports" / "rank" / "results"
    _write(rank, "A-seed1.json", _result("A", 1, {"ndcg@10": 0.1}, {"ndcg@10": 0.1}))
    _write(rank, "B-seed1.json", {**_result("B", 1, {"ndcg@10": 0.1}, {"ndcg@10": 0.1}), "split_fingerprint": "ff"})
    with pytest.raises(ValueError, match=r"different splits \(`abcd1234abcd1234`: A; `ff`: B\)"):
        headline.headline_table("rank", headline.load_results(rank), ["ndcg@10"])


def test_a_metric_missing_from_a_seed_says_over_how_many_seeds_its_mean_is():
    records = [
        headline._normalise(_result("A", 1, {"ndcg@10": 0.1}, {"ndcg@10": 0.1}, hit_cap=False), Path("a1")),
        headline._normalise(_result("A", 2, {}, {"ndcg@10": 0.3}, hit_cap=False), Path("a2")),
    ]
    row = _row(headline.headline_table("rank", records, ["ndcg@10"]), "A")
    assert row == "| A | 2 | 0.1000 (1 of 2 seeds) | 0.2000 ± 0.1414 | 10, 10 | no provenance (older code) |"


def test_results_the_report_did_not_use_are_named_not_averaged(tmp_path):
    """A seed whose result ran older code stays in results/ until it runs again; the leaderboard's report leaves it
    out (its results.csv lists what it used), and so does the headline: a mean over both would mix two models."""
    report = tmp_path / "reports" / "rank"
    results = report / "results"
    _write(results, "A-seed1.json", _result("A", 1, {"ndcg@10": 0.10}, {"ndcg@10": 0.10}, provenance=PROVENANCE))
    _write(results, "A-seed2.json", _result("A", 2, {"ndcg@10": 0.30}, {"ndcg@10": 0.30}))  # older code
    _write(results, "B-seed1.json", _result("B", 1, {"ndcg@10": 0.05}, {"ndcg@10": 0.05}, provenance=PROVENANCE))
    (report / "results.csv").write_text("model,seed,status\nA,1,ok\nB,1,ok\n", encoding="utf-8")
    table = headline.headline_table("rank", headline.load_results(results), ["ndcg@10"])
    assert _row(table, "A").startswith("| A | 1 | 0.1000 | 0.1000 |")
    assert "Not in the report, left out (older code or settings, to run again" in table
    assert "of the results `reports/rank/report.md` used (listed in its `results.csv`" in table
    assert table.split("left out")[1].count("seed") == 1 and "A seed 2." in table
    (report / "results.csv").unlink()  # no report written yet: every result counts
    assert _row(headline.headline_table("rank", headline.load_results(results), ["ndcg@10"]), "A").startswith(
        "| A | 2 | 0.2000 ± 0.1414 |"
    )


def test_a_cold_plans_validation_groups_fill_its_valid_columns(tmp_path):
    """A cold-item result keeps its cold / warm validation means in ``valid_cold``, not in ``valid``."""
    record = _result("M6Rec", 1, {"ndcg@10": 0.1}, {"ndcg@10": 0.09, "cold_recall@10": 0.05})
    record["valid_cold"] = {"cold_recall@10": 0.04, "warm_recall@10": 0.2, "cold_valid_users": 124}
    normalised = headline._normalise(record, tmp_path / "M6Rec-seed1.json")
    assert normalised["valid"] == {"ndcg@10": 0.1, "cold_recall@10": 0.04, "warm_recall@10": 0.2}
    table = headline.headline_table("cold", [normalised], ["ndcg@10", "cold_recall@10"])
    assert _row(table, "M6Rec").startswith("| M6Rec | 1 | 0.1000 | 0.0900 | 0.0400 | 0.0500 |")
