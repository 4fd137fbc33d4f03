"""Does an explanation name something that is really in the user's history?

An explanation is **grounded** when it names

* a **title** of one of the history items the generator was shown: the whole title (articles moved to the front, as
  in "Usual Suspects, The" -> "the usual suspects", bracketed parts such as a year dropped), matched word by word,
  case-insensitively; a one-word title ("Fargo", "Heat") only when written with its capital inside a sentence or in
  quotes, so the common word "heat" does not count; or two consecutive content words of a longer title ("Lost Ark"
  for "Raiders of the Lost Ark", stopwords never count);
* or a **genre** of a history item that is not a genre of the recommended item itself, matched as a word or phrase
  with a few plain variants ("dramas", "romantic", "science fiction" for Sci-Fi), so that echoing the candidate's
  own genre does not count.

Before matching, the recommended item's own title is blanked out of the explanation, and a word pair shared with the
candidate's title never counts (naming "Star Trek" for a Star Trek candidate says nothing about the history); genre
words inside a matched title do not count as genres ("Star Wars" is no mention of War).

The **control** asks the same question of explanations written for the same recommended item from another user's
history (:func:`control_donors`: a fixed random derangement of the users) while scoring them against the true
user's history. Titles and genres that every history shares, or that the generator names for the candidate whatever
it is shown, score the same in both; the difference between the two rates is what the history itself adds. Rates
come with a 95% bootstrap interval that resamples users (a user's k explanations are not independent).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ItemFacts",
    "Mention",
    "find_mentions",
    "control_donors",
    "rate_interval",
    "difference_interval",
    "summarise",
]

STOPWORDS = frozenset(
    "a an the of and or in on at to for with from by is it its as be this that my your his her our their we you he she "
    "they them i me ii iii iv v de la le les el il das die der und et part".split()
)
"""Words that never make a title mention on their own (nor in a two-word pair)."""

_TRAILING_ARTICLE = re.compile(r"^(.*?),\s*(the|a|an|la|le|les|l'|il|el|das|die|der)$", re.IGNORECASE)
_BRACKETS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_WORD = re.compile(r"[A-Za-z0-9]+")
_APOSTROPHE = re.compile(r"(?<=[A-Za-z])['\u2019](?=[A-Za-z])")
_QUOTES = set("\"'\u201c\u201d\u2018\u2019*_")
_SENTENCE_END = set(".!?:\n")

GENRE_VARIANTS = {
    "sci fi": ("science fiction", "scifi"),
    "childrens": ("children", "kids"),
    "film noir": ("noir",),
    "romance": ("romantic",),
    "comedy": ("comedic",),
    "animation": ("animated",),
    "drama": ("dramatic",),
}
"""Extra ways of naming a genre, keyed by the genre's normalised words (MovieLens genres)."""


@dataclass(frozen=True)
class ItemFacts:
    """What grounding compares against: an item's title and its genres, as the dataset spells them."""

    title: str
    genres: tuple[str, ...] = ()


@dataclass
class Mention:
    """What one explanation names: history titles and history-only genres (empty lists: not grounded)."""

    titles: list[str] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)

    @property
    def title(self) -> bool:
        return bool(self.titles)

    @property
    def genre(self) -> bool:
        return bool(self.genres)

    @property
    def any(self) -> bool:
        return self.title or self.genre


@dataclass
class _Token:
    word: str  # lower-cased, accents and apostrophes removed
    raw: str  # as written
    inside_sentence: bool  # neither the first word of a sentence nor the text
    quoted: bool  # right after a quote mark


# ---------------------------------------------------------------------------------------------------- text
def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _APOSTROPHE.sub("", text)  # "Schindler's" -> "Schindlers", on both sides


def _tokens(text: str) -> list[_Token]:
    text = _ascii(text)
    tokens, end = [], 0
    for match in _WORD.finditer(text):
        gap = text[end : match.start()]
        before = text[: match.start()].rstrip().rstrip("".join(_QUOTES)).rstrip()
        starts_sentence = not before or before[-1] in _SENTENCE_END
        quoted = any(ch in _QUOTES for ch in gap)
        tokens.append(_Token(match.group().lower(), match.group(), not starts_sentence, quoted))
        end = match.end()
    return tokens


def _words(text: str) -> list[str]:
    return [token.word for token in _tokens(text)]


def title_forms(title: str) -> list[list[str]]:
    """The word sequences that name ``title``: with its article in front and without it."""
    main = _BRACKETS.sub(" ", title).strip()
    moved = _TRAILING_ARTICLE.match(main)
    if moved:
        main = f"{moved.group(2)} {moved.group(1)}"
    words = _words(main)
    forms = [words] if words else []
    if len(words) > 1 and words[0] in {"the", "a", "an", "la", "le", "les", "l", "il", "el", "das", "die", "der"}:
        forms.append(words[1:])
    return forms


def _content(words: Sequence[str]) -> list[str]:
    return [w for w in words if w not in STOPWORDS]


def _pairs(words: Sequence[str]) -> set[tuple[str, str]]:
    """Consecutive word pairs of a title in which neither word is a stopword."""
    return {(a, b) for a, b in zip(words, words[1:]) if a not in STOPWORDS and b not in STOPWORDS}


def genre_forms(genre: str) -> list[list[str]]:
    """Word sequences that name ``genre``: itself, its plural and the variants in :data:`GENRE_VARIANTS`."""
    words = _words(genre)
    if not words:
        return []
    last = words[-1]
    plural = last[:-1] + "ies" if last.endswith("y") else last + "s"
    forms = [words, [*words[:-1], plural]]
    forms += [_words(variant) for variant in GENRE_VARIANTS.get(" ".join(words), ())]
    return forms


