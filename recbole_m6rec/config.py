"""RecBole ``Config`` that knows the plugin's models and datasets.

Differences from ``recbole.config.Config``, each small and local to this subclass:

* model names resolve plugin-first (:mod:`recbole_m6rec.registry`);
* a plugin model's commented defaults (``recbole_m6rec/properties/model/<Model>.yaml``) and the dataset's yaml
  (``<name>.yaml`` from the ``dataset_yaml_dirs`` folders, else the built-in ``recbole_m6rec/properties/dataset/``)
  join RecBole's internal layer, so user files, dicts and ``--key=value`` still override them;
* ``--key=value`` overrides come from the ``cmd_args`` argument, never from ``sys.argv`` (RecBole reads
  ``sys.argv`` itself, so under pytest or in a notebook foreign flags leak into the config);
* multi-process runs without CUDA use gloo on the CPU (RecBole 1.2.1 hard-codes NCCL);
* a dataset with no local files is an error naming where files were looked for, instead of a download attempt,
  and bad atomic files (encoding, header, no rows, duplicate ids) are errors naming the file
  (:mod:`recbole_m6rec.atomic_files`);
* a sequential model, or ``eval_args.order: TO``, on an ``.inter`` file without the time field is an error naming
  the file and the ways out, before RecBole fails inside ``Interaction.sort``;
* for plugin models, an unknown key that is close to a known one (a typo) is an error that names the right key;
* ``eval_args.split.LS`` may also be ``[k_valid, k_test]`` (:mod:`recbole_m6rec.split`); a bad value, or a
  ``train_neg_sample_args.sample_num`` below 1 (RecBole divides by it), is an error naming it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import yaml
from recbole.config import Config

from recbole_m6rec import datasets, registry
from recbole_m6rec.atomic_files import check_atomic_files, check_time_field
from recbole_m6rec.split import check_leave_out_mode

__all__ = ["PluginConfig", "PLUGIN_PROPERTIES_DIR", "parse_cmd_args"]

PLUGIN_PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"


def model_yaml_files(model: str) -> list[Path]:
    """The plugin yaml defaults a model reads, base model's first (``properties/model/<Model>.yaml``)."""
    files = [PLUGIN_PROPERTIES_DIR / "model" / f"{name}.yaml" for name in registry.plugin_model_lineage(model)]
    return [path for path in files if path.is_file()]


def parse_cmd_args(cmd_args: Sequence[str]) -> dict[str, str]:
    """``--key=value`` pairs as RecBole's ``Config._load_cmd_line`` reads them (other args are ignored)."""
    parsed: dict[str, str] = {}
    for arg in cmd_args:
        if not arg.startswith("--") or len(arg[2:].split("=")) != 2:
            continue
        key, value = arg[2:].split("=")
        if key in parsed and parsed[key] != value:
            raise ValueError(f"command line sets '{key}' twice with different values: '{parsed[key]}' and '{value}'")
        parsed[key] = value
    return parsed


