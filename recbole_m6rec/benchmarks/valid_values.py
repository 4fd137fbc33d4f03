"""Each validation user's (or labelled sample's) values of a finished run, so that validation, which chooses, can be
compared paired as test is.

RecBole keeps only the means of the best epoch's validation metrics. After a job's run, :func:`validation_values`
rebuilds the run's data as the run built it, loads the best model's checkpoint and evaluates it on the validation
data once more, through the run's own trainer class and history-masking rule. The rebuilt split's fingerprint and
every re-evaluated metric must equal the run's best validation result: :func:`validation_record` keeps the values
only then, and otherwise records why not (``valid_values_error``), never failing the run itself. It imports only
plugin modules the run has imported already, so a result's code hash is the same with it as without it.
"""

from __future__ import annotations

import time
from pathlib import Path

from recbole_m6rec.benchmarks.kept_values import compact_samples, kept_per_user, metric_differences

# RecBole's sampled evaluation modes (uni100, pop100): their negatives are drawn again on each pass, so a second
# evaluation cannot reproduce the run's numbers
SAMPLED_MODES = ("uni", "pop")


def validation_values(config, checkpoint_file: str | None, trains: bool) -> dict:
    """The best model of a finished run re-evaluated on validation: ``{split_fingerprint, result, per_user,
    per_sample, cold}`` (``cold``: ``cold_<metric>`` / ``warm_<metric>`` means and user counts on a cold-item split,
    else ``{}``). A model that trains nothing is rebuilt as the run built it; one that trains needs its checkpoint."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec import registry
    from recbole_m6rec.cold_start import apply_cold_items, cold_warm_results
    from recbole_m6rec.compat import anomaly_detection_off
    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.evaluation import split_fingerprint
    from recbole_m6rec.quick_start import load_best_checkpoint
    from recbole_m6rec.trainer import build_trainer

    has_checkpoint = bool(checkpoint_file) and Path(checkpoint_file).is_file()
    if trains and not has_checkpoint:
        raise FileNotFoundError(f"the run's best-model checkpoint is missing ({checkpoint_file!r})")
    init_seed(config["seed"], config["reproducibility"])  # the order run_pipeline seeds and builds in
    dataset = create_dataset(config)
    cold_split = apply_cold_items(dataset, config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    fingerprint = split_fingerprint(train_data, valid_data, test_data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = build_trainer(config, model, train_data, valid_data, test_data)
    if has_checkpoint:
        load_best_checkpoint(trainer, checkpoint_file)
    # what fit does before its first evaluation: the item counts that ItemCoverage, GiniIndex, AveragePopularity and
    # TailPercentage read
    trainer.eval_collector.data_collect(train_data)
    with anomaly_detection_off():
        result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    users, items = (dataset.field2id_token[field] for field in (dataset.uid_field, dataset.iid_field))
    per_user = trainer.per_user_result(users)
    cold = {}
    if cold_split is not None and per_user:
        cold = cold_warm_results(per_user, valid_data._dataset, cold_split)
        cold = {key.replace("_test_users", "_valid_users"): value for key, value in cold.items()}
    return {
        "split_fingerprint": fingerprint,
        "result": dict(result),
        "per_user": per_user,
        "per_sample": trainer.per_sample_result(users, items),
        "cold": cold,
    }


def validation_record(outcome, main: str, trains: bool) -> dict:
    """What a job's result gains from :func:`validation_values`: ``per_user_valid`` / ``per_sample_valid``, a
    cold-item plan's ``cold_*`` / ``warm_*`` validation means (``valid_cold``) and the seconds it took; or, when it
    could not be had or differs from the run (any metric of the best validation result, or the split), only
    ``valid_values_error`` saying why. It never raises: the run's result stands either way."""
    started = time.perf_counter()
    try:
        mode = outcome.config["eval_args"]["mode"]["valid"]
        if mode.startswith(SAMPLED_MODES):
            return {"valid_values_error": f"validation ranks sampled negatives ({mode}), drawn anew on every pass"}
        values = validation_values(outcome.config, outcome.checkpoint_file, trains)
        recorded = dict(outcome.result["best_valid_result"] or {})
        differences = []
        if values["split_fingerprint"] != outcome.split_fingerprint:
            differences.append(f"split {values['split_fingerprint']} against the run's {outcome.split_fingerprint}")
        differences += metric_differences(values["result"], recorded, against="against the run's best")
        if differences:
            return {"valid_values_error": "re-evaluated, it differs from the run: " + "; ".join(differences)}
        cold_plan = bool(values["cold"])
        facts = {"valid_values_seconds": round(time.perf_counter() - started, 2)}
        per_user = kept_per_user(values["per_user"], main, cold_plan)
        if per_user:
            facts["per_user_valid"] = per_user
        if values["per_sample"]:
            facts["per_sample_valid"] = compact_samples(values["per_sample"])
        if cold_plan:
            facts["valid_cold"] = values["cold"]
        return facts
    except Exception as error:  # noqa: BLE001 - an extra the result can do without; the run itself stands
        return {"valid_values_error": f"{type(error).__name__}: {error}"}
