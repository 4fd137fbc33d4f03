"""Before a cold-item plan runs: no cold item may reach any model's training data.

The cold-item split (:func:`recbole_m6rec.cold_start.apply_cold_items`) keeps a cold item's interaction only where it
is one of the user's last two, by the dataset's float64 timestamps. RecBole's leave-one-out split orders the float32
copy it builds, ties broken by row order. Where two of a user's latest interactions fall within float32 resolution
of each other, the two orders can pick different last two, and a cold item's interaction then lands in training.
Which users that touches depends on which items are cold: on ml-100k, ``cold_items_seed`` 2020 (the plans' seed)
leaks nothing, 2003 and 2022 one interaction each. The leaderboard refuses a plan whose split leaks, naming what
leaked, so no report compares models on a leaky cold split.
"""

from __future__ import annotations

__all__ = ["COLD_KEYS", "leaked_cold_items", "check_cold_plan"]

COLD_KEYS = ("cold_items", "cold_items_seed")


def leaked_cold_items(dataset_name: str, settings: dict) -> dict[str, list[str]]:
    """``{cold item token: [user tokens]}`` of the cold items whose interactions reach the training split of
    ``dataset_name`` under ``settings`` (a plan's common settings); ``{}`` when none does or nothing is cold."""
    from recbole.data import data_preparation

    from recbole_m6rec.cold_start import apply_cold_items
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.data import create_dataset

    # MostPop's general dataset keeps the training interactions as they are; its split is every model's
    config = PluginConfig(
        model="MostPop", dataset=dataset_name, config_dict={**settings, "state": "WARNING", "show_progress": False}
    )
    dataset = create_dataset(config)
    split = apply_cold_items(dataset, config)
    if split is None:
        return {}
    train, _, _ = data_preparation(config, dataset)
    built = train._dataset
    item_tokens = built.field2id_token[built.iid_field][built.inter_feat[built.iid_field].numpy()]
    user_tokens = built.field2id_token[built.uid_field][built.inter_feat[built.uid_field].numpy()]
    cold = set(split.cold_item_tokens)
    leaked: dict[str, list[str]] = {}
    for item, user in zip(item_tokens, user_tokens):
        if item in cold:
            leaked.setdefault(str(item), []).append(str(user))
    return leaked


def check_cold_plan(plan: dict) -> None:
    """``ValueError`` naming the leaked items when a cold split of ``plan`` (its common settings with each row's
    own cold keys) lets a cold item reach training; nothing for a plan without cold items."""
    common = plan.get("common") or {}
    variants = {
        tuple((key, (row or {}).get(key, common.get(key))) for key in COLD_KEYS)
        for row in (plan.get("rows") or {}).values()
    }
    for variant in sorted(variants, key=str):
        settings = {**common, **dict(variant)}
        if settings.get("cold_items") is None:
            continue
        leaked = leaked_cold_items(plan["dataset"], settings)
        if leaked:
            shown = "; ".join(f"item {item} (users {', '.join(users)})" for item, users in sorted(leaked.items()))
            raise ValueError(
                f"cold_items {settings['cold_items']} with cold_items_seed {settings.get('cold_items_seed')}: cold "
                f"items reach the training split: {shown}. The cold split and RecBole's leave-one-out split order "
                "these users' latest interactions differently (float64 against float32 timestamps); choose another "
                "cold_items_seed (2020 leaks nothing on ml-100k)"
            )
