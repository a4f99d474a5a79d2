"""The run layout: every artifact path and every listing of a run directory, in one place.

Like open_lth's ``paths.py``: no other module spells an artifact's name. A run is laid
out as::

    <run_root>/<model>_<dataset>_<hash>/         RunDir
        hparams.json  flags.txt
        .worker_<i>/                             a non-chief worker's private copy
        replicate_<r>/                           ReplicateDir
            init.weights.h5  rewind.weights.h5  results.json  gradinit_<seed>.json
            lock.json                            while a process trains it
            tfmot_baseline.json  tfmot_baseline_<label>.json
            level_<k>/<branch>/                  BranchDir (branch: lottery, reinit, random_prune)
            level_<k>/reinit_<d>/                BranchDir of reinit draw d >= 1 (reinit_draws)
                summary.json  mask.npz  metrics.csv  final.weights.h5
                checkpoint.json  checkpoint-<step>.weights.h5  tensorboard/
                export_<label>.tflite  export_<label>.json
            one_shot/sparsity_<s>/lottery/       BranchDir of a one-shot ticket (s: 4 decimals)
            analysis/<name>.json  analysis/one_shot_masks/level_<k>.npz
            analysis/transfer_<target>_imp/        ReplicateDir of a transfer's target tickets

A search (``tf_lottery.tune``) and a report have layouts of their own: ``TuneDir`` and
``ReportFiles``. The classes only compute paths and list what exists; reading and
writing go through ``tf_lottery.files`` (atomic writes) and the modules that own the
content.
"""

from __future__ import annotations

import dataclasses
import os
import re

__all__ = [
    "RunDir",
    "ReplicateDir",
    "BranchDir",
    "TuneDir",
    "ReportFiles",
    "resolve_replicate",
    "branch_dir_name",
    "parse_branch_dir_name",
    "ANALYSES",
    "DRAWN_BRANCHES",
]

#: The analyses (``tf_lottery.analysis``) whose results a replicate may hold, each as
#: ``analysis/<name>.json``.
ANALYSES = ("instability", "noise", "transfer", "one_shot", "adversarial")
HPARAMS = "hparams.json"
FLAGS = "flags.txt"
LOCK = "lock.json"
_REPLICATE = re.compile(r"^replicate_(\d+)$")
_LEVEL = re.compile(r"^level_(\d+)$")
_ONE_SHOT = re.compile(r"^sparsity_([0-9.]+)$")
_TFMOT = re.compile(r"^tfmot_baseline(_.*)?\.json$")
#: Branches a level may train several times from independent draws
#: (``PruningHparams.reinit_draws``): draw 0 in ``<branch>/``, draw d >= 1 in
#: ``<branch>_<d>/``.
DRAWN_BRANCHES = ("reinit",)
_DRAW = re.compile(r"^(" + "|".join(DRAWN_BRANCHES) + r")_([1-9][0-9]*)$")
_CHECKPOINT_PREFIX = "checkpoint"


def branch_dir_name(branch: str, draw: int = 0) -> str:
    """The directory name of draw ``draw`` of ``branch`` in a level: ``branch`` itself
    for draw 0 (so a run with one draw is laid out as before draws existed), and
    ``<branch>_<draw>`` (``reinit_1``, ``reinit_2``) for the further draws.

    Raises:
        ValueError: ``draw`` is not an integer >= 0, or is > 0 for a branch outside
            ``DRAWN_BRANCHES``.
    """
    if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
        raise ValueError(f"`draw` must be an integer >= 0; received {draw!r}.")
    if draw == 0:
        return branch
    if branch not in DRAWN_BRANCHES:
        raise ValueError(f"`draw` {draw} applies only to {list(DRAWN_BRANCHES)}; "
                         f"received branch {branch!r}.")
    return f"{branch}_{draw}"


def parse_branch_dir_name(name: str) -> tuple[str, int]:
    """``(branch, draw)`` of a branch directory's name, the inverse of
    ``branch_dir_name``: ``"reinit_2"`` -> ``("reinit", 2)``, ``"lottery"`` ->
    ``("lottery", 0)``."""
    match = _DRAW.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


