"""M6Rec's sampled-negative losses (BPR with RecBole's train_neg_sample_args, sampled_softmax) on a tiny
random-initialised backbone and real RecBole batches: shapes, gradients, direct computations, which items may be
negatives, seeding, settings errors, and one RecBole run."""

import math

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_m6rec.m6rec_trainer import whole_sequence_loader
from recbole_m6rec.model import losses

MODEL = "M6Rec"  # the model of conftest's make_config / data / make_model
NEGATIVES = {"distribution": "uniform", "sample_num": 1}
BPR = {"loss_type": "BPR", "train_neg_sample_args": NEGATIVES}
NO_NEGATIVES = {"train_neg_sample_args": None}


@pytest.fixture(scope="module")
def data(make_config):
    """``(config, train, valid, test)`` of a BPR config: RecBole's training batches carry ``neg_item_id``."""
    from helpers import prepare_data

    return prepare_data(make_config(**BPR))


@pytest.fixture(scope="module")
def windows(data):
    """A batch of whole-sequence windows from the trainer's loader, each with RecBole's negative."""
    return next(iter(whole_sequence_loader(data[0], data[1])))


@pytest.fixture(scope="module")
def prefixes(data):
    """A batch of RecBole's one-sample-per-prefix training data."""
    return next(iter(data[1]))


def head(batch, rows: int) -> Interaction:
    return Interaction({key: value[:rows] for key, value in batch.interaction.items()})


class Spy:
    """Records what a function returns while calling it."""

    def __init__(self, monkeypatch, owner, name):
        self.calls, original = [], getattr(owner, name)

        def spy(*args, **kwargs):
            result = original(*args, **kwargs)
            self.calls.append(result)
            return result

        monkeypatch.setattr(owner, name, spy)


def scored_positions(batch, whole: bool):
    """``[(row, t, target)]`` in row order: position t (after items 0..t) of each row that the loss scores."""
    out = []
    for row in range(len(batch)):
        n = int(batch["item_length"][row])
        seq = batch["item_id_list"][row]
        steps = range(n) if whole else [n - 1]
        out += [(row, t, int(seq[t + 1]) if t < n - 1 else int(batch["item_id"][row])) for t in steps]
    return out


