"""The cold-item protocol: held-out items never reach training, every user stays, cold/warm columns add up."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from recbole.data import create_dataset, data_preparation

from recbole_m6rec.cold_start import apply_cold_items
from recbole_m6rec.config import PluginConfig

LOO = {
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "user_inter_num_interval": "[0,40]",
    "show_progress": False,
    "state": "ERROR",
}


pytestmark = pytest.mark.usefixtures("no_foreign_argv")  # conftest: RecBole never sees pytest's flags


def split(model, **overrides):
    config = PluginConfig(model=model, dataset="ml-100k", config_dict={**LOO, **overrides})
    dataset = create_dataset(config)
    cold = apply_cold_items(dataset, config)
    return cold, data_preparation(config, dataset)


def tokens(dataset, field, ids):
    return set(dataset.field2id_token[field][np.asarray(ids).reshape(-1)].tolist()) - {"[PAD]"}


@pytest.mark.parametrize("model,extra", [("SASRec", {"train_neg_sample_args": None}), ("BPR", {})])
def test_cold_items_never_reach_training_and_every_user_stays(model, extra):
    cold, (train, valid, test) = split(model, cold_items=0.1, **extra)
    _, (_, _, full_test) = split(model, **extra)
    cold_items = set(cold.cold_item_tokens)
    assert len(cold_items) > 50 and cold.removed_interactions > 100
    ds = train._dataset
    trained = tokens(ds, ds.iid_field, ds.inter_feat[ds.iid_field].numpy())
    if model == "SASRec":
        trained |= tokens(ds, ds.iid_field, ds.inter_feat[ds.item_id_list_field].numpy())
    assert not trained & cold_items

    def users(d):
        return tokens(d._dataset, d._dataset.uid_field, d._dataset.inter_feat[d._dataset.uid_field].numpy())

    assert users(test) == users(full_test)  # every user keeps a test target
    targets = tokens(test._dataset, ds.iid_field, test._dataset.inter_feat[ds.iid_field].numpy())
    assert targets & cold_items  # some test targets are cold: the protocol has something to measure


def test_same_cold_items_for_every_model_and_seed():
    a, _ = split("BPR", cold_items=0.1, seed=1)
    b, _ = split("SASRec", cold_items=0.1, seed=2, train_neg_sample_args=None)
    c, _ = split("BPR", cold_items=0.1, cold_items_seed=7)
    assert a.cold_item_tokens == b.cold_item_tokens != c.cold_item_tokens


def test_pop_cannot_recommend_cold_items_and_the_columns_add_up(tmp_path, monkeypatch):
    from recbole_m6rec.quick_start import run_pipeline

    monkeypatch.chdir(tmp_path)
    config = PluginConfig(
        model="Pop",
        dataset="ml-100k",
        config_dict={
            **LOO,
            "cold_items": 0.1,
            "epochs": 1,
            "eval_history_mask": "all",
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "checkpoint_dir": str(tmp_path),
        },
    )
    outcome = run_pipeline(config)
    test = outcome.result["test_result"]
    n_cold, n_warm = outcome.extra["cold_test_users"], outcome.extra["warm_test_users"]
    assert n_cold > 5 and n_warm > 100
    assert test["cold_recall@10"] == 0.0  # no training interactions: never popular
    mixed = (n_cold * test["cold_ndcg@10"] + n_warm * test["warm_ndcg@10"]) / (n_cold + n_warm)
    assert mixed == pytest.approx(test["ndcg@10"], abs=2e-4)


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1, "many", True])
def test_cold_share_outside_zero_one_is_an_error(share):
    with pytest.raises(ValueError, match=r"cold_items must be a share of items strictly between 0 and 1"):
        split("BPR", cold_items=share)


def test_cold_items_needs_leave_one_out():
    with pytest.raises(ValueError, match=r"cold_items needs the leave-one-out protocol"):
        split("BPR", cold_items=0.1, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full"})


def test_dataset_too_small_to_hold_out_an_item(tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    (folder / "three.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"u{u}\t{i}\t{u * 10 + i}\n" for u in range(5) for i in range(3))
    )
    with pytest.raises(ValueError, match=r"holds out 0 items; the dataset is too small"):
        config = PluginConfig(
            model="BPR",
            dataset="three",
            config_dict={
                **LOO,
                "data_path": str(tmp_path),
                "cold_items": 0.1,
                "user_inter_num_interval": None,
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            },
        )
        apply_cold_items(create_dataset(config), config)


def _tiny_cold_m6rec(tmp_path, **overrides):
    """A tiny random-initialised M6Rec on the cold split: (model, cold split, test loader)."""
    from recbole_m6rec.model.m6rec import M6Rec

    settings = {
        **LOO,
        "cold_items": 0.1,
        "plm_name_or_path": "tiny-random-llama",
        "text_cache_dir": str(tmp_path),
        "MAX_ITEM_LIST_LENGTH": 10,
        **overrides,
    }
    config = PluginConfig(model="M6Rec", dataset="ml-100k", config_dict=settings)
    dataset = create_dataset(config)
    cold = apply_cold_items(dataset, config)
    train, _, test = data_preparation(config, dataset)
    return M6Rec(config, train._dataset), cold, test


def test_hybrid_m6rec_scores_a_cold_item_by_its_text_alone(tmp_path):
    """A cold item's ID embedding (trained only as a negative) never reaches a score; a warm item's does."""
    model, cold, test = _tiny_cold_m6rec(tmp_path, use_item_id_embedding=True)
    model.eval()
    ids = test._dataset.field2id_token[test._dataset.iid_field]
    cold_ids = [i for i, token in enumerate(ids) if token in set(cold.cold_item_tokens)]
    warm_ids = model.cold.seen.nonzero().flatten().tolist()
    assert cold_ids and len(warm_ids) > 500 and not set(cold_ids) & set(warm_ids)
    interaction = next(iter(test))[0]

    def scores_after(item: int) -> torch.Tensor:
        with torch.no_grad():
            model.item_id_embedding.weight[item] += 1.0
            model.train().eval()  # drops the cached item vectors
            return model.full_sort_predict(interaction)

    with torch.no_grad():
        before = model.full_sort_predict(interaction)
    assert torch.equal(scores_after(cold_ids[0]), before)
    assert not torch.allclose(scores_after(warm_ids[0])[:, warm_ids[0]], before[:, warm_ids[0]])


def _result_file(path, model, seed, per_user):
    path.write_text(json.dumps({"status": "ok", "model": model, "seed": seed, "per_user_test": {"ndcg@10": per_user}}))
    return str(path)


def test_cold_vs_full_compares_the_same_users_on_both_splits(tmp_path):
    from recbole_m6rec.benchmarks.cold_vs_full import compare

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "dataset": "ml-100k",
                "seeds": [1],
                "rows": {"Pop": {"model": "Pop"}},
                "common": {**LOO, "cold_items": 0.1},
            }
        )
    )
    from recbole_m6rec.cold_start import test_target_tokens

    cold, (_, valid, test) = split("Pop", cold_items=0.1)
    ds = test._dataset
    users = ds.field2id_token[ds.uid_field][ds.inter_feat[ds.uid_field].numpy()]
    targets = ds.field2id_token[ds.iid_field][ds.inter_feat[ds.iid_field].numpy()]
    is_cold = np.isin(targets, cold.cold_item_tokens)
    last = test_target_tokens(valid._dataset)  # the test history's last item
    after_cold = np.isin([last.get(str(u)) for u in users], cold.cold_item_tokens) & ~is_cold
    values = np.linspace(0.0, 1.0, len(users))
    cold_run = _result_file(tmp_path / "cold.json", "M6Rec", 1, {str(u): float(v) for u, v in zip(users, values)})
    full_run = _result_file(tmp_path / "full.json", "M6Rec", 1, {str(u): 0.5 for u in users})
    groups = {g["group"]: g for g in compare(cold_run, full_run, str(plan))["groups"]}
    assert groups["cold"]["users"] == int(is_cold.sum()) > 0
    assert after_cold.any() and groups["warm after cold"]["users"] == int(after_cold.sum())
    sizes = groups["warm"]["users"] + groups["warm after cold"]["users"] + groups["cold"]["users"]
    assert sizes == groups["all"]["users"] == len(users)
    assert groups["warm"]["cold_split"] == round(float(values[~is_cold & ~after_cold].mean()), 4)
    assert groups["cold"]["ratio"] == round(float(values[is_cold].mean()) / 0.5, 3)
    other_seed = _result_file(tmp_path / "other.json", "M6Rec", 2, {str(u): 0.5 for u in users})
    with pytest.raises(ValueError, match="one model and seed"):
        compare(cold_run, other_seed, str(plan))
    record = json.loads(Path(full_run).read_text())
    (tmp_path / "elsewhere.json").write_text(json.dumps({**record, "split_fingerprint": "0123456789abcdef"}))
    with pytest.raises(ValueError, match="was scored on split 0123456789abcdef, but the split rebuilt for it"):
        compare(cold_run, str(tmp_path / "elsewhere.json"), str(plan))


def _report_folder(folder, plan_path, values, fingerprint, listed=None, tuning=None, borrowed=None):
    """A report folder as the leaderboard leaves it: ``results/<row>-seed<N>.json`` (each with the settings hash
    its run would record), the ``results.csv`` listing the runs its report used (``listed``, default all), and the
    tuning records ``tuning`` (row: chosen values); ``borrowed``: the values a plan with ``tuning.from`` took."""
    from recbole_m6rec.benchmarks.plan import job_spec, load_plan

    plan = load_plan(str(plan_path), overrides={}, rows=None, seeds=None)
    (folder / "results").mkdir(parents=True)
    for row, best in (tuning or {}).items():
        (folder / "tuning").mkdir(exist_ok=True)
        (folder / "tuning" / f"{row}-tuning.json").write_text(json.dumps({"row": row, "best_params": best}))
    lines = ["model,seed"]
    for (row, seed), per_user in values.items():
        chosen = {**(tuning or {}), **(borrowed or {})}.get(row) or {}
        chosen = {k: v for k, v in chosen.items() if k in plan["rows"][row].get("search", {})}
        spec = job_spec({**plan, "rows": {**plan["rows"], row: {**plan["rows"][row], **chosen}}}, row, seed)
        record = {"row": row, "model": plan["rows"][row]["model"], "seed": seed, "status": "ok"}
        record.update(
            split_fingerprint=fingerprint, config_hash=spec["config_hash"], per_user_test={"ndcg@10": per_user}
        )
        (folder / "results" / f"{row}-seed{seed}.json").write_text(json.dumps(record))
        if listed is None or (row, seed) in listed:
            lines.append(f"{row},{seed}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def test_cold_vs_full_compares_two_reports_row_by_row_on_their_shared_seeds(tmp_path):
    from recbole_m6rec.benchmarks.cold_vs_full import compare_reports, markdown_reports, settings_differences
    from recbole_m6rec.benchmarks.rebuilt_split import rebuild_split
    from recbole_m6rec.cold_start import test_target_tokens

    # an explicit None is a setting RecBole reads, unlike a missing key
    assert [d["key"] for d in settings_differences({"a": None, "b": {"c": 1}}, {"b": {"c": 2}})] == ["a", "b.c"]

    common = {**LOO, "valid_metric": "NDCG@10", "eval_history_mask": "all", "metrics": ["NDCG"]}
    space = {"learning_rate": ["choice", 0.01, 0.001]}
    full_plan = {
        "dataset": "ml-100k",
        "seeds": [1, 2, 3],
        "common": {**common, "topk": [10, 20]},
        "tuning": {"trials": 1, "seed": 1, "algo": "random"},
        "rows": {
            "MostPop": {"model": "MostPop"},
            "BPR": {"model": "BPR", "search": {**space, "weight_decay": ["choice", 0.0, 0.5]}},
        },
    }
    cold_plan = {
        "dataset": "ml-100k",
        "seeds": [1, 2, 3],
        "common": {**common, "topk": [10], "cold_items": 0.1},
        "tuning": {"from": str(tmp_path / "full"), "trials": 1, "seed": 1, "algo": "random"},
        # BPR borrows the full report's learning rate, not its weight decay: it searches only the first
        "rows": {"MostPop": {"model": "MostPop"}, "BPR": {"model": "BPR", "weight_decay": 0.0, "search": space}},
    }
    for name, plan in (("cold.yaml", cold_plan), ("full.yaml", full_plan)):
        (tmp_path / name).write_text(yaml.safe_dump(plan))
    cold_split, full_split = rebuild_split(cold_plan), rebuild_split(full_plan)
    targets = test_target_tokens(cold_split.test._dataset)
    cold_items = set(cold_split.cold.cold_item_tokens)
    cold_users = {u for u, item in targets.items() if item in cold_items}
    last = test_target_tokens(cold_split.valid._dataset)  # the test history's last item
    after_cold = {u for u in targets if last.get(u) in cold_items} - cold_users
    users = sorted(targets)
    rng = np.random.default_rng(0)
    value = {
        (row, seed, side): {u: float(v) for u, v in zip(users, rng.random(len(users)))}
        for row in ("MostPop", "BPR")
        for seed in (1, 2, 3)
        for side in ("cold", "full")
    }
    # MostPop pairs on seeds 1 and 2: the cold report's seed 3 is in results/ but not in its results.csv
    cold_runs = [("MostPop", 1), ("MostPop", 2), ("MostPop", 3), ("BPR", 1)]
    _report_folder(
        tmp_path / "full",
        tmp_path / "full.yaml",
        {(r, s): value[r, s, "full"] for r, s in [("MostPop", 1), ("MostPop", 2), ("MostPop", 3), ("BPR", 1)]},
        full_split.fingerprint,
        tuning={"BPR": {"learning_rate": 0.001, "weight_decay": 0.5}},
    )
    _report_folder(
        tmp_path / "cold",
        tmp_path / "cold.yaml",
        {(r, s): value[r, s, "cold"] for r, s in cold_runs},
        cold_split.fingerprint,
        listed=cold_runs[:2] + cold_runs[3:],
        borrowed={"BPR": {"learning_rate": 0.001}},
    )
    args = (str(tmp_path / "cold.yaml"), str(tmp_path / "cold"), str(tmp_path / "full.yaml"), str(tmp_path / "full"))
    result = compare_reports(*args)
    mostpop, bpr = result["rows"]["MostPop"], result["rows"]["BPR"]
    assert mostpop["seeds"] == [1, 2] and bpr["seeds"] == [1] and not result["unpaired"]
    warm = set(users) - cold_users - after_cold
    for group, members in (("cold", cold_users), ("warm after cold", after_cold), ("warm", warm), ("all", set(users))):
        on_cold = np.mean([value["MostPop", s, "cold"][u] for s in (1, 2) for u in members])
        on_full = np.mean([value["MostPop", s, "full"][u] for s in (1, 2) for u in members])
        got = mostpop["groups"][group]
        assert got["users"] == len(members) and got["cold_split"] == pytest.approx(on_cold)
        assert got["ratio"]["ratio"] == pytest.approx(on_cold / on_full) and got["ratio"]["n_seeds"] == 2
        assert got["ratio"]["ci_low"] < got["ratio"]["ratio"] < got["ratio"]["ci_high"]
    assert 0 < len(cold_users) < len(users) and 0 < len(after_cold)
    # what separates each row's two runs, checked against the settings hash each run recorded
    differences = {d["key"]: (d["cold"], d["full"], d["evaluation_only"]) for d in mostpop["settings_differences"]}
    assert differences == {"cold_items": (0.1, None, False), "topk": ([10], [10, 20], True)}
    differences = {d["key"]: (d["cold"], d["full"]) for d in bpr["settings_differences"] if not d["evaluation_only"]}
    assert differences == {"cold_items": (0.1, None), "weight_decay": (0.0, 0.5)}
    assert mostpop["settings_unverified"] == bpr["settings_unverified"] == []
    text = markdown_reports(result)
    assert "| MostPop | 1, 2 |" in text and "`weight_decay`: 0.0 vs 0.5" in text and "Not verified" not in text

    # a run that read other settings than the plans and tuning say is named
    record = json.loads((tmp_path / "cold" / "results" / "BPR-seed1.json").read_text())
    (tmp_path / "cold" / "results" / "BPR-seed1.json").write_text(json.dumps({**record, "config_hash": "0" * 16}))
    assert compare_reports(*args)["rows"]["BPR"]["settings_unverified"] == ["cold seed 1"]

    # results scored on another split are refused, on either side
    for side in ("cold", "full"):
        path = tmp_path / side / "results" / "MostPop-seed1.json"
        original = path.read_text()
        path.write_text(json.dumps({**json.loads(original), "split_fingerprint": "0" * 16}))
        with pytest.raises(RuntimeError, match="different splits"):
            compare_reports(*args)
        path.write_text(original)


def test_unseen_item_prior_is_a_two_group_mixture_of_the_model_softmax(tmp_path):
    model, _, test = _tiny_cold_m6rec(tmp_path, unseen_item_prior="catalogue")
    model.eval()
    unseen = model.cold.seen == 0
    unseen[0] = False
    seen = model.cold.seen == 1
    prior = float(unseen.sum()) / (model.n_items - 1)
    assert model.cold.prior == pytest.approx(prior)  # this slice's users leave most items unrated
    interaction = next(iter(test))[0]
    with torch.no_grad():
        mixed = model.full_sort_predict(interaction)
        raw = model._user_vectors(interaction) @ model.item_vectors().t() / model.settings.temperature
    # direct computation: p * softmax within the unseen items, (1 - p) * softmax within the seen ones
    expected_unseen = torch.log(prior * torch.softmax(raw[:, unseen], dim=1))
    expected_seen = torch.log((1 - prior) * torch.softmax(raw[:, seen], dim=1))
    assert torch.allclose(mixed[:, unseen], expected_unseen, atol=1e-4)
    assert torch.allclose(mixed[:, seen], expected_seen, atol=1e-4)
    assert torch.allclose(torch.logsumexp(mixed[:, unseen], 1), torch.full((len(raw),), np.log(prior)), atol=1e-5)
    # sampled evaluation scores the same mixture
    pairs = interaction.copy() if hasattr(interaction, "copy") else interaction
    item = int(unseen.nonzero()[0])
    pairs.interaction["item_id"] = torch.full((len(interaction),), item, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(model.predict(pairs), mixed[:, item], atol=1e-4)
    off, _, _ = _tiny_cold_m6rec(tmp_path)
    off.eval()
    with torch.no_grad():
        plain = off._user_vectors(interaction) @ off.item_vectors().t() / off.settings.temperature
        assert off.cold.prior is None and torch.allclose(off.full_sort_predict(interaction), plain, atol=1e-4)


@pytest.mark.parametrize("prior", [0, 1, 1.5, "share", True])
def test_unseen_item_prior_outside_zero_one_is_an_error(prior):
    from recbole_m6rec.model.settings import M6RecSettings

    config = PluginConfig(model="M6Rec", dataset="ml-100k", config_dict={**LOO, "unseen_item_prior": prior})
    with pytest.raises(
        ValueError, match=r"unseen_item_prior must be a probability strictly between 0 and 1, " r"'catalogue'"
    ):
        M6RecSettings.from_config(config)


def test_a_cold_plan_whose_split_lets_a_cold_item_into_training_is_refused(tmp_path):
    """The cold split keeps a user's last two interactions by float64 timestamps, RecBole's split orders float32
    ones: for user 444 of ml-100k the two disagree, and with cold_items_seed 2022 one of its cold interactions
    lands in training. The leaderboard refuses that plan before running anything; the plans' seed 2020 passes."""
    from recbole_m6rec.benchmarks import leaderboard
    from recbole_m6rec.benchmarks.cold_check import check_cold_plan, leaked_cold_items
    from recbole_m6rec.benchmarks.plan import load_plan

    plan = load_plan(str(Path(__file__).resolve().parents[1] / "configs" / "cold_ml-100k.yaml"), {}, None, None)
    assert plan["common"]["cold_items_seed"] == 2020
    check_cold_plan(plan)  # the committed plan: no leak
    assert leaked_cold_items("ml-100k", {**plan["common"], "cold_items_seed": 2022}) == {"678": ["444"]}
    leaky = {**plan, "rows": {"MostPop": {"model": "MostPop", "cold_items_seed": 2022}}, "pairs": {}}
    plan_file = tmp_path / "leaky.yaml"
    plan_file.write_text(yaml.safe_dump(leaky))
    with pytest.raises(
        ValueError, match=r"cold_items_seed 2022: cold items reach the training split: item 678 \(users 444\)"
    ):
        leaderboard.main([f"--config_files={plan_file}", f"--report={tmp_path / 'report'}"])
    assert not (tmp_path / "report" / "results").exists()  # nothing ran