# ------------------------------------------------------------------------------------------------ matching
def _find(words: list[str | None], phrase: Sequence[str]) -> list[int]:
    """Start positions of ``phrase`` in ``words`` (a blanked-out word, None, matches nothing)."""
    n = len(phrase)
    return [i for i in range(len(words) - n + 1) if n and words[i : i + n] == list(phrase)]


def _blank(words: list[str | None], start: int, length: int) -> None:
    for i in range(start, start + length):
        words[i] = None


def _one_word_title_at(tokens: list[_Token], words: list[str | None], word: str) -> list[int]:
    """Where a one-word title is written as a name: capitalised, inside a sentence or in quotes."""
    return [
        i
        for i in _find(words, [word])
        if tokens[i].raw[:1].isupper() and (tokens[i].inside_sentence or tokens[i].quoted)
    ]


def _title_matches(tokens: list[_Token], words: list[str | None], title: str, banned_pairs: set) -> list[tuple]:
    """(start, length) spans of ``words`` that name ``title``."""
    spans = []
    forms = title_forms(title)
    for form in forms:
        content = _content(form)
        if len(content) >= 2 or (len(form) >= 2 and len(content) == 1 and form[0] not in STOPWORDS):
            spans += [(i, len(form)) for i in _find(words, form)]
    if not spans and forms:
        content = _content(forms[0])
        if len(content) == 1 and len(content[0]) >= 3 and not content[0].isdigit():
            spans += [(i, 1) for i in _one_word_title_at(tokens, words, content[0])]
    if not spans and forms:
        for pair in sorted(_pairs(forms[0]) - banned_pairs):
            spans += [(i, 2) for i in _find(words, pair)]
    return spans


def find_mentions(explanation: str, history: Sequence[ItemFacts], candidate: ItemFacts) -> Mention:
    """The history titles and history-only genres ``explanation`` names (see the module docstring for the rules)."""
    tokens = _tokens(explanation)
    words: list[str | None] = [token.word for token in tokens]
    for form in title_forms(candidate.title):  # the candidate's own title says nothing about the history
        if len(_content(form)) >= 1:
            for start in _find(words, form):
                _blank(words, start, len(form))
    banned_pairs = set().union(*(_pairs(form) for form in title_forms(candidate.title)))

    mention = Mention()
    spans = []
    for item in dict.fromkeys(history):  # each distinct history item once, in order
        found = _title_matches(tokens, words, item.title, banned_pairs)
        if found and item.title not in mention.titles:
            mention.titles.append(item.title)
        spans += found
    for start, length in spans:  # genre words inside a named title are part of the title
        _blank(words, start, length)

    candidate_genres = {" ".join(_words(g)) for g in candidate.genres}
    for genre in dict.fromkeys(g for item in history for g in item.genres):
        if " ".join(_words(genre)) in candidate_genres:
            continue
        if any(_find(words, form) for form in genre_forms(genre)):
            mention.genres.append(genre)
    return mention


# -------------------------------------------------------------------------------------------------- control
def control_donors(n_users: int, seed: int) -> list[int]:
    """``donor[i]``: whose history user ``i``'s control explanations are written from. A fixed random derangement:
    a random order of the users, each taking the next one's history, so nobody is their own donor."""
    if n_users < 2:
        raise ValueError(f"the control needs at least 2 users, to swap their histories (got {n_users})")
    order = np.random.default_rng(seed).permutation(n_users)
    donor = np.empty(n_users, dtype=np.int64)
    donor[order] = np.roll(order, -1)
    return donor.tolist()


# ---------------------------------------------------------------------------------------------------- rates
def _per_user(hits: Sequence[Sequence[bool]]) -> tuple[np.ndarray, np.ndarray]:
    if not hits or any(len(row) == 0 for row in hits):
        raise ValueError("every user needs at least one scored explanation")
    return np.array([sum(map(bool, row)) for row in hits], float), np.array([len(row) for row in hits], float)


def _resamples(n_users: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_users, size=(n_boot, n_users))


def rate_interval(hits: Sequence[Sequence[bool]], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(rate, low, high): the share of explanations that hit, with a 95% percentile bootstrap interval that resamples
    users (``hits[u]`` holds user u's explanations)."""
    h, n = _per_user(hits)
    idx = _resamples(len(h), n_boot, seed)
    boot = h[idx].sum(1) / n[idx].sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(h.sum() / n.sum()), float(low), float(high)


def difference_interval(
    hits: Sequence[Sequence[bool]], control: Sequence[Sequence[bool]], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(rate - control rate, low, high), the same users resampled for both (paired)."""
    h, n = _per_user(hits)
    c, m = _per_user(control)
    if len(h) != len(c):
        raise ValueError(f"hits cover {len(h)} users but the control {len(c)}")
    idx = _resamples(len(h), n_boot, seed)
    boot = h[idx].sum(1) / n[idx].sum(1) - c[idx].sum(1) / m[idx].sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(h.sum() / n.sum() - c.sum() / m.sum()), float(low), float(high)


def summarise(
    true: Sequence[Sequence[Mention]], control: Sequence[Sequence[Mention]], n_boot: int = 2000, seed: int = 0
) -> dict:
    """Rates with intervals for each kind of mention (title, genre, any), for the explanations and their control."""
    out = {"users": len(true), "explanations": sum(len(row) for row in true)}
    for kind in ("title", "genre", "any"):
        hits = [[getattr(m, kind) for m in row] for row in true]
        ctrl = [[getattr(m, kind) for m in row] for row in control]
        out[kind] = {
            "rate": rate_interval(hits, n_boot, seed),
            "control": rate_interval(ctrl, n_boot, seed),
            "difference": difference_interval(hits, ctrl, n_boot, seed),
        }
    return out
