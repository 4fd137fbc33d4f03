"""Zero-shot M6Rec: no training at all; a generative language model scores a candidate item by the length-normalised
log-likelihood of its text after the user's behaviour text (the M6-Rec paper's zero-shot scoring).

    prefix    = [BOS] prompt_text "\n" text(h_1) "\n" ... text(h_k) "\n"        (the user's last k items)
    candidate = text(c) "\n"
    score(c)  = mean over candidate tokens t of log p(t | prefix, earlier candidate tokens)

The prefix runs once per user; its key/value cache is shared by every candidate of that user, so a candidate
costs only its own tokens. With an encoder–decoder (T5, Flan-T5, BART) the prefix, with the tokenizer's own special
tokens and no BOS of ours, is the **encoder's** input, run once per user; each candidate's tokens are the decoder's
target over that shared encoder output (:class:`EncoderDecoderScorer`), scored the same way (mean log-probability of
the candidate's tokens, the first one after the decoder's start token). Sampled evaluation (``eval_args.mode: uni100`` etc.) scores 101 candidates per user;
full ranking scores every item per user, which is costly on a CPU, so ``zero_shot_rerank_top_k: K`` re-ranks the top
K of a retriever instead and keeps the retriever's order below. Retrievers (``zero_shot_retriever``), both untrained:
``pop`` (training popularity: never reaches an item without interactions) or ``text`` (cosine between the mean of
the user's recent items and each item, on the language model's own mean-pooled last-layer states, centred: reaches
every item, cold ones included). The user's history items are never among the K candidates.
"""

from __future__ import annotations

import copy
import logging

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn
from tqdm import tqdm
from transformers.modeling_outputs import BaseModelOutput

from ..lm import (
    continuation_ids,
    is_encoder_decoder,
    is_generative,
    load_plm,
    masked_mean,
    plm_fingerprint,
    pool_mask,
)
from ..text import build_item_texts
from .settings import M6RecZeroShotSettings

__all__ = ["M6RecZeroShot", "LikelihoodScorer", "EncoderDecoderScorer"]

logger = logging.getLogger(__name__)

GENERATIVE_HINT = (
    "smollm2-135m, tiny-random-llama, tiny-random-t5, tiny-random-bart, or a local folder of a Llama-style decoder "
    "or a T5/BART-style encoder–decoder"
)


