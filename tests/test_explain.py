"""Explanations of M6Rec's recommendations: the command end to end on a tiny M6Rec (tiny-random-llama as the
recommender's backbone and as the generator), its ranking against the trainer's own full ranking, the grounding
metric on hand-written explanations, and the errors."""

import json
import re
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from recbole_m6rec.checkpoint import save_plain_checkpoint
from recbole_m6rec.explain import cli
from recbole_m6rec.explain.generation import Generator
from recbole_m6rec.explain.grounding import (
    ItemFacts,
    Mention,
    control_donors,
    difference_interval,
    find_mentions,
    rate_interval,
    summarise,
)
from recbole_m6rec.explain.pipeline import explain_users, item_facts, mentions_of
from recbole_m6rec.explain.ranking import load_recommender

MODEL = "M6Rec"  # the model of conftest's make_config
TINY = "tiny-random-llama"


@pytest.fixture(scope="module")
def checkpoint(make_config, tmp_path_factory):
    """A tiny M6Rec trained one epoch on the ml-100k slice, through RecBole's pipeline."""
    from recbole_m6rec.quick_start import run_pipeline

    folder = tmp_path_factory.mktemp("explain-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", [sys.argv[0]])
        config = make_config(epochs=1, checkpoint_dir=str(folder / "saved"), state="WARNING")
        run_pipeline(config, saved=True)
    (path,) = list((folder / "saved").glob("M6Rec-*[0-9].pth"))  # the best model, not the resume point
    return str(path)


@pytest.fixture(scope="module")
def recommender(checkpoint):
    return load_recommender(checkpoint)


@pytest.fixture(scope="module")
def generator():
    return Generator(TINY, max_new_tokens=4)


# --- the command ----------------------------------------------------------------------------------------------------
def test_the_command_writes_k_explanations_per_user(checkpoint, recommender, tmp_path, capsys, no_foreign_argv):
    users = recommender.users[:2]
    out = tmp_path / "explanations.jsonl"
    argv = [f"--model_file={checkpoint}", f"--users={','.join(users)}", "--top_k=3", f"--plm={TINY}"]
    rows = cli.main([*argv, "--max_new_tokens=5", f"--out={out}"])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["user"], r["rank"]) for r in lines] == [(u, k) for u in users for k in (1, 2, 3)]
    assert lines == [row.to_json() for row in rows]
    texts = recommender.model.item_texts
    token2id = recommender.dataset.field2token_id[recommender.dataset.iid_field]
    for line in lines:
        assert set(line) >= {"user", "rank", "item", "item_text", "explanation"}
        assert line["item_text"] == texts[token2id[line["item"]]]  # the text M6Rec reads for that item
        assert isinstance(line["explanation"], str) and line["explanation"]
        assert 1 <= len(line["history"]) <= 10
        assert line["history_texts"] == [texts[token2id[item]] for item in line["history"]]
    printed = capsys.readouterr()
    assert f"user {users[0]}" in printed.out and lines[0]["explanation"] in printed.out
    assert f"[2/2] user {users[1]}" in printed.err  # progress
    again = cli.main([*argv, "--max_new_tokens=5"])  # greedy: the same text again
    assert [r.explanation for r in again] == [r.explanation for r in rows]


def test_the_top_k_is_the_trainers_full_ranking_top_k_with_history_masked(recommender):
    from recbole_m6rec.trainer import build_trainer

    k = 10
    model = recommender.model
    model.train()  # as the model comes out of its constructor: ranking must put it in evaluation mode
    uids = recommender.resolve_users(recommender.users)
    ours = {r.uid: r for r in recommender.rank(uids, k)}

    config = recommender.config
    rule = config["eval_history_mask"]
    config["eval_history_mask"] = "all"  # the trainer masks each user's training items in validation
    try:
        trainer = build_trainer(config, model, recommender.train_data, recommender.valid_data, recommender.test_data)
    finally:
        config["eval_history_mask"] = rule
    seen = {}
    collect = trainer.eval_collector.eval_batch_collect

    def capture(scores, interaction, positive_u, positive_i):  # the scores RecBole's metrics see
        top = torch.topk(scores, k, dim=1)
        for uid, items, values in zip(interaction[recommender.dataset.uid_field].tolist(), top.indices, top.values):
            seen[uid] = (items.tolist(), values.tolist())
        return collect(scores, interaction, positive_u, positive_i)

    trainer.eval_collector.eval_batch_collect = capture
    trainer.evaluate(recommender.valid_data, load_best_model=False)
    assert set(seen) == set(ours) and len(ours) > 100
    for uid, (items, values) in seen.items():
        assert ours[uid].items == items
        assert ours[uid].scores == pytest.approx(values, rel=1e-5, abs=1e-5)
    known = recommender.known
    assert all(known[uid, item] == 0 for uid, r in ours.items() for item in r.items)
    valid_feat = recommender.valid_data._dataset.inter_feat
    row = recommender.row_of_uid[uids[0]]
    length = int(valid_feat["item_length"][row])
    assert ours[uids[0]].history == valid_feat["item_id_list"][row, :length].tolist()  # the model's input


