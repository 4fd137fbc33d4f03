"""Rank, prompt, generate, score: one explanation per (user, top-k item), optionally with its control.

:func:`explain_users` is the one flow. For each user (in the order given) it takes their top-k items from the
checkpoint (:mod:`.ranking`), shows the generator their ``history_items`` most recent history items and one
recommended item at a time (:mod:`.generation`), and, with a control seed, writes the same items' explanations from
another user's history and scores both against the true user's history (:mod:`.grounding`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from recbole.utils import FeatureType

from .generation import Generator, prompt_messages
from .grounding import ItemFacts, Mention, control_donors, find_mentions
from .ranking import Recommender

__all__ = ["Explanation", "explain_users", "item_facts", "mentions_of"]


@dataclass
class Explanation:
    """One recommended item of one user, explained; ``control`` and the mentions only when a control was asked."""

    user: str  # raw user id
    rank: int  # 1 = the top item
    item: str  # raw item id
    item_text: str
    score: float
    explanation: str
    history: list[str]  # raw ids of the history items the generator was shown, oldest first
    history_texts: list[str]  # their item texts, as the prompt showed them
    mentions: dict | None = None  # {"titles": [...], "genres": [...]} from the user's own history
    control: dict | None = field(default=None)  # {"donor", "history", "explanation", "mentions"}

    def to_json(self) -> dict:
        return asdict(self)


def item_facts(dataset, title_field: str, genre_field: str | None) -> list[ItemFacts]:
    """Title and genres of every internal item id (row 0 is the padding item), from the dataset's own fields."""
    fields = list(dataset.item_feat.columns) if dataset.item_feat is not None else []
    for name, value in (("title_field", title_field), ("genre_field", genre_field)):
        if value is not None and value not in fields:
            raise ValueError(
                f"{name} {value!r} is not an item field of dataset {dataset.dataset_name!r}; its item fields are {fields}"
            )

    def column(name: str) -> list[tuple[str, ...]]:
        vocab = dataset.field2id_token[name]
        values = dataset.item_feat[name]
        if dataset.field2type[name] == FeatureType.TOKEN_SEQ:
            return [tuple(str(vocab[i]) for i in row if i > 0) for row in values.tolist()]
        if dataset.field2type[name] == FeatureType.TOKEN:
            return [(str(vocab[i]),) if i > 0 else () for i in values.tolist()]
        raise ValueError(
            f"item field {name!r} is a {dataset.field2type[name].value} field; a token or token_seq field is needed"
        )

    titles = column(title_field)
    genres = column(genre_field) if genre_field else [()] * len(titles)
    return [ItemFacts(" ".join(title), genre) for title, genre in zip(titles, genres)]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def explain_users(
    recommender: Recommender,
    generator: Generator,
    users: Sequence[str],
    top_k: int = 3,
    history_items: int = 10,
    noun: str = "movie",
    control_seed: int | None = None,
    facts: list[ItemFacts] | None = None,
    progress: Callable[[str], None] | None = _progress,
) -> list[Explanation]:
    """Explanations of every user's top-``top_k`` items, user by user, best item first.

    With ``control_seed`` (and ``facts``, from :func:`item_facts`), each explanation also gets a control written from
    the history of the user :func:`~.grounding.control_donors` assigns (that history without the recommended item
    itself), and both are scored against the true user's shown history. A user's prompts (with their controls) are
    generated as one left-padded batch; padding can, rarely, change a greedy text, so an explanation written with
    its control may differ from the same one written alone.
    """
    if history_items < 1:
        raise ValueError(f"history_items must be >= 1 (got {history_items})")
    repeated = sorted({u for u in users if list(users).count(u) > 1})
    if repeated:
        raise ValueError(f"user id(s) {repeated} listed more than once")
    if control_seed is not None and facts is None:
        raise ValueError("a control needs the items' titles and genres (facts)")
    uids = recommender.resolve_users([str(u) for u in users])
    ranked = recommender.rank(uids, top_k)
    donors = control_donors(len(ranked), control_seed) if control_seed is not None else None
    texts = recommender.model.item_texts
    token = recommender.item_token

    out: list[Explanation] = []
    started = time.perf_counter()
    for n, case in enumerate(ranked):
        shown = case.history[-history_items:]
        shown_texts = [texts[i] for i in shown]
        histories = [shown] * len(case.items)
        if donors is not None:  # the control: each item from the donor's history, without that item
            donor = ranked[donors[n]]
            histories += [[i for i in donor.history if i != item][-history_items:] for item in case.items]
        candidates = list(case.items) * (2 if donors is not None else 1)
        prompts = [
            generator.render(prompt_messages([texts[i] for i in h], texts[c], noun))
            for h, c in zip(histories, candidates)
        ]
        answers = generator(prompts)  # one batch per user: its texts do not depend on the other users' lengths
        rows = [
            Explanation(
                case.user, rank, token(item), texts[item], score, answer, [token(i) for i in shown], shown_texts
            )
            for rank, (item, score, answer) in enumerate(zip(case.items, case.scores, answers), start=1)
        ]
        if donors is not None:
            own = [facts[i] for i in shown]
            k = len(case.items)
            for row, item, other, answer in zip(rows, case.items, histories[k:], answers[k:]):
                row.mentions = asdict(find_mentions(row.explanation, own, facts[item]))
                row.control = {
                    "donor": donor.user,
                    "history": [token(i) for i in other],
                    "explanation": answer,
                    "mentions": asdict(find_mentions(answer, own, facts[item])),
                }
        out += rows
        if progress is not None:
            progress(
                f"[{n + 1}/{len(ranked)}] user {case.user}: {len(rows)} explanation(s)"
                f"{' + control' if donors is not None else ''}; {time.perf_counter() - started:.0f} s so far, "
                f"{generator.tokens_per_second:.1f} tokens/s"
            )
    return out


def mentions_of(rows: Sequence[Explanation], which: str = "explanation") -> list[list[Mention]]:
    """Per user (in order), the mentions of their explanations (``which="explanation"``) or of the controls."""
    per_user: dict[str, list[Mention]] = {}
    for row in rows:
        found = row.mentions if which == "explanation" else (row.control or {}).get("mentions")
        if found is None:
            raise ValueError(f"explanation of user {row.user}, rank {row.rank} has no grounding scores")
        per_user.setdefault(row.user, []).append(Mention(**found))
    return list(per_user.values())
