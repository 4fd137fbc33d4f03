"""A trained M6Rec checkpoint, its users, and their top-k items as RecBole's full-ranking evaluation ranks them.

The model's input for a user is the row RecBole's validation data holds for them: their training history (its last
``MAX_ITEM_LIST_LENGTH`` items, oldest first). Every item is scored with ``full_sort_predict``; the padding item and
every item of the user's training history are masked (the ``eval_history_mask: all`` rule for validation, built with
the same :func:`~recbole_m6rec.evaluation.sequential_history_matrix`), as the trainer masks them before its top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recbole_m6rec.checkpoint import is_plain_checkpoint, load_recbole_checkpoint
from recbole_m6rec.evaluation import known_item_index, sequential_history_matrix

__all__ = ["Ranked", "Recommender", "check_m6rec_checkpoint", "load_recommender"]

MODEL_NAME = "M6Rec"
_SHOWN_IDS = 8  # valid user ids an error message shows


def check_m6rec_checkpoint(model_file: str | Path) -> dict:
    """The checkpoint's contents, after checking it exists, is readable and holds an M6Rec model."""
    path = Path(model_file)
    if not path.is_file():
        nearby = sorted(path.parent.glob(f"{MODEL_NAME}-*.pth"))[-3:] if path.parent.is_dir() else []
        hint = f"; M6Rec checkpoints in '{path.parent}': {[str(p) for p in nearby]}" if nearby else ""
        raise FileNotFoundError(f"checkpoint file not found: '{model_file}'{hint}")
    checkpoint = load_recbole_checkpoint(path)
    if not isinstance(checkpoint, dict) or not ("model" in checkpoint or "config" in checkpoint):
        raise ValueError(f"'{model_file}' is not a RecBole or recbole_m6rec checkpoint (no model name in it)")
    name = checkpoint["model"] if is_plain_checkpoint(checkpoint) else checkpoint["config"]["model"]
    if name != MODEL_NAME:
        raise ValueError(
            f"'{model_file}' holds a {name} checkpoint; explanations need an {MODEL_NAME} checkpoint "
            f"(python run_recbole.py --model={MODEL_NAME} --dataset=... writes one under checkpoint_dir)"
        )
    return checkpoint


@dataclass
class Ranked:
    """One user's ranking: the model's input history (oldest first) and the top-k items with their scores."""

    user: str  # raw user id
    uid: int  # RecBole's internal id
    history: list[int]  # internal item ids the model read
    items: list[int]  # top-k internal item ids, best first
    scores: list[float]


class Recommender:
    """A loaded M6Rec checkpoint with RecBole's data: user lookup and masked full ranking."""

    def __init__(self, config, model, dataset, train_data, valid_data, test_data=None):
        self.config, self.model, self.dataset = config, model, dataset
        self.train_data, self.valid_data, self.test_data = train_data, valid_data, test_data
        self.train_dataset = train_data._dataset
        self.valid_feat = valid_data._dataset.inter_feat
        uids = self.valid_feat[self.dataset.uid_field].numpy()
        # the first validation row of each user: its history is the user's training history
        first = {}
        for row, uid in enumerate(uids.tolist()):
            first.setdefault(uid, row)
        self.row_of_uid = first
        self.known = sequential_history_matrix(dataset.user_num, dataset.item_num, self.train_dataset)

    @property
    def users(self) -> list[str]:
        """Raw ids of the users with a validation row, in RecBole's id order."""
        tokens = self.dataset.field2id_token[self.dataset.uid_field]
        return [str(tokens[uid]) for uid in sorted(self.row_of_uid)]

    def resolve_users(self, raw_ids: list[str]) -> list[int]:
        """Internal ids of ``raw_ids``; an unknown id is a ValueError naming it, the user count and a few valid ids."""
        token2id = self.dataset.field2token_id[self.dataset.uid_field]
        uids = []
        for raw in raw_ids:
            uid = token2id.get(str(raw))
            if uid is None or uid not in self.row_of_uid:
                valid = self.users
                why = "is not a user of" if uid is None else "has no validation interaction in"
                raise ValueError(
                    f"user id {raw!r} {why} dataset {self.config['dataset']!r}; it has {len(valid)} users with a "
                    f"validation interaction, e.g. {', '.join(valid[:_SHOWN_IDS])}"
                )
            uids.append(uid)
        return uids

    def item_token(self, item: int) -> str:
        return str(self.dataset.field2id_token[self.dataset.iid_field][item])

    @torch.no_grad()
    def rank(self, uids: list[int], top_k: int, batch_size: int = 256) -> list[Ranked]:
        """Top-``top_k`` items of each user, as the full-ranking evaluation ranks them (see the module docstring)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {top_k})")
        n_candidates = self.dataset.item_num - 1
        if top_k > n_candidates:
            raise ValueError(f"top_k must be at most the {n_candidates} items of the dataset (got {top_k})")
        self.model.eval()  # BatchNorm: running statistics, as in evaluation
        model = self.model
        device = next(model.parameters()).device
        tokens = self.dataset.field2id_token[self.dataset.uid_field]
        ranked = []
        for start in range(0, len(uids), batch_size):
            batch_uids = uids[start : start + batch_size]
            rows = torch.tensor([self.row_of_uid[uid] for uid in batch_uids])
            interaction = self.valid_feat[rows].to(device)
            scores = model.full_sort_predict(interaction).view(len(batch_uids), -1).float()  # [B n_items]
            scores[:, 0] = float("-inf")
            row, col = known_item_index(self.known, np.asarray(batch_uids))
            scores[row.to(device), col.to(device)] = float("-inf")
            top = torch.topk(scores, top_k, dim=1)
            histories = interaction[model.ITEM_SEQ].cpu()
            lengths = interaction[model.ITEM_SEQ_LEN].cpu()
            for b, uid in enumerate(batch_uids):
                finite = torch.isfinite(top.values[b])  # fewer unmasked items than top_k: the masked are no picks
                ranked.append(
                    Ranked(
                        user=str(tokens[uid]),
                        uid=uid,
                        history=histories[b, : int(lengths[b])].tolist(),
                        items=top.indices[b][finite].tolist(),
                        scores=top.values[b][finite].tolist(),
                    )
                )
        return ranked


def load_recommender(model_file: str | Path) -> Recommender:
    """Check the checkpoint (:func:`check_m6rec_checkpoint`) and load it with RecBole's data."""
    check_m6rec_checkpoint(model_file)
    from recbole_m6rec.quick_start import load_data_and_model

    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(str(model_file))
    return Recommender(config, model, dataset, train_data, valid_data, test_data)
