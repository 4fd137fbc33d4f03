"""Explanations of M6Rec's recommendations, written by a generative language model, and how grounded they are.

``python -m recbole_m6rec.explain --model_file=saved/M6Rec-<time>.pth --users=196,186 --top_k=3`` (:mod:`.cli`):
rank as RecBole's full-ranking evaluation does (:mod:`.ranking`), prompt and generate (:mod:`.generation`), score
mentions of the user's history against a control (:mod:`.grounding`), and, with ``--report``, write the grounding
report (:mod:`.report`). :func:`explain_users` (:mod:`.pipeline`) is the flow for Python callers.
"""

from .generation import Generator, prompt_messages
from .grounding import ItemFacts, Mention, control_donors, find_mentions, summarise
from .pipeline import Explanation, explain_users, item_facts, mentions_of
from .ranking import Ranked, Recommender, check_m6rec_checkpoint, load_recommender

__all__ = [
    "Generator",
    "prompt_messages",
    "ItemFacts",
    "Mention",
    "control_donors",
    "find_mentions",
    "summarise",
    "Explanation",
    "explain_users",
    "item_facts",
    "mentions_of",
    "Ranked",
    "Recommender",
    "check_m6rec_checkpoint",
    "load_recommender",
]
