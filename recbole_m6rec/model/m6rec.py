"""M6Rec: a sequential recommender in the style of M6-Rec.

Reference:
    Zeyu Cui et al. "M6-Rec: Generative Pretrained Language Models are Open-Ended Recommender Systems."
    arXiv 2205.08084, 2022.

Items are text (title, year, genres, ...); a user is a profile segment plus the sequence of their items' segments.
Multi-segment late interaction: the lower layers of a pretrained language model run on every item text alone, once,
under ``no_grad`` (cached, not in the state dict); the upper ``late_interaction_layers`` of the same model run across
the user's segments with a segment-causal mask, so one pass yields the user state after every step of the history.
Two towers map user and item states to L2-normalised ``embedding_size`` vectors; scores are cosine / temperature.
No item IDs are needed (``use_item_id_embedding`` adds them for a text+ID hybrid).

Leakage guard: the user side is built from ``item_id_list`` (and the user's own profile fields) only, never from the
target item's id or features.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn
from torch.nn import functional as F

from ..cache import cache_root
from ..plm import load_plm, plm_fingerprint
from ..text import build_item_texts, build_user_texts
from ..text.recency import RECENCY_PHRASES, recency_buckets
from .backbone import LayerStack, additive_mask, attach_ffn_adapters, segment_causal_mask
from .segments import ALL_TOKENS, SegmentEncoder, SegmentStates
from .settings import CATALOGUE_PRIOR, M6RecSettings

__all__ = ["M6Rec"]

logger = logging.getLogger(__name__)


class M6Rec(SequentialRecommender):
    input_type = InputType.POINTWISE
    tuning_modes = ("option_adapter", "prompt", "upper", "full")  # "option" needs an option classifier (M6RecCTR)
    extra_segments = 0  # segment slots beyond the history (M6RecCTR appends the candidate)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # parameters
        self.settings = s = M6RecSettings.from_config(config, self.tuning_modes)
        self.USER_ID = config["USER_ID_FIELD"]
        self.plm_id = plm_fingerprint(s.plm_name_or_path)

        # language model, split into cached lower layers and online upper layers
        tokenizer, hf_model = load_plm(s.plm_name_or_path)
        self.stack = LayerStack(hf_model)
        n_layers = self.stack.num_layers
        if s.late_interaction_layers > n_layers:
            raise ValueError(
                f"late_interaction_layers must be between 1 and {n_layers}, the number of layers of "
                f"'{s.plm_name_or_path}' (got {s.late_interaction_layers})"
            )
        self.n_lower = n_layers - s.late_interaction_layers
        d = self.stack.hidden_size
        cache_dir = s.text_cache_dir or cache_root() / "text"
        self.encoder = SegmentEncoder(
            self.stack, tokenizer, n_lower_layers=self.n_lower, segment_tokens=s.segment_tokens,
            max_tokens=s.text_max_tokens, plm_id=self.plm_id, cache_dir=cache_dir, batch_size=s.encode_batch_size,
        )

        # texts (aligned to internal ids, row 0 = [PAD])
        self.item_texts = build_item_texts(dataset, s.item_text_fields, s.item_text_template)
        self.item_tokens = self.encoder.tokenize(self.item_texts)
        self.user_texts = None
        if s.use_profile and s.user_text_fields:
            self.user_texts = build_user_texts(dataset, s.user_text_fields, s.user_text_template)
            self.user_tokens = self.encoder.tokenize(self.user_texts)
        self.max_segment_tokens = (
            self.item_tokens.input_ids.shape[1] if s.segment_tokens == ALL_TOKENS else s.segment_tokens
        )
        self.TIME_FIELD = config["TIME_FIELD"]
        self.TIME_LIST = self._time_list_field(config, dataset) if s.recency_words else None
        self._recency_states: torch.Tensor | None = None

        # trainable parts: prompts, learned segment/position embeddings, towers, optional ID embedding
        self._set_backbone_trainable(s.tuning)
        self.adapters = (
            attach_ffn_adapters(self.stack, list(range(self.n_lower, n_layers)), s.adapter_rank)
            if s.tuning == "option_adapter" else nn.ModuleList()
        )
        self.prompt = nn.Parameter(self._initial_prompt(tokenizer, s.n_prompt_tokens, s.prompt_text))
        # 0 = profile, 1.. = history steps (plus the candidate's step for a point-wise subclass)
        self.segment_position = nn.Embedding(self.max_seq_length + 1 + self.extra_segments, d)
        self.token_position = nn.Embedding(self.max_segment_tokens, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d, padding_idx=0) if s.use_item_id_embedding else None
        self._build_heads(d, tokenizer)
        nn.init.zeros_(self.segment_position.weight)
        nn.init.zeros_(self.token_position.weight)
        self.register_buffer("item_seen_in_training", _items_in_training(dataset, self.n_items), persistent=False)
        self.unseen_item_prior = _resolve_unseen_prior(s.unseen_item_prior, self.item_seen_in_training)
        if self.item_id_embedding is not None:
            nn.init.normal_(self.item_id_embedding.weight, std=1.0)

        # caches: recomputable, kept out of the state dict
        self._item_segments: SegmentStates | None = None
        self._user_segments: SegmentStates | None = None
        self._eval_item_vectors: torch.Tensor | None = None
        started = time.perf_counter()
        if self.lower_is_frozen:
            self._item_segments = self.encoder.encode(self.item_texts, "items", self.item_tokens)
            if self.user_texts is not None:
                self._user_segments = self.encoder.encode(self.user_texts, "users", self.user_tokens)
        self.encoding_seconds = time.perf_counter() - started
        self.encoding_from_cache = self.encoder.cache_hits > 0 and self.encoder.cache_misses == 0
        self._log_trainable()

    def _build_heads(self, d: int, tokenizer) -> None:
        """The two towers' heads on top of the upper layers."""
        s = self.settings
        self.candidate_embedding = nn.Parameter(torch.zeros(d))
        # LM states share a dominant common direction (item states at init: mean cosine 0.91 on ml-100k with
        # SmolLM2); batch normalisation centres and scales them per dimension before each tower's projection.
        self.user_norm = nn.BatchNorm1d(d)
        self.item_norm = nn.BatchNorm1d(d)
        self.user_projection = nn.Linear(d, s.embedding_size)
        self.item_projection = nn.Linear(d, s.embedding_size)

    @staticmethod
    def _time_list_field(config, dataset) -> str:
        time_field = config["TIME_FIELD"]
        if not time_field or time_field not in dataset.field2type:
            raise ValueError(
                f"recency_words needs timestamps, but the dataset has no TIME_FIELD '{time_field}': load it "
                f"(load_col: {{inter: [..., {time_field}]}}) or set recency_words: False"
            )
        return time_field + config["LIST_SUFFIX"]

    def report_facts(self) -> dict:
        """What a benchmark report shows about this model besides its metrics."""
        return {
            "item_encoding_seconds": round(self.encoding_seconds, 2),
            "encoding_from_cache": self.encoding_from_cache,
            "trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "trainable_share": self.trainable_share,
        }

    def _item_ids(self, item_ids: torch.Tensor) -> torch.Tensor:
        # items without a training interaction (cold items) fall back to their text: their ID embedding, trained
        # only as a negative, is left out
        return self.item_id_embedding(item_ids) * self.item_seen_in_training[item_ids].unsqueeze(-1)

    # ---------------------------------------------------------------------------------------------- setup
    @property
    def lower_is_frozen(self) -> bool:
        return self.settings.tuning != "full"

    def _set_backbone_trainable(self, tuning: str) -> None:
        for p in self.stack.parameters():
            p.requires_grad_(tuning == "full")
        if tuning == "upper":
            for layer in self.stack.layers[self.n_lower:]:
                layer.requires_grad_(True)
            self.stack.norm.requires_grad_(True)

    @torch.no_grad()
    def _initial_prompt(self, tokenizer, n_tokens: int, text: str) -> torch.Tensor:
        """Soft prompt initialised from the lower-layer states of ``prompt_text`` (so it starts in-distribution)."""
        d = self.stack.hidden_size
        if n_tokens == 0:
            return torch.zeros(0, d)
        tokens = self.encoder.tokenize(["[PAD]", text]) if text else None
        if tokens is None or int(tokens.lengths[1]) < n_tokens:
            have = 0 if tokens is None else int(tokens.lengths[1])
            raise ValueError(
                f"n_prompt_tokens={n_tokens} needs a prompt_text of at least {n_tokens} tokens "
                f"(got {have}); lengthen prompt_text or lower n_prompt_tokens"
            )
        ids = tokens.input_ids[1:2, :n_tokens]
        states = self.stack.encode_segments(ids, torch.ones_like(ids), self.n_lower)
        return states[0].clone()

    def _log_trainable(self) -> None:
        backbone = sum(p.numel() for name, p in self.stack.named_parameters() if ".adapter." not in name)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        self.trainable_share = trainable / backbone
        logger.info(
            "%s: tuning=%s, %d lower + %d upper layers, trainable parameters %s (%.2f%% of the backbone's %s)",
            type(self).__name__, self.settings.tuning, self.n_lower, self.settings.late_interaction_layers,
            f"{trainable:,}", 100 * self.trainable_share, f"{backbone:,}",
        )

    # --------------------------------------------------------------------------------------- segments
    def _segments(self, ids: torch.Tensor, users: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment states ``[*ids S d]`` and mask ``[*ids S]`` for item (or user) ids."""
        if self.lower_is_frozen:
            cache = self._user_segments if users else self._item_segments
            cache = self._move_cache(cache, users)
            return cache.states[ids], cache.mask[ids]
        tokens = self.user_tokens if users else self.item_tokens
        unique, inverse = ids.reshape(-1).unique(return_inverse=True)
        unique_cpu = unique.cpu()
        length = int(tokens.lengths[unique_cpu].max())
        input_ids = tokens.input_ids[unique_cpu, :length].to(ids.device)
        attention = tokens.attention_mask[unique_cpu, :length].to(ids.device)
        states, mask = self.encoder.forward_tokens(input_ids, attention)
        if self.settings.segment_tokens == ALL_TOKENS:  # pad to a fixed number of token slots
            pad = self.max_segment_tokens - states.shape[1]
            states, mask = F.pad(states, (0, 0, 0, pad)), F.pad(mask, (0, pad))
        return states[inverse].reshape(*ids.shape, *states.shape[1:]), mask[inverse].reshape(*ids.shape, -1)

    def _recency_table(self) -> torch.Tensor:
        """``[P d]`` lower-layer states of the recency phrases, one mean-pooled vector each (computed once while the
        lower layers are frozen, every call under ``full`` tuning)."""
        if self._recency_states is not None and self.lower_is_frozen:
            if self._recency_states.device != self.prompt.device:  # the model moved since the table was built
                self._recency_states = self._recency_states.to(self.prompt.device)
            return self._recency_states
        tokens = self.encoder.tokenize(["[PAD]", *RECENCY_PHRASES])  # row 0 is the padding text by convention
        ids, attention = tokens.input_ids[1:].to(self.prompt.device), tokens.attention_mask[1:].to(self.prompt.device)
        with torch.set_grad_enabled(not self.lower_is_frozen and torch.is_grad_enabled()):
            hidden = self.stack.encode_segments(ids, attention, self.n_lower)
        keep = self.encoder.pool_mask(attention).unsqueeze(-1).to(hidden.dtype)
        table = (hidden * keep).sum(1) / keep.sum(1)
        if self.lower_is_frozen:
            self._recency_states = table.detach()
        return table

    def _recency(self, timestamps: torch.Tensor | None, item_seq_len: torch.Tensor):
        """(states ``[B n d]``, valid ``[B n]``) of each step's recency phrase, or None when recency_words is off."""
        if self.TIME_LIST is None:
            return None
        if timestamps is None:
            raise ValueError(f"recency_words is on but the batch has no '{self.TIME_LIST}' field")
        index, valid = recency_buckets(timestamps, item_seq_len)
        return self._recency_table()[index], valid

    def _timestamps(self, interaction):
        return interaction[self.TIME_LIST] if self.TIME_LIST is not None and self.TIME_LIST in interaction else None

    def _move_cache(self, cache: SegmentStates, users: bool) -> SegmentStates:
        device = self.prompt.device
        if cache.states.device != device:
            cache = SegmentStates(cache.states.to(device), cache.mask.to(device))
            if users:
                self._user_segments = cache
            else:
                self._item_segments = cache
        return cache

    # ------------------------------------------------------------------------------------------ towers
    def _user_states(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, user_ids: torch.Tensor | None,
                     outcomes: tuple[torch.Tensor, torch.Tensor] | None = None,
                     timestamps: torch.Tensor | None = None):
        """Upper-layer states after every history step ``[B n d]`` and the state before any item ``[B d]``.

        ``outcomes`` (states ``[B n d]``, valid ``[B n]``) adds one token after each step's segment that only later
        steps see (M6RecCTR: whether the user liked that item); the state of step t is read before its own outcome.
        ``timestamps`` ``[B n]`` (with ``recency_words``) puts the phrase of the gap since the previous step in front
        of each step's item tokens, inside the step's segment.
        """
        batch, n = item_seq.shape
        seg, seg_mask = self._segments(item_seq)  # [B n S d], [B n S]
        s_tokens = seg.shape[2]
        steps = torch.arange(n, device=item_seq.device)
        in_history = (steps.unsqueeze(0) < item_seq_len.unsqueeze(1)).unsqueeze(-1)  # [B n 1]
        seg_mask = seg_mask & in_history
        seg = seg + self.token_position.weight[:s_tokens]
        if self.item_id_embedding is not None:
            seg = seg + self._item_ids(item_seq).unsqueeze(2)
        within = torch.zeros(s_tokens, dtype=torch.long, device=item_seq.device)  # 0 = the item, 1 = its outcome
        recency = self._recency(timestamps, item_seq_len)
        lead = 0  # tokens in front of the item's own tokens
        if recency is not None:
            seg = torch.cat([recency[0].unsqueeze(2), seg], dim=2)
            seg_mask = torch.cat([recency[1].unsqueeze(2), seg_mask], dim=2)
            within = torch.cat([within.new_zeros(1), within])
            lead = 1
        if outcomes is not None:
            seg = torch.cat([seg, outcomes[0].unsqueeze(2)], dim=2)
            seg_mask = torch.cat([seg_mask, outcomes[1].unsqueeze(2) & in_history], dim=2)
            within = torch.cat([within, within.new_ones(1)])
        width = seg.shape[2]
        seg = seg + self.segment_position.weight[1:n + 1, None, :]
        tokens = seg.reshape(batch, n * width, -1)
        valid = seg_mask.reshape(batch, n * width)
        segment_ids = (2 * steps + 1).repeat_interleave(width) + within.repeat(n)  # item 2t+1, its outcome 2t+2

        prefix, prefix_valid = [self.prompt.unsqueeze(0).expand(batch, -1, -1)], [
            torch.ones(batch, self.prompt.shape[0], dtype=torch.bool, device=item_seq.device)]
        if self.user_texts is not None and user_ids is not None:
            profile, profile_mask = self._segments(user_ids, users=True)  # [B Sp d]
            prefix.append(profile + self.segment_position.weight[0])
            prefix_valid.append(profile_mask)
        n_prefix = sum(p.shape[1] for p in prefix)
        if n_prefix == 0 and bool((item_seq_len == 0).any()):
            raise ValueError("a user with an empty history needs a prompt (n_prompt_tokens > 0) or a profile segment")

        hidden = torch.cat(prefix + [tokens], dim=1)
        valid = torch.cat(prefix_valid + [valid], dim=1)
        segment_ids = torch.cat([torch.zeros(n_prefix, dtype=torch.long, device=item_seq.device), segment_ids])
        allowed = segment_causal_mask(segment_ids.unsqueeze(0).expand(batch, -1), valid)
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0).expand(batch, -1)
        hidden = self.stack.run_layers(
            hidden, self.n_lower, self.stack.num_layers, additive_mask(allowed, hidden.dtype), positions
        )
        hidden = self.stack.final_norm(hidden)
        last_token = n_prefix + steps * width + lead + s_tokens - 1  # the last item token of each history step
        before_any = hidden[:, n_prefix - 1] if n_prefix > 0 else hidden[:, 0]
        return hidden[:, last_token], before_any

    def _user_vectors(self, interaction) -> torch.Tensor:
        """L2-normalised user vector after the whole given history ``[B E]``."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        states, before_any = self._user_states(item_seq, item_seq_len, self._user_ids(interaction),
                                               timestamps=self._timestamps(interaction))
        last = self.gather_indexes(states, (item_seq_len - 1).clamp(min=0))
        last = torch.where((item_seq_len > 0).unsqueeze(-1), last, before_any)
        return self._user_head(last)

    def _user_head(self, states: torch.Tensor) -> torch.Tensor:
        """``[M d]`` upper-layer states -> L2-normalised user vectors ``[M E]``."""
        return F.normalize(self.user_projection(self.user_norm(states)), dim=-1)

    def _user_ids(self, interaction):
        return interaction[self.USER_ID] if self.user_texts is not None and self.USER_ID in interaction else None

    def item_vectors(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised item vectors ``[M E]`` (all items when ``item_ids`` is None)."""
        if item_ids is None:
            item_ids = torch.arange(self.n_items, device=self.prompt.device)
        seg, mask = self._segments(item_ids)  # [M S d]
        s_tokens = seg.shape[1]
        seg = seg + self.token_position.weight[:s_tokens] + self.candidate_embedding
        if self.item_id_embedding is not None:
            seg = seg + self._item_ids(item_ids).unsqueeze(1)
        if self.settings.item_tower == "upper":
            seg = self._item_upper_layers(seg, mask)
        pooled = (seg * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return F.normalize(self.item_projection(self.item_norm(pooled)), dim=-1)

    def _item_upper_layers(self, seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The item segment alone through the upper layers, after the prompt's first token (a decoder's sink)."""
        m = seg.shape[0]
        has_sink = self.prompt.shape[0] > 0
        if has_sink:
            seg = torch.cat([self.prompt[:1].unsqueeze(0).expand(m, -1, -1), seg], dim=1)
            mask = torch.cat([torch.ones(m, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        allowed = mask.unsqueeze(1).expand(-1, mask.shape[1], -1)
        positions = torch.arange(seg.shape[1], device=seg.device).unsqueeze(0).expand(m, -1)
        hidden = self.stack.run_layers(seg, self.n_lower, self.stack.num_layers, additive_mask(allowed, seg.dtype),
                                       positions)
        hidden = self.stack.final_norm(hidden)
        return hidden[:, 1:] if has_sink else hidden

    # ------------------------------------------------------------------------------ RecBole's contract
    def forward(self, item_seq, item_seq_len, user_ids=None, timestamps=None):
        """Upper-layer user states after every history step ``[B n d]``."""
        states, _ = self._user_states(item_seq, item_seq_len, user_ids, timestamps=timestamps)
        return states

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        batch, n = item_seq.shape
        rows = torch.arange(batch, device=item_seq.device)
        if self.settings.train_whole_sequences:
            # position t predicts item t+1; the last position predicts the sample's target
            targets = torch.roll(item_seq, shifts=-1, dims=1)
            targets[rows, item_seq_len - 1] = target
            positions = torch.arange(n, device=item_seq.device).unsqueeze(0) < item_seq_len.unsqueeze(1)
        else:  # RecBole's one-sample-per-prefix: only the last position
            targets = torch.zeros_like(item_seq)
            targets[rows, item_seq_len - 1] = target
            positions = torch.zeros_like(item_seq, dtype=torch.bool)
            positions[rows, item_seq_len - 1] = True
        states = self.forward(item_seq, item_seq_len, self._user_ids(interaction), self._timestamps(interaction))
        users = self._user_head(states[positions])  # [M E]
        labels = targets[positions]  # [M]
        if self.settings.loss_type == "CE":
            logits = users @ self.item_vectors().t() / self.settings.temperature  # [M n_items]
            logits[:, 0] = float("-inf")  # the padding item is never a target
            if self.settings.loss_items == "seen":  # items with no training interaction are not in the catalogue yet
                logits = logits.masked_fill(self.item_seen_in_training == 0, float("-inf"))
            return F.cross_entropy(logits, labels)
        # in-batch contrastive: the batch's distinct target items are the candidates
        unique, column = labels.unique(return_inverse=True)
        logits = users @ self.item_vectors(unique).t() / self.settings.temperature  # [M U]
        return F.cross_entropy(logits, column)

    def predict(self, interaction):
        users = self._user_vectors(interaction)
        if self.unseen_item_prior is not None:  # the mixture's normalisers need every item's score
            scores = self._unseen_prior_mixture(users @ self._all_item_vectors().t() / self.settings.temperature)
            return _checked(scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1), "predict")
        items = self.item_vectors(interaction[self.ITEM_ID])
        return _checked((users * items).sum(-1) / self.settings.temperature, "predict")

    def full_sort_predict(self, interaction):
        users = self._user_vectors(interaction)  # [B E]
        scores = users @ self._all_item_vectors().t() / self.settings.temperature  # [B n_items]
        return _checked(self._unseen_prior_mixture(scores), "full_sort_predict")

    def _all_item_vectors(self) -> torch.Tensor:
        """Every item's vector, computed once per evaluation (they change as soon as training resumes)."""
        if self._eval_item_vectors is None or self.training:
            items = self.item_vectors()
            if not self.training:
                self._eval_item_vectors = items
            return items
        return self._eval_item_vectors

    def _unseen_prior_mixture(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B n_items]`` logits -> log-probabilities of a two-group mixture (``unseen_item_prior``), or unchanged.

        Items without a training interaction get ``log p + log_softmax`` within their group, the others
        ``log (1 - p) + log_softmax`` within theirs. Why: the softmax trained over seen items says nothing about
        how an unseen item compares with them. Trained down as negatives (``loss_items: all``) they never reach
        a top K; left out of the loss (``seen``) their scores are uncalibrated and crowd warm users' top K. The
        prior fixes how much probability they share; their order among themselves is still the model's.
        """
        if self.unseen_item_prior is None:
            return logits
        seen = self.item_seen_in_training.bool()
        unseen = ~seen
        unseen[0] = False  # the padding item belongs to neither group; RecBole never ranks it
        log_seen = torch.logsumexp(logits.masked_fill(~seen, float("-inf")), dim=1, keepdim=True)
        log_unseen = torch.logsumexp(logits.masked_fill(~unseen, float("-inf")), dim=1, keepdim=True)
        prior = self.unseen_item_prior
        return torch.where(unseen, logits - log_unseen + float(np.log(prior)),
                           logits - log_seen + float(np.log1p(-prior)))

    # ---------------------------------------------------------------------------- caches and checkpoints
    def train(self, mode: bool = True):
        self._eval_item_vectors = None  # item vectors change as soon as training resumes
        return super().train(mode)

    def _frozen_backbone_keys(self) -> set[str]:
        return {f"stack.{name}" for name, p in self.stack.named_parameters() if not p.requires_grad}

    def state_dict(self, *args, **kwargs):
        """Trainable parameters only: the frozen backbone is reloaded from ``plm_name_or_path`` (checked by
        fingerprint in :meth:`load_other_parameter`), which keeps checkpoints small."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key in self._frozen_backbone_keys():
            state.pop(prefix + key, None)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = set(result.missing_keys) - self._frozen_backbone_keys()
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"M6Rec checkpoint does not match the model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(result.unexpected_keys)[:5]}"
            )
        self._eval_item_vectors = None
        return result

    def other_parameter(self):
        return {"plm_fingerprint": self.plm_id, "tuning": self.settings.tuning}

    def load_other_parameter(self, para):
        if para is None:
            return
        if para.get("plm_fingerprint") != self.plm_id:
            raise ValueError(
                f"checkpoint was trained on language model '{para.get('plm_fingerprint')}', but this model loads "
                f"'{self.plm_id}' (plm_name_or_path={self.settings.plm_name_or_path!r})"
            )


