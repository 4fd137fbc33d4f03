"""RecBole's quick start for RecBole models and plugin models alike.

``run_recbole``, ``objective_function`` (for ``recbole.trainer.HyperTuning``) and ``load_data_and_model`` take
RecBole's arguments and return what RecBole's functions of the same names return; ``run`` adds ``cmd_args``
(``--key=value`` overrides) and ``run_pipeline`` returns the facts a report needs as well. They follow RecBole's
steps (same seeding, logs and result dict) with these differences: models resolve plugin-first, the best-model
reload goes through the allow-listed checkpoint loader (RecBole's own fails under torch >= 2.6; other
``torch.load`` calls keep torch's defaults), anomaly detection is off while training and evaluating, the trainer
is :func:`recbole_m6rec.trainer.build_trainer`'s (so ``eval_history_mask`` can put every model under one
history-masking rule), and ``sys.argv`` is never read.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import getLogger

import torch
from recbole.data import data_preparation
from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_m6rec import registry
from recbole_m6rec.checkpoint import is_plain_checkpoint, load_recbole_checkpoint
from recbole_m6rec.cold_start import apply_cold_items, cold_warm_results
from recbole_m6rec.compat import anomaly_detection_off, check_stack
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.data import create_dataset  # RecBole's, plus the raw time range
from recbole_m6rec.evaluation import split_fingerprint
from recbole_m6rec.trainer import build_trainer

__all__ = [
    "run",
    "run_recbole",
    "objective_function",
    "run_distributed",
    "run_pipeline",
    "RunOutcome",
    "load_data_and_model",
    "load_best_checkpoint",
]


@dataclass
class RunOutcome:
    result: dict  # RecBole's result dict
    config: PluginConfig
    split_fingerprint: str
    history_mask: str
    seconds: dict = field(default_factory=dict)  # data, model_init, train, test
    extra: dict = field(default_factory=dict)  # model-specific facts (e.g. M6Rec's encoding time)
    per_user_test: dict = field(default_factory=dict)  # {metric: {raw user token: value}} (full ranking only)
    per_sample_test: dict = field(default_factory=dict)  # {"user", "item", "label", "score": lists} (labelled only)
    checkpoint_file: str | None = None  # the best model's checkpoint, when saved


def init_logger_race_free(config: PluginConfig) -> None:
    """RecBole's ``init_logger``, safe when DDP ranks start together.

    RecBole checks-then-creates ``./log/<model>`` (logger) and ``checkpoint_dir`` (data saving, Trainer);
    two ranks racing on either raise FileExistsError. Creating them first with ``exist_ok`` closes the race.
    """
    os.makedirs(os.path.join("./log", config["model"]), exist_ok=True)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)
    init_logger(config)


def load_best_checkpoint(trainer, checkpoint_file: str) -> None:
    """What ``Trainer.evaluate(load_best_model=True)`` does, through the safe loader."""
    checkpoint = load_recbole_checkpoint(checkpoint_file, map_location=trainer.device)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
    trainer.logger.info(f"Loading model structure and parameters from {checkpoint_file}")


def run_pipeline(config: PluginConfig, saved: bool = True) -> RunOutcome:
    """RecBole's pipeline for one built config; returns the result dict plus the facts a report needs."""
    check_stack()
    seconds = {}
    init_seed(config["seed"], config["reproducibility"])
    init_logger_race_free(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    started = time.perf_counter()
    dataset = create_dataset(config)
    cold_split = apply_cold_items(dataset, config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    fingerprint = split_fingerprint(train_data, valid_data, test_data)
    logger.info(set_color("split fingerprint", "blue") + f": {fingerprint}")
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    seconds["model_init"] = time.perf_counter() - started

    if registry.is_plugin_model(config["model"]):
        # RecBole deep-copies the model to trace FLOPs: minutes and gigabytes for a language model.
        logger.info(set_color("FLOPs", "blue") + ": not counted for plugin models")
    else:
        transform = construct_transform(config)
        flops = get_flops(model, dataset, config["device"], logger, transform)
        logger.info(set_color("FLOPs", "blue") + f": {flops}")

    trainer = build_trainer(config, model, train_data, valid_data, test_data)
    distributed = not config["single_spec"]
    if distributed:
        _share_rank0_checkpoint_paths(trainer)
    if config["resume_checkpoint"]:
        trainer.resume_checkpoint(config["resume_checkpoint"])
    with anomaly_detection_off():
        started = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
        seconds["train"] = time.perf_counter() - started
        started = time.perf_counter()
        if distributed:
            extra_facts = {"ranks_in_sync": _check_ranks_in_sync(trainer.model)}
            logger.info(f"ranks in sync: trainable parameters identical on all {config['world_size']} processes")
            torch.distributed.barrier()  # rank 0 has written the best checkpoint before anyone reloads it
        if saved:
            load_best_checkpoint(trainer, trainer.saved_model_file)
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
        seconds["test"] = time.perf_counter() - started
    # under DDP each rank saw only its share of users
    per_user_test = {} if distributed else trainer.per_user_result(dataset.field2id_token[dataset.uid_field])
    per_sample_test = (
        {}
        if distributed
        else trainer.per_sample_result(
            dataset.field2id_token[dataset.uid_field], dataset.field2id_token[dataset.iid_field]
        )
    )
    cold_facts = {}
    if cold_split is not None and per_user_test:
        cold_facts = cold_warm_results(per_user_test, test_data._dataset, cold_split)
        test_result.update({k: v for k, v in cold_facts.items() if not k.endswith("_test_users")})

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    extra = dict(getattr(model, "report_facts", lambda: {})())
    extra["epochs_run"] = len(getattr(trainer, "train_loss_dict", {}))
    if distributed:
        extra.update(extra_facts, world_size=config["world_size"])
    if cold_split is not None:
        extra.update(cold_split.facts(), **{k: v for k, v in cold_facts.items() if k.endswith("_test_users")})
    return RunOutcome(
        result,
        config,
        fingerprint,
        trainer.history_mask_rule,
        seconds,
        extra,
        per_user_test,
        per_sample_test,
        trainer.saved_model_file if saved else None,
    )


def _share_rank0_checkpoint_paths(trainer) -> None:
    """RecBole names checkpoints by the local time at trainer creation, which can differ between ranks by a second;
    every rank must read the file rank 0 writes."""
    paths = [trainer.saved_model_file, trainer.resume_file]
    torch.distributed.broadcast_object_list(paths, src=0)
    trainer.saved_model_file, trainer.resume_file = paths


def _check_ranks_in_sync(model) -> bool:
    """After training, every rank must hold the same trainable parameters (DDP averaged every gradient)."""
    digest = hashlib.sha256()
    for parameter in model.parameters():
        if parameter.requires_grad:
            digest.update(parameter.detach().cpu().numpy().tobytes())
    digests = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"ranks finished training with different parameters ({digests}): gradients were not " "synchronised"
        )
    return True


def _distributed_worker(rank: int, model, dataset, config_file_list, config_dict, cmd_args, queue) -> None:
    config = PluginConfig(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict={**config_dict, "local_rank": rank},
        cmd_args=cmd_args,
    )
    try:
        outcome = run_pipeline(config)
        if rank == 0:
            queue.put(outcome.result)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_distributed(
    model: str,
    dataset: str,
    nproc: int,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    cmd_args: Sequence[str] | None = None,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
) -> dict | None:
    """RecBole's multi-process run (``--nproc``, ``--world_size``, ``--ip``, ``--port``, ``--group_offset``): ``nproc``
    processes on this machine, ranks ``group_offset .. group_offset + nproc - 1`` of ``world_size``. CUDA runs use
    NCCL as in RecBole; CPU runs use gloo. Returns rank 0's result dict on the machine that holds rank 0."""
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    config_dict = {
        **(config_dict or {}),
        "world_size": world_size,
        "ip": ip,
        "port": str(port),
        "nproc": nproc,
        "offset": group_offset,
    }
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(
        _distributed_worker,
        args=(model, dataset, config_file_list, config_dict, list(cmd_args or []), queue),
        nprocs=nproc,
        join=True,
    )
    return queue.get() if group_offset == 0 and not queue.empty() else None


def run(
    model: str,
    dataset: str,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    saved: bool = True,
    cmd_args: Sequence[str] | None = None,
) -> dict:
    """Train and test one model; returns RecBole's result dict
    (``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``)."""
    config = PluginConfig(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict, cmd_args=cmd_args
    )
    return run_pipeline(config, saved=saved).result


def run_recbole(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None) -> dict:
    """``recbole.quick_start.run_recbole`` for RecBole and plugin models: same arguments, same result dict; with
    ``queue`` (a multi-process run), rank 0 also puts the result there."""
    config = PluginConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    result = run_pipeline(config, saved=saved).result
    if not config["single_spec"] and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def objective_function(config_dict=None, config_file_list=None, saved=True) -> dict:
    """``recbole.quick_start.objective_function`` for ``recbole.trainer.HyperTuning``, plugin models included (the
    model and dataset come from the fixed config files or the dict). Returns RecBole's dict: ``model``,
    ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``. RecBole's also calls
    ``ray.tune.report``; under ray tune, report the returned ``test_result`` yourself."""
    logger = getLogger()
    for handler in logger.handlers[:]:  # as RecBole: each trial logs to its own file
        logger.removeHandler(handler)
    config = PluginConfig(config_dict=config_dict, config_file_list=config_file_list)
    result = run_pipeline(config, saved=saved).result
    return {"model": config["model"], **result}


def load_data_and_model(model_file: str):
    """Like ``recbole.quick_start.load_data_and_model``, for RecBole and plugin checkpoints, under torch >= 2.6.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    check_stack()
    checkpoint = load_recbole_checkpoint(model_file)
    if is_plain_checkpoint(checkpoint):  # the plugin's format: settings, not a pickled Config
        config = PluginConfig(
            model=checkpoint["model"], dataset=checkpoint["dataset"], config_dict=checkpoint["settings"]
        )
    else:
        config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger_race_free(config)
    logger = getLogger()
    logger.info(config)

    dataset = create_dataset(config)
    apply_cold_items(dataset, config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
