"""hyperopt's side of a row's tuning: the search space as hyperopt's, its proposals as RecBole settings, a seeded
grid for ``exhaustive``, and the seed ``fmin`` draws from (:mod:`recbole_m6rec.benchmarks.tuning` runs the trials).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

__all__ = [
    "TPE_STARTUP_TRIALS",
    "grid_suggest",
    "hyperopt_seed",
    "hyperopt_space",
    "is_finite_number",
    "out_of_order_problem",
    "plain_value",
]

# hyperopt's tpe.suggest (RecBole's algo bayes) proposes its first n_startup_jobs trials at random, blind to scores
TPE_STARTUP_TRIALS = 20


def out_of_order_problem(algo: str, numbers: list[int] | set[int]) -> str | None:
    """Why tuning trials ``numbers`` (1-based) cannot run apart from the trials before them under ``algo``, or None."""
    if algo == "bayes" and max(numbers) > TPE_STARTUP_TRIALS:
        return (
            f"under algo bayes, TPE's proposals from trial {TPE_STARTUP_TRIALS + 1} on follow the scores of the trials "
            "before, so they can only run in order"
        )
    return None


def is_finite_number(value: Any) -> bool:
    """A real int or float (not a bool), neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return is_finite_number(value) and float(value).is_integer()


def hyperopt_space(space: dict[str, list]) -> dict:
    """A checked ``search`` space (``{key: [kind, ...]}``) as hyperopt's."""
    from hyperopt import hp

    out = {}
    for key, (kind, *args) in space.items():
        if kind == "choice":
            out[key] = hp.choice(key, args)
        elif kind == "uniform":
            out[key] = hp.uniform(key, float(args[0]), float(args[1]))
        elif kind == "loguniform":  # hyperopt's bounds are logs
            out[key] = hp.loguniform(key, math.log(args[0]), math.log(args[1]))
        else:
            out[key] = hp.quniform(key, float(args[0]), float(args[1]), float(args[2]))
    return out


def plain_value(spec: list, value: Any) -> Any:
    """A proposed value in the type RecBole expects: the option itself for choice, int for an integer quniform."""
    kind, *args = spec
    if kind == "choice":  # hyperopt hands list options back as tuples; give the option exactly as written
        return next(a for a in args if json.dumps(a) == json.dumps(value))
    value = float(value)
    if kind == "quniform":
        if all(is_int(a) for a in args):
            return int(round(value))
        decimals = max(0, -math.floor(math.log10(args[2]))) + 6
        return round(value, decimals)
    return value


def grid_suggest(space: dict[str, list], seed: int) -> Callable:
    """A hyperopt ``algo`` for ``HyperTuning`` that proposes each point of an all-``choice`` grid once, in an order
    shuffled by ``seed``, and nothing once the grid is done. (RecBole 1.2.1's own ``exhaustive`` search draws from a
    ``numpy.random.RandomState``, which hyperopt 0.2.7's samplers reject: ``'RandomState' object has no attribute
    'integers'``.)"""
    import numpy as np
    from hyperopt.base import miscs_update_idxs_vals

    keys = list(space)
    grid = list(itertools.product(*(range(len(space[k]) - 1) for k in keys)))
    order = [grid[i] for i in np.random.default_rng(seed).permutation(len(grid))]

    def suggest(new_ids, domain, trials, _seed):
        done = {tuple(t["misc"]["vals"][k][0] for k in keys) for t in trials.trials}
        todo = [point for point in order if point not in done]
        docs = []
        for new_id, point in zip(new_ids, todo):
            misc = {"tid": new_id, "cmd": domain.cmd, "workdir": domain.workdir}
            miscs_update_idxs_vals([misc], {k: [new_id] for k in keys}, {k: [i] for k, i in zip(keys, point)})
            docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
        return docs

    return suggest


@contextmanager
def hyperopt_seed(seed: int):
    """hyperopt's ``fmin`` (called by ``HyperTuning.run`` without an rstate) seeds itself from this variable."""
    old = os.environ.get("HYPEROPT_FMIN_SEED")
    os.environ["HYPEROPT_FMIN_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HYPEROPT_FMIN_SEED", None)
        else:
            os.environ["HYPEROPT_FMIN_SEED"] = old
