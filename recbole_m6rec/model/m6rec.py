"""M6Rec: a sequential recommender in the style of M6-Rec.

Reference:
    Zeyu Cui et al. "M6-Rec: Generative Pretrained Language Models are Open-Ended Recommender Systems."
    arXiv 2205.08084, 2022.

Items are text (title, year, genres, ...); a user is a profile segment plus the sequence of their items' segments.
Multi-segment late interaction: the lower layers of a pretrained language model run on every item text alone, once,
under ``no_grad`` (cached, not in the state dict: :mod:`recbole_m6rec.lm`); the upper ``late_interaction_layers`` of
the same model run across the user's segments with a segment-causal mask, so one pass yields the user state after
every step of the history (:mod:`.late_interaction`). Two towers map user and item states to L2-normalised
``embedding_size`` vectors; scores are cosine / temperature. No item IDs are needed (``use_item_id_embedding`` adds
them for a text+ID hybrid; cold items keep only their text: :mod:`.cold_items`). Compression for a CPU
(``item_encoder_layers``: early exit of the item encoding; ``quantize: int8``): ``docs/compression.md``. The training losses and their
negatives: :mod:`.losses`; checkpoints without the frozen backbone, and ``.to()``: :mod:`.frozen_backbone`.

Leakage guard: the user side is built from ``item_id_list`` (and the user's own profile fields) only, never from the
target item's id or features.
"""

from __future__ import annotations

import time

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn
from torch.nn import functional as F

from ..lm import PhraseTable, SegmentEncoder
from ..text import build_item_texts, build_user_texts
from ..text.recency import RECENCY_PHRASES, recency_buckets, recency_field, seconds_per_time_unit
from . import facts, losses
from .cold_items import ColdItems
from .frozen_backbone import FrozenBackbone
from .item_adapter import ItemStateAdapter
from .late_interaction import LateInteraction
from .popularity import PopularityBias
from .settings import M6RecSettings

__all__ = ["M6Rec", "checked"]


