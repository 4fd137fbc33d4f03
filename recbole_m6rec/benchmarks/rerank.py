"""Re-rank a retriever's top-K with M6RecCTR and report what changes.

    python -m recbole_m6rec.benchmarks.rerank --retriever=saved/M6Rec-....pth --ranker=saved/M6RecCTR-....pth

The retriever (M6Rec, or any full-ranking model of this plugin or RecBole) ranks every item for each test user
(known items masked, the ``all`` rule); M6RecCTR scores the top-K as candidates after the same user's history (with
the history's liked / not-liked labels), shown at the test target's time, and they are re-sorted by P(click). Both checkpoints must come from the same
leave-one-out split: every user's test target must be the same item in both, which is checked.

Reported over test users: NDCG@10 and Recall@10 of the test target before and after, for all users and separately
for users whose target they liked (rating >= 4) or not. Re-ranking by P(click) is expected to move liked targets up
and disliked ones down; the overall next-item metrics count both as hits.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from recbole.data.interaction import Interaction
from tqdm import tqdm

from recbole_m6rec.benchmarks import publish
from recbole_m6rec.evaluation import known_item_index, sequential_history_matrix
from recbole_m6rec.quick_start import load_data_and_model

__all__ = ["rerank", "main"]


def _ndcg_and_hit(rank: int, k: int = 10) -> tuple[float, float]:
    return (1.0 / math.log2(rank + 2), 1.0) if 0 <= rank < k else (0.0, 0.0)


def _ranker_samples(ranker, test_data) -> dict[str, dict]:
    """The ranker's labelled test sample per raw user token (leave-one-out: one per user)."""
    dataset = test_data._dataset
    feat = dataset.inter_feat
    tokens = dataset.field2id_token[dataset.uid_field]
    samples = {}
    for row, user in enumerate(feat[dataset.uid_field].tolist()):
        samples[tokens[user]] = {
            "user": user,
            "seq": feat[ranker.ITEM_SEQ][row],
            "length": feat[ranker.ITEM_SEQ_LEN][row],
            "labels": feat[ranker.LABEL_LIST][row],
            "target": int(feat[ranker.ITEM_ID][row]),
            "label": int(feat[ranker.LABEL][row]),
        }
        if ranker.HISTORY_TIMES is not None:  # recency phrases; the outcomes of the candidate's second stay hidden
            samples[tokens[user]]["times"] = feat[ranker.HISTORY_TIMES][row]
            samples[tokens[user]]["time"] = feat[ranker.TIME_FIELD][row]
    return samples


