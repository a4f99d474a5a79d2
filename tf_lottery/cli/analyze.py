"""``tf-lottery-analyze`` / ``python -m tf_lottery.cli analyze``: analyses of a finished run.

Writes ``<replicate>/analysis/<name>.json``; finished entries are kept, so a rerun
resumes. ``report analyze ...`` is the old spelling.
"""

from __future__ import annotations

import sys

from absl import flags, logging

from tf_lottery.cli.errors import UsageError, exit_with, int_list, parse_or_exit, usage_errors

__all__ = ["USAGE", "flag_values", "main", "run"]

USAGE = """Analyses of a run, written to <replicate>/analysis/<name>.json.

    python -m tf_lottery.cli analyze --run_dir=RUN_DIR --analysis=instability \\
        --levels=0,7 --rewind_points=0it,500it --training_steps=10000it
    python -m tf_lottery.cli analyze --run_dir=RUN_DIR --analysis=noise --levels=7
    python -m tf_lottery.cli analyze --run_dir=RUN_DIR --analysis=transfer \\
        --levels=7 --target_dataset=mnist
    python -m tf_lottery.cli analyze --run_dir=RUN_DIR --analysis=one_shot
    python -m tf_lottery.cli analyze --run_dir=RUN_DIR --analysis=adversarial \\
        --levels=0,3,7 --epsilons=0.01,0.03,0.1

instability: linear mode connectivity of two copies trained with different data orders
(Frankle et al. 2020); noise: accuracy after Gaussian noise on the rewind weights;
transfer: the ticket trained on another dataset (Morcos et al. 2019); one_shot: one-shot
pruning to the sparsity of each iterative ticket (Frankle & Carbin 2019); adversarial:
accuracy of each branch's final weights under FGSM (Goodfellow et al. 2015) and
L-infinity PGD (Madry et al. 2018), epsilons in units of the [0, 1] pixel range. Finished
entries are kept, so a rerun resumes. Then run the report on the same directory.
"""

#: Library argument -> flag.
FLAG_NAMES = {name: name for name in (
    "run_dir", "replicate", "levels", "mask", "rewind_points", "training_steps",
    "eval_every", "points", "repeats", "target_dataset", "target_run_dir", "data_dir",
    "target_data_dir", "overwrite", "branches", "epsilons", "pgd_steps", "pgd_step_size")}
FLAG_NAMES.update(scales="noise_scales", analyses="analysis", examples="adversarial_examples",
                  random_start="pgd_random_start")
FLAG_NAMES.update({name: name for name in (
    "reestimate_bn", "bn_batches", "train_error_examples", "target_preprocess")})


