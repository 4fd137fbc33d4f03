"""M6RecCTR: point-wise click-through prediction in the style of M6-Rec's ranking model.

The user's profile and history segments and the candidate item's segment run through the upper layers together
(segment-causal: the candidate attends to the history, the history never to the candidate). The state at the end of
the candidate segment feeds an **option classifier**: C option tokens (vectors in the language model's
word-embedding space, starting as the option words' own) are the classifier's weights, ``logits = state @ options.T``; there is no
separate head. With a tied LM head (SmolLM2) the untrained classifier is the language model's own next-word logit of
each option word (" no" / " yes").

Everything else is M6Rec's: the cached lower-layer segment states, the soft prompt, the FFN adapters, the
segment/position embeddings and the settings (``properties/model/M6Rec.yaml`` then ``M6RecCTR.yaml``).
The outcome tokens enter the late interaction as trailing tokens: after each step, or after the last step of a run
of steps that share one timestamp (their mean).

With ``history_labels`` (default on) each history item's outcome (liked / not liked) enters as a token that only
strictly later steps see: what an ID model can only learn as a per-user bias (DIEN from its user-ID embedding;
RecBole's DIN reads no user field), M6RecCTR reads from the history. An outcome entered in the same second as a step
stays hidden from it (:mod:`.outcome_slots`), so the model needs the history's timestamps; which outcomes are hidden
also tells it whether the candidate shares the last history item's second (:mod:`recbole_m6rec.benchmarks.time_signal`
measures what that says about the label). The candidate's own label is never an input.

Training is as cheap as M6Rec's: in one segment-causal pass over a user's window, the state at the end of segment t
*is* the state of "item t as the candidate after items < t", so every interaction of the window gets its label's loss
(``label_list``) in a single pass. Evaluation scores RecBole's labelled samples (history + candidate); a user's
samples whose history holds that user's earlier samples share the pass of the longest (:mod:`.nested_samples`).

Serving many candidates for one user (:meth:`M6RecCTR.score_candidates`): the history runs through the online layers
once and each candidate attends to its cached keys and values (:mod:`.candidate_scoring`); the scores are
``predict``'s for each (history, candidate) pair.
"""

from __future__ import annotations

import torch
from recbole.utils import InputType
from torch import nn
from torch.nn import functional as F

from .candidate_scoring import CachedHistory
from .m6rec import M6Rec, checked
from .nested_samples import covering_samples, with_candidate
from .outcome_slots import outcome_time_field, outcomes_after_time_group
from .settings import M6RecCTRSettings

__all__ = ["M6RecCTR"]