def test_the_shipped_cold_plan_trains_as_the_full_plan_but_where_its_method_says(monkeypatch):
    """The cold plan borrows the full-catalogue plan's tuning; its reading guide names the one training setting its
    M6Rec row runs differently (``loss_items: seen``). A setting that drifts apart unnamed fails here."""
    from recbole_m6rec.benchmarks.plan import load_plan
    from recbole_m6rec.benchmarks.run_settings import settings_differences, tuned_spec

    root = Path(__file__).resolve().parents[1]
    cold = load_plan(str(root / "configs" / "cold_ml-100k.yaml"), {}, None, None)
    full = load_plan(str(root / "configs" / "bench_ml-100k.yaml"), {}, None, None)
    assert cold["tuning"]["from"] == "reports/ml-100k"
    monkeypatch.chdir(root)  # the cold plan names its tuning's folder relative to the checkout
    differing = {}
    for row in sorted(set(cold["rows"]) & set(full["rows"])):
        cold_run = tuned_spec(cold, root / "reports" / "cold_ml-100k", row, 2020)
        full_run = tuned_spec(full, root / "reports" / "ml-100k", row, 2020)
        settings = [cold_run[1], full_run[1]]
        if full["rows"][row].get("search"):  # both runs carry the tuning's choice
            chosen = json.loads((root / "reports/ml-100k/tuning" / f"{row}-tuning.json").read_text())["best_params"]
            assert all(settings[0][key] == settings[1][key] == chosen[key] for key in full["rows"][row]["search"])
        differing[row] = {
            d["key"]: (d["cold"], d["full"]) for d in settings_differences(*settings) if not d["evaluation_only"]
        }
    expected = {row: {"cold_items": (0.1, None)} for row in ("BPR", "GRU4Rec", "MostPop", "SASRec")}
    assert differing == {**expected, "M6Rec": {"cold_items": (0.1, None), "loss_items": ("seen", "all")}}
    assert "`loss_items: seen`" in cold["method"] and "(`all`, M6Rec's default)" in cold["method"]