def flag_values() -> flags.FlagValues:
    """The analyze command's flags, in a FlagValues of their own."""
    from tf_lottery import analysis

    fv = flags.FlagValues()
    flags.DEFINE_string("run_dir", None, "Run directory <run_root>/<name>_<hash>, or one of "
                        "its replicate_<r> directories.", flag_values=fv)
    flags.DEFINE_integer("replicate", None, "Replicate index when --run_dir is the "
                         "<name>_<hash> directory (default 0).", flag_values=fv)
    flags.DEFINE_list("analysis", None, f"Analyses to run, in order: "
                      f"{','.join(analysis.ANALYSES)}.", flag_values=fv)
    flags.DEFINE_list("levels", None, "Mask levels to analyse (0: the dense network). "
                      "Default: instability 0 and the deepest level with a mask; noise and "
                      "transfer the deepest; one_shot every pruned level; adversarial every "
                      "finished level.", flag_values=fv)
    flags.DEFINE_enum("mask", "lottery", list(analysis.MASK_KINDS), "Masks of the pruned "
                      "levels: the run's winning tickets or random masks with the same "
                      "per-layer counts.", flag_values=fv)
    flags.DEFINE_list("rewind_points", None, "Rewind points k of instability and noise, "
                      "e.g. 0it,100it,500it (default: the run's --rewind).", flag_values=fv)
    flags.DEFINE_string("training_steps", None, "Budget of every training, e.g. 10000it "
                        "(default: the run's; one_shot always uses the run's, to compare "
                        "with its tickets).", flag_values=fv)
    flags.DEFINE_string("eval_every", None, "Evaluation period of noise and transfer "
                        "trainings (default: the run's).", flag_values=fv)
    flags.DEFINE_integer("points", 30, "Interpolation points of instability.", flag_values=fv)
    flags.DEFINE_bool("reestimate_bn", True, "Instability: re-estimate the BatchNorm moving "
                      "statistics of every interpolated network on --bn_batches training "
                      "batches (networks with BatchNorm only; false: use the interpolated "
                      "statistics, as entries written before this flag did).", flag_values=fv)
    flags.DEFINE_integer("bn_batches", 32, "Instability: training batches (of the run's "
                         "batch size) the BatchNorm statistics are re-estimated on.",
                         flag_values=fv)
    flags.DEFINE_integer("train_error_examples", 10000, "Instability: size of the fixed "
                         "subset of the training split the train error along the path is "
                         "measured on (0: none).", flag_values=fv)
    flags.DEFINE_list("noise_scales", ["0.5", "1", "2", "3"], "Noise std in units of each "
                      "layer's initialization std (0 is always added).", flag_values=fv)
    flags.DEFINE_integer("repeats", 1, "Noise draws per scale.", flag_values=fv)
    flags.DEFINE_string("target_dataset", None, "Transfer target dataset (same input shape "
                        "as the run's, e.g. mnist for fashion_mnist, cifar100 for cifar10, "
                        "or another with --target_preprocess).", flag_values=fv)
    flags.DEFINE_enum("target_preprocess", "none", ["none", "pad", "resize"], "Transfer to a "
                      "target of another input shape (28x28x1 <-> 32x32x3): convert its "
                      "images to the run's input shape by zero-padding or centre-cropping "
                      "(pad) or bilinear resizing (resize); gray -> RGB repeats the channel, "
                      "RGB -> gray takes the luminance. none: the shapes must match.",
                      flag_values=fv)
    flags.DEFINE_string("target_run_dir", None, "A run of the same model on the target "
                        "dataset providing the target's own tickets (default: find them by "
                        "pruning on the target with the run's settings).", flag_values=fv)
    flags.DEFINE_list("branches", None, "Branches of adversarial: lottery (level 0: the "
                      "dense network), reinit, random_prune (default: every one the run has).",
                      flag_values=fv)
    flags.DEFINE_list("epsilons", ["0.01", "0.03", "0.1"], "L-infinity radii of adversarial, "
                      "in units of the [0, 1] pixel range (converted to standardized inputs "
                      "per channel).", flag_values=fv)
    flags.DEFINE_integer("pgd_steps", 10, "PGD iterations of adversarial.", flag_values=fv)
    flags.DEFINE_float("pgd_step_size", 0.25, "PGD step as a fraction of epsilon (0.25: "
                       "2.5 epsilon over 10 steps).", flag_values=fv)
    flags.DEFINE_bool("pgd_random_start", True, "Start PGD at a uniform random point of the "
                      "epsilon ball (Madry et al. 2018).", flag_values=fv)
    flags.DEFINE_integer("adversarial_examples", 2000, "Test examples attacked: the first "
                         "N of the test split (all of it when smaller).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Location of the run's dataset.", flag_values=fv)
    flags.DEFINE_string("target_data_dir", None, "Location of the target dataset.",
                        flag_values=fv)
    flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism (process-wide).",
                      flag_values=fv)
    flags.DEFINE_bool("jit_compile", True, "XLA-compile train and eval steps.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Recompute entries already in the analysis file.",
                      flag_values=fv)
    flags.mark_flags_as_required(["run_dir", "analysis"], flag_values=fv)
    return fv


#: The order of an adversarial entry's key in its line (the file stores keys sorted).
_ADVERSARIAL_KEY = ("level", "branch", "attack", "epsilon", "examples", "pgd_steps",
                    "pgd_step_size", "random_start")


def _entry_line(name: str, entry: dict) -> str:
    items = entry["key"].items()
    if name == "adversarial":
        items = [(k, entry["key"][k]) for k in _ADVERSARIAL_KEY if k in entry["key"]]
    key = ", ".join(f"{k}={v}" for k, v in items if k != "data_orders")
    if name == "instability":
        value = f"instability {entry['instability']:.4f}"
        if entry.get("instability_train") is not None:
            value += f" (train {entry['instability_train']:.4f})"
    elif name == "adversarial":
        value = f"accuracy {entry['accuracy']:.4f} (clean {entry['clean_accuracy']:.4f})"
    elif name == "one_shot" and entry.get("early_stop_test_accuracy") is not None:
        iterative = (entry.get("iterative") or {}).get("early_stop_test_accuracy")
        value = (f"test accuracy at early stopping {entry['early_stop_test_accuracy']:.4f}"
                 + (f" (iterative ticket {iterative:.4f})" if iterative is not None else ""))
    else:
        acc = entry.get("early_stop_test_accuracy")
        value = ("test accuracy at early stopping " + f"{acc:.4f}" if acc is not None
                 else f"final test accuracy {entry['final_test_accuracy']:.4f}")
    return f"  {key}: {value}"


