"""Serving many candidates for one user (M6RecCTR.score_candidates): the history's keys and values are computed once
and every candidate attends to them; the scores must equal ``predict`` on each (history, candidate) pair alone, for
several users, history lengths from 0 to the maximum, with and without history labels or recency words, with
non-zero adapters and learned positions, on a decoder (cached keys and values) and an encoder (the fallback)."""

import pytest
import torch
from recbole.data.interaction import Interaction

MODEL = "M6RecCTR"  # the model of conftest's make_config / data / make_model
N_CANDIDATES = 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models make hundreds of small calls: on a shared 2-core machine one thread is many times faster than two
    (threads wait for each other); both scoring paths run under the same setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def eval_batch(data):
    return next(iter(data[2]))[0]


def perturbed(model):
    """Every learned part of the online path away from its start (adapters start as the identity, positions at
    zero): a candidate scored with a wrong position, mask or token cannot match by accident."""
    generator = torch.Generator().manual_seed(0)
    learned = ("late.", "options", "outcome_tokens", "item_id_embedding", "item_adapter")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(learned) and not name.startswith("late.stack.") or ".adapter." in name:
                p.add_(0.5 * p.detach().abs().mean().clamp(min=0.1) * torch.randn(p.shape, generator=generator))
        model.options.mul_(10)  # logits of order 1: scores spread over candidates, far from 0 and 1
    return model.eval()


