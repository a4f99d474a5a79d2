"""Analyses of lottery tickets on an existing run: instability, noise robustness, transfer,
one-shot vs iterative pruning, adversarial robustness.

Each analysis reopens one replicate of a run (``open_run``: the model and data rebuilt
from its ``hparams.json``, the masks and weights read from its files, every path from
``tf_lottery.paths``), trains with ``tf_lottery.trainer.Trainer`` and writes
``<replicate>/analysis/<name>.json`` atomically after every finished entry, so an
interrupted analysis resumes where it stopped (entries with the same settings are
skipped unless ``overwrite``). ``tf_lottery.report`` plots and tabulates these files.
Every ``run_*`` checks all its arguments before training (``check_only=True`` stops
there) and raises ``ValueError`` (a ``tf_lottery.hparams.ArgumentError`` whose
``argument`` names the library argument at fault).

One concept per module:

* ``run``: ``RunContext`` / ``open_run`` and the helpers the analyses share (argument
  checks, the trainer, ``theta_k``, the entry file).
* ``connectivity``: instability, i.e. linear mode connectivity (Frankle, Dziugaite, Roy
  & Carbin, ICML 2020): ``run_instability``.
* ``noise``: robustness of ``theta_k`` to noise (Frankle, Schwab & Morcos, ICLR 2020):
  ``run_noise``.
* ``transfer``: tickets trained on another dataset (Morcos et al., NeurIPS 2019):
  ``run_transfer``.
* ``one_shot``: one-shot vs iterative pruning (Frankle & Carbin, ICLR 2019, Sec. 5):
  ``run_one_shot``.
* ``adversarial``: accuracy of each branch's final weights under FGSM (Goodfellow et al.,
  ICLR 2015) and L-infinity PGD (Madry et al., ICLR 2018), no training:
  ``run_adversarial``.

Budgets: ``training_steps`` (default: the run's) is the length of each training; all
trainings use the run's optimizer, learning rate schedule and batch size. Mixed-precision
runs are analysed in float32. Step fields in entry keys are step strings (``"500it"``).
"""

from tf_lottery.analysis.run import ANALYSES, MASK_KINDS, RunContext, open_run
from tf_lottery.analysis.connectivity import (STABLE_BELOW, instability, interpolate,
                                              interpolation_errors, linear_mode_connectivity,
                                              run_instability)
from tf_lottery.analysis.noise import add_noise, init_stds, run_noise
from tf_lottery.analysis.transfer import run_transfer, transfer_weights
from tf_lottery.analysis.connectivity import (BN_BATCHES, TRAIN_ERROR_EXAMPLES,
                                              batch_norm_layers, reestimate_batch_norm)
from tf_lottery.analysis.transfer import TARGET_PREPROCESS, convert_dataset, to_input_shape
from tf_lottery.analysis.one_shot import run_one_shot
from tf_lottery.analysis.adversarial import (ATTACKS, InputSpace, adversarial_accuracy,
                                             fgsm, input_space, pgd, run_adversarial)

__all__ = [
    "ANALYSES",
    "MASK_KINDS",
    "STABLE_BELOW",
    "RunContext",
    "open_run",
    "instability",
    "interpolate",
    "interpolation_errors",
    "linear_mode_connectivity",
    "init_stds",
    "add_noise",
    "transfer_weights",
    "run_instability",
    "BN_BATCHES",
    "TRAIN_ERROR_EXAMPLES",
    "batch_norm_layers",
    "reestimate_batch_norm",
    "TARGET_PREPROCESS",
    "to_input_shape",
    "convert_dataset",
    "run_noise",
    "run_transfer",
    "run_one_shot",
    "ATTACKS",
    "InputSpace",
    "input_space",
    "fgsm",
    "pgd",
    "adversarial_accuracy",
    "run_adversarial",
]