def test_a_control_is_written_from_another_users_history(recommender, generator):
    facts = item_facts(recommender.train_dataset, "movie_title", "class")
    users = recommender.users[:4]
    rows = explain_users(recommender, generator, users, 2, 5, control_seed=7, facts=facts, progress=None)
    history = {row.user: row.history for row in rows}
    assert len(rows) == 8
    for row in rows:
        donor = row.control["donor"]
        assert donor != row.user and donor in users
        assert row.item not in row.control["history"]
        assert set(row.control["history"]) <= set(history[donor]) | set(_history_tokens(recommender, donor))
        assert set(row.mentions) == {"titles", "genres"} and set(row.control["mentions"]) == {"titles", "genres"}
    donors = {row.user: row.control["donor"] for row in rows}
    assert sorted(donors.values()) == sorted(users)  # every user's history is used once
    assert [m for m in mentions_of(rows)] and len(mentions_of(rows, "control")) == 4


class FirstTitleWriter:
    """A stand-in writer for the grounding flow: it names the first history title its prompt shows, so its
    explanations are grounded by construction and its controls name another user's title."""

    chat, tokens_per_second = False, 0.0

    def render(self, messages):
        return messages[1]["content"]

    def __call__(self, prompts):
        firsts = [prompt.split("most recent last:\n- ", 1)[1].split(" (", 1)[0] for prompt in prompts]
        return [f"You will love it, as you liked {title}." for title in firsts]


def test_grounding_scores_both_texts_against_the_true_users_history(recommender):
    facts = item_facts(recommender.train_dataset, "movie_title", "class")
    users = recommender.users[:6]
    rows = explain_users(recommender, FirstTitleWriter(), users, 2, 5, control_seed=1, facts=facts, progress=None)
    for row in rows:
        first = row.history_texts[0].split(" (", 1)[0]
        assert row.explanation == f"You will love it, as you liked {first}."
        assert first in " ".join(row.mentions["titles"])  # the true user's own first title
        donor_first = row.control["explanation"].split("liked ", 1)[1].rstrip(".")
        shared = any(donor_first == text.split(" (", 1)[0] for text in row.history_texts)
        assert bool(row.control["mentions"]["titles"]) == shared  # scored against the true user's history
    summary = summarise(mentions_of(rows), mentions_of(rows, "control"), n_boot=100)
    assert summary["title"]["rate"][0] == 1.0 and summary["title"]["control"][0] < 1.0


def _history_tokens(recommender, raw_user):
    (uid,) = recommender.resolve_users([raw_user])
    row = recommender.row_of_uid[uid]
    feat = recommender.valid_feat
    items = feat["item_id_list"][row, : int(feat["item_length"][row])].tolist()
    return [recommender.item_token(i) for i in items]