def users(data, model, n_users=3):
    """``n_users`` test rows (the longest history first): (user, history, labels, times, time shown, next item)."""
    batch = eval_batch(data)
    order = torch.argsort(batch[model.ITEM_SEQ_LEN], descending=True, stable=True)
    rows = torch.cat([order[:1], order[1 :: max(1, len(order) // n_users)][: n_users - 1]])
    for b in rows.tolist():
        n = int(batch[model.ITEM_SEQ_LEN][b])
        yield (
            int(batch[model.USER_ID][b]),
            batch[model.ITEM_SEQ][b, :n],
            batch[model.LABEL_LIST][b, :n],
            batch[model.TIME_FIELD + "_list"][b, :n],
            batch[model.TIME_FIELD][b],
            int(batch[model.ITEM_ID][b]),
        )


def one_by_one(model, user, history, labels, times, shown, candidates):
    """``predict`` on each (history, candidate) pair alone, as a RecBole batch of one row."""
    n_max, n = model.max_seq_length, len(history)
    pad = lambda x: torch.nn.functional.pad(x, (0, n_max - n)).unsqueeze(0)  # noqa: E731
    scores = []
    for item in candidates.tolist():
        row = {
            model.ITEM_SEQ: pad(history),
            model.ITEM_SEQ_LEN: torch.tensor([n]),
            model.ITEM_ID: torch.tensor([item]),
            model.USER_ID: torch.tensor([user]),
            model.LABEL_LIST: pad(labels),
            model.TIME_FIELD + "_list": pad(times),
            model.TIME_FIELD: shown.reshape(1),
        }
        scores.append(model.predict(Interaction(row)))
    return torch.cat(scores)


def candidates_for(model, next_item, seed):
    generator = torch.Generator().manual_seed(seed)
    others = torch.randint(1, model.n_items, (N_CANDIDATES - 2,), generator=generator)
    return torch.cat([torch.tensor([next_item]), others, others[:1]])  # the real next item, random ones, a repeat


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the default: profile, history labels, option adapters
        {"history_labels": False},
        {"recency_words": True},
        {  # every token of an item, three online layers, the text+ID hybrid with the item-state adapter, no profile
            "late_interaction_layers": 3,
            "segment_tokens": "all",
            "use_item_id_embedding": True,
            "item_adapter_rank": 4,
            "use_profile": False,
        },
        {"plm_name_or_path": "tiny-random-bert"},  # no cache hook: the history runs again with each chunk
    ],
    ids=["default", "no-history-labels", "recency", "3-layers-all-tokens-ids", "bert"],
)
def test_cached_history_scores_equal_predict_on_each_pair(data, make_model, settings):
    model = perturbed(make_model(**settings))
    checked = 0
    with torch.no_grad():
        for u, (user, history, labels, times, shown, next_item) in enumerate(users(data, model)):
            full = len(history)
            for n in sorted({0, 1, 2, full // 2, full}) if u == 0 else (1, full):
                candidates = candidates_for(model, next_item, seed=10 * u + n)
                # shown later than the history, and in the second of its last item (whose outcome it must not see)
                for when in [shown] + ([times[n - 1]] if n > 0 else []):
                    expected = one_by_one(model, user, history[:n], labels[:n], times[:n], when, candidates)
                    got = model.score_candidates(
                        history[:n],
                        candidates,
                        user_id=user,
                        history_labels=labels[:n],
                        history_times=times[:n],
                        candidate_times=when,
                        batch_size=3,  # chunks of 3, 3, 3, 1: candidates side by side, and a short last chunk
                    )
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
                    assert got.std() > 1e-4  # the candidates' scores differ: a mix-up would show
                    checked += len(candidates)
    assert checked >= 3 * 2 * N_CANDIDATES
    assert full == model.max_seq_length  # the longest test history fills the window


def test_one_cached_history_serves_any_number_of_calls(data, make_model):
    """The cache is read, never extended: a second call, another chunk size or the candidates in another order give
    the same scores; no candidates, no scores."""
    model = perturbed(make_model())
    user, history, labels, times, shown, next_item = next(users(data, model))
    candidates = candidates_for(model, next_item, seed=1)
    with torch.no_grad():
        cached = model.cache_history(history, user_id=user, history_labels=labels, history_times=times)
        first = model.score_cached(cached, candidates, candidate_times=shown, batch_size=4)
        again = model.score_cached(cached, candidates, candidate_times=shown, batch_size=len(candidates))
        reversed_order = model.score_cached(cached, candidates.flip(0), candidate_times=shown, batch_size=1).flip(0)
        none = model.score_cached(cached, torch.tensor([], dtype=torch.long), candidate_times=shown)
    assert none.shape == (0,)
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reversed_order, first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_a_plain_number_in_the_last_history_second_hides_that_seconds_outcomes(data, make_model, dtype):
    """Times in float64 or int64 (raw epoch seconds) and a candidate time given as a Python number: compared in the
    history's dtype, so a candidate of the last history item's second does not see its outcome, as in predict."""
    model = perturbed(make_model())
    user, history, labels, _, _, next_item = next(users(data, model))
    history, labels = history[:3], labels[:3]
    # raw epoch seconds; 880000100 is not a float32 number (float32 steps by 64 there)
    times = torch.tensor([880000000, 880000050, 880000100], dtype=dtype)
    last = 880000100
    candidates = candidates_for(model, next_item, seed=3)
    with torch.no_grad():
        expected = one_by_one(model, user, history, labels, times, times[-1], candidates)
        got = model.score_candidates(
            history, candidates, user_id=user, history_labels=labels, history_times=times, candidate_times=float(last)
        )
        flipped = labels.clone()
        flipped[-1] = 1 - flipped[-1]
        unmoved = model.score_candidates(
            history, candidates, user_id=user, history_labels=flipped, history_times=times, candidate_times=float(last)
        )
        flipped = labels.clone()
        flipped[0] = 1 - flipped[0]
        moved = model.score_candidates(
            history, candidates, user_id=user, history_labels=flipped, history_times=times, candidate_times=float(last)
        )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unmoved, got)  # the outcome of the candidates' own second is not read
    assert (moved - got).abs().max() > 1e-4  # an earlier second's is


@pytest.mark.parametrize(
    "change,message",
    [
        ({"history": torch.arange(1, 30)}, "more than MAX_ITEM_LIST_LENGTH=20"),
        ({"candidates": torch.tensor([0, 5])}, "candidates holds item id 0: valid ids are 1 .."),
        ({"candidates": torch.tensor([[5]])}, "candidates must be a 1-d tensor of item ids"),
        ({"user_id": None}, "pass user_id"),
        ({"user_id": 10**6}, "user_id must be one id in 1 .."),
        ({"history_labels": None}, "history_labels is on: pass history_labels"),
        ({"history_labels": torch.tensor([1, 2, 0])}, "history_labels must hold one label in 0 .. 1"),
        ({"history_times": None}, "history_labels\\): pass history_times"),
        ({"history_times": torch.tensor([1.0])}, "history_times must hold one time per history item"),
        ({"candidate_times": None}, "history_labels is on: pass candidate_times"),
        ({"candidate_times": torch.tensor([4.0, 5.0, 6.0])}, "candidate_times holds 3 times for 2 candidates"),
        ({"history_times": torch.tensor([1.0, 3.0, 2.0])}, "history_times must be in time order.*position 2"),
        ({"candidate_times": 2.5}, "candidate_times holds 2.5, earlier than the history's last time 3.0"),
        ({"batch_size": 0}, "batch_size must be a positive int \\(got 0\\)"),
    ],
)
def test_bad_input_is_refused_with_what_would_be_valid(data, make_model, change, message):
    model = make_model().eval()
    arguments = {
        "history": torch.tensor([3, 4, 5]),
        "candidates": torch.tensor([6, 7]),
        "user_id": 1,
        "history_labels": torch.tensor([1, 0, 1]),
        "history_times": torch.tensor([1.0, 2.0, 3.0]),
        "candidate_times": 4.0,
        "batch_size": 8,
        **change,
    }
    history, candidates = arguments.pop("history"), arguments.pop("candidates")
    with pytest.raises(ValueError, match=message):
        model.score_candidates(history, candidates, **arguments)


def test_recency_words_need_the_times(data, make_model):
    model = make_model(recency_words=True).eval()
    with pytest.raises(ValueError, match="pass history_times"):
        model.score_candidates(torch.tensor([3, 4]), torch.tensor([6]), user_id=1, history_labels=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="pass candidate_times"):
        model.score_candidates(
            torch.tensor([3, 4]),
            torch.tensor([6]),
            user_id=1,
            history_labels=torch.tensor([1, 0]),
            history_times=torch.tensor([1.0, 2.0]),
        )


def test_the_serving_benchmark_scores_as_predict(data, make_model):
    """``ctr_latency --serving``'s measurement on the default settings (history labels: it passes the times)."""
    from recbole_m6rec.benchmarks.ctr_latency import measure_serving

    model = perturbed(make_model())
    result = measure_serving(model, data[3], n_candidates=12, n_users=2, batch_size=5, check_candidates=12)
    assert result["users"] == 2 and result["candidates_per_user"] == 12
    assert result["max_abs_difference_to_predict"] < 1e-5
