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