@torch.no_grad()
def rerank(retriever_file: str, ranker_file: str, top_k: int = 20) -> dict:
    _, retriever, r_dataset, r_train, r_valid, r_test = load_data_and_model(retriever_file)
    _, ranker, k_dataset, _, _, k_test = load_data_and_model(ranker_file)
    retriever.eval()
    ranker.eval()
    samples = _ranker_samples(ranker, k_test)
    item_tokens = r_dataset.field2id_token[r_dataset.iid_field]
    to_ranker_item = torch.as_tensor(
        [k_dataset.token2id(k_dataset.iid_field, t) if i else 0 for i, t in enumerate(item_tokens)]
    )
    user_tokens = r_dataset.field2id_token[r_dataset.uid_field]
    known = sequential_history_matrix(r_dataset.user_num, r_dataset.item_num, r_train._dataset, r_valid._dataset)

    rows = []
    for interaction, _, _, _ in tqdm(r_test, desc="Re-ranking test users", unit="batch"):
        scores = retriever.full_sort_predict(interaction)
        scores[:, 0] = -torch.inf
        users = interaction[r_dataset.uid_field].numpy()
        scores[known_item_index(known, users)] = -torch.inf
        top = scores.topk(top_k, dim=1).indices  # [B K]
        targets = interaction[retriever.ITEM_ID]
        for b, user in enumerate(users):
            sample = samples.get(user_tokens[user])
            if sample is None:
                raise ValueError(
                    f"user {user_tokens[user]} has no test sample in the ranker's split; the two "
                    "checkpoints come from different splits"
                )
            target = int(to_ranker_item[targets[b]])
            if target != sample["target"]:
                raise ValueError(
                    f"user {user_tokens[user]}: the retriever's test target {item_tokens[targets[b]]} "
                    "differs from the ranker's; the two checkpoints come from different splits"
                )
            candidates = to_ranker_item[top[b]]
            fields = {
                ranker.USER_ID: torch.full((top_k,), sample["user"]),
                ranker.ITEM_SEQ: sample["seq"].expand(top_k, -1),
                ranker.ITEM_SEQ_LEN: sample["length"].expand(top_k),
                ranker.LABEL_LIST: sample["labels"].expand(top_k, -1),
                ranker.ITEM_ID: candidates,
            }
            if "times" in sample:  # the candidates are shown when the test target was
                fields[ranker.HISTORY_TIMES] = sample["times"].expand(top_k, -1)
                fields[ranker.TIME_FIELD] = sample["time"].expand(top_k)
            batch = Interaction(fields)
            p_click = ranker.predict(batch)
            reordered = candidates[torch.argsort(p_click, descending=True, stable=True)]
            before = (candidates == target).nonzero()
            after = (reordered == target).nonzero()
            rows.append(
                {
                    "liked": sample["label"] == 1,
                    "before": int(before[0, 0]) if len(before) else -1,
                    "after": int(after[0, 0]) if len(after) else -1,
                    "top10_changed": len(set(candidates[:10].tolist()) - set(reordered[:10].tolist())),
                }
            )
    return summarise(rows, top_k)


def summarise(rows: list[dict], top_k: int) -> dict:
    result = {"top_k": top_k, "users": len(rows)}
    for name, group in (
        ("all", rows),
        ("liked", [r for r in rows if r["liked"]]),
        ("not_liked", [r for r in rows if not r["liked"]]),
    ):
        before = np.array([_ndcg_and_hit(r["before"]) for r in group]).reshape(-1, 2)
        after = np.array([_ndcg_and_hit(r["after"]) for r in group]).reshape(-1, 2)
        result[name] = {
            "users": len(group),
            "ndcg@10_before": round(float(before[:, 0].mean()), 4) if len(group) else None,
            "ndcg@10_after": round(float(after[:, 0].mean()), 4) if len(group) else None,
            "recall@10_before": round(float(before[:, 1].mean()), 4) if len(group) else None,
            "recall@10_after": round(float(after[:, 1].mean()), 4) if len(group) else None,
        }
    result["mean_top10_items_replaced"] = round(float(np.mean([r["top10_changed"] for r in rows])), 2)
    return result


def markdown(result: dict) -> str:
    lines = [
        "| test users | n | NDCG@10 before | NDCG@10 after | Recall@10 before | Recall@10 after |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("all", "all"), ("liked", "target liked (rating ≥ 4)"), ("not_liked", "target not liked")):
        g = result[name]
        lines.append(
            f"| {label} | {g['users']} | {g['ndcg@10_before']} | {g['ndcg@10_after']} | "
            f"{g['recall@10_before']} | {g['recall@10_after']} |"
        )
    lines.append("")
    lines.append(
        f"Re-ranked: the retriever's top {result['top_k']}; on average "
        f"{result['mean_top10_items_replaced']} of the top 10 items change."
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retriever", required=True, help="checkpoint of a full-ranking model (e.g. M6Rec)")
    parser.add_argument("--ranker", required=True, help="checkpoint of M6RecCTR on the same split")
    parser.add_argument("--top_k", type=int, default=20)
    parser.add_argument("--report", default=None, help="folder to write rerank.json and rerank.md into")
    args = parser.parse_args(argv)
    result = rerank(args.retriever, args.ranker, args.top_k)
    publish("recbole_m6rec.benchmarks.rerank", argv, markdown(result), result, args.report, "rerank")


if __name__ == "__main__":
    main()
