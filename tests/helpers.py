"""Plain helpers shared by test files (imported as ``from helpers import ...``)."""


def without_times(obj):
    """``obj`` (nested dicts/lists of a results.json) without wall-clock fields
    (``*_seconds``) and ``run_dir``, so two runs of the same experiment compare equal."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items()
                if not k.endswith("_seconds") and k != "run_dir"}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def run_main(*args, wait=True, timeout=600):
    """``python -m tf_lottery.main *args`` in the project root, quiet TF C++ logs.

    With ``wait``, the finished ``subprocess.CompletedProcess`` (text stdout, stderr);
    otherwise the running ``subprocess.Popen`` (stdout and stderr pipes)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "tf_lottery.main", *args]
    if not wait:
        return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
