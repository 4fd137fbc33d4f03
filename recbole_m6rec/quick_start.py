"""``run`` and ``load_data_and_model`` for RecBole models and plugin models alike.

They follow ``recbole.quick_start.run_recbole`` / ``load_data_and_model`` step by step (same seeding, logs and
result dict) with these differences: models resolve plugin-first, the best-model reload goes through the
allow-listed checkpoint loader (torch >= 2.6), anomaly detection is off while training and evaluating, and
``eval_history_mask`` can put every model under one history-masking rule.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from logging import getLogger
from typing import Sequence

from recbole.data import create_dataset, data_preparation
from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_m6rec import registry
from recbole_m6rec.checkpoint import load_recbole_checkpoint
from recbole_m6rec.compat import anomaly_detection_off, check_stack, with_plain_value_collector
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.evaluation import split_fingerprint, with_history_mask
from recbole_m6rec.per_user import with_per_user_record
from recbole_m6rec.plain_checkpoint import is_plain_checkpoint

__all__ = ["run", "run_pipeline", "RunOutcome", "load_data_and_model", "load_best_checkpoint"]


@dataclass
class RunOutcome:
    result: dict  # RecBole's result dict
    config: PluginConfig
    split_fingerprint: str
    history_mask: str
    seconds: dict = field(default_factory=dict)  # data, model_init, train, test
    extra: dict = field(default_factory=dict)  # model-specific facts (e.g. M6Rec's encoding time)
    per_user_test: dict = field(default_factory=dict)  # {metric: {raw user token: value}} (full ranking only)


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
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    started = time.perf_counter()
    dataset = create_dataset(config)
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

    rule = config["eval_history_mask"] or "recbole"
    trainer_class = registry.get_trainer(config["MODEL_TYPE"], config["model"])
    trainer_class = with_history_mask(trainer_class, rule, train_data, valid_data, test_data)
    trainer_class = with_per_user_record(with_plain_value_collector(trainer_class))
    trainer = trainer_class(config, model)
    if config["resume_checkpoint"]:
        if not hasattr(trainer, "resume_file"):
            raise ValueError(f"resume_checkpoint works for the plugin's models ({', '.join(registry.PLUGIN_MODELS)}); "
                             f"{config['model']}'s RecBole trainer writes checkpoints torch >= 2.6 cannot resume from")
        trainer.resume_checkpoint(config["resume_checkpoint"])
    with anomaly_detection_off():
        started = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
        seconds["train"] = time.perf_counter() - started
        started = time.perf_counter()
        if saved:
            load_best_checkpoint(trainer, trainer.saved_model_file)
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
        seconds["test"] = time.perf_counter() - started
    per_user_test = trainer.per_user_result(dataset.field2id_token[dataset.uid_field])

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
    return RunOutcome(result, config, fingerprint, rule, seconds, extra, per_user_test)


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


def load_data_and_model(model_file: str):
    """Like ``recbole.quick_start.load_data_and_model``, for RecBole and plugin checkpoints, under torch >= 2.6.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    check_stack()
    checkpoint = load_recbole_checkpoint(model_file)
    if is_plain_checkpoint(checkpoint):  # the plugin's format: settings, not a pickled Config
        config = PluginConfig(model=checkpoint["model"], dataset=checkpoint["dataset"],
                              config_dict=checkpoint["settings"])
    else:
        config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
