"""Multi-segment late interaction: the upper layers of the language model run across a user's segments.

The input is a soft prompt, an optional profile segment and one segment per history step (its item's cached
lower-layer states, with a learned position per token slot and per step). A segment-causal mask lets each step see
the prompt, the profile and the steps before it, never a later one, so one pass yields the user state after every
step. Each step may carry one extra token in front of its item (``lead``: e.g. a recency phrase) and one after it
(``trail``: e.g. the outcome of the step, which the step itself must not see); the trailing token gets a segment id
of its own between the step and the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..lm import SegmentEncoder, additive_mask, attach_attention_lora, attach_ffn_adapters, segment_causal_mask

__all__ = ["LateInteraction", "Layout"]

Extra = tuple[torch.Tensor, torch.Tensor]  # states [B n d], valid [B n]: one token per step


@dataclass
class Layout:
    """The upper layers' input for a batch of users: ``hidden`` ``[B T d]`` tokens, ``valid`` ``[B T]``, their
    ``segment_ids`` ``[T]`` (non-decreasing: who may attend whom), how many prompt and profile tokens come first, and
    ``last_token`` ``[n]``, the index of each step's last item token (where a step's state is read)."""

    hidden: torch.Tensor
    valid: torch.Tensor
    segment_ids: torch.Tensor
    n_prefix: int
    last_token: torch.Tensor


class LateInteraction(nn.Module):
    """The upper layers of ``encoder.stack`` with the soft prompt, the FFN adapters and the learned positions.

    ``tuning`` sets what trains in the backbone: nothing (``option_adapter`` adds adapters to the upper layers,
    ``prompt``/``option`` train only the prompt and the model's heads), the upper layers (``upper``) or all of it
    (``full``). ``attention_lora_rank`` > 0 adds LoRA updates to the upper layers' attention (query and value), with
    ``option_adapter`` or ``prompt``. ``n_steps`` is the number of segments after the profile; ``width`` the token
    slots per segment.
    """

    def __init__(
        self,
        encoder: SegmentEncoder,
        *,
        tuning: str,
        adapter_rank: int,
        n_prompt_tokens: int,
        prompt_text: str,
        n_steps: int,
        width: int,
        attention_lora_rank: int = 0,
    ):
        super().__init__()
        self.stack = encoder.stack
        self.n_lower = encoder.n_lower_layers
        d = self.stack.hidden_size
        for p in self.stack.parameters():
            p.requires_grad_(tuning == "full")
        if tuning == "upper":
            for layer in self.stack.layers[self.n_lower :]:
                layer.requires_grad_(True)
            self.stack.norm.requires_grad_(True)
        upper = list(range(self.n_lower, self.stack.num_layers))
        self.adapters = (
            attach_ffn_adapters(self.stack, upper, adapter_rank) if tuning == "option_adapter" else nn.ModuleList()
        )
        self.attention_lora = (
            attach_attention_lora(self.stack, upper, attention_lora_rank) if attention_lora_rank else nn.ModuleList()
        )
        self.prompt = nn.Parameter(_initial_prompt(encoder, n_prompt_tokens, prompt_text))  # [P d]
        self.segment_position = nn.Embedding(n_steps + 1, d)  # 0 = the profile, t = step t
        self.token_position = nn.Embedding(width, d)
        nn.init.zeros_(self.segment_position.weight)
        nn.init.zeros_(self.token_position.weight)

    def with_token_positions(self, segments: torch.Tensor) -> torch.Tensor:
        """``[... S d]`` segment states plus the learned position of each token slot."""
        return segments + self.token_position.weight[: segments.shape[-2]]

    def forward(
        self,
        steps: torch.Tensor,
        steps_valid: torch.Tensor,
        lengths: torch.Tensor,
        profile: tuple[torch.Tensor, torch.Tensor] | None = None,
        lead: Extra | None = None,
        trail: Extra | None = None,
    ) -> torch.Tensor:
        """User states ``[B n+1 d]``: index 0 before any step (the end of the prompt and profile), index t after
        step t (read at its item's last token, before its trailing token).

        ``steps`` ``[B n S d]`` / ``steps_valid`` ``[B n S]``: each step's item tokens; steps at or past ``lengths``
        ``[B]`` are ignored. ``profile`` (states ``[B Sp d]``, valid ``[B Sp]``) follows the prompt.
        """
        layout = self.layout(steps, steps_valid, lengths, profile, lead, trail)
        batch = steps.shape[0]
        allowed = segment_causal_mask(layout.segment_ids.unsqueeze(0).expand(batch, -1), layout.valid)
        hidden = self._upper(layout.hidden, allowed)
        n_prefix = layout.n_prefix
        before_any = hidden[:, n_prefix - 1] if n_prefix > 0 else hidden[:, 0]
        return torch.cat([before_any.unsqueeze(1), hidden[:, layout.last_token]], dim=1)

    def layout(
        self,
        steps: torch.Tensor,
        steps_valid: torch.Tensor,
        lengths: torch.Tensor,
        profile: tuple[torch.Tensor, torch.Tensor] | None = None,
        lead: Extra | None = None,
        trail: Extra | None = None,
    ) -> Layout:
        """The upper layers' input for :meth:`forward`'s arguments: prompt, profile, then per step its lead token,
        item tokens and trailing token, each step ``width`` token slots wide."""
        batch, n, s_tokens = steps.shape[:3]
        device = steps.device
        step_index = torch.arange(n, device=device)
        in_history = (step_index.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)  # [B n 1]
        seg, seg_valid = steps, steps_valid & in_history
        within = torch.zeros(s_tokens, dtype=torch.long, device=device)  # 0 = the step, 1 = its trailing token
        n_lead = 0
        if lead is not None:
            seg = torch.cat([lead[0].unsqueeze(2), seg], dim=2)
            seg_valid = torch.cat([lead[1].unsqueeze(2) & in_history, seg_valid], dim=2)
            within = torch.cat([within.new_zeros(1), within])
            n_lead = 1
        if trail is not None:
            seg = torch.cat([seg, trail[0].unsqueeze(2)], dim=2)
            seg_valid = torch.cat([seg_valid, trail[1].unsqueeze(2) & in_history], dim=2)
            within = torch.cat([within, within.new_ones(1)])
        width = seg.shape[2]
        seg = seg + self.segment_position.weight[1 : n + 1, None, :]
        tokens = seg.reshape(batch, n * width, seg.shape[-1])  # [B n*W d]
        valid = seg_valid.reshape(batch, n * width)
        segment_ids = (2 * step_index + 1).repeat_interleave(width) + within.repeat(n)  # step 2t+1, trail 2t+2

        prefix = [self.prompt.unsqueeze(0).expand(batch, -1, -1)]
        prefix_valid = [torch.ones(batch, self.prompt.shape[0], dtype=torch.bool, device=device)]
        if profile is not None:
            prefix.append(profile[0] + self.segment_position.weight[0])
            prefix_valid.append(profile[1])
        n_prefix = sum(p.shape[1] for p in prefix)
        if n_prefix == 0 and bool((lengths == 0).any()):
            raise ValueError("a user with an empty history needs a prompt (n_prompt_tokens > 0) or a profile segment")

        return Layout(
            hidden=torch.cat(prefix + [tokens], dim=1),  # [B T d]
            valid=torch.cat(prefix_valid + [valid], dim=1),
            segment_ids=torch.cat([torch.zeros(n_prefix, dtype=torch.long, device=device), segment_ids]),
            n_prefix=n_prefix,
            last_token=n_prefix + step_index * width + n_lead + s_tokens - 1,  # the last item token of each step
        )

    def next_step(
        self, segments: torch.Tensor, valid: torch.Tensor, step: int, lead: Extra | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Tokens ``[M W d]`` and valid ``[M W]`` of M alternative segments for step ``step`` (0-based: the step after
        a history of ``step`` steps), as :meth:`layout` lays that step out, and the slot :meth:`forward` reads.

        ``segments`` ``[M S d]`` / ``valid`` ``[M S]``: each alternative's item tokens; ``lead`` (states ``[M d]``,
        valid ``[M]``) its leading token. The trailing slot is left out: it is the step's own outcome, which no token
        of the step sees (and which is never valid for a candidate)."""
        if lead is not None:
            segments = torch.cat([lead[0].unsqueeze(1), segments], dim=1)
            valid = torch.cat([lead[1].unsqueeze(1), valid], dim=1)
        return segments + self.segment_position.weight[step + 1], valid, segments.shape[1] - 1

    def items(self, segments: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[M S d]`` item segments, each alone through the upper layers after the prompt's first token (a
        decoder's sink) -> ``[M S d]``."""
        m = segments.shape[0]
        has_sink = self.prompt.shape[0] > 0
        if has_sink:
            segments = torch.cat([self.prompt[:1].unsqueeze(0).expand(m, -1, -1), segments], dim=1)
            valid = torch.cat([torch.ones(m, 1, dtype=torch.bool, device=valid.device), valid], dim=1)
        hidden = self._upper(segments, valid.unsqueeze(1).expand(-1, valid.shape[1], -1))
        return hidden[:, 1:] if has_sink else hidden

    def _upper(self, hidden: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``[B T d]`` through the upper layers and the final norm, query i attending key j where ``allowed``."""
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0).expand(hidden.shape[0], -1)
        hidden = self.stack.run_layers(
            hidden, self.n_lower, self.stack.num_layers, additive_mask(allowed, hidden.dtype), positions
        )
        return self.stack.final_norm(hidden)


@torch.no_grad()
def _initial_prompt(encoder: SegmentEncoder, n_tokens: int, text: str) -> torch.Tensor:
    """``[n_tokens d]`` soft prompt: the lower-layer states of ``text``'s first tokens (so it starts in-distribution)."""
    if n_tokens == 0:
        return torch.zeros(0, encoder.stack.hidden_size)
    tokens = encoder.phrases([text]) if text else None
    have = int(tokens.lengths[0]) if tokens is not None else 0
    if have < n_tokens:
        raise ValueError(
            f"n_prompt_tokens={n_tokens} needs a prompt_text of at least {n_tokens} tokens "
            f"(got {have}); lengthen prompt_text or lower n_prompt_tokens"
        )
    ids = tokens.input_ids[:, :n_tokens]
    return encoder.lower_layers(ids, torch.ones_like(ids))[0].clone()
