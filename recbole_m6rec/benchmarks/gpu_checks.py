"""The GPU campaign's device checks: what machine it runs on, whether the full campaign should start there, and
whether a model really moves onto the accelerator (a model that leaves modules on the CPU would score there, far
past any GPU budget, so it is refused before its rows start)."""

from __future__ import annotations

import os
import sys

__all__ = ["device_summary", "device_refusal", "describe", "modules_off_device", "model_device_problem"]


def device_summary() -> dict:
    """torch's view of the machine: CUDA or not, the first device's name and memory, visible devices, CPU cores."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda": cuda,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "devices": torch.cuda.device_count() if cuda else 0,
        "name": torch.cuda.get_device_name(0) if cuda else None,
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu_cores": os.cpu_count(),
    }


def device_refusal(device: dict) -> str | None:
    """Why the full campaign should not start on this machine (None with a CUDA device)."""
    if device["cuda"]:
        return None
    build = f"built with CUDA {device['torch_cuda']}" if device["torch_cuda"] else "built without CUDA"
    visible = device["cuda_visible_devices"]
    return (
        f"no CUDA device: torch {device['torch']} ({build}) reports torch.cuda.is_available() = False "
        f"(CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}; {device['cpu_cores']} CPU "
        "cores). This campaign is sized for one large GPU in about 8 minutes; on this machine its budgets "
        "would cut most rows. Run --tiny for the CPU check of the command, or pass --allow_cpu to run the full "
        "campaign here anyway."
    )


def describe(device: dict) -> str:
    """A :func:`device_summary` in one phrase, for the log and the reports."""
    if device["cuda"]:
        return (
            f"{device['name']} ({device['memory_gib']} GiB; {device['devices']} visible), torch {device['torch']} "
            f"with CUDA {device['torch_cuda']}, {device['cpu_cores']} CPU cores"
        )
    return f"CPU only ({device['cpu_cores']} cores), torch {device['torch']}"


def modules_off_device(model, device) -> list[str]:
    """Attributes of ``model`` holding torch modules (registered or kept aside, as M6RecZeroShot keeps its language
    model out of the state dict) whose parameters are not on ``device`` after ``model.to(device)``."""
    import torch

    device = torch.device(device)
    left = []
    for name, value in vars(model).items():
        candidates = value.items() if name == "_modules" else [(name, value)]
        for attribute, module in candidates:
            if not isinstance(module, torch.nn.Module):
                continue
            places = {p.device for p in module.parameters()}
            if any(p.type != device.type or (device.index is not None and p.index != device.index) for p in places):
                left.append(f"{attribute} on {', '.join(sorted(str(p) for p in places))}")
    return left


def model_device_problem(model_name: str, plan: dict, device: str) -> str | None:
    """Build ``model_name`` on a small slice of the plan's dataset with a tiny backbone, move it to ``device`` and
    say which of its modules stayed behind (None when everything moved)."""
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.registry import get_model

    argv, sys.argv = sys.argv, [sys.argv[0]]  # RecBole reads sys.argv
    try:
        config = PluginConfig(
            model=model_name,
            dataset=plan["dataset"],
            config_dict={
                "user_inter_num_interval": "[0,20]",
                "item_inter_num_interval": "[8,inf)",
                "plm_name_or_path": "tiny-random-llama",
                "state": "ERROR",
                "show_progress": False,
            },
        )
        model = get_model(model_name)(config, create_dataset(config)).to(device)
    finally:
        sys.argv = argv
    left = modules_off_device(model, device)
    if not left:
        return None
    return (
        f"{model_name} keeps modules off {device} after .to({device}): {'; '.join(left)}. Its scoring would run "
        "on the CPU, far past any GPU budget, so it was not started (the model must move its language model "
        "with the module and build its tensors on that device)."
    )
