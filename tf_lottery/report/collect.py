"""Reading run directories for a report: what every replicate holds, finished or not.

A replicate is read through its ``tf_lottery.paths.ReplicateDir``: every finished branch
(``level_<k>/<branch>/summary.json``, and ``level_<k>/reinit_<d>/`` for the further
draws of the reinit control) directly, so ``results.json`` is not needed, the
branches still training with the iteration of their last checkpoint, the one-shot
tickets, the tfmot baselines and the analyses. ``load_runs`` groups replicates into runs
and labels them for legends.
"""

from __future__ import annotations

import dataclasses
import os

from tf_lottery import files, paths

__all__ = [
    "BRANCH_ORDER",
    "Replicate",
    "Run",
    "analysis_entries",
    "branch_key",
    "branch_label",
    "branch_warnings",
    "flatten",
    "format_value",
    "load_runs",
    "read_replicate",
]

#: Branch order in plots and tables; other names follow alphabetically.
BRANCH_ORDER = ("lottery", "reinit", "random_prune", "one_shot", "tfmot_gmp")


def branch_key(branch: str):
    """Sort key of a branch name: ``BRANCH_ORDER`` first, then alphabetical."""
    return (BRANCH_ORDER.index(branch) if branch in BRANCH_ORDER else len(BRANCH_ORDER), branch)


def branch_label(branch: str, draw: int = 0) -> str:
    """A branch in tables: its name, and ``"reinit draw 2"`` for a further draw."""
    return f"{branch} draw {draw}" if draw else branch


def branch_warnings(summary: dict) -> dict:
    """What went wrong in a branch's training, from its ``summary.json``:
    ``{"diverged": iteration or None}`` when the training loss became non-finite
    (``"diverged"`` true; ``diverged_iteration``: iterations done then, ``None`` if
    unknown) and ``{"at_chance": (final test accuracy, chance accuracy)}`` when the
    final test accuracy is no better than always predicting the most frequent test class
    (``"at_chance"`` true). ``{}`` for a healthy branch and for summaries written before
    these keys existed."""
    out = {}
    if summary.get("diverged"):
        out["diverged"] = summary.get("diverged_iteration")
    if summary.get("at_chance"):
        out["at_chance"] = (summary.get("final_test_accuracy"), summary.get("chance_accuracy"))
    return out


@dataclasses.dataclass
class Replicate:
    """What one replicate directory holds, finished or not.

    Attributes:
        path: the replicate directory (absolute).
        index: ``r`` of ``replicate_<r>``, or ``None`` for a directory of another name.
        levels: ``levels[k][branch]`` is the ``summary.json`` dict of a finished branch
            (sparsity a fraction, iterations ints, accuracies in [0, 1]); for the reinit
            control that of its draw 0 (``level_<k>/reinit/``).
        one_shot: ``{target sparsity: summary}`` of finished one-shot tickets: the run's
            own (``one_shot/sparsity_<s>/lottery``) and those of the ``one_shot``
            analysis (``analysis/one_shot.json`` entries; the run's win on equal targets).
        in_progress: ``[{"level", "branch", "draw", "iteration", "path"}]`` of branches
            with a mask or checkpoint but no summary yet (``iteration``: last checkpoint,
            or ``None``; ``draw`` 0 but for further reinit draws).
        tfmot: tfmot baseline points ``[{"level", "sparsity", "test_accuracy"}]`` read
            from ``tfmot_baseline.json`` and ``tfmot_baseline_<any>.json`` (empty if
            absent).
        analyses: ``{name: JSON}`` of ``analysis/<name>.json`` files.
        warnings: problems met while reading (unreadable files), for the report.
        draws: ``draws[k][branch][d]`` is the summary of finished draw ``d >= 1`` of a
            branch trained several times per level (the reinit control with
            ``reinit_draws > 1``: ``level_<k>/reinit_<d>/``); empty otherwise.
    """

    path: str
    index: int | None
    levels: dict[int, dict[str, dict]]
    one_shot: dict[float, dict]
    in_progress: list[dict]
    tfmot: list[dict]
    analyses: dict[str, dict]
    warnings: list[str]
    draws: dict[int, dict[str, dict[int, dict]]] = dataclasses.field(default_factory=dict)

    def branch_names(self, level) -> list[str]:
        """The branches with a finished draw in ``level``, in ``branch_key`` order."""
        names = set(self.levels.get(level, {})) | set(self.draws.get(level, {}))
        return sorted(names, key=branch_key)

    def summaries(self, level, branch: str) -> list[tuple[int, dict]]:
        """``[(draw, summary)]`` of every finished draw of ``branch`` in ``level``,
        draw 0 (``levels``) first: one entry for a branch trained once, up to
        ``reinit_draws`` for the reinit control; ``[]`` when none finished."""
        found = [(0, self.levels[level][branch])] if branch in self.levels.get(level, {}) \
            else []
        return found + sorted(self.draws.get(level, {}).get(branch, {}).items())

    def metrics(self, level: int, branch: str, draw: int = 0) -> list[dict]:
        """The evaluation rows (``metrics.csv``) of a finished branch (draw ``draw`` of
        the reinit control); ``[]`` if absent."""
        path = paths.ReplicateDir(self.path, self.index).branch(level, branch, draw).metrics
        if not os.path.exists(path):
            return []
        return files.read_csv(path)