@dataclasses.dataclass(frozen=True)
class BranchDir:
    """``level_<k>/<branch>/`` (or ``one_shot/sparsity_<s>/lottery/``): one trained network.

    Attributes:
        path: the directory (absolute or as given).
        level: ``k`` (int), or ``None`` for a one-shot ticket.
        branch: ``"lottery"``, ``"reinit"``, ``"random_prune"``.
        draw: which of the branch's independent draws (``reinit_draws``) this is; 0
            for every branch trained once.
    """

    path: str
    level: int | None = None
    branch: str = "lottery"
    draw: int = 0

    @property
    def summary(self) -> str:
        """``summary.json``: written last, so its presence means the branch finished."""
        return os.path.join(self.path, "summary.json")

    @property
    def mask(self) -> str:
        """``mask.npz``: the masks the branch trains under (``tf_lottery.save_masks``)."""
        return os.path.join(self.path, "mask.npz")

    @property
    def metrics(self) -> str:
        """``metrics.csv``: one row per evaluation."""
        return os.path.join(self.path, "metrics.csv")

    @property
    def final_weights(self) -> str:
        """``final.weights.h5``: the weights (and masks) at the end of training."""
        return os.path.join(self.path, "final.weights.h5")

    @property
    def checkpoint(self) -> str:
        """``checkpoint.json``: the resume state within the branch."""
        return os.path.join(self.path, "checkpoint.json")

    def checkpoint_weights(self, step: int) -> str:
        """``checkpoint-<step>.weights.h5``: the weights ``checkpoint.json`` refers to (by
        this file name, relative to the branch directory)."""
        return os.path.join(self.path, f"{_CHECKPOINT_PREFIX}-{int(step)}.weights.h5")

    def checkpoint_arrays(self, step: int) -> str:
        """``checkpoint-<step>.arrays.npz``: the arrays of the branch's training hooks
        (accumulated scores, the early-bird's last mask) at that checkpoint."""
        return os.path.join(self.path, f"{_CHECKPOINT_PREFIX}-{int(step)}.arrays.npz")

    @property
    def scores(self) -> str:
        """``scores.npz``: ``{mask key: scores}`` accumulated while the branch trained
        (``movement_score``, ``accumulated_change``); the next level prunes by them."""
        return os.path.join(self.path, "scores.npz")

    def checkpoint_files(self) -> list[str]:
        """Every checkpoint file of the branch (``checkpoint.json`` and weights)."""
        return sorted(os.path.join(self.path, n) for n in _listdir(self.path)
                      if n.startswith(_CHECKPOINT_PREFIX))

    @property
    def tensorboard(self) -> str:
        """``tensorboard/``: TensorBoard logs (``--tensorboard``)."""
        return os.path.join(self.path, "tensorboard")

    def export(self, label: str, out_dir: str | None = None) -> str:
        """``export_<label>.tflite`` in ``out_dir`` (default: the branch directory)."""
        return os.path.join(out_dir or self.path, f"export_{label}.tflite")

    @staticmethod
    def export_report(tflite_path: str) -> str:
        """The JSON report next to an exported ``.tflite`` file."""
        return os.fspath(tflite_path)[: -len(".tflite")] + ".json"

    def is_finished(self) -> bool:
        """The branch wrote its summary, final weights and mask."""
        return all(os.path.exists(p) for p in (self.summary, self.final_weights, self.mask))


