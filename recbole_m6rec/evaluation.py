"""One history-masking rule for every model, and a fingerprint that proves two runs used the same split.

RecBole masks a user's training items out of the full ranking for general models (BPR, LightGCN, Pop) but not for
sequential ones (SASRec, GRU4Rec, M6Rec). Comparing the two kinds under RecBole's defaults mixes two protocols.
``eval_history_mask`` picks one rule for all:

* ``recbole`` (RecBole's default): general models masked, sequential models not;
* ``all``: every model gets the user's known items masked (training items for validation; training + validation
  items for test), the right rule for data without repeat consumption such as MovieLens;
* ``none``: no model is masked.

The trainer applies the rule (:class:`recbole_m6rec.trainer.RunHooks`); this module holds the pure parts: the rule
names, the known-item matrices and indices, and the split fingerprint.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from scipy.sparse import csr_matrix

__all__ = [
    "HISTORY_MASK_RULES",
    "check_history_mask_rule",
    "split_fingerprint",
    "sequential_history_matrix",
    "known_item_index",
]

HISTORY_MASK_RULES = ("recbole", "all", "none")


def sequential_history_matrix(n_users: int, n_items: int, *datasets) -> csr_matrix:
    """Items each user has in the given sequential datasets (history lists and targets), as a 0/1 CSR matrix."""
    rows, cols = [], []
    for dataset in datasets:
        feat = dataset.inter_feat
        users = feat[dataset.uid_field].numpy()
        item_lists = feat[dataset.item_id_list_field].numpy()
        rows.append(np.repeat(users, item_lists.shape[1]))
        cols.append(item_lists.reshape(-1))
        rows.append(users)
        cols.append(feat[dataset.iid_field].numpy())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    keep = cols > 0
    matrix = csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])), shape=(n_users, n_items)
    )
    matrix.data[:] = 1.0
    return matrix


def known_item_index(matrix: csr_matrix, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(row in the batch, item) index of each batch user's known items: what RecBole's full-sort evaluation masks."""
    sub = matrix[users].tocoo()
    return torch.from_numpy(sub.row).long(), torch.from_numpy(sub.col).long()


def check_history_mask_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`HISTORY_MASK_RULES`, else a ValueError naming the valid ones."""
    if rule not in HISTORY_MASK_RULES:
        raise ValueError(f"eval_history_mask must be one of {', '.join(HISTORY_MASK_RULES)} (got {rule!r})")
    return rule


def _pairs(dataset, with_labels: bool = False) -> list[tuple[str, str]]:
    """(user token, item token) rows in dataset order. Sequential training data holds one sample per prefix; the
    user's first item appears only as the history of their first sample (length 1), so it is put back before that
    sample's target: the pairs are then each user's training sequence, as in a general model's training split."""
    feat = dataset.inter_feat
    users = feat[dataset.uid_field].numpy()
    items = feat[dataset.iid_field].numpy()
    if hasattr(dataset, "item_id_list_field") and dataset.item_id_list_field in feat:
        firsts = feat[dataset.item_id_list_field][:, 0].numpy()
        starts = feat[dataset.item_list_length_field].numpy() == 1
        raw_users = np.repeat(users, np.where(starts, 2, 1))
        raw_items = np.empty(len(raw_users), dtype=items.dtype)
        target_slot = np.cumsum(np.where(starts, 2, 1)) - 1
        raw_items[target_slot] = items
        raw_items[target_slot[starts] - 1] = firsts[starts]
        users, items = raw_users, raw_items
    user_tokens = dataset.field2id_token[dataset.uid_field]
    item_tokens = dataset.field2id_token[dataset.iid_field]
    pairs = list(zip(user_tokens[users].tolist(), item_tokens[items].tolist()))
    if with_labels:
        labels = feat[dataset.label_field].numpy().tolist()
        pairs = [(user, f"{item}\t{label:g}") for (user, item), label in zip(pairs, labels)]
    return pairs


def split_fingerprint(train_data, valid_data, test_data) -> str:
    """SHA-256 (first 16 hex) over each user's ordered training sequence and the valid/test (user, target) pairs
    (with their labels in labelled evaluation), in raw tokens, so general, context and sequential models on the same
    leave-one-out split get the same fingerprint."""
    digest = hashlib.sha256()
    for part, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        # Labelled (CTR) evaluation: the evaluated samples carry their label. Training labels stay out: a
        # sequential model never sees the label of a user's first interaction (it is only history).
        dataset = loader._dataset
        labelled = part != "train" and getattr(dataset, "label_field", None) in dataset.inter_feat
        pairs = _pairs(dataset, with_labels=labelled)
        order = sorted(range(len(pairs)), key=lambda k: pairs[k][0])  # stable: keeps each user's order
        digest.update(part.encode())
        for k in order:
            digest.update(f"{pairs[k][0]}\t{pairs[k][1]}\n".encode())
    return digest.hexdigest()[:16]
