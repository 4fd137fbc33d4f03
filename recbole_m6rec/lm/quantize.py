"""int8 dynamic quantisation of a :class:`~.backbone.LayerStack`'s frozen layers (``quantize: int8``).

torch's own ``quantize_dynamic`` swaps each chosen ``nn.Linear`` for a dynamically quantised one: int8 weights
(per tensor), activations quantised on the fly per call, int32 accumulation, float output. Only frozen linear layers
of the listed transformer layers are swapped; the option adapters and LoRA updates stay float and trainable,
and embeddings, norms and attention's softmax stay float.

One gap is filled here: torch's ``quantized::linear_dynamic`` has no autograd kernel, so backpropagating through it
silently gives its input no gradient at all (torch 2.13 warns and returns None). A frozen online layer still has to
pass gradients down to the adapters of the layers below it, the soft prompt and the learned positions, so
:class:`Int8Linear` is torch's dynamic quantised linear whose backward is the exact gradient of ``x W_q^T + b`` for
the dequantised int8 weight ``W_q`` (activation rounding is treated as the identity, a straight-through estimate).
Nothing about the weights trains: a quantised module has no parameters.

This module is imported only when a model asks for ``quantize: int8``. Dynamic quantisation runs on the CPU only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

with warnings.catch_warnings():  # torch marks torch.ao.quantization deprecated in favour of torchao, not installed
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from torch.ao.quantization import quantize_dynamic

from .backbone import LayerStack, LoRALinear

__all__ = ["Int8Linear", "quantizable_linears", "quantize_layers"]


class _Int8LinearFunction(torch.autograd.Function):
    """Forward: torch's int8 dynamic linear. Backward: input gradient through the dequantised int8 weight."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: Int8Linear) -> torch.Tensor:
        ctx.module = module
        return DynamicQuantizedLinear.forward(module, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight = ctx.module.weight().dequantize().to(grad.dtype)  # [out in], dequantised per call: no float copy kept
        return grad @ weight, None


class Int8Linear(DynamicQuantizedLinear):
    """torch's dynamically quantised int8 ``Linear`` that passes gradients to its input (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _Int8LinearFunction.apply(x, self)
        return super().forward(x)

    def _get_name(self) -> str:
        return "Int8Linear"


def quantizable_linears(stack: LayerStack, layer_indices: Iterable[int]) -> list[str]:
    """Names (relative to ``stack``) of the frozen ``nn.Linear`` modules of the listed layers: adapters and LoRA
    updates (trainable) are left out."""
    names = []
    for index in layer_indices:
        modules = dict(stack.layers[index].named_modules())
        lora_parts = {
            f"{name}.{part}" for name, m in modules.items() if isinstance(m, LoRALinear) for part in ("down", "up")
        }
        for name, module in modules.items():
            if isinstance(module, nn.Linear) and "adapter" not in name.split(".") and name not in lora_parts:
                names.append(f"layers.{index}.{name}")
    return names


def quantize_layers(stack: LayerStack, layer_indices: Iterable[int]) -> list[str]:
    """Swap every linear layer of the listed layers (adapters excepted) for an :class:`Int8Linear`, in place, with
    torch's ``quantize_dynamic``; returns the swapped modules' names. The caller decides that they are frozen (a quantised module has no
    parameters, so nothing in it trains); they must be on the CPU."""
    names = quantizable_linears(stack, layer_indices)
    for name in names:
        module = stack.get_submodule(name)
        if module.weight.device.type != "cpu":
            raise ValueError(
                f"quantize: int8 runs on the CPU only (torch's dynamic quantisation); {name} is on "
                f"{module.weight.device}"
            )
    if names:
        with warnings.catch_warnings():  # deprecation notices of torch.ao and of quantized tensors, once per call
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            quantize_dynamic(stack, set(names), dtype=torch.qint8, mapping={nn.Linear: Int8Linear}, inplace=True)
    return names