@dataclasses.dataclass(frozen=True)
class ReplicateDir:
    """``replicate_<r>/``: one replicate of an experiment (what ``ticket.fit`` writes).

    Attributes:
        path: the directory.
        index: ``r``, or ``None`` for a directory of another name (``ticket.fit`` may
            write to any directory).
    """

    path: str
    index: int | None = None

    @classmethod
    def at(cls, path: str | os.PathLike) -> ReplicateDir:
        """The replicate directory at ``path``; ``index`` parsed from its name."""
        path = os.fspath(path)
        match = _REPLICATE.match(os.path.basename(os.path.normpath(path)))
        return cls(path, int(match.group(1)) if match else None)

    def weights(self, name: str) -> str:
        """``<name>.weights.h5``: ``"init"`` (theta_0) or ``"rewind"`` (theta_k)."""
        return os.path.join(self.path, f"{name}.weights.h5")

    @property
    def init_weights(self) -> str:
        return self.weights("init")

    @property
    def rewind_weights(self) -> str:
        return self.weights("rewind")

    @property
    def lock(self) -> str:
        """``lock.json``: who is training this replicate (``tf_lottery.run_lock``)."""
        return os.path.join(self.path, LOCK)

    @property
    def results(self) -> str:
        """``results.json``: every finished level's summaries (``LotteryResult``)."""
        return os.path.join(self.path, "results.json")

    def level_dir(self, level: int) -> str:
        return os.path.join(self.path, f"level_{int(level)}")

    def branch(self, level: int, branch: str = "lottery", draw: int = 0) -> BranchDir:
        """``level_<level>/<branch>/``, or ``level_<level>/<branch>_<draw>/`` for a
        further draw (``branch_dir_name``)."""
        return BranchDir(os.path.join(self.level_dir(level), branch_dir_name(branch, draw)),
                         int(level), branch, draw)

    def levels(self) -> list[int]:
        """The ``k`` of every ``level_<k>`` directory, sorted (finished or not)."""
        return sorted(int(m.group(1)) for n in _listdir(self.path)
                      if (m := _LEVEL.match(n)) and os.path.isdir(os.path.join(self.path, n)))

    def branches(self, level: int) -> list[BranchDir]:
        """Every branch directory of a level (finished or not), in name order; a further
        draw (``reinit_2/``) has its ``branch`` (``"reinit"``) and ``draw`` (2)."""
        level_dir = self.level_dir(level)
        return [self.branch(level, *parse_branch_dir_name(n)) for n in sorted(_listdir(level_dir))
                if os.path.isdir(os.path.join(level_dir, n))]

    def draws(self, level: int, branch: str = "reinit") -> list[int]:
        """The draws of ``branch`` with a directory in level ``level`` (finished or
        not), sorted: ``[0, 1, 2]`` for ``reinit/``, ``reinit_1/``, ``reinit_2/``."""
        return sorted(b.draw for b in self.branches(level) if b.branch == branch)

    def finished_levels(self, branch: str = "lottery") -> list[int]:
        """Levels whose ``branch`` has a ``summary.json``."""
        return [k for k in self.levels() if os.path.exists(self.branch(k, branch).summary)]

    @property
    def one_shot_dir(self) -> str:
        return os.path.join(self.path, "one_shot")

    def one_shot(self, target: float) -> BranchDir:
        """``one_shot/sparsity_<target:.4f>/lottery/``: the ticket pruned in one shot."""
        return BranchDir(os.path.join(self.one_shot_dir, f"sparsity_{float(target):.4f}",
                                      "lottery"), None, "lottery")

    def one_shot_targets(self) -> list[float]:
        """Target sparsities with a ``one_shot/sparsity_<s>`` directory, sorted."""
        return sorted(float(m.group(1)) for n in _listdir(self.one_shot_dir)
                      if (m := _ONE_SHOT.match(n)))

    @property
    def analysis_dir(self) -> str:
        """``analysis/``: what ``tf_lottery.analysis`` writes for this replicate."""
        return os.path.join(self.path, "analysis")

    def analysis(self, name: str) -> str:
        """``analysis/<name>.json``: the entries of one analysis."""
        return os.path.join(self.analysis_dir, f"{name}.json")

    @staticmethod
    def one_shot_mask_name(level: int) -> str:
        """``one_shot_masks/level_<k>.npz`` relative to ``analysis/`` (as recorded in
        the ``"mask_file"`` of ``analysis/one_shot.json`` entries)."""
        return os.path.join("one_shot_masks", f"level_{int(level)}.npz")

    def one_shot_mask(self, level: int) -> str:
        """``analysis/one_shot_masks/level_<k>.npz``: the mask of the one-shot analysis
        matched to level ``k``."""
        return os.path.join(self.analysis_dir, self.one_shot_mask_name(level))

    def transfer_imp(self, target: str) -> ReplicateDir:
        """``analysis/transfer_<target>_imp/``: the replicate directory of the tickets
        found on dataset ``target`` by the transfer analysis (``ticket.fit`` layout)."""
        return ReplicateDir(os.path.join(self.analysis_dir, f"transfer_{target}_imp"))

    def gradinit_scales(self, seed: int) -> str:
        """``gradinit_<seed>.json``: GradInit's learned scales for one initialization."""
        return os.path.join(self.path, f"gradinit_{int(seed)}.json")

    def tfmot_baseline(self, label: str | None = None) -> str:
        """``tfmot_baseline.json`` or ``tfmot_baseline_<label>.json``."""
        return os.path.join(self.path, "tfmot_baseline" + (f"_{label}" if label else "")
                            + ".json")

    def tfmot_baselines(self) -> list[str]:
        """Every tfmot baseline file of the replicate, in name order."""
        return [os.path.join(self.path, n) for n in sorted(_listdir(self.path))
                if _TFMOT.match(n)]

    def is_replicate(self) -> bool:
        """The directory looks like a replicate: it has a level, results or theta_0."""
        names = _listdir(self.path)
        return any(_LEVEL.match(n) for n in names) or os.path.basename(self.results) in names \
            or os.path.basename(self.init_weights) in names