def test_cold_groups_follow_each_test_users_last_history_item_and_count_chance_exactly():
    from itertools import product

    from recbole_m6rec.benchmarks.cold_groups import at_least_by_chance, cold_hits, group_means, split_groups

    cold_plan = {"cold_items": 0.1, "cold_items_seed": 2020, "eval_history_mask": "all", "MAX_ITEM_LIST_LENGTH": 50}
    facts = split_groups({"dataset": "ml-100k", "common": {**LOO, **cold_plan}})
    # the same split through a sequential model's data: the test history (validation target last) and the target
    cold, (train, _, test) = split("SASRec", train_neg_sample_args=None, **cold_plan)
    cold_items, feat = set(cold.cold_item_tokens), test._dataset.inter_feat
    users, items = train._dataset.field2id_token["user_id"], train._dataset.field2id_token["item_id"]
    expected, valid_expected = {}, {}
    for user, target, history, n in zip(
        feat["user_id"].tolist(), feat["item_id"].tolist(), feat["item_id_list"].tolist(), feat["item_length"].tolist()
    ):
        last = items[history[n - 1]] if n else None  # histories of at most 40 items: never cut to 50
        group = "cold" if items[target] in cold_items else ("warm after cold" if last in cold_items else "warm")
        expected[str(users[user])] = {"group": group, "target": items[target], "candidates": len(items) - 1 - n}
        valid_expected[str(users[user])] = "cold" if last in cold_items else "warm"  # the validation target's group
    assert facts["users"] == expected
    assert {g for g in (f["group"] for f in expected.values())} == {"cold", "warm after cold", "warm"}

    probabilities = [0.1, 0.5, 0.3, 0.9]  # by enumeration of every outcome
    for found in range(6):
        brute = sum(
            np.prod([p if hit else 1 - p for p, hit in zip(probabilities, hits)])
            for hits in product((0, 1), repeat=4)
            if sum(hits) >= found
        )
        assert at_least_by_chance(probabilities, found) == pytest.approx(brute)

    toy = {
        "a": {"group": "cold", "target": "x", "candidates": 100},
        "b": {"group": "cold", "target": "y", "candidates": 50},
        "e": {"group": "cold", "target": "y", "candidates": 50},
        "c": {"group": "warm after cold", "target": "w", "candidates": 80},
        "d": {"group": "warm", "target": "z", "candidates": 80},
    }
    records = [
        {"row": "R", "seed": s, "test": {"cold_recall@10": recall}, "per_user_test": {"ndcg@10": scores}}
        for s, recall, scores in [
            (1, 1 / 3, {"a": 0.0, "b": 0.5, "e": 0.0, "c": 0.2, "d": 0.4}),
            (2, 0.0, {"a": 0.0, "b": 0.0, "e": 0.0, "c": 0.4, "d": 0.6}),
        ]
    ]
    means = group_means(records, toy, "ndcg@10", ["R"])["R"]["mean"]
    assert means == pytest.approx({"cold": 0.25 / 3, "warm after cold": 0.3, "warm": 0.5})
    hits = cold_hits(records, toy, ["R"])
    at_10 = hits["cutoffs"][10]
    assert hits["cold_targets"] == 2  # three cold users, two of them after the same item
    assert at_10["chance_mean"] == pytest.approx(0.1 + 0.2 + 0.2)
    assert [(s["found"], s["p"]) for s in at_10["rows"]["R"]] == [
        (1, pytest.approx(1 - 0.9 * 0.8 * 0.8)),
        (0, 1.0),
    ]
    assert [s["items"] for s in at_10["rows"]["R"]] == [None, None]  # no per-user recall@10 kept: not counted
    # with per-user recall@10: the hits of b and e are one item, and c's warm hit is not a cold item
    for record, hit_users in zip(records, (["b", "e", "c"], [])):
        record["test"]["cold_recall@10"] = len([u for u in hit_users if toy[u]["group"] == "cold"]) / 3
        record["per_user_test"]["recall@10"] = {u: float(u in hit_users) for u in toy}
    at_10 = cold_hits(records, toy, ["R"])["cutoffs"][10]
    assert [(s["found"], s["items"]) for s in at_10["rows"]["R"]] == [(2, 1), (0, 0)]
    assert facts["valid_users"] == valid_expected and set(valid_expected.values()) == {"cold", "warm"}