class PluginConfig(Config):
    """``Config(model, dataset, config_file_list, config_dict)`` plus ``cmd_args`` (a list like ``sys.argv[1:]``)."""

    def __init__(
        self,
        model=None,
        dataset: str | None = None,
        config_file_list: Sequence[str] | None = None,
        config_dict: dict | None = None,
        cmd_args: Sequence[str] | None = None,
    ):
        self._cmd_args = list(cmd_args or [])
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file not found: '{path}'")
        super().__init__(model, dataset, list(config_file_list or []) or None, config_dict)
        self._check_plugin_keys()
        self._check_split_and_sampling()
        datasets.check_dataset_files(self.dataset, self.final_config_dict["data_path"], self._dataset_yaml_dirs)
        check_atomic_files(self.dataset, self.final_config_dict["data_path"], self)
        check_time_field(self.dataset, self.final_config_dict["data_path"], self)

    # --- overrides of RecBole's loading steps -------------------------------------------------------------------
    def _load_cmd_line(self):
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("no model given: pass --model=<name> (or model: in a config file)")
        if isinstance(model, str):
            model = registry.get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self._update_internal_config_dict(str(PLUGIN_PROPERTIES_DIR / "overall.yaml"))
        if registry.is_plugin_model(model):
            for plugin_yaml in model_yaml_files(model):
                self._update_internal_config_dict(str(plugin_yaml))
        self._dataset_yaml_dirs = datasets.yaml_dirs(self.external_config_dict.get("dataset_yaml_dirs"))
        dataset_yaml = datasets.dataset_yaml(dataset, self._dataset_yaml_dirs)
        if dataset_yaml is not None:
            loaded = self._update_internal_config_dict(str(dataset_yaml)) or {}
            self.parameters["Dataset"] += [key for key in loaded if key not in self.parameters["Dataset"]]
        if "data_path" not in self.external_config_dict:
            package_path = datasets.package_data_path(dataset, self._dataset_yaml_dirs)
            if package_path is not None:
                self.internal_config_dict["data_path"] = package_path

    def _init_device(self):
        """RecBole's, except that a multi-process run without CUDA uses gloo on the CPU (RecBole 1.2.1 always asks
        for NCCL and a CUDA device). GPU runs keep RecBole's NCCL path unchanged."""
        import torch

        gpu_id = str(self.final_config_dict["gpu_id"])
        wants_cuda = bool(gpu_id) and torch.cuda.is_available() and self.final_config_dict.get("use_gpu", True)
        if "local_rank" not in self.final_config_dict or wants_cuda:
            return super()._init_device()
        config = self.final_config_dict
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend="gloo",
                rank=config["local_rank"] + config.get("offset", 0),
                world_size=config["world_size"],
                init_method=f"tcp://{config['ip']}:{config['port']}",
            )
        config["device"] = torch.device("cpu")
        config["single_spec"] = False
        if config["local_rank"] != 0:  # as RecBole: only rank 0 logs and shows progress
            config["state"] = "error"
            config["show_progress"] = False
            config["verbose"] = False

    # --- checks -----------------------------------------------------------------------------------------------
    def _plugin_keys(self) -> set[str]:
        keys = set()
        for plugin_yaml in model_yaml_files(self.model):
            with open(plugin_yaml, encoding="utf-8") as handle:
                keys |= set(yaml.safe_load(handle) or {})
        return keys

    def _check_split_and_sampling(self) -> None:
        split = (self.final_config_dict.get("eval_args") or {}).get("split") or {}
        if isinstance(split, dict) and "LS" in split:
            check_leave_out_mode(split["LS"])
        negatives = self.final_config_dict.get("train_neg_sample_args")
        if isinstance(negatives, dict) and negatives.get("distribution") not in (None, "none"):
            num = negatives.get("sample_num")
            if isinstance(num, bool) or not isinstance(num, int) or num < 1:
                raise ValueError(
                    f"train_neg_sample_args.sample_num is {num!r}; valid: a whole number >= 1 (negatives per "
                    "positive), or train_neg_sample_args: ~ for no sampled negatives"
                )

    def _check_plugin_keys(self) -> None:
        if not registry.is_plugin_model(self.model):
            return
        plugin_keys = self._plugin_keys()
        known = set(self.internal_config_dict) | {k for group in self.parameters.values() for k in group}
        known |= {
            "model",
            "dataset",
            "config_files",
            "nproc",
            "ip",
            "port",
            "world_size",
            "group_offset",
            "dataset_yaml_dirs",
        }
        for key in self.external_config_dict:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(plugin_keys | known), n=1, cutoff=0.8)
            if close:
                raise ValueError(
                    f"unknown config key '{key}' for model {self.model}; did you mean '{close[0]}'? "
                    f"{self.model}'s own keys: {', '.join(sorted(plugin_keys))}"
                )
