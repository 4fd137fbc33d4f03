"""What a benchmark result keeps of a run's per-user and per-sample values, for the report's paired tests: the
same for test (the job) and for validation (:mod:`~recbole_m6rec.benchmarks.valid_values`)."""

from __future__ import annotations

from recbole_m6rec.atomic import stable_hash

# cold-item plans: Recall per user at every cutoff, for paired tests within the cold and warm user groups
# (`cold_groups` pairs @10 and @100: cold hits are told from chance only at the larger cutoffs)
COLD_PLAN_METRICS = ("recall@",)


def has_valid_values(record: dict) -> bool:
    """The result keeps validation's per-user (ranking) or per-sample (labelled) values, for paired tests."""
    return any(key in record for key in ("per_user_valid", "per_sample_valid"))


def valid_values_note(record: dict) -> str:
    """What a status cell adds about a finished result's validation values: "" when it has them."""
    if has_valid_values(record):
        return ""
    if record.get("valid_values_error"):
        return f"; validation values not kept: {str(record['valid_values_error']).splitlines()[0]}"
    return "; no validation values (`add_valid_values` adds them)"


def kept_per_user(per_user: dict, main: str, cold_plan: bool) -> dict:
    """The per-user values a result keeps: the main metric's, and on a cold-item plan every Recall too."""
    return {
        metric: values
        for metric, values in per_user.items()
        if metric == main or (cold_plan and metric.startswith(COLD_PLAN_METRICS))
    }


def compact_samples(samples: dict) -> dict:
    """Labelled evaluation's samples for a paired AUC test: users, labels and scores sorted by (user, item), and
    one digest of that (user, item, label) sequence, so two rows are paired only when they scored the same samples
    ({} for a ranking evaluation). Sorted, because a context dataset evaluates its samples in time order and a
    sequential one user by user. The users let the test resample users, not samples: one user's several
    samples are not independent."""
    if not samples:
        return {}
    order = sorted(range(len(samples["user"])), key=lambda k: (samples["user"][k], samples["item"][k]))
    users, items, labels = ([samples[name][k] for k in order] for name in ("user", "item", "label"))
    return {
        "samples_digest": stable_hash([users, items, labels])[:16],
        "user": [str(user) for user in users],
        "label": [int(label) for label in labels],
        "score": [float(f"{samples['score'][k]:.9g}") for k in order],  # 9 digits: a float32 exactly
    }


def metric_differences(again: dict, before: dict, name: str = "", against: str = "against") -> list[str]:
    """``"<name> <metric> <again's value> <against> <before's value>"`` for each metric whose values differ."""
    prefix = f"{name} " if name else ""
    return [
        f"{prefix}{metric} {again.get(metric)} {against} {before.get(metric)}"
        for metric in sorted(set(again) | set(before))
        if again.get(metric) != before.get(metric)
    ]
