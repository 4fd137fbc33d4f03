"""Serving many candidates for one user: the history runs through the online upper layers once, and every candidate
attends to its cached keys and values.

In :class:`~.late_interaction.LateInteraction` a candidate is the step after the history: its tokens attend to the
prompt, the profile and the history's valid tokens, and no history token attends to it (the segment-causal mask). So
the history's states in every online layer are the same whatever the candidate, and a candidate's score needs only
the history's keys and values in each online layer and its own tokens. :class:`CachedHistory` keeps those and scores
candidates in chunks laid side by side in one sequence after the history: each candidate's tokens get the positions
(rotary position ids; segment positions come with the tokens) they would have had right after the history in
``forward``, and a block mask lets them see the history and themselves, never another candidate (and a candidate
shown in the history's last second not that second's outcome slot, which ``forward`` leaves out for it).

Llama-family decoders: the keys and values are captured through the attention layers' own cache hook
(``cache.update(key, value, layer_idx)``, called after the rotary positions are applied), so the layers' code (norms,
adapters, grouped-query attention) runs unchanged. Other families (BERT-style encoders, the encoders of encoder–decoders)
get no cache: there the history runs again with each chunk (same mask and positions, same numbers; its cost is shared
by the chunk's candidates instead of paid once).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..lm import additive_mask, segment_causal_mask
from .late_interaction import LateInteraction, Layout

__all__ = ["CachedHistory"]


class CachedHistory:
    """One user's history (a batch-of-one :class:`Layout`) through the online layers, ready to score candidates.

    ``step`` is the candidates' step index (the number of history steps); ``last_time`` the history's last timestamp
    (for a candidate's recency phrase, and to tell which candidates share its second), or None;
    ``last_outcome_slot`` the token index of the last step's trailing token (outcomes), which :meth:`states` can hide
    from some candidates, or None."""

    def __init__(
        self,
        late: LateInteraction,
        layout: Layout,
        step: int,
        last_time: torch.Tensor | None = None,
        last_outcome_slot: int | None = None,
    ):
        if layout.hidden.shape[0] != 1:
            raise ValueError(f"CachedHistory holds one user's history (got a batch of {layout.hidden.shape[0]})")
        self.late, self.step, self.last_time = late, step, last_time
        self.last_outcome_slot = last_outcome_slot
        self.n_tokens = layout.hidden.shape[1]  # the first candidate token's position
        self.valid = layout.valid[0]  # [T] the history tokens a candidate may attend
        self.allowed = segment_causal_mask(layout.segment_ids.unsqueeze(0), layout.valid)[0]  # [T T]
        self.capture = _KeyValueCapture() if late.stack.family.name == "llama" else None
        if self.capture is not None:
            self.keyword = _cache_keyword(late.stack.layers[late.n_lower])
            positions = torch.arange(self.n_tokens, device=layout.hidden.device)
            self._run(layout.hidden, self.allowed, positions)  # fills the capture, layer by layer
            self.capture.recording = False
            self.history = None
        else:
            self.history = layout.hidden  # [1 T d] runs again with every chunk

    @torch.no_grad()
    def states(
        self,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        read: int,
        batch_size: int,
        hide_last_outcome: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-norm states ``[M d]`` at slot ``read`` of M candidates' tokens ``[M W d]`` (valid ``[M W]``), laid
        out as the step after the history (:meth:`LateInteraction.next_step`), ``batch_size`` candidates at a time.
        ``hide_last_outcome`` ``[M]``: the candidates that must not see the token at ``last_outcome_slot``."""
        if tokens.shape[0] == 0:
            return tokens.new_zeros(0, tokens.shape[-1])
        seen = self.valid.unsqueeze(0).expand(tokens.shape[0], -1)  # [M T] the history tokens each candidate sees
        if hide_last_outcome is not None and self.last_outcome_slot is not None:
            seen = seen.clone()
            seen[hide_last_outcome, self.last_outcome_slot] = False
        return torch.cat(
            [
                self._chunk(chunk_tokens, chunk_valid, chunk_seen, read)
                for chunk_tokens, chunk_valid, chunk_seen in zip(
                    tokens.split(batch_size), valid.split(batch_size), seen.split(batch_size)
                )
            ]
        )

    def _chunk(self, tokens: torch.Tensor, valid: torch.Tensor, seen: torch.Tensor, read: int) -> torch.Tensor:
        m, width, d = tokens.shape
        q = m * width
        device = tokens.device
        owner = torch.arange(m, device=device).repeat_interleave(width)  # [Q] which candidate a token belongs to
        own = (owner.unsqueeze(1) == owner.unsqueeze(0)) & valid.reshape(1, q)  # [Q Q] itself, never another one
        candidate_rows = torch.cat([seen.repeat_interleave(width, dim=0), own], dim=1)  # [Q T+Q]
        positions = self.n_tokens + torch.arange(width, device=device).repeat(m)  # [Q] as right after the history
        flat = tokens.reshape(1, q, d)
        if self.capture is not None:
            hidden = self._run(flat, candidate_rows, positions)
        else:  # no cache: the history again, first, seeing only itself
            history_rows = torch.cat([self.allowed, self.allowed.new_zeros(self.n_tokens, q)], dim=1)
            allowed = torch.cat([history_rows, candidate_rows])
            history_positions = torch.arange(self.n_tokens, device=device)
            hidden = self._run(
                torch.cat([self.history, flat], dim=1), allowed, torch.cat([history_positions, positions])
            )[:, self.n_tokens :]
        read_at = torch.arange(m, device=device) * width + read
        return self.late.stack.final_norm(hidden[0, read_at])  # [M d]; a per-token norm: read rows only

    def _run(self, hidden: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``[1 Q d]`` through the online layers, query i attending key j where ``allowed`` ``[Q K]`` (with the
        capture, keys are the history's T tokens, then the Q new ones)."""
        stack, positions = self.late.stack, positions.unsqueeze(0)
        mask = additive_mask(allowed.unsqueeze(0), hidden.dtype)  # [1 1 Q K]
        if self.capture is None:
            return stack.run_layers(hidden, self.late.n_lower, stack.num_layers, mask, positions)
        position_embeddings = stack.rotary_emb(hidden, positions)
        for layer in stack.layers[self.late.n_lower :]:
            out = layer(
                hidden,
                attention_mask=mask,
                position_ids=positions,
                position_embeddings=position_embeddings,
                **{self.keyword: self.capture},
            )
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden


class _KeyValueCapture:
    """What an HF attention layer calls on its cache (``update(key, value, layer_idx, ...)``, keys after rotary
    positions): while ``recording``, keep each layer's keys and values ``[1 H T Dh]``; afterwards, put them in front
    of each call's own and keep nothing, so chunks never see each other."""

    def __init__(self):
        self.recording = True
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.recording:
            self.keys[layer_idx], self.values[layer_idx] = key, value
            return key, value
        return torch.cat([self.keys[layer_idx], key], dim=2), torch.cat([self.values[layer_idx], value], dim=2)


def _cache_keyword(layer: nn.Module) -> str:
    """The name a decoder layer takes its cache under (``cache`` in transformers 5, ``past_key_values`` from 4.56,
    ``past_key_value`` before)."""
    parameters = inspect.signature(layer.forward).parameters
    for name in ("cache", "past_key_values", "past_key_value"):
        if name in parameters:
            return name
    raise ValueError(
        f"{type(layer).__name__}.forward takes no cache argument (cache, past_key_values or past_key_value): "
        "cannot reuse a history's keys and values with this transformers version"
    )