@dataclasses.dataclass
class Run:
    """One experiment: replicates sharing hyperparameters.

    Attributes:
        path: the ``<name>_<hash>`` directory (or the replicate directory itself when
            it has no ``hparams.json`` above it).
        name: directory base name.
        hparams: the ``hparams.json`` dict, or ``None``.
        replicates: the replicates read, in index order.
        label: the name used in legends (set by ``load_runs``: the hyperparameters that
            differ between the runs reported together, else ``name``).
    """

    path: str
    name: str
    hparams: dict | None
    replicates: list[Replicate]
    label: str = ""


def _read_json(path: str, warnings: list) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        return files.read_json(path)
    except (ValueError, OSError) as err:
        warnings.append(f"skipped unreadable {path}: {err}")
        return None


def _pending(branch: paths.BranchDir, level) -> dict:
    iteration = None
    if os.path.exists(branch.checkpoint):
        try:
            iteration = files.read_json(branch.checkpoint).get("step")
        except (ValueError, OSError):
            iteration = None
    return {"level": level, "branch": branch.branch, "draw": branch.draw,
            "iteration": iteration, "path": branch.path}


def _tfmot_points(path: str, warnings: list) -> list[dict]:
    """Normalizes ``tfmot_baseline.json``: a ``tools/compare_tfmot.py`` output
    (``{"level", "gmp": {"sparsity", "test_accuracy"}}``), a list of those, or
    ``{"entries": [...]}``; plain ``{"sparsity", "test_accuracy"}`` dicts work too."""
    try:
        data = files.read_json(path)
    except (ValueError, OSError) as err:
        warnings.append(f"skipped unreadable {path}: {err}")
        return []
    items = data.get("entries", [data]) if isinstance(data, dict) else data
    points = []
    for item in items if isinstance(items, list) else []:
        source = item.get("gmp", item) if isinstance(item, dict) else None
        try:
            points.append({
                "level": item.get("level"),
                "sparsity": float(source["sparsity"]),
                "test_accuracy": float(source["test_accuracy"]),
            })
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{path}: an entry without gmp sparsity/test_accuracy was skipped")
    return points