def _items_in_training(dataset, n_items: int) -> torch.Tensor:
    """``[n_items]`` float mask: 1 for items that occur in the training data (as a target or in a history)."""
    feat = dataset.inter_feat  # an Interaction once built, a DataFrame before

    def ids(field) -> torch.Tensor:
        values = feat[field]
        if not isinstance(values, torch.Tensor):  # a pandas column; item lists are a column of arrays
            values = torch.as_tensor(np.stack(values.to_numpy()).astype(np.int64))
        return values.long().flatten()

    seen = torch.zeros(n_items)
    seen[ids(dataset.iid_field)] = 1.0
    list_field = getattr(dataset, "item_id_list_field", None)
    if list_field is not None and list_field in feat:
        seen[ids(list_field)] = 1.0
    seen[0] = 0.0
    return seen


def _resolve_unseen_prior(setting, seen: torch.Tensor) -> float | None:
    """The mixture weight of items without a training interaction, or None (off, or nothing to mix)."""
    if setting is None:
        return None
    n_unseen, n_seen = int((seen[1:] == 0).sum()), int(seen[1:].sum())
    if n_unseen == 0 or n_seen == 0:  # one group only: the mixture is the plain softmax
        logger.info("unseen_item_prior: %d unseen and %d seen items, nothing to mix", n_unseen, n_seen)
        return None
    prior = n_unseen / (n_unseen + n_seen) if setting == CATALOGUE_PRIOR else float(setting)
    logger.info("unseen_item_prior %.4f over %d items without a training interaction (%d with)", prior, n_unseen,
                n_seen)
    return prior


def _checked(scores: torch.Tensor, where: str) -> torch.Tensor:
    """NaN scores are an error: ``torch.topk`` would rank NaN items first and inflate every metric."""
    if not bool(torch.isfinite(scores).all()):
        bad = int((~torch.isfinite(scores)).sum())
        raise FloatingPointError(f"M6Rec.{where} produced {bad} non-finite scores; refusing to rank them")
    return scores
