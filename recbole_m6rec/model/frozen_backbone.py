"""What a model on a frozen pretrained language model holds besides its parameters, and how that meets checkpoints
and ``.to()``.

* Checkpoints hold what trains (and the model's buffers), not the frozen backbone: its weights are reloaded from
  ``plm_name_or_path``, and the language model's fingerprint (RecBole saves it as ``other_parameter``) is checked on
  load, which keeps checkpoints small. int8-quantised layers (``quantize: int8``) hold no parameters but packed
  weights in their state: those are left out too and, on load, kept as they are, so a checkpoint trained in float
  loads into an int8 model and back.
* The lower-layer segment states, computed once with the frozen layers, are kept outside the module tree: out of
  ``state_dict``, and not buffers, which DistributedDataParallel would broadcast before every training step.
  ``.to()``, ``.double()``, ``.cuda()`` ... still convert them with the parameters (their token ids stay on the CPU,
  where they are indexed, and move per batch).
* Every item's vector is computed once per evaluation and dropped whenever it may be stale: training resumes, a
  checkpoint loads, the model moves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

__all__ = ["FrozenBackbone"]


class FrozenBackbone:
    """Mixin, listed before the ``nn.Module`` base. The host has ``late.stack`` (the backbone), ``encoder`` (whose
    ``plm_id`` is the language model's fingerprint), ``settings``, ``_item_segments`` / ``_user_segments``
    (:class:`~recbole_m6rec.lm.TextSegments` or None) and ``item_vectors()`` (every item's vector)."""

    _eval_item_vectors: torch.Tensor | None = None  # every item's vector, kept during one evaluation

    def _all_item_vectors(self) -> torch.Tensor:
        """Every item's vector, computed once per evaluation (they change as soon as training resumes)."""
        if self._eval_item_vectors is None or self.training:
            items = self.item_vectors()
            if not self.training:
                self._eval_item_vectors = items
            return items
        return self._eval_item_vectors

    def train(self, mode: bool = True):
        self._eval_item_vectors = None  # item vectors change as soon as training resumes
        return super().train(mode)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _frozen_backbone_keys(self) -> set[str]:
        return {f"late.stack.{name}" for name, p in self.late.stack.named_parameters() if not p.requires_grad} | set(
            self._packed_state()
        )

    def _packed_state(self) -> OrderedDict:
        """The backbone's state entries that are neither parameters nor buffers: the packed int8 weights, scales and
        zero points of quantised linear layers (empty without quantisation), with the backbone's module versions
        (``_metadata``), which tell a quantised layer how its entries are laid out."""
        stack = self.late.stack
        full = stack.state_dict()
        own = {name for name, _ in stack.named_parameters()} | {name for name, _ in stack.named_buffers()}
        packed = OrderedDict((f"late.stack.{key}", value) for key, value in full.items() if key not in own)
        packed._metadata = {f"late.stack.{key}".rstrip("."): value for key, value in full._metadata.items()}
        return packed

    def state_dict(self, *args, **kwargs):
        """Trainable parameters only: the frozen backbone is reloaded from ``plm_name_or_path`` (checked by
        fingerprint in :meth:`load_other_parameter`), which keeps checkpoints small."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key in self._frozen_backbone_keys():
            state.pop(prefix + key, None)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        packed = self._packed_state()
        if packed:  # a quantised layer cannot load without its packed weights: it keeps its own
            merged = OrderedDict(state_dict)
            merged.update(packed)
            merged._metadata = {**getattr(state_dict, "_metadata", {}), **packed._metadata}
            state_dict = merged
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = set(result.missing_keys) - self._frozen_backbone_keys()
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"{type(self).__name__} checkpoint does not match the model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(result.unexpected_keys)[:5]}"
            )
        self._eval_item_vectors = None
        return result

    def other_parameter(self) -> dict:
        return {"plm_fingerprint": self.encoder.plm_id, "tuning": self.settings.tuning}

    def load_other_parameter(self, para) -> None:
        if para is not None and para.get("plm_fingerprint") != self.encoder.plm_id:
            raise ValueError(
                f"checkpoint was trained on language model '{para.get('plm_fingerprint')}', but this model loads "
                f"'{self.encoder.plm_id}' (plm_name_or_path={self.settings.plm_name_or_path!r})"
            )

    # ------------------------------------------------------------------------------------------------ devices
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):
        """``nn.Module``'s one path for ``.to()``, ``.cuda()``, ``.double()`` ...: the segment states follow too."""
        module = super()._apply(fn, recurse)
        for segments in (getattr(self, "_item_segments", None), getattr(self, "_user_segments", None)):
            if segments is not None and segments.states is not None:
                segments.states, segments.mask = fn(segments.states), fn(segments.mask)
        self._eval_item_vectors = None
        return module