def main(fv: flags.FlagValues) -> int:
    """Runs the analyses ``fv`` names; returns the exit code."""
    from tf_lottery import analysis, paths
    from tf_lottery.training import Runtime

    unknown = [a for a in fv.analysis if a not in analysis.ANALYSES]
    if unknown or not fv.analysis:
        raise UsageError(f"--analysis must list analyses among {','.join(analysis.ANALYSES)}; "
                         f"received {','.join(fv.analysis)!r}.")
    if "transfer" in fv.analysis and not fv.target_dataset:
        raise UsageError("--analysis=transfer needs --target_dataset (e.g. mnist for a "
                         "fashion_mnist run).")
    try:
        scales = [float(s) for s in fv.noise_scales]
    except ValueError:
        raise UsageError(f"--noise_scales must list numbers such as 0.5,1,2,3; received "
                         f"{','.join(fv.noise_scales)!r}.") from None
    try:
        epsilons = [float(e) for e in fv.epsilons]
    except ValueError:
        raise UsageError(f"--epsilons must list numbers such as 0.01,0.03,0.1; received "
                         f"{','.join(fv.epsilons)!r}.") from None
    levels = int_list("levels", fv.levels)
    runtime = Runtime(jit_compile=fv.jit_compile, deterministic=fv.deterministic)
    common = dict(replicate=fv.replicate, runtime=runtime, overwrite=fv.overwrite,
                  training_steps=fv.training_steps, levels=levels)
    calls = {
        "instability": lambda **kw: analysis.run_instability(
            fv.run_dir, rewind_points=fv.rewind_points, mask=fv.mask, points=fv.points,
            data_dir=fv.data_dir, reestimate_bn=fv.reestimate_bn, bn_batches=fv.bn_batches,
            train_error_examples=fv.train_error_examples, **common, **kw),
        "noise": lambda **kw: analysis.run_noise(
            fv.run_dir, scales=scales, repeats=fv.repeats, rewind_points=fv.rewind_points,
            mask=fv.mask, eval_every=fv.eval_every, data_dir=fv.data_dir, **common, **kw),
        "transfer": lambda **kw: analysis.run_transfer(
            fv.run_dir, target_dataset=fv.target_dataset, target_run_dir=fv.target_run_dir,
            eval_every=fv.eval_every, target_data_dir=fv.target_data_dir,
            target_preprocess=None if fv.target_preprocess == "none" else fv.target_preprocess,
            **common, **kw),
        "one_shot": lambda **kw: analysis.run_one_shot(
            fv.run_dir, levels=levels, replicate=fv.replicate, data_dir=fv.data_dir,
            runtime=runtime, overwrite=fv.overwrite, **kw),
        "adversarial": lambda **kw: analysis.run_adversarial(
            fv.run_dir, levels=levels, branches=fv.branches, epsilons=epsilons,
            pgd_steps=fv.pgd_steps, pgd_step_size=fv.pgd_step_size,
            random_start=fv.pgd_random_start, examples=fv.adversarial_examples,
            replicate=fv.replicate, data_dir=fv.data_dir, runtime=runtime,
            overwrite=fv.overwrite, **kw),
    }
    if "one_shot" in fv.analysis and fv.training_steps:
        logging.warning("--analysis=one_shot trains with the run's budget; --training_steps=%s "
                        "applies to the other analyses only.", fv.training_steps)
    with usage_errors(FLAG_NAMES):
        for name in fv.analysis:  # every analysis checks its arguments before any training
            calls[name](check_only=True)
        results = {name: calls[name]() for name in fv.analysis}
    for name, result in results.items():
        where = paths.ReplicateDir.at(result["replicate_dir"]).analysis(name)
        print(f"\n{name}: {len(result['entries'])} entries in {where}")
        for entry in result["entries"]:
            print(_entry_line(name, entry))
    return 0


def run(argv=None) -> None:
    """Entry point of ``tf-lottery-analyze``, ``python -m tf_lottery.cli analyze`` and
    ``python -m tf_lottery.cli report analyze``. Exits 0, or 2 after one ``error: ...`` line
    on bad input."""
    argv = list(sys.argv if argv is None else argv)
    fv = flag_values()
    parse_or_exit(fv, argv, USAGE)
    logging.set_verbosity(logging.INFO)
    sys.exit(exit_with(lambda: main(fv)))