class LikelihoodScorer:
    """Mean token log-probability of candidate token lists after a prefix, with or without a shared prefix cache.
    Its tensors are built where the language model's parameters are, wherever the model has moved since."""

    def __init__(self, model, batch_size: int = 128):
        self.model = model
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, prefix: list[int], candidates: list[list[int]], use_cache: bool = True) -> torch.Tensor:
        if not prefix or any(not c for c in candidates):
            raise ValueError("prefix and every candidate need at least one token")
        if not use_cache:
            return torch.cat(
                [
                    self._score_uncached(prefix, candidates[i : i + self.batch_size])
                    for i in range(0, len(candidates), self.batch_size)
                ]
            )
        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts every candidate's first token
        scores = []
        for start in range(0, len(candidates), self.batch_size):
            chunk = candidates[start : start + self.batch_size]
            cache = copy.deepcopy(out.past_key_values)
            cache.batch_repeat_interleave(len(chunk))
            scores.append(self._score_with_cache(len(prefix), cache, first, chunk))
        return torch.cat(scores)

    @staticmethod
    def _pad(candidates: list[list[int]], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``[C T]`` token ids and attention mask, filled on the CPU and moved to ``device`` at once."""
        width = max(len(c) for c in candidates)
        ids = torch.zeros(len(candidates), width, dtype=torch.long)
        mask = torch.zeros(len(candidates), width, dtype=torch.long)
        for i, c in enumerate(candidates):
            ids[i, : len(c)] = torch.tensor(c)
            mask[i, : len(c)] = 1
        return ids.to(device), mask.to(device)

    def _score_with_cache(self, prefix_len: int, cache, first: torch.Tensor, chunk: list[list[int]]) -> torch.Tensor:
        device = self.device
        ids, mask = self._pad(chunk, device)  # [C T]
        attention = torch.cat([torch.ones(len(chunk), prefix_len, dtype=torch.long, device=device), mask], dim=1)
        positions = prefix_len + torch.arange(ids.shape[1], device=device).expand(len(chunk), -1)
        logits = self.model(
            input_ids=ids, attention_mask=attention, past_key_values=cache, position_ids=positions, use_cache=False
        ).logits.float()  # [C T V]
        logp = torch.log_softmax(logits, dim=-1)
        token_logp = torch.empty(ids.shape, dtype=torch.float, device=device)
        token_logp[:, 0] = first[ids[:, 0]]
        if ids.shape[1] > 1:
            token_logp[:, 1:] = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (token_logp * mask).sum(1) / mask.sum(1)

    def _score_uncached(self, prefix: list[int], chunk: list[list[int]]) -> torch.Tensor:
        """The direct computation: prefix + candidate in one pass per candidate (right-padded batch)."""
        device = self.device
        ids, mask = self._pad([prefix + c for c in chunk], device)
        logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        scores = []
        for i, c in enumerate(chunk):
            positions = torch.arange(len(prefix) - 1, len(prefix) + len(c) - 1, device=device)  # predict c's tokens
            scores.append(logp[i, positions, torch.tensor(c, device=device)].mean())
        return torch.stack(scores)


class EncoderDecoderScorer(LikelihoodScorer):
    """Mean token log-probability of candidate token lists as the decoder's target, the prefix being the encoder's
    input: the encoder runs once per prefix and its output is shared by every candidate (``use_cache``), or each
    candidate is one plain ``model(input_ids=prefix, labels=candidate)`` pass (``use_cache=False``)."""

    @torch.no_grad()
    def score(self, prefix: list[int], candidates: list[list[int]], use_cache: bool = True) -> torch.Tensor:
        if not prefix or any(not c for c in candidates):
            raise ValueError("prefix and every candidate need at least one token")
        chunks = [candidates[i : i + self.batch_size] for i in range(0, len(candidates), self.batch_size)]
        if not use_cache:
            return torch.cat([self._score_uncached(prefix, chunk) for chunk in chunks])
        ids = torch.tensor([prefix], device=self.device)
        encoded = self.model.get_encoder()(input_ids=ids).last_hidden_state  # [1 Tp d], once per prefix
        return torch.cat([self._score_over(encoded, chunk) for chunk in chunks])

    def _targets(self, chunk: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labels ``[C T]`` (padding = -100, which the model ignores), the decoder's input (the labels shifted right
        behind its start token, by the model itself) and the mask of real tokens."""
        ids, mask = self._pad(chunk, self.device)
        labels = ids.masked_fill(mask == 0, -100)
        return labels, self.model.prepare_decoder_input_ids_from_labels(labels=labels), mask

    @staticmethod
    def _mean_logp(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)  # [C T V]
        token_logp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [C T]
        return (token_logp * mask).sum(1) / mask.sum(1)

    def _score_over(self, encoded: torch.Tensor, chunk: list[list[int]]) -> torch.Tensor:
        labels, decoder_ids, mask = self._targets(chunk)
        logits = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded.expand(len(chunk), -1, -1)),
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=mask,
            use_cache=False,
        ).logits
        return self._mean_logp(logits, labels, mask)

    def _score_uncached(self, prefix: list[int], chunk: list[list[int]]) -> torch.Tensor:
        """The direct computation: the encoder runs again for every candidate."""
        labels, _, mask = self._targets(chunk)
        ids = torch.tensor([prefix], device=self.device).expand(len(chunk), -1)
        return self._mean_logp(self.model(input_ids=ids, labels=labels).logits, labels, mask)