@dataclasses.dataclass(frozen=True)
class RunDir:
    """``<run_root>/<model>_<dataset>_<hash>/``: one experiment, all replicates."""

    path: str

    @classmethod
    def of(cls, run_root: str | os.PathLike, run_name: str) -> RunDir:
        """The run directory of ``run_name`` (``ExperimentHparams.run_name()``)."""
        return cls(os.path.join(os.fspath(run_root), run_name))

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def hparams(self) -> str:
        """``hparams.json``: ``ExperimentHparams.to_dict()``."""
        return os.path.join(self.path, HPARAMS)

    @property
    def flags(self) -> str:
        """``flags.txt``: a flagfile that reruns the experiment."""
        return os.path.join(self.path, FLAGS)

    def replicate(self, index: int) -> ReplicateDir:
        """``replicate_<index>/``."""
        return ReplicateDir(os.path.join(self.path, f"replicate_{int(index)}"), int(index))

    def replicates(self) -> list[ReplicateDir]:
        """Every ``replicate_<r>`` directory, in index order."""
        found = sorted(int(m.group(1)) for n in _listdir(self.path)
                       if (m := _REPLICATE.match(n)) and os.path.isdir(os.path.join(self.path, n)))
        return [self.replicate(r) for r in found]

    def is_run(self) -> bool:
        return os.path.exists(self.hparams)

    def worker_dir(self, worker: int) -> str:
        """``.worker_<worker>/``: where non-chief worker ``worker`` of a multi-worker run
        keeps its private copy of the run (``worker_copy``)."""
        return os.path.join(self.path, f".worker_{int(worker)}")

    def worker_copy(self, replicate: int, worker: int) -> RunDir:
        """A private copy of replicate ``replicate`` for non-chief worker ``worker``.

        Under multi-worker training only the chief writes the run directory; every other
        worker runs the same program in ``.worker_<worker>/<run name>/`` and removes it
        at the end (``remove_worker_copy``), as Keras's multi-worker checkpointing
        writes non-chief checkpoints to temporary directories. The copy holds what the
        chief had written (hard links, or copies where links fail), so a resumed run
        makes the same decisions on every worker; links are safe because every file is
        replaced atomically, never rewritten in place. The lock file is not copied.

        Returns:
            The copy's ``RunDir``.
        """
        import shutil

        root = self.worker_dir(worker)
        shutil.rmtree(root, ignore_errors=True)
        copy = RunDir(os.path.join(root, self.name))
        source = self.replicate(replicate).path
        target = copy.replicate(replicate).path

        def link_or_copy(src, dst):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        if os.path.isdir(source):
            shutil.copytree(source, target, copy_function=link_or_copy,
                            ignore=shutil.ignore_patterns(LOCK, ".tmp-*"))
        else:
            os.makedirs(target)
        return copy

    def remove_worker_copy(self, worker: int) -> None:
        """Removes worker ``worker``'s copy (``worker_copy``), if any."""
        import shutil

        shutil.rmtree(self.worker_dir(worker), ignore_errors=True)