def read_replicate(path: str | os.PathLike) -> Replicate:
    """Reads every finished branch, pending branch, baseline and analysis of one
    replicate directory (see ``Replicate``). Never raises for missing pieces."""
    rep = paths.ReplicateDir.at(os.path.abspath(os.fspath(path)))
    warnings: list[str] = []
    levels: dict[int, dict[str, dict]] = {}
    draws: dict[int, dict[str, dict[int, dict]]] = {}
    in_progress = []
    for level in rep.levels():
        for branch in sorted(rep.branches(level),
                             key=lambda b: (branch_key(b.branch), b.draw)):
            summary = _read_json(branch.summary, warnings)
            if summary is None:
                in_progress.append(_pending(branch, level))
            elif branch.draw == 0:
                levels.setdefault(level, {})[branch.branch] = summary
            else:
                draws.setdefault(level, {}).setdefault(branch.branch, {})[branch.draw] = summary
    one_shot = {}
    for target in rep.one_shot_targets():
        branch = rep.one_shot(target)
        summary = _read_json(branch.summary, warnings)
        if summary is not None:
            one_shot[target] = summary
        elif os.path.isdir(branch.path):
            in_progress.append(_pending(branch, f"one-shot {target:.4f}"))
    tfmot = []
    for baseline in rep.tfmot_baselines():
        tfmot += _tfmot_points(baseline, warnings)
    analyses = {}
    for name in paths.ANALYSES:
        data = _read_json(rep.analysis(name), warnings)
        if data is not None:
            analyses[name] = data
    # One-shot tickets trained by `tf_lottery.analysis.run_one_shot` (matched to the
    # iterative levels) join those of the run's own `one_shot/` directory.
    for entry in analyses.get("one_shot", {}).get("entries", []):
        try:
            one_shot.setdefault(float(entry["key"]["target"]), entry)
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{rep.analysis('one_shot')}: an entry without key.target "
                            "was skipped")
    in_progress.sort(key=lambda p: (isinstance(p["level"], str), p["level"]
                                    if isinstance(p["level"], int) else 0, str(p["level"]),
                                    branch_key(p["branch"]), p["draw"]))
    return Replicate(
        path=rep.path, index=rep.index,
        levels=dict(sorted(levels.items())), one_shot=dict(sorted(one_shot.items())),
        in_progress=in_progress, tfmot=tfmot, analyses=analyses, warnings=warnings,
        draws=dict(sorted(draws.items())),
    )


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the hyperparameter table and run labels)."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def format_value(value) -> str:
    """A hyperparameter for display: lists comma-joined, ``None`` as ``-``."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _label_runs(run_list: list[Run]) -> None:
    if len(run_list) == 1:
        run_list[0].label = run_list[0].name
        return
    flat = [flatten(r.hparams) if r.hparams else {} for r in run_list]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    for run, values in zip(run_list, flat):
        parts = [f"{k.rsplit('.', 1)[-1]}={format_value(values.get(k))}"
                 for k in differing if k in values]
        run.label = ", ".join(parts[:3]) if parts and run.hparams else run.name
    labels = [r.label for r in run_list]
    if len(set(labels)) < len(labels):  # still ambiguous: fall back to directory names
        for run in run_list:
            run.label = run.name


def load_runs(run_dirs) -> list[Run]:
    """Reads run directories for a report.

    Args:
        run_dirs: a path or a list of paths, each a ``<name>_<hash>`` directory (all its
            ``replicate_<r>`` subdirectories are read) or a replicate directory
            (replicates of the same run given separately are reported together).

    Returns:
        The runs, in the order first named, each with its replicates in index order and
        a legend ``label``.

    Raises:
        ValueError: before reading anything, naming ``run_dirs``, if it is empty, if a
            path is not a run or replicate directory, or if no finished branch exists in
            any of them (nothing to report yet).
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    run_dirs = [os.path.abspath(os.fspath(p)) for p in run_dirs]
    if not run_dirs:
        raise ValueError("`run_dirs` is empty; name at least one run directory.")
    groups: dict[str, list[str]] = {}
    for path in run_dirs:
        if not os.path.isdir(path):
            raise ValueError(f"`run_dirs` {path!r} does not exist or is not a directory. "
                             "Pass <run_root>/<name>_<hash> or a replicate_<r> directory "
                             "in it.")
        children = [rep.path for rep in paths.RunDir(path).replicates()]
        if children:
            group = groups.setdefault(path, [])
            group.extend(p for p in children if p not in group)
        elif paths.ReplicateDir(path).is_replicate():
            parent = paths.RunDir(os.path.dirname(path))
            root = parent.path if parent.is_run() else path
            group = groups.setdefault(root, [])
            if path not in group:
                group.append(path)
        else:
            raise ValueError(
                f"`run_dirs` {path!r} is not a run directory: it holds neither "
                "replicate_<r> directories nor level_<k> directories. Pass "
                "<run_root>/<name>_<hash> or one of its replicate_<r> directories."
            )
    run_list = []
    for root, replicate_paths in groups.items():
        run_dir = paths.RunDir(root)
        hparams = files.read_json(run_dir.hparams) if run_dir.is_run() else None
        replicates = [read_replicate(p) for p in replicate_paths]
        replicates.sort(key=lambda r: (r.index is None, r.index or 0, r.path))
        run_list.append(Run(root, run_dir.name, hparams, replicates))
    if not any(r.levels or r.one_shot for run in run_list for r in run.replicates):
        raise ValueError(
            f"`run_dirs` {run_dirs} hold no finished branch yet (no "
            "level_<k>/<branch>/summary.json); wait until level 0 has finished."
        )
    _label_runs(run_list)
    return run_list


def analysis_entries(run_list: list[Run], name: str) -> list[tuple[Run, Replicate, dict]]:
    """``(run, replicate, entry)`` of every entry of analysis ``name`` in the runs."""
    return [(run, rep, entry) for run in run_list for rep in run.replicates
            for entry in rep.analyses.get(name, {}).get("entries", [])]