class M6RecCTR(M6Rec):
    input_type = InputType.POINTWISE
    settings_class = M6RecCTRSettings

    def __init__(self, config, dataset):
        self.LABEL = config["LABEL_FIELD"]
        self.LABEL_LIST = self.LABEL + config["LIST_SUFFIX"]
        if self.LABEL not in dataset.inter_feat:
            raise ValueError(
                f"M6RecCTR needs a label field '{self.LABEL}' in the interactions: set threshold (e.g. "
                "threshold: {rating: 4}) or load a label column"
            )
        # the history's times: for the recency phrases and to hide same-second outcomes (checked before the
        # backbone loads)
        outcome_times = (
            outcome_time_field(config, dataset) if self.settings_class.from_config(config).history_labels else None
        )
        super().__init__(config, dataset)
        self.HISTORY_TIMES = self.TIME_LIST or outcome_times

    @property
    def max_steps(self) -> int:
        """The candidate follows the (up to MAX_ITEM_LIST_LENGTH) history segments."""
        return self.max_seq_length + 1

    # ------------------------------------------------------------------------------------------- the head
    def build_heads(self, d: int) -> None:
        """The option tokens, initialised from the word vectors of ``option_words`` (first sub-word of each)."""
        words = self.settings.option_words
        ids = []
        for word in words:
            pieces = self.encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not pieces:
                raise ValueError(f"option word {word!r} gives no tokens with this tokenizer; pick another word")
            ids.append(pieces[0])
        if len(set(ids)) < len(ids):
            raise ValueError(f"option_words {list(words)!r} share their first token; pick distinct words")
        with torch.no_grad():
            vectors = self.stack.word_embeddings.weight[torch.tensor(ids)].clone()
        self.options = nn.Parameter(vectors)  # [C d]
        if self.settings.tuning == "prompt":  # prompt tuning: the verbalizer stays the LM's own word vectors
            self.options.requires_grad_(False)
        # one outcome token per label after each history item (which of its items the user liked), starting as the
        # lower-layer state of the option word, so it enters the upper layers in-distribution
        self.outcome_tokens = None
        if self.settings.history_labels:
            tokens = self.encoder.phrases(words)
            with torch.no_grad():
                states, _ = self.encoder.forward_tokens(tokens.input_ids, tokens.attention_mask)  # [C S d]
            self.outcome_tokens = nn.Parameter(states[:, 0].clone())  # [C d]

    def option_logits(self, states: torch.Tensor) -> torch.Tensor:
        """``[..., d]`` final-norm states -> ``[..., C]`` logits: the dot product with each option token."""
        return states @ self.options.t()

    # --------------------------------------------------------------------------------------------- scoring
    def _candidate_states(
        self, item_seq, item_seq_len, candidates, user_ids, history_labels=None, times=None
    ) -> torch.Tensor:
        """States ``[B n+1 d]`` at the end of each segment of ``history + candidate`` (candidate at index len).

        ``history_labels`` ``[B n]``: the label of each history item, shown to strictly later steps only (the
        candidate's own label is never an input). ``times`` (history timestamps ``[B n]``, candidate timestamps
        ``[B]``): which outcomes share a step's second, and with ``recency_words`` the candidate's phrase (the gap from
        the last history item to the time it is shown)."""
        sequence = with_candidate(item_seq, item_seq_len, candidates)
        timestamps = None
        if times is not None:
            timestamps = with_candidate(times[0], item_seq_len, times[1])
        outcomes = None
        if self.outcome_tokens is not None:
            if history_labels is None:
                raise ValueError(f"history_labels is on but the batch has no '{self.LABEL_LIST}' field")
            if timestamps is None:
                raise ValueError(f"history_labels is on but the batch has no '{self.HISTORY_TIMES}' field")
            # unknown: the candidate's outcome is what is predicted
            labels = with_candidate(history_labels.long(), item_seq_len, -1, fill=-1)
            outcomes = outcomes_after_time_group(labels, self.outcome_tokens, timestamps, item_seq_len + 1)
        return super().forward(sequence, item_seq_len + 1, user_ids, timestamps, trail=outcomes)[:, 1:]

    def _history_labels(self, interaction):
        return interaction[self.LABEL_LIST] if self.LABEL_LIST in interaction else None

    def _times(self, interaction):
        if self.HISTORY_TIMES is None or self.HISTORY_TIMES not in interaction:
            return None
        return interaction[self.HISTORY_TIMES], interaction[self.TIME_FIELD]

    def forward(self, item_seq, item_seq_len, candidates, user_ids=None, history_labels=None, times=None):
        """Option logits ``[B C]`` of each candidate after its history."""
        states = self._candidate_states(item_seq, item_seq_len, candidates, user_ids, history_labels, times)
        rows = torch.arange(item_seq.shape[0], device=item_seq.device)
        return self.option_logits(states[rows, item_seq_len])

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        candidates = interaction[self.ITEM_ID]
        label = interaction[self.LABEL].long()
        user_ids = self._user_ids(interaction)
        history_labels = self._history_labels(interaction)
        times = self._times(interaction)
        if not self.settings.train_whole_sequences:
            logits = self.forward(item_seq, item_seq_len, candidates, user_ids, history_labels, times)
            return F.cross_entropy(logits, label)
        # every segment t >= 1 of the window is a candidate after segments < t; the last one is the sample's own
        states = self._candidate_states(item_seq, item_seq_len, candidates, user_ids, history_labels, times)
        labels = with_candidate(interaction[self.LABEL_LIST].long(), item_seq_len, label)
        steps = torch.arange(item_seq.shape[1] + 1, device=item_seq.device).unsqueeze(0)
        scored = (steps >= 1) & (steps <= item_seq_len.unsqueeze(1))  # step 0 has no history in the window
        return F.cross_entropy(self.option_logits(states[scored]), labels[scored])

    def predict(self, interaction):
        item_seq, lengths, candidates = (
            interaction[self.ITEM_SEQ],
            interaction[self.ITEM_SEQ_LEN],
            interaction[self.ITEM_ID],
        )
        users, labels, times = self._user_ids(interaction), self._history_labels(interaction), self._times(interaction)
        # a user's samples whose history holds the user's earlier samples share one pass over the longest of them
        rows = torch.arange(item_seq.shape[0], device=item_seq.device)
        sequence = with_candidate(item_seq, lengths, candidates)
        steps = [(sequence, 1)] + ([] if labels is None else [(labels, 0)])
        if times is not None:
            steps.append((with_candidate(times[0], lengths, times[1]), 1))
        owners = interaction[self.USER_ID] if self.USER_ID in interaction else rows  # else: each sample alone
        run, source = covering_samples(owners, lengths, steps)

        def picked(value):
            return None if value is None else value[run]

        states = self._candidate_states(
            item_seq[run],
            lengths[run],
            candidates[run],
            picked(users),
            picked(labels),
            None if times is None else (times[0][run], times[1][run]),
        )  # [K n+1 d]
        logits = self.option_logits(states[source, lengths])
        return checked(torch.softmax(logits, dim=-1)[:, -1], "predict")  # P(last option) = P(click)

    # ---------------------------------------------------------------------------------------------- serving
    @torch.no_grad()
    def score_candidates(
        self,
        history: torch.Tensor,
        candidates: torch.Tensor,
        *,
        user_id: int | torch.Tensor | None = None,
        history_labels: torch.Tensor | None = None,
        history_times: torch.Tensor | None = None,
        candidate_times: float | torch.Tensor | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """P(click) ``[M]`` of each of M ``candidates`` after one user's ``history`` (item ids ``[L]``, oldest first),
        equal to ``predict`` on each (history, candidate) pair; the history runs through the online layers once.

        The model's inputs as ``predict`` reads them from a batch: ``user_id`` (with a profile segment),
        ``history_labels`` ``[L]`` (with ``history_labels``), ``history_times`` ``[L]`` (oldest first) and the time the
        candidates are shown, ``candidate_times`` (a number or ``[M]``, not before the history's last time; with
        ``history_labels`` or ``recency_words``): an outcome entered in the candidates' second stays hidden from them.
        Times are compared in the dtype of ``history_times``; pass them as the batches carry them (RecBole's float32)
        to get ``predict``'s numbers. ``batch_size`` candidates are scored at a time. Call it in eval mode, as
        ``predict`` is called."""
        cached = self.cache_history(
            history, user_id=user_id, history_labels=history_labels, history_times=history_times
        )
        return self.score_cached(cached, candidates, candidate_times=candidate_times, batch_size=batch_size)

    @torch.no_grad()
    def cache_history(
        self,
        history: torch.Tensor,
        *,
        user_id: int | torch.Tensor | None = None,
        history_labels: torch.Tensor | None = None,
        history_times: torch.Tensor | None = None,
    ) -> CachedHistory:
        """One user's history through the online layers, its keys and values kept for :meth:`score_cached`
        (arguments as :meth:`score_candidates`)."""
        device = self.late.prompt.device
        history = self._checked_items(history, "history")
        n = len(history)
        if n > self.max_seq_length:
            raise ValueError(
                f"history holds {n} items, more than MAX_ITEM_LIST_LENGTH={self.max_seq_length}; pass its last "
                f"{self.max_seq_length} items, as RecBole's batches do"
            )
        length = torch.tensor([n], device=device)
        seg, valid = self._step_segments(history.unsqueeze(0))  # [1 n S d], [1 n S]
        profile = None
        if self._user_segments is not None:
            profile = self._user_segments.lookup(self._checked_user(user_id).to(device))  # [1 Sp d], [1 Sp]
        times, last_time = None, None
        if self.HISTORY_TIMES is not None:  # recency phrases, or which outcomes share the candidate's second
            times = self._checked_times(history_times, n, "history_times", self.HISTORY_TIMES).to(device)
            last_time = times[-1] if n > 0 else times.new_zeros(())
            if n > 1 and not bool((times[1:] >= times[:-1]).all()):  # what hides same-second outcomes relies on it
                at = int(torch.nonzero(times[1:] < times[:-1])[0]) + 1
                raise ValueError(
                    f"history_times must be in time order, oldest first, as RecBole's sequences are (position {at} "
                    f"holds {times[at].item()}, earlier than {times[at - 1].item()} before it)"
                )
        lead = None  # no step, no phrase
        if self.recency is not None and n > 0:  # one padding column, as forward's candidate column (recency_buckets
            phrases, has = self._recency(F.pad(times, (0, 1)).unsqueeze(0), length)  # needs two or more)
            lead = (phrases[:, :n], has[:, :n])
        trail, last_outcome_slot = None, None
        if self.outcome_tokens is not None:
            labels = self._checked_labels(history_labels, n).to(device)
            # the last time group's outcomes sit in the last step's slot: a candidate shown in that same second
            # must not see it (score_cached hides it), as predict's layout moves them past the candidate
            trail = outcomes_after_time_group(labels.unsqueeze(0), self.outcome_tokens, times.unsqueeze(0), length)
        layout = self.late.layout(seg, valid, length, profile, lead, trail)
        if trail is not None and n > 0:
            last_outcome_slot = int(layout.last_token[n - 1]) + 1  # the trailing token follows the last item token
        return CachedHistory(self.late, layout, n, last_time, last_outcome_slot)

    @torch.no_grad()
    def score_cached(
        self,
        cached: CachedHistory,
        candidates: torch.Tensor,
        *,
        candidate_times: float | torch.Tensor | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """P(click) ``[M]`` of each candidate after a history from :meth:`cache_history`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int (got {batch_size!r})")
        candidates = self._checked_items(candidates, "candidates")
        m = len(candidates)
        seg, valid = self._step_segments(candidates)  # [M S d], [M S]
        shown = None  # [M] the time each candidate is shown
        if self.recency is not None or cached.last_outcome_slot is not None:
            setting = "recency_words" if self.recency is not None else "history_labels"
            shown = self._checked_shown(candidate_times, cached, m, setting)
        lead = None
        if self.recency is not None:
            # the candidate's phrase: the gap from the last history item (none after an empty history)
            pair = torch.stack([cached.last_time.expand(m), shown], dim=1)  # [M 2]
            phrases, has = self._recency(pair, torch.full((m,), 2 if cached.step > 0 else 1, device=seg.device))
            lead = (phrases[:, 1], has[:, 1])
        hide_last_outcome = None
        if cached.last_outcome_slot is not None:  # outcomes entered in a candidate's own second stay hidden from it
            hide_last_outcome = shown == cached.last_time  # [M]
        tokens, tokens_valid, read = self.late.next_step(seg, valid, cached.step, lead)
        states = cached.states(tokens, tokens_valid, read, batch_size, hide_last_outcome)  # [M d]
        return checked(torch.softmax(self.option_logits(states), dim=-1)[:, -1], "score_candidates")

    def _step_segments(self, item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item segments ``[..., S d]`` as :meth:`forward` puts them in a step: cached states (through the item
        adapter), token-slot positions, ID embeddings; valid ``[..., S]``."""
        seg, valid = self._item_states(item_ids)
        seg = self.late.with_token_positions(seg)
        if self.item_id_embedding is not None:
            seg = seg + self._id_embedding(item_ids).unsqueeze(-2)
        return seg, valid

    def _checked_items(self, ids, name: str) -> torch.Tensor:
        ids = torch.as_tensor(ids, device=self.late.prompt.device)
        if ids.dim() != 1 or (ids.numel() > 0 and (ids.is_floating_point() or ids.is_complex())):
            raise ValueError(f"{name} must be a 1-d tensor of item ids (got shape {tuple(ids.shape)}, {ids.dtype})")
        ids = ids.long()
        bad = ids[(ids < 1) | (ids >= self.n_items)]
        if len(bad):
            raise ValueError(
                f"{name} holds item id {int(bad[0])}: valid ids are 1 .. {self.n_items - 1} (0 is the padding item)"
            )
        return ids

    def _checked_user(self, user_id) -> torch.Tensor:
        if user_id is None:
            raise ValueError(f"this model reads a profile segment: pass user_id (the '{self.USER_ID}' of the user)")
        user = torch.as_tensor(user_id).reshape(-1).long()
        n_users = len(self._user_segments)
        if user.numel() != 1 or not 0 < int(user[0]) < n_users:
            raise ValueError(f"user_id must be one id in 1 .. {n_users - 1} (got {user_id!r})")
        return user

    def _checked_times(self, times, n: int, name: str, field: str) -> torch.Tensor:
        if times is None:
            raise ValueError(
                f"this model reads the history's times (recency_words or history_labels): pass {name} (the history's "
                f"'{field}', oldest first)"
            )
        times = torch.as_tensor(times)
        if tuple(times.shape) != (n,):
            raise ValueError(f"{name} must hold one time per history item, shape ({n},) (got {tuple(times.shape)})")
        return times

    def _checked_shown(self, times, cached: CachedHistory, m: int, setting: str) -> torch.Tensor:
        """``candidate_times`` (a number or ``[m]``) -> ``[m]`` in the history's dtype, not before its last time."""
        if times is None:
            raise ValueError(
                f"{setting} is on: pass candidate_times (the time the candidates are shown, as a number or one per "
                "candidate, in the units of the batches' timestamps)"
            )
        # in the history's dtype directly: through float32 first, a time in the last second could miss it
        shown = torch.as_tensor(times, dtype=cached.last_time.dtype, device=cached.last_time.device).reshape(-1)
        if shown.numel() not in (1, m):
            raise ValueError(f"candidate_times holds {shown.numel()} times for {m} candidates; pass 1 or {m}")
        if cached.step > 0 and bool((shown < cached.last_time).any()):
            raise ValueError(
                f"candidate_times holds {shown.min().item()}, earlier than the history's last time "
                f"{cached.last_time.item()}: candidates are shown after the history"
            )
        return shown.expand(m)

    def _checked_labels(self, labels, n: int) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"history_labels is on: pass history_labels (the history's '{self.LABEL_LIST}')")
        labels = torch.as_tensor(labels)
        n_options = self.outcome_tokens.shape[0]
        if tuple(labels.shape) != (n,) or bool(
            ((labels < 0) | (labels >= n_options) | (labels != labels.long())).any()
        ):
            raise ValueError(
                f"history_labels must hold one label in 0 .. {n_options - 1} per history item, shape ({n},) "
                f"(got {labels.tolist() if labels.numel() <= 8 else tuple(labels.shape)})"
            )
        return labels.long()

    def full_sort_predict(self, interaction):
        raise NotImplementedError(
            "M6RecCTR scores (history, candidate) pairs one by one: evaluate it with eval_args.mode: labeled "
            "(AUC, LogLoss) or a sampled mode such as uni100, not full ranking"
        )