def resolve_replicate(run_dir, replicate: int | None = None) -> tuple[RunDir, ReplicateDir]:
    """Finds a replicate of a run: ``(RunDir, ReplicateDir)`` with absolute paths.

    Args:
        run_dir: ``<run_root>/<name>_<hash>`` (the directory holding ``hparams.json``)
            or one of its ``replicate_<r>`` directories.
        replicate: ``r`` when ``run_dir`` is the ``<name>_<hash>`` directory (default
            0); if given with a ``replicate_<r>`` directory it must agree with it.

    Raises:
        ValueError: naming ``run_dir`` or ``replicate`` when the directory is not a
            run, ``replicate`` is not an integer >= 0 or disagrees with ``run_dir``, or
            the replicate has no directory.
    """
    if not isinstance(run_dir, (str, os.PathLike)) or not os.path.isdir(run_dir):
        raise ValueError(f"`run_dir` must be an existing run directory; received {run_dir!r}.")
    path = os.path.abspath(os.fspath(run_dir))
    here = ReplicateDir.at(path)
    parent = RunDir(os.path.dirname(path))
    if RunDir(path).is_run():
        run = RunDir(path)
        replicate = 0 if replicate is None else replicate
        if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
            raise ValueError(f"`replicate` must be an integer >= 0; received {replicate!r}.")
        rep = run.replicate(replicate)
    elif here.index is not None and parent.is_run():
        run, rep = parent, here
        if replicate is not None and replicate != here.index:
            raise ValueError(f"`replicate` {replicate} disagrees with `run_dir` {path!r}; drop "
                             "one of them.")
    else:
        raise ValueError(
            f"`run_dir` {path!r} is not a run directory: neither it nor its parent holds "
            f"{HPARAMS}. Pass <run_root>/<name>_<hash> or its replicate_<r> directory."
        )
    if not os.path.isdir(rep.path):
        found = [os.path.basename(r.path) for r in run.replicates()]
        raise ValueError(f"`replicate` {rep.index} has no directory in {run.path}; found "
                         f"{found}.")
    return run, rep


@dataclasses.dataclass(frozen=True)
class TuneDir:
    """A keras-tuner search (``tf_lottery.tune``): ``<run_root>/tune_<name>_<hash>/``."""

    path: str

    @classmethod
    def of(cls, run_root: str | os.PathLike, project: str) -> TuneDir:
        """The search directory of keras-tuner project ``project`` under ``run_root``."""
        return cls(os.path.join(os.fspath(run_root), project))

    @property
    def runs(self) -> str:
        """``runs/``: the run root of the trials' experiments."""
        return os.path.join(self.path, "runs")

    @property
    def best_flags(self) -> str:
        """``best.flags``: a flagfile of the best trial's experiment."""
        return os.path.join(self.path, "best.flags")

    @property
    def trials_csv(self) -> str:
        return os.path.join(self.path, "trials.csv")

    @property
    def trials_md(self) -> str:
        return os.path.join(self.path, "trials.md")

    @staticmethod
    def trial_info(trial_dir: str) -> str:
        """``trial_info.json`` in a keras-tuner trial directory."""
        return os.path.join(trial_dir, "trial_info.json")


#: The report's plots, in the order they are drawn: ``<prefix><name>.png``.
PLOTS = ("accuracy", "early_stop", "learning_curves", "layer_sparsity", "one_shot",
         "instability", "noise", "transfer", "adversarial")


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """The files ``tf_lottery.report.make_report`` writes into ``out``: one PNG per plot,
    ``report.md`` and ``report.json``, each name starting with ``prefix``."""

    out: str
    prefix: str = ""

    def plot(self, name: str) -> str:
        return os.path.join(self.out, f"{self.prefix}{name}.png")

    @property
    def markdown(self) -> str:
        return os.path.join(self.out, f"{self.prefix}report.md")

    @property
    def json(self) -> str:
        return os.path.join(self.out, f"{self.prefix}report.json")
