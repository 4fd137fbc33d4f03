"""A cold-item protocol every model can run: a seeded share of items is never seen in training.

``cold_items: 0.1`` (with ``cold_items_seed``, default 2020, independent of the model's ``seed``) picks 10% of the
items that have interactions. Every interaction with a picked ("cold") item is removed from the data, except where
it is one of the user's last two interactions: those are the valid and test targets of RecBole's leave-one-out split
(``LS: valid_and_test``, order ``TO``), which is the protocol this setting requires. So no cold item appears in any
model's training data, every user keeps their history of warm items, and a cold item can only be a valid/test
target (or, for the test sample, the preceding valid item). Ranking stays over all items.

Each test user is then *cold* (their test target is a cold item) or *warm*; ``cold_warm_results`` splits any
per-user metric into ``cold_<metric>`` and ``warm_<metric>`` columns. ID-based models keep their rows: their
never-trained embeddings show what they do with unseen items.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["ColdItemSplit", "apply_cold_items", "cold_warm_results", "test_target_tokens"]

logger = logging.getLogger(__name__)


class ColdItemSplit:
    def __init__(self, cold_item_tokens: list[str], removed_interactions: int, share: float, seed: int):
        self.cold_item_tokens = cold_item_tokens
        self.removed_interactions = removed_interactions
        self.share = share
        self.seed = seed

    def facts(self) -> dict:
        return {
            "cold_items": len(self.cold_item_tokens),
            "cold_share": self.share,
            "cold_items_seed": self.seed,
            "cold_interactions_removed": self.removed_interactions,
        }


def _check_protocol(config) -> float:
    share = config["cold_items"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"cold_items must be a share of items strictly between 0 and 1, e.g. 0.1 (got {share!r})")
    split = (config["eval_args"] or {}).get("split") or {}
    order = (config["eval_args"] or {}).get("order")
    if split != {"LS": "valid_and_test"} or order != "TO":
        raise ValueError(
            "cold_items needs the leave-one-out protocol: eval_args split {LS: valid_and_test}, order TO "
            f"(got split {split}, order {order})"
        )
    return float(share)


def apply_cold_items(dataset, config) -> ColdItemSplit | None:
    """Remove cold items' interactions from ``dataset`` (created, not yet built) in place; None if not asked."""
    if config["cold_items"] is None:
        return None
    share = _check_protocol(config)
    seed = int(config["cold_items_seed"] if config["cold_items_seed"] is not None else 2020)
    feat = dataset.inter_feat
    uid, iid, time = dataset.uid_field, dataset.iid_field, dataset.time_field
    item_tokens = dataset.field2id_token[iid]
    present = np.unique(feat[iid].to_numpy())
    n_cold = int(round(share * len(present)))
    if n_cold < 1 or n_cold >= len(present):
        raise ValueError(
            f"cold_items={share} of the {len(present)} items with interactions in '{dataset.dataset_name}' "
            f"holds out {n_cold} items; the dataset is too small for this share (need at least one cold "
            "and one warm item)"
        )
    # seeded by cold_items_seed over raw tokens in sorted order: the same items for every model and run
    by_token = present[np.argsort(item_tokens[present])]
    cold = np.sort(np.random.default_rng(seed).choice(by_token, size=n_cold, replace=False))
    # position of each interaction from the end of its user's time-ordered sequence (0 = test target)
    order = np.lexsort((np.arange(len(feat)), feat[time].to_numpy(), feat[uid].to_numpy()))
    users_sorted = feat[uid].to_numpy()[order]
    from_end = np.empty(len(feat), dtype=np.int64)
    ends = np.r_[np.flatnonzero(np.diff(users_sorted)), len(users_sorted) - 1]
    starts = np.r_[0, ends[:-1] + 1]
    for start, end in zip(starts, ends):
        from_end[order[start : end + 1]] = np.arange(end - start, -1, -1)
    is_cold = np.isin(feat[iid].to_numpy(), cold)
    keep = ~is_cold | (from_end <= 1)
    dataset.inter_feat = feat[keep].reset_index(drop=True)
    removed = int((~keep).sum())
    logger.info(
        "cold items: %d of %d items held out (seed %d); %d training interactions removed",
        n_cold,
        len(present),
        seed,
        removed,
    )
    return ColdItemSplit(item_tokens[cold].tolist(), removed, share, seed)


def test_target_tokens(test_dataset) -> dict[str, str]:
    """``{user token: test target item token}`` of a built leave-one-out test dataset."""
    feat = test_dataset.inter_feat
    users = test_dataset.field2id_token[test_dataset.uid_field][feat[test_dataset.uid_field].numpy()]
    items = test_dataset.field2id_token[test_dataset.iid_field][feat[test_dataset.iid_field].numpy()]
    return dict(zip(map(str, users), map(str, items)))


def cold_warm_results(per_user: dict[str, dict[str, float]], test_dataset, split: ColdItemSplit) -> dict[str, float]:
    """``cold_<metric>`` / ``warm_<metric>`` means over test users whose target is a cold / warm item."""
    cold_tokens = set(split.cold_item_tokens)
    target_is_cold = {user: item in cold_tokens for user, item in test_target_tokens(test_dataset).items()}
    results = {}
    for metric, values in per_user.items():
        for group, wanted in (("cold", True), ("warm", False)):
            chosen = [v for user, v in values.items() if target_is_cold.get(user) == wanted]
            results[f"{group}_{metric}"] = round(float(np.mean(chosen)), 4) if chosen else float("nan")
    results["cold_test_users"] = sum(target_is_cold.values())
    results["warm_test_users"] = len(target_is_cold) - results["cold_test_users"]
    return results