# --- shapes, finite loss, gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("loss", [BPR, {"loss_type": "sampled_softmax", "softmax_negatives": 64, **NO_NEGATIVES}])
def test_sampled_losses_are_finite_scalars(make_model, windows, prefixes, loss, whole):
    model = make_model(**loss, train_whole_sequences=whole)
    batch = windows if whole else prefixes
    assert "neg_item_id" in batch and batch["neg_item_id"].shape == (len(batch),)
    states = model(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert states.shape == (len(batch), 21, 32)
    value = model.calculate_loss(batch)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() > 0
    if loss["loss_type"] == "sampled_softmax":  # an untrained model is near chance over the target and 64 negatives
        assert 0.3 * math.log(65) < value.item() < 3 * math.log(65)


@pytest.mark.parametrize("loss", [BPR, {"loss_type": "sampled_softmax", **NO_NEGATIVES}])
def test_gradients_reach_exactly_the_trainable_parameters(make_model, windows, loss):
    model = make_model(**loss, use_item_id_embedding=True)
    model.calculate_loss(windows).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    nonzero = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {
        "late.prompt",
        "user_projection.weight",
        "item_projection.weight",
        "candidate_embedding",
        "item_id_embedding.weight",
    } <= nonzero


# --- the losses equal a direct computation ------------------------------------------------------------------------
def _direct_scores(model, batch):
    """Every user state and every item vector, in eval mode (BatchNorm uses running statistics, so an item's vector
    does not depend on which other items are scored with it)."""
    with torch.no_grad():
        states = model(batch["item_id_list"], batch["item_length"], batch["user_id"])  # [B n+1 d]
        users = model._user_head(states.reshape(-1, states.shape[-1])).reshape(*states.shape[:2], -1)
        return users, model.item_vectors()


@pytest.mark.parametrize("whole", [True, False])
def test_bpr_loss_equals_a_direct_computation(make_model, windows, prefixes, monkeypatch, whole):
    model = make_model(**BPR, train_whole_sequences=whole).eval()
    batch = head(windows if whole else prefixes, 4)
    spy = Spy(monkeypatch, losses, "bpr_negatives")
    with torch.no_grad():
        value = float(model.calculate_loss(batch))
    negatives = spy.calls[0].tolist()
    users, items = _direct_scores(model, batch)
    positions = scored_positions(batch, whole)
    assert len(negatives) == len(positions)
    terms = []
    for (row, t, target), negative in zip(positions, negatives):
        pos = float(users[row, t + 1] @ items[target]) / model.settings.temperature
        neg = float(users[row, t + 1] @ items[negative]) / model.settings.temperature
        terms.append(math.log1p(math.exp(-(pos - neg))))  # -log sigmoid(pos - neg)
    assert value == pytest.approx(sum(terms) / len(terms), rel=1e-4)
    # the position that predicts the sample's target takes RecBole's negative, exactly
    last = [i for i, (row, t, _) in enumerate(positions) if t == int(batch["item_length"][row]) - 1]
    assert [negatives[i] for i in last] == batch["neg_item_id"].tolist()


def test_sampled_softmax_equals_a_direct_computation(make_model, windows, monkeypatch):
    """Shared negatives that hold some positions' own targets: those are left out of those positions' softmax."""
    model = make_model(loss_type="sampled_softmax", softmax_negatives=5, **NO_NEGATIVES).eval()
    batch = head(windows, 3)
    positions = scored_positions(batch, True)
    targets = list(dict.fromkeys(target for _, _, target in positions))
    others = [i for i in range(1, model.n_items) if i not in targets][:3]
    shared = targets[:2] + others
    monkeypatch.setattr(
        losses, "draw_shared_negatives", lambda pool, k, device: torch.tensor(shared[:k], device=device)
    )
    with torch.no_grad():
        value = float(model.calculate_loss(batch))
    users, items = _direct_scores(model, batch)
    terms = []
    for row, t, target in positions:
        logits = [float(users[row, t + 1] @ items[target]) / model.settings.temperature] + [
            float(users[row, t + 1] @ items[j]) / model.settings.temperature for j in shared if j != target
        ]
        terms.append(-logits[0] + math.log(sum(math.exp(x) for x in logits)))
    assert value == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_scored_positions_and_their_labels():
    seq = torch.tensor([[4, 5, 6, 0], [7, 0, 0, 0]])
    lengths, target = torch.tensor([3, 1]), torch.tensor([9, 8])
    positions, labels, last = losses.scored_positions(seq, lengths, target, whole_sequences=True)
    assert positions.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert labels.tolist() == [5, 6, 9, 8] and last.tolist() == [False, False, True, True]
    positions, labels, last = losses.scored_positions(seq, lengths, target, whole_sequences=False)
    assert positions.tolist() == [[False, False, True, False], [True, False, False, False]]
    assert labels.tolist() == [9, 8] and last.tolist() == [True, True]


def test_shared_negatives_are_distinct_items_of_the_pool():
    torch.manual_seed(0)
    pool = torch.tensor([2, 3, 5, 7, 11, 13])
    drawn = losses.draw_shared_negatives(pool, 4, torch.device("cpu"))
    assert len(set(drawn.tolist())) == 4 and set(drawn.tolist()) <= set(pool.tolist())
    assert sorted(losses.draw_shared_negatives(pool, 6, torch.device("cpu")).tolist()) == pool.tolist()


# --- which items may be negatives ---------------------------------------------------------------------------------
def test_drawn_negatives_are_never_the_target_nor_the_padding_item():
    torch.manual_seed(0)
    pool = torch.arange(1, 4)  # three items: a third of the first draws hit the target
    targets = torch.randint(1, 4, (5000,))
    negatives = losses.draw_negatives(pool, targets)
    assert not bool((negatives == targets).any())
    assert set(negatives.tolist()) == {1, 2, 3}
    for item in (1, 2, 3):  # uniform over the pool without the target: each other item half the time
        share = float((negatives[targets == item] == item % 3 + 1).float().mean())
        assert share == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match=r"at least 2 items .* \(got 1\)"):
        losses.draw_negatives(torch.tensor([5]), targets)


def test_model_negatives_are_never_the_target_nor_padding_and_only_seen_items_under_seen(
    make_model, windows, monkeypatch
):
    model = make_model(**BPR, loss_items="seen")
    seen = model.cold.seen.bool()
    cold = (~seen).nonzero().flatten()
    cold = cold[cold != 0]
    assert len(cold) > 0  # the slice has items without a training interaction
    batch = head(windows, len(windows))
    batch.interaction["neg_item_id"] = cold[torch.arange(len(batch)) % len(cold)]  # RecBole drew cold items only
    spy = Spy(monkeypatch, losses, "bpr_negatives")
    model.calculate_loss(batch)
    negatives = spy.calls[0]
    labels = torch.tensor([target for _, _, target in scored_positions(batch, True)])
    assert not bool((negatives == labels).any()) and not bool((negatives == 0).any())
    assert bool(seen[negatives].all())  # RecBole's cold negatives were drawn again among the seen items

    softmax = make_model(
        loss_type="sampled_softmax", loss_items="seen", softmax_negatives=int(seen.sum()), **NO_NEGATIVES
    )
    shared_spy = Spy(monkeypatch, losses, "draw_shared_negatives")
    softmax.calculate_loss(batch)
    assert sorted(shared_spy.calls[0].tolist()) == seen.nonzero().flatten().tolist()