def test_the_report_writes_rates_examples_and_provenance(checkpoint, tmp_path, no_foreign_argv):
    folder = tmp_path / "report"
    argv = [f"--model_file={checkpoint}", f"--report={folder}", "--n_users=4", "--top_k=2", f"--plm={TINY}"]
    cli.main([*argv, "--max_new_tokens=4", "--examples=2", "--train_commit=abc123"])
    record = json.loads((folder / "results.json").read_text())
    rows = [json.loads(line) for line in (folder / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and record["grounding"]["explanations"] == 8 and record["grounding"]["users"] == 4
    hits = sum(bool(r["mentions"]["titles"] or r["mentions"]["genres"]) for r in rows)
    assert record["grounding"]["any"]["rate"][0] == pytest.approx(hits / 8)
    report = (folder / "report.md").read_text()
    assert record["command"] in report and "abc123" in report and "other jobs ran beside" in report
    assert report.count("Recommended (rank 1)") == 2
    assert set(record["checkpoint"]["metrics"]["results"]) == {"recbole", "all"}
    assert 0 <= record["checkpoint"]["metrics"]["results"]["all"]["valid"]["ndcg@10"] <= 1
    cli.main([f"--rerender={folder}"])  # the same report from the stored results, with a note saying so
    again = (folder / "report.md").read_text().splitlines()
    assert again[4].startswith("Text re-rendered from the stored results") and again[5] == ""
    assert again[:4] + again[6:] == report.splitlines()


# --- grounding ------------------------------------------------------------------------------------------------------
HISTORY = [
    ItemFacts("Star Wars", ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    ItemFacts("Usual Suspects, The", ("Crime", "Thriller")),
    ItemFacts("Heat", ("Action", "Crime", "Thriller")),
    ItemFacts("Raiders of the Lost Ark", ("Action", "Adventure")),
]
CANDIDATE = ItemFacts("Star Trek: First Contact", ("Action", "Adventure", "Sci-Fi"))


@pytest.mark.parametrize(
    "text,titles,genres",
    [
        ("Since you enjoyed Star Wars, you will like this one.", ["Star Wars"], []),
        ("Fans of The Usual Suspects will love it.", ["Usual Suspects, The"], []),
        ("It has the lost ark kind of fun.", ["Raiders of the Lost Ark"], []),
        ('Like "Heat", it is tense.', ["Heat"], []),
        ("You liked Heat, so here is another one.", ["Heat"], []),
        ("Heat is great. The heat of the chase is too.", [], []),  # sentence start, then the common word
        ("A sci-fi action adventure in space.", [], []),  # the candidate's own genres never count
        ("A tense crime thriller.", [], ["Crime", "Thriller"]),  # history genres the candidate lacks
        ("A romantic war story.", [], ["War", "Romance"]),
        ("Another Star Trek film, like Star Trek: First Contact.", [], []),  # the candidate's own title
        ("More Star Wars than any crime story.", ["Star Wars"], ["Crime"]),  # 'Wars' in a title is no genre
    ],
)
def test_a_mention_counts_only_from_the_history(text, titles, genres):
    found = find_mentions(text, HISTORY, CANDIDATE)
    assert found.titles == titles
    assert sorted(found.genres) == sorted(genres)
    assert found.any == bool(titles or genres)


def test_the_candidates_own_title_names_nothing_from_the_history():
    history = [ItemFacts("Godfather, The", ("Action", "Crime", "Drama")), ItemFacts("Star Trek: Generations", ())]
    candidate = ItemFacts("Godfather: Part II, The", ("Action", "Crime", "Drama"))
    assert not find_mentions("You will enjoy The Godfather: Part II.", history, candidate).any
    assert find_mentions("Like The Godfather, it is a family saga.", history, candidate).titles == ["Godfather, The"]
    sequel = ItemFacts("Star Trek: First Contact", ())
    assert not find_mentions("Another Star Trek film for you.", history, sequel).any  # a pair the candidate shares
    assert find_mentions("As in Star Trek Generations, the crew returns.", history, sequel).any


def test_the_controls_donors_are_a_fixed_derangement():
    donors = control_donors(50, seed=3)
    assert sorted(donors) == list(range(50))
    for n, seed in [(n, seed) for n in (2, 3, 5, 8) for seed in range(20)]:
        assert all(d != i for i, d in enumerate(control_donors(n, seed)))  # nobody explains from their own history
    assert donors == control_donors(50, seed=3) and donors != control_donors(50, seed=4)
    with pytest.raises(ValueError, match=r"at least 2 users.*got 1"):
        control_donors(1, seed=3)


def test_rates_resample_users_and_the_difference_is_paired():
    hits = [[True, True], [False, False], [True, False]]
    rate, low, high = rate_interval(hits, n_boot=500, seed=0)
    assert rate == pytest.approx(3 / 6) and 0 <= low <= rate <= high <= 1
    assert rate_interval([[True], [True]], n_boot=50) == (1.0, 1.0, 1.0)
    assert difference_interval(hits, hits, n_boot=50) == (0.0, 0.0, 0.0)  # the same users on both sides
    summary = summarise(
        [[Mention(["A"], []), Mention()], [Mention([], ["Crime"])]], [[Mention(), Mention()], [Mention()]], n_boot=50
    )
    assert summary["title"]["rate"][0] == pytest.approx(1 / 3) and summary["genre"]["rate"][0] == pytest.approx(1 / 3)
    assert summary["any"]["rate"][0] == pytest.approx(2 / 3) and summary["any"]["control"][0] == 0
    assert summary["any"]["difference"][0] == pytest.approx(2 / 3)


# --- errors ---------------------------------------------------------------------------------------------------------
def test_an_unknown_user_is_named_with_the_user_count_and_valid_ids(recommender):
    valid = recommender.users
    with pytest.raises(
        ValueError, match=rf"user id 'nobody' is not a user of .* {len(valid)} users.*e\.g\. {valid[0]}"
    ):
        recommender.resolve_users([valid[0], "nobody"])


def test_a_missing_or_foreign_checkpoint_is_refused_before_loading(tmp_path, no_foreign_argv):
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found: '.*missing\.pth'"):
        cli.main([f"--model_file={tmp_path / 'missing.pth'}", "--users=1"])
    foreign = save_plain_checkpoint(tmp_path / "MostPop.pth", model="MostPop", dataset="ml-100k", settings={})
    with pytest.raises(ValueError, match=r"holds a MostPop checkpoint; explanations need an M6Rec checkpoint"):
        cli.main([f"--model_file={foreign}", "--users=1"])


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--top_k=0", r"--top_k must be >= 1 \(got 0\)"),
        ("--max_new_tokens=0", r"--max_new_tokens must be >= 1 \(got 0\)"),
        ("--users=,", r"--users holds no user id"),
    ],
)
def test_bad_flags_are_refused_with_the_value(flag, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--model_file=x.pth", "--users=1", flag])
    assert re.search(message, capsys.readouterr().err)


def test_an_encoder_cannot_be_the_generator():
    with pytest.raises(ValueError, match=r"plm 'tiny-random-bert' is an encoder .* cannot write text"):
        Generator("tiny-random-bert")


def test_the_module_command_reports_bad_input_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "recbole_m6rec.explain", f"--model_file={tmp_path / 'none.pth'}", "--users=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m recbole_m6rec.explain: error: checkpoint file not found: '{tmp_path / 'none.pth'}'"
    ]