class M6Rec(FrozenBackbone, SequentialRecommender):
    # RecBole's pair-wise format: with train_neg_sample_args (loss_type BPR) each sample gets a NEG_ITEM_ID; without
    # it the training data are the samples as they are
    input_type = InputType.PAIRWISE
    settings_class = M6RecSettings

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.settings = s = self.settings_class.from_config(config)
        self.USER_ID = config["USER_ID_FIELD"]
        self.TIME_FIELD = config["TIME_FIELD"]
        self.TIME_LIST = recency_field(config, dataset) if s.recency_words else None
        # seconds per unit of the batches' times: RecBole may have min-max scaled them (normalize_all)
        self.seconds_per_time_unit = seconds_per_time_unit(config, dataset) if s.recency_words else None
        self.item_texts = build_item_texts(dataset, s.item_text_fields, s.item_text_template)
        self.user_texts = (
            build_user_texts(dataset, s.user_text_fields, s.user_text_template)
            if s.use_profile and s.user_text_fields
            else None
        )

        # define layers and loss: cached lower-layer segments, the late-interaction upper layers, the heads
        device = torch.device(config["device"] or "cpu")
        if s.quantize == "int8" and device.type != "cpu":
            raise ValueError(
                f"quantize int8 runs on the CPU only (torch's dynamic quantisation), but the model is to run on "
                f"{device} (got quantize: int8); valid on {device.type}: quantize none"
            )
        self.encoder = SegmentEncoder.load(
            s.plm_name_or_path,
            upper_layers=s.late_interaction_layers,
            segment_tokens=s.segment_tokens,
            max_tokens=s.text_max_tokens,
            cache_dir=s.text_cache_dir,
            batch_size=s.encode_batch_size,
            item_layers=s.item_encoder_layers,
            quantize=s.quantize,
        )
        started = time.perf_counter()
        home = self.encoder.device
        self.encoder.stack.to(device)  # encode item texts where the model will run; their states come back to the CPU
        try:
            self._item_segments = self.encoder.encode(self.item_texts, "items", s.lower_is_frozen)
            self._user_segments = (
                self.encoder.encode(self.user_texts, "users", s.lower_is_frozen)
                if self.user_texts is not None
                else None
            )
        finally:
            self.encoder.stack.to(home)  # the model is built in one place; RecBole then moves all of it
        self.encoding_seconds = time.perf_counter() - started
        self.encoding_from_cache = self.encoder.cache_hits > 0 and self.encoder.cache_misses == 0
        self.recency = PhraseTable(self.encoder, RECENCY_PHRASES, s.lower_is_frozen) if s.recency_words else None
        self.late = LateInteraction(
            self.encoder,
            tuning=s.tuning,
            adapter_rank=s.adapter_rank,
            attention_lora_rank=s.attention_lora_rank,
            n_prompt_tokens=s.n_prompt_tokens,
            prompt_text=s.prompt_text,
            n_steps=self.max_steps,
            width=self._item_segments.width,
        )
        if s.quantize == "int8" and s.upper_is_frozen:  # the online layers' frozen weights; adapters stay float
            from ..lm.quantize import quantize_layers

            quantize_layers(self.stack, range(self.late.n_lower, self.stack.num_layers))
        d = self.stack.hidden_size
        self.item_id_embedding = nn.Embedding(self.n_items, d, padding_idx=0) if s.use_item_id_embedding else None
        self.item_adapter = ItemStateAdapter(d, s.item_adapter_rank) if s.item_adapter_rank else None
        self.build_heads(d)
        self.cold = ColdItems(dataset, self.n_items, s.unseen_item_prior)
        self.popularity = PopularityBias(dataset, self.n_items) if s.popularity_bias else None

        # parameters initialization (the backbone is pretrained; the late-interaction parts start at zero)
        if self.item_id_embedding is not None:
            nn.init.normal_(self.item_id_embedding.weight, std=1.0)
        self.trainable_share = facts.log_trainable(
            self, self.stack, s.tuning, self.late.n_lower, s.late_interaction_layers
        )

    @property
    def max_steps(self) -> int:
        """Segments after the profile in one pass: the history window."""
        return self.max_seq_length

    @property
    def stack(self):
        return self.late.stack

    @property
    def item_tokens(self):
        return self._item_segments.tokens

    def build_heads(self, d: int) -> None:
        """The two towers' heads on top of the upper layers."""
        self.candidate_embedding = nn.Parameter(torch.zeros(d))
        # LM states share a dominant common direction (item states at init: mean cosine 0.91 on ml-100k with
        # SmolLM2); batch normalisation centres and scales them per dimension before each tower's projection.
        self.user_norm = nn.BatchNorm1d(d)
        self.item_norm = nn.BatchNorm1d(d)
        self.user_projection = nn.Linear(d, self.settings.embedding_size)
        self.item_projection = nn.Linear(d, self.settings.embedding_size)

    def forward(self, item_seq, item_seq_len, user_ids=None, timestamps=None, trail=None):
        """User states ``[B n+1 d]``: index 0 before any item, index t after the first t items of the history.

        ``timestamps`` ``[B n]`` (with ``recency_words``) puts the phrase of the gap since the previous step in front
        of each step's item; ``trail`` (states ``[B n d]``, valid ``[B n]``) adds one token after each step that only
        later steps see.
        """
        seg, valid = self._item_states(item_seq)  # [B n S d], [B n S]
        seg = self.late.with_token_positions(seg)
        if self.item_id_embedding is not None:
            seg = seg + self._id_embedding(item_seq).unsqueeze(2)
        profile = None
        if user_ids is not None and self._user_segments is not None:
            profile = self._user_segments.lookup(user_ids)  # [B Sp d], [B Sp]
        return self.late(seg, valid, item_seq_len, profile, self._recency(timestamps, item_seq_len), trail)

    def calculate_loss(self, interaction):
        s = self.settings
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        skip = (
            interaction[losses.WINDOW_SKIP_FIELD] if losses.WINDOW_SKIP_FIELD in interaction else None
        )  # overlapping windows
        positions, labels, last = losses.scored_positions(
            item_seq, item_seq_len, interaction[self.POS_ITEM_ID], s.train_whole_sequences, skip
        )  # [B n], [M], [M]
        states = self.forward(item_seq, item_seq_len, self._user_ids(interaction), self._timestamps(interaction))
        users = self._user_head(states[:, 1:][positions])  # [M E]
        if s.loss_type == "CE":
            logits = users @ self.item_vectors().t() / s.temperature + self._bias()  # [M n_items]
            logits[:, 0] = float("-inf")  # the padding item is never a target
            if s.loss_items == "seen":  # items with no training interaction are not in the catalogue yet
                logits = self.cold.only_seen(logits)
            return F.cross_entropy(logits, labels)
        if s.loss_type == "inbatch":  # contrastive: the batch's distinct target items are the candidates
            unique, column = labels.unique(return_inverse=True)
            return F.cross_entropy(users @ self.item_vectors(unique).t() / s.temperature, column)  # [M U]
        seen = self.cold.seen if s.loss_items == "seen" else None
        pool = losses.negative_pool(self.n_items, seen)
        if s.loss_type == "BPR":
            recbole = losses.recbole_negatives(interaction, self.NEG_ITEM_ID)  # [B]
            negatives = losses.bpr_negatives(pool, labels, last, recbole, seen)  # [M]
        else:  # sampled_softmax: the target against negatives shared by the batch's positions
            negatives = losses.draw_shared_negatives(pool, s.softmax_negatives, labels.device)  # [K]
        return losses.sampled_negatives_loss(s.loss_type, users, labels, negatives, self.item_vectors, s.temperature)

    def predict(self, interaction):
        users = self._user_vectors(interaction)  # [B E]
        if self.cold.prior is not None:  # the mixture's normalisers need every item's score
            scores = self.cold.mixture(users @ self._all_item_vectors().t() / self.settings.temperature + self._bias())
            return checked(scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1), "predict")
        item_ids = interaction[self.ITEM_ID]
        items = self.item_vectors(item_ids)  # [B E]
        return checked((users * items).sum(-1) / self.settings.temperature + self._bias(item_ids), "predict")

    def full_sort_predict(self, interaction):
        users = self._user_vectors(interaction)  # [B E]
        scores = users @ self._all_item_vectors().t() / self.settings.temperature + self._bias()  # [B n_items]
        return checked(self.cold.mixture(scores), "full_sort_predict")

    def report_facts(self) -> dict:
        """What a benchmark report shows about this model besides its metrics."""
        return facts.report_facts(self, self.encoding_seconds, self.encoding_from_cache, self.trainable_share)

    # ------------------------------------------------------------------------------------------------ towers
    def _user_vectors(self, interaction) -> torch.Tensor:
        """L2-normalised user vector after the whole given history ``[B E]``."""
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        states = self.forward(
            interaction[self.ITEM_SEQ], item_seq_len, self._user_ids(interaction), self._timestamps(interaction)
        )  # [B n+1 d]
        return self._user_head(self.gather_indexes(states, item_seq_len))

    def _user_head(self, states: torch.Tensor) -> torch.Tensor:
        """``[M d]`` upper-layer states -> L2-normalised user vectors ``[M E]``."""
        return F.normalize(self.user_projection(self.user_norm(states)), dim=-1)

    def item_vectors(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised item vectors ``[M E]`` (all items when ``item_ids`` is None)."""
        if item_ids is None:
            item_ids = torch.arange(self.n_items, device=self.late.prompt.device)
        seg, valid = self._item_states(item_ids)  # [M S d], [M S]
        seg = self.late.with_token_positions(seg) + self.candidate_embedding
        if self.item_id_embedding is not None:
            seg = seg + self._id_embedding(item_ids).unsqueeze(1)
        if self.settings.item_tower == "upper":
            seg = self.late.items(seg, valid)
        pooled = (seg * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # [M d]
        return F.normalize(self.item_projection(self.item_norm(pooled)), dim=-1)

    def _bias(self, item_ids: torch.Tensor | None = None) -> torch.Tensor | float:
        """``popularity_bias``'s term for ``item_ids`` (every item when None), or 0 when it is off."""
        return 0.0 if self.popularity is None else self.popularity(item_ids)

    def _item_states(self, item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached lower-layer segment states of ``item_ids`` (``[..., S, d]``, valid ``[..., S]``), through the
        item-state adapter when there is one (the history and the item tower read the same adapted states)."""
        seg, valid = self._item_segments.lookup(item_ids)
        return (seg if self.item_adapter is None else self.item_adapter(seg)), valid

    def _id_embedding(self, item_ids: torch.Tensor) -> torch.Tensor:
        # items without a training interaction (cold items) fall back to their text: their ID embedding, trained
        # only as a negative, is left out
        embedding = self.item_id_embedding(item_ids) * self.cold.keep_seen(item_ids)
        p = self.settings.item_id_dropout
        if self.training and p > 0:  # whole ID vectors dropped per occurrence: the text must carry the item alone
            keep = torch.rand(item_ids.shape, dtype=embedding.dtype, device=item_ids.device) >= p
            embedding = embedding * keep.unsqueeze(-1).to(embedding.dtype) / (1 - p)
        return embedding

    # ---------------------------------------------------------------------------------------------- inputs
    def _user_ids(self, interaction):
        return interaction[self.USER_ID] if self._user_segments is not None and self.USER_ID in interaction else None

    def _timestamps(self, interaction):
        return interaction[self.TIME_LIST] if self.TIME_LIST is not None and self.TIME_LIST in interaction else None

    def _recency(self, timestamps: torch.Tensor | None, item_seq_len: torch.Tensor):
        """(states ``[B n d]``, valid ``[B n]``) of each step's recency phrase, or None when recency_words is off."""
        if self.recency is None:
            return None
        if timestamps is None:
            raise ValueError(f"recency_words is on but the batch has no '{self.TIME_LIST}' field")
        index, valid = recency_buckets(timestamps, item_seq_len, self.seconds_per_time_unit)
        like = self.late.prompt  # the table moves with the model's parameters, built before or after a .to()
        return self.recency(like.device).to(like.dtype)[index], valid


def checked(scores: torch.Tensor, where: str) -> torch.Tensor:
    """NaN scores are an error: ``torch.topk`` would rank NaN items first and inflate every metric."""
    if not bool(torch.isfinite(scores).all()):
        bad = int((~torch.isfinite(scores)).sum())
        raise FloatingPointError(f"M6Rec.{where} produced {bad} non-finite scores; refusing to rank them")
    return scores
