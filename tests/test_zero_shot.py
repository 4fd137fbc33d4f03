"""Zero-shot M6Rec on the tiny random decoder: the score is the mean token log-probability, the shared prefix cache
changes nothing, encoders are refused, and RecBole's sampled and re-ranked evaluations run."""

import dataclasses
import re
import sys

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.lm import load_plm
from recbole_m6rec.model.zero_shot import LikelihoodScorer, M6RecZeroShot

SLICE = {
    "user_inter_num_interval": "[0,21]",
    "MAX_ITEM_LIST_LENGTH": 10,
    "show_progress": False,
    "state": "ERROR",
    "plm_name_or_path": "tiny-random-llama",
}


pytestmark = pytest.mark.usefixtures("no_foreign_argv")  # conftest: RecBole never sees pytest's flags


@pytest.fixture(scope="module")
def tiny_lm():
    return load_plm("tiny-random-llama")


def test_score_is_the_mean_token_log_probability(tiny_lm):
    tokenizer, lm = tiny_lm
    prefix = tokenizer("A user watched Toy Story and Heat.\n")["input_ids"]
    candidate = tokenizer(" Fargo (1996)\n", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([prefix + candidate])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    direct = torch.stack([logp[len(prefix) - 1 + j, token] for j, token in enumerate(candidate)]).mean()
    scored = LikelihoodScorer(lm).score(prefix, [candidate])
    assert scored.shape == (1,) and scored[0] == pytest.approx(float(direct), abs=1e-5)


def test_cached_prefix_scoring_equals_uncached(tiny_lm):
    tokenizer, lm = tiny_lm
    prefix = tokenizer("Here is a history: Heat (1995)\nCasino (1995)\n")["input_ids"]
    candidates = [
        tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in [" Toy Story\n", " Star Wars (1977). Genres: Action Sci-Fi\n", " Fargo\n", " a\n"]
    ]
    scorer = LikelihoodScorer(lm, batch_size=3)  # two chunks: the cache is copied per chunk
    cached, uncached = scorer.score(prefix, candidates), scorer.score(prefix, candidates, use_cache=False)
    assert torch.allclose(cached, uncached, atol=1e-5)
    assert len(set(cached.tolist())) == 4  # the candidates get different scores


def test_zero_shot_needs_a_generative_model():
    config = PluginConfig(
        model="M6RecZeroShot", dataset="ml-100k", config_dict={**SLICE, "plm_name_or_path": "tiny-random-bert"}
    )
    dataset = create_dataset(config)
    with pytest.raises(
        ValueError,
        match=r"needs a generative language model; 'tiny-random-bert' is an encoder.*"
        r"smollm2-135m, tiny-random-llama",
    ):
        M6RecZeroShot(config, dataset)


@pytest.mark.parametrize("mode,extra", [("uni20", {}), ("full", {"zero_shot_rerank_top_k": 20})])
def test_zero_shot_runs_through_recbole_evaluation(mode, extra, tmp_path, monkeypatch):
    from recbole_m6rec.quick_start import run_pipeline

    monkeypatch.chdir(tmp_path)
    config = PluginConfig(
        model="M6RecZeroShot",
        dataset="ml-100k",
        config_dict={
            **SLICE,
            **extra,
            "checkpoint_dir": str(tmp_path),
            "epochs": 50,
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode, "group_by": "user"},
        },
    )
    outcome = run_pipeline(config)
    test = outcome.result["test_result"]
    assert outcome.extra["epochs_run"] == 0  # nothing trained, whatever `epochs` says
    assert 0 <= test["ndcg@10"] <= 1 and test["recall@10"] > 0
    if mode == "full":  # the reranked top 20 are popular items: recall@10 is at least a little like Pop's
        assert outcome.per_user_test and len(outcome.per_user_test["ndcg@10"]) > 20