def test_paired_comparisons_within_a_group_pair_only_that_groups_users_and_leave_out_undefined_ratios():
    from recbole_m6rec.benchmarks.cold_groups import paired_by_group

    users = {
        u: {"group": g, "candidates": 100} for u, g in [("a", "cold"), ("b", "cold"), ("c", "warm"), ("d", "warm")]
    }
    valid_users = {"a": "cold", "b": "warm", "c": "warm", "d": "warm"}

    def run(row, seed, test, valid):
        per_user = {m: dict(test) for m in ("recall@10", "recall@100")}
        return {
            "row": row,
            "seed": seed,
            "status": "ok",
            "per_user_test": per_user,
            "per_user_valid": {m: dict(valid) for m in ("recall@10", "recall@100")},
        }

    records = [
        run("Text", 1, {"a": 1.0, "b": 0.0, "c": 1.0, "d": 1.0}, {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}),
        run("Hybrid", 1, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}, {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0}),
        run("ID", 1, {"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0}, {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0}),
    ]
    rows = paired_by_group(records, users, valid_users, [("Hybrid", "Text"), ("Hybrid", "ID")])
    found = {(r["split"], r["reference"], r["group"], r["metric"]): r for r in rows}
    # test, cold users a and b: Hybrid finds 2, Text 1; warm users c and d: 1 against 2
    assert found[("test", "Text", "cold", "recall@10")]["ratio"] == pytest.approx(2.0)
    assert found[("test", "Text", "cold", "recall@10")]["hits"] == [2, 1]  # the targets each side found
    assert found[("test", "Text", "warm", "recall@10")]["ratio"] == pytest.approx(0.5)
    # the ID row finds no cold target: no ratio there, only on warm users
    assert ("test", "ID", "cold", "recall@10") not in found and ("test", "ID", "warm", "recall@10") in found
    # validation groups follow the validation target: a alone is cold there, where Text finds it and Hybrid not
    assert found[("valid", "Text", "cold", "recall@10")]["ratio"] == pytest.approx(0.0)
    assert found[("valid", "Text", "warm", "recall@10")]["ratio"] == pytest.approx(3 / 2)
    assert all(r["holm_p"] >= r["p_value"] for r in rows) and {r["group"] for r in rows} <= {"cold", "warm"}


def test_the_shipped_cold_plans_primary_row_is_compared_within_groups_with_every_baseline():
    """One reference alone could be the one a group's condition hurts most (a sequential ID model whose last input
    is a cold item it never saw as a positive): every baseline is compared, none of the primary's variants."""
    from recbole_m6rec.benchmarks.cold_groups import comparisons_of
    from recbole_m6rec.benchmarks.plan import load_plan

    plan = load_plan(str(Path(__file__).resolve().parents[1] / "configs" / "cold_ml-100k.yaml"), {}, None, None)
    pairs = comparisons_of(plan)
    baselines = {reference for row, reference in pairs if row == "M6Rec" and not reference.startswith("M6Rec")}
    assert baselines == {"SASRec", "GRU4Rec", "BPR", "MostPop"}
    assert ("M6Rec", "M6Rec-text") in pairs and ("M6Rec", "M6Rec-zero-shot") not in pairs
    # a pair the plan names the other way round is not compared a second time
    reversed_pair = comparisons_of({**plan, "pairs": {"sasrec-vs-m6rec": ["SASRec", "M6Rec"]}})
    assert ("SASRec", "M6Rec") in reversed_pair and ("M6Rec", "SASRec") not in reversed_pair


def test_cold_groups_json_stays_json_when_an_interval_is_unbounded(tmp_path):
    """A reference with few hits in a group: some resamples draw none of them, so the interval has no upper end.
    JSON has no infinity: the file says null and the table says unbounded."""
    from recbole_m6rec.benchmarks.cold_groups import write

    users = {str(u): {"group": "cold", "candidates": 100} for u in range(40)}
    hits = {"recall@10": {str(u): float(u == 0) for u in range(40)}, "recall@100": {str(u): 1.0 for u in range(40)}}
    records = [
        {
            "row": "M6Rec",
            "seed": 1,
            "status": "ok",
            "test": {},
            "per_user_test": {m: dict.fromkeys(users, 1.0) for m in hits},
        },
        {"row": "SASRec", "seed": 1, "status": "ok", "test": {}, "per_user_test": hits},
    ]
    plan = {"dataset": "d", "rows": {"M6Rec": {}, "SASRec": {}}, "common": {}}
    facts = {"fingerprint": "f", "users": users, "valid_users": {}}
    result = write(tmp_path, plan, records, facts, "recall@10", "x")
    assert result["paired"][0]["ci_high"] == float("inf")
    saved = json.loads((tmp_path / "cold_groups.json").read_text())  # strict JSON: no Infinity
    assert saved["paired"][0]["ci_high"] is None and saved["runs"] == ["M6Rec-seed1", "SASRec-seed1"]
    assert "unbounded]" in (tmp_path / "cold_groups.md").read_text()