def test_same_seed_same_loss_and_the_draws_follow_the_generator(make_model, windows):
    first = make_model(**BPR).calculate_loss(windows).detach()  # make_model seeds with init_seed(2020) before building
    again = make_model(**BPR)
    assert float(again.calculate_loss(windows)) == float(first)
    assert float(again.calculate_loss(windows)) != float(first)  # the generator moved on: other negatives


# --- settings -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"loss_type": "BPR", **NO_NEGATIVES},
            r"loss_type BPR needs RecBole's sampled negatives \(got "
            r"train_neg_sample_args: ~\); set train_neg_sample_args: "
            r"\{distribution: uniform, sample_num: 1\}",
        ),
        (
            {"loss_type": "CE", "train_neg_sample_args": NEGATIVES},
            r"loss_type CE takes no negatives from RecBole's " r"sampler .*set train_neg_sample_args: ~",
        ),
        (
            {"loss_type": "sampled_softmax", "train_neg_sample_args": NEGATIVES},
            r"loss_type sampled_softmax takes no negatives .*softmax_negatives",
        ),
        (
            {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 0}},
            r"train_neg_sample_args.sample_num is 0; valid: a whole number >= 1",
        ),
        (
            {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "popularity", "sample_num": 1}},
            r"distribution: 'popularity'\); valid: uniform",
        ),
        (
            {"loss_type": "sampled_softmax", "softmax_negatives": 0, **NO_NEGATIVES},
            r"softmax_negatives must be an integer >= 1 \(got 0\)",
        ),
        (
            {"loss_type": "hinge", **NO_NEGATIVES},
            r"loss_type must be one of CE, inbatch, BPR, sampled_softmax " r"\(got 'hinge'\)",
        ),
    ],
)
def test_inconsistent_loss_settings_are_clear_errors(make_model, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_model(**overrides)


def test_more_softmax_negatives_than_items_is_a_clear_error(make_model, windows):
    model = make_model(loss_type="sampled_softmax", softmax_negatives=10**6, **NO_NEGATIVES)
    with pytest.raises(ValueError, match=rf"at most .* {model.n_items - 1} \(got 1000000\)"):
        model.calculate_loss(windows)


def test_bpr_without_recbole_negatives_in_the_batch_is_a_clear_error(make_model, windows):
    batch = Interaction({k: v for k, v in windows.interaction.items() if k != "neg_item_id"})
    with pytest.raises(ValueError, match="no 'neg_item_id' field"):
        make_model(**BPR).calculate_loss(batch)


# --- one RecBole run ------------------------------------------------------------------------------------------------
def test_a_recbole_run_with_bpr_trains_and_evaluates(tmp_path, cache_dir, no_foreign_argv, monkeypatch):
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.model.m6rec import M6Rec
    from recbole_m6rec.quick_start import run_pipeline

    monkeypatch.chdir(tmp_path)  # RecBole writes its log folder into the working directory
    negatives = Spy(monkeypatch, losses, "bpr_negatives")
    trained = Spy(monkeypatch, M6Rec, "calculate_loss")
    config = PluginConfig(
        model="M6Rec",
        dataset="ml-100k",
        config_dict={
            **BPR,
            "plm_name_or_path": "tiny-random-llama",
            "text_cache_dir": cache_dir,
            "user_inter_num_interval": "[0,30]",
            "MAX_ITEM_LIST_LENGTH": 20,
            "epochs": 1,
            "train_batch_size": 32,
            "show_progress": False,
            "state": "WARNING",
            "checkpoint_dir": str(tmp_path / "saved"),
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
        },
    )
    result = run_pipeline(config, saved=False).result
    assert len(trained.calls) == len(negatives.calls) > 1  # every training step scored sampled negatives
    assert all(torch.isfinite(loss) for loss in trained.calls)
    assert 0 <= result["test_result"]["ndcg@10"] <= 1 and 0 <= result["best_valid_result"]["recall@10"] <= 1