def test_text_retriever_reaches_items_without_interactions_and_skips_the_history():
    config = PluginConfig(
        model="M6RecZeroShot",
        dataset="ml-100k",
        config_dict={
            **SLICE,
            "zero_shot_retriever": "text",
            "zero_shot_rerank_top_k": 20,
            "cold_items": 0.2,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        },
    )
    from recbole_m6rec.cold_start import apply_cold_items

    dataset = create_dataset(config)
    apply_cold_items(dataset, config)
    train, _, test = data_preparation(config, dataset)
    model = M6RecZeroShot(config, train._dataset)
    vectors = model.text_vectors
    assert torch.equal(vectors[0], torch.zeros_like(vectors[0]))
    assert torch.allclose(vectors[1:].norm(dim=1), torch.ones(len(vectors) - 1), atol=1e-5)
    interaction = next(iter(test))[0]
    seq, length = interaction["item_id_list"], interaction["item_length"]
    scores = model.retriever_scores(seq, length)
    row = int(torch.argmax(length))
    recent = seq[row, max(0, int(length[row]) - model.history_items) : int(length[row])]
    user = torch.nn.functional.normalize(vectors[recent].sum(0), dim=0)
    unseen = (model.popularity == 0).nonzero().flatten()[1:]
    unseen = unseen[~torch.isin(unseen, seq[row])]
    torch.testing.assert_close(scores[row, unseen], vectors[unseen] @ user)  # the cosine, for untrained items too
    assert torch.isinf(scores[row, seq[row, : int(length[row])]]).all()  # history items are never candidates
    top = scores.topk(20, dim=1).indices
    assert torch.isin(top, unseen).any()  # cold items reach the re-ranked candidates
    pop = M6RecZeroShot(
        PluginConfig(
            model="M6RecZeroShot",
            dataset="ml-100k",
            config_dict={
                **SLICE,
                "zero_shot_rerank_top_k": 20,
                "cold_items": 0.2,
                "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            },
        ),
        train._dataset,
    )
    assert not torch.isin(pop.retriever_scores(seq, length).topk(20, dim=1).indices, unseen).any()


FULL_RANKING = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"}}


@pytest.fixture(scope="module")
def poisoned():
    """A zero-shot model whose language model returns NaN (its final norm's weight is NaN), and one test user."""
    config = PluginConfig(model="M6RecZeroShot", dataset="ml-100k", config_dict={**SLICE, **FULL_RANKING})
    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        train, _, test = data_preparation(config, create_dataset(config))
    finally:
        sys.argv = argv
    model = M6RecZeroShot(config, train._dataset)
    with torch.no_grad():
        model.lm.model.norm.weight.fill_(float("nan"))
    return model, next(iter(test))[0][:1]


@pytest.mark.parametrize(
    "path,top_k,retriever",
    [
        ("predict", None, "pop"),
        ("full_sort_predict", None, "pop"),
        ("full_sort_predict (re-rank)", 20, "pop"),
        ("full_sort_predict (re-rank)", 20, "text"),
    ],
)
def test_nan_from_the_language_model_is_an_error_in_every_scoring_path(poisoned, path, top_k, retriever):
    """NaN scores are never ranked: once turned into 0.0 they sat above every mean log-probability (< 0)."""
    model, users = poisoned
    model.settings = dataclasses.replace(model.settings, zero_shot_rerank_top_k=top_k, zero_shot_retriever=retriever)
    if retriever == "text":  # the retriever's item vectors come from the language model too
        model.text_vectors = torch.full((model.n_items, 4), float("nan"))
    scores = model.predict if path == "predict" else model.full_sort_predict
    # every candidate of the user; with the text retriever, every item it scores (NaN too) that is not masked
    expected = (
        1 if path == "predict" else model.n_items - 1 if top_k is None else 20 if retriever == "pop" else "[0-9]+"
    )
    with pytest.raises(FloatingPointError, match=rf"M6RecZeroShot\.{re.escape(path)} produced {expected} non-finite"):
        scores(users)


def test_masked_items_are_not_mistaken_for_model_failures():
    """The re-rank path masks the padding item and the history with -inf: those stay last, and are no error."""
    config = PluginConfig(
        model="M6RecZeroShot", dataset="ml-100k", config_dict={**SLICE, **FULL_RANKING, "zero_shot_rerank_top_k": 20}
    )
    train, _, test = data_preparation(config, create_dataset(config))
    model = M6RecZeroShot(config, train._dataset)
    users = next(iter(test))[0][:2]
    scores = model.full_sort_predict(users)
    lowest = torch.finfo(torch.float).min
    assert bool(torch.isfinite(scores).all()) and bool((scores[:, 0] == lowest).all())
    for row in range(2):
        history = users["item_id_list"][row, : int(users["item_length"][row])]
        assert bool((scores[row, history] == lowest).all())
        assert bool((scores[row].topk(20).values > -1e3).all())  # the re-ranked top 20 carry log-probabilities


def test_the_language_model_and_the_retriever_follow_the_model_to_another_device():
    """The language model, kept out of the module tree (and so out of checkpoints), still converts and moves with
    ``.to()``, and the scorer and the retriever build their tensors where the model is (``meta``: a device with no
    data, the CPU's stand-in for an accelerator: a tensor left on the CPU meets one on ``meta`` and fails)."""
    config = PluginConfig(
        model="M6RecZeroShot",
        dataset="ml-100k",
        config_dict={**SLICE, **FULL_RANKING, "zero_shot_retriever": "text", "zero_shot_rerank_top_k": 20},
    )
    train, _, test = data_preparation(config, create_dataset(config))
    model = M6RecZeroShot(config, train._dataset).to(torch.float64)
    assert {p.dtype for p in model.lm.parameters()} == {torch.float64} and model.text_vectors.dtype == torch.float64
    assert "lm" not in dict(model.named_children()) and not any(k.startswith("lm.") for k in model.state_dict())
    users = next(iter(test))[0][:2]
    seq, length = users["item_id_list"], users["item_length"]
    prefix = model.prefix_for(seq[0], int(length[0]))
    model.to("meta")
    assert {p.device.type for p in model.lm.parameters()} == {"meta"}
    assert model.text_vectors.is_meta and model.popularity.is_meta
    fed = []  # the device of every tensor the scorer hands the language model

    def record(module, args, kwargs):
        fed.extend(v.device.type for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor))

    model.lm.register_forward_pre_hook(record, with_kwargs=True)
    scores = model.scorer.score(prefix, [model.item_token_ids[i] for i in (1, 2, 3)])
    assert scores.is_meta and scores.shape == (3,) and set(fed) == {"meta"}
    retriever = model.retriever_scores(seq.to("meta"), length.to("meta"))
    assert retriever.is_meta and retriever.shape == (2, model.n_items)
