"""Hyperparameter search over lottery-ticket experiments with keras-tuner.

``tune(hp, dataset, names=[...])`` runs the search (``tf_lottery.tune.search``); the
search spaces and how a trial's values become an experiment are in
``tf_lottery.tune.space``. ``python -m tf_lottery.cli tune`` / ``tf-lottery-tune`` is the
command (``tf_lottery.cli.tune``); ``distributed_role`` tells a chief from a worker of
keras-tuner's distributed mode.
"""

from tf_lottery.tune.search import (
    OBJECTIVES,
    TUNERS,
    LotteryTuner,
    TuneResult,
    distributed_role,
    search_name,
    tune,
)
from tf_lottery.tune.space import (
    TUNABLE,
    levels_to_reach,
    search_space,
    trial_flags,
    trial_hparams,
)

__all__ = [
    "TUNABLE",
    "TUNERS",
    "OBJECTIVES",
    "TuneResult",
    "LotteryTuner",
    "search_space",
    "levels_to_reach",
    "trial_hparams",
    "trial_flags",
    "search_name",
    "distributed_role",
    "tune",
]