class M6RecZeroShot(SequentialRecommender):
    """No trainable weights: scores with the pretrained language model as it is (see module docstring)."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.settings = s = M6RecZeroShotSettings.from_config(config)
        name = s.plm_name_or_path
        self.tokenizer, lm = load_plm(name)
        # kept outside the module tree: nothing of it is trained, so it stays out of state_dict and checkpoints
        # (and out of the optimizer); _apply still moves it with the model
        self.__dict__["lm"] = lm
        if not is_generative(self.lm):
            raise ValueError(
                f"zero-shot scoring needs a generative language model; '{name}' is an encoder without a "
                f"language-model head. Use {GENERATIVE_HINT}"
            )
        for parameter in self.lm.parameters():
            parameter.requires_grad_(False)
        self.plm_id = plm_fingerprint(name)
        self.history_items = s.zero_shot_history
        self.encoder_decoder = is_encoder_decoder(self.lm)
        scorer_class = EncoderDecoderScorer if self.encoder_decoder else LikelihoodScorer
        self.scorer = scorer_class(self.lm, s.zero_shot_batch_size)
        self.item_texts = build_item_texts(dataset, s.item_text_fields, s.item_text_template)
        self.item_token_ids = [
            continuation_ids(self.tokenizer, " " + text + "\n", s.text_max_tokens) for text in self.item_texts
        ]
        self.prompt_ids = continuation_ids(self.tokenizer, s.prompt_text + "\n", 10_000)
        bos = self.tokenizer.bos_token_id
        # an encoder's input gets the tokenizer's own special tokens instead (_as_input)
        self.bos = [bos] if bos is not None and not self.encoder_decoder else []
        self.special_around = special_tokens_around(self.tokenizer) if self.encoder_decoder else ([], [])
        popularity = torch.zeros(self.n_items)
        popularity.index_add_(0, dataset.inter_feat[self.ITEM_ID].long(), torch.ones(len(dataset.inter_feat)))
        self.register_buffer("popularity", popularity, persistent=False)
        text_vectors = self._text_vectors(s.zero_shot_batch_size) if s.zero_shot_retriever == "text" else None
        self.register_buffer("text_vectors", text_vectors, persistent=False)
        # RecBole's trainer builds an optimizer; nothing is ever trained
        self.placeholder = nn.Parameter(torch.zeros(1))

    @torch.no_grad()
    def _text_vectors(self, batch_size: int) -> torch.Tensor:
        """``[n_items d]`` centred, L2-normalised mean of each item text's last-layer states (row 0 stays zero).

        The first position (BOS, a decoder's attention sink with a huge norm) is left out of the mean, and the mean
        item vector is subtracted: raw LM states share one dominant direction, which would make every cosine ~1.
        An encoder–decoder's states are its encoder's, of each text as the encoder reads it (with special tokens)."""
        base = self.lm.get_encoder() if self.encoder_decoder else self.lm.base_model
        rows = [self._as_input(self.bos + ids) for ids in self.item_token_ids[1:]]
        vectors = []
        for start in tqdm(range(0, len(rows), batch_size), desc="zero-shot text retriever: items", unit="batch"):
            ids, mask = LikelihoodScorer._pad(rows[start : start + batch_size], self.scorer.device)
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            vectors.append(masked_mean(hidden, pool_mask(mask, skip_first=bool(self.bos))))  # as M6Rec pools
        items = torch.cat(vectors)
        items = torch.nn.functional.normalize(items - items.mean(0), dim=-1)
        return torch.cat([items.new_zeros(1, items.shape[1]), items])

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()``, ``.double()`` ... reach the language model kept outside the module tree."""
        module = super()._apply(fn, recurse)
        if recurse and "lm" in self.__dict__:
            self.lm._apply(fn)
        return module

    def retriever_scores(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """``[B n_items]`` retriever scores in [-1, 1]; the padding item and the user's history items get -inf."""
        batch = len(item_seq)
        if self.settings.zero_shot_retriever == "pop":
            scores = (self.popularity / (self.popularity.max() + 1.0)).expand(batch, -1).clone()
        else:
            steps = torch.arange(item_seq.shape[1], device=item_seq.device).unsqueeze(0)
            recent = (steps < item_seq_len.unsqueeze(1)) & (steps >= item_seq_len.unsqueeze(1) - self.history_items)
            user = (self.text_vectors[item_seq] * recent.unsqueeze(-1)).sum(1)
            scores = torch.nn.functional.normalize(user, dim=-1) @ self.text_vectors.t()
        known = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, item_seq.long(), True)
        known[:, 0] = True
        return scores.masked_fill(known, float("-inf"))

    def _as_input(self, ids: list[int]) -> list[int]:
        """A decoder reads ``ids`` as they are; an encoder with the tokenizer's special tokens around them."""
        head, tail = self.special_around
        return head + ids + tail

    def prefix_for(self, item_seq: torch.Tensor, length: int) -> list[int]:
        history = item_seq[max(0, length - self.history_items) : length].tolist()
        return self._as_input(self.bos + self.prompt_ids + [t for item in history for t in self.item_token_ids[item]])

    def calculate_loss(self, interaction):
        raise RuntimeError("M6RecZeroShot is not trained; run it with its trainer (epochs are ignored)")

    def _score_rows(self, item_seq, item_seq_len, candidates: list[list[int]]) -> list[torch.Tensor]:
        """Scores of ``candidates[b]`` (item ids) for each row b, sharing the prefix cache within a row."""
        return [
            self.scorer.score(
                self.prefix_for(item_seq[b], int(item_seq_len[b])), [self.item_token_ids[i] for i in candidates[b]]
            )
            for b in range(len(candidates))
        ]

    def predict(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        items = interaction[self.ITEM_ID]
        scores = torch.empty(len(items), device=items.device)
        # rows of one user (same history) share one prefix pass: sampled evaluation sends 1 + N candidates per user
        groups: dict[tuple, list[int]] = {}
        for row in range(len(items)):
            key = (int(item_seq_len[row]), *item_seq[row, : int(item_seq_len[row])].tolist())
            groups.setdefault(key, []).append(row)
        for rows in groups.values():
            first = rows[0]
            scores[rows] = self._score_rows(
                item_seq[first : first + 1], item_seq_len[first : first + 1], [items[rows].tolist()]
            )[0].to(scores.device)
        return finite(scores, "predict")

    def full_sort_predict(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        batch = len(item_seq)
        top_k = self.settings.zero_shot_rerank_top_k
        if top_k is None:
            candidates = [list(range(1, self.n_items))] * batch
            scores = torch.full((batch, self.n_items), float("-inf"), device=item_seq.device)
            rows = self._score_rows(item_seq, item_seq_len, candidates)
            for b, row in enumerate(tqdm(rows, desc="zero-shot full ranking", disable=True)):
                scores[b, 1:] = row
            finite(scores[:, 1:], "full_sort_predict")
            scores[:, 0] = torch.finfo(torch.float).min
            return scores
        # re-rank the retriever's top K; below them the retriever's own order (shifted under any LM score)
        retriever = self.retriever_scores(item_seq, item_seq_len)
        masked = torch.isneginf(retriever)  # the padding item and the user's history: never candidates
        top = retriever.topk(min(top_k, self.n_items - 1), dim=1).indices
        lm = self._score_rows(item_seq, item_seq_len, top.tolist())
        scores = retriever - 1e4  # in [-1e4 - 1, -1e4 + 1]: always below the top K's mean log-probabilities
        for b in range(batch):
            scores[b, top[b]] = lm[b].to(scores.device)
        # only the masked items may be non-finite; a NaN or inf of the retriever or the language model is an error
        scores = finite(scores.masked_fill(masked, 0.0), "full_sort_predict (re-rank)")
        return scores.masked_fill(masked, torch.finfo(torch.float).min)

    # checkpoints: nothing trained, only the language model's identity
    def other_parameter(self):
        return {"plm_fingerprint": self.plm_id}

    def load_other_parameter(self, para):
        if para and para.get("plm_fingerprint") != self.plm_id:
            raise ValueError(
                f"checkpoint was made with language model '{para.get('plm_fingerprint')}', this model "
                f"loads '{self.plm_id}'"
            )


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after one text (T5: ``</s>`` after; BART: ``<s>`` and
    ``</s>``; BERT: ``[CLS]`` and ``[SEP]``), read off a probe text: the token ids are built from item texts, not
    tokenised as one text."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"tokenizer {type(tokenizer).__name__} changes a text's own tokens when it adds special tokens")


def finite(scores: torch.Tensor, where: str) -> torch.Tensor:
    """Non-finite scores are an error: ``torch.topk`` ranks NaN first, and a NaN turned into a number would put an
    item the language model failed on above every real mean log-probability."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise FloatingPointError(
            f"M6RecZeroShot.{where} produced {bad} non-finite scores (NaN or inf from the "
            "language model or the retriever); refusing to rank them"
        )
    return scores
