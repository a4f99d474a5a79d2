"""The command line: one module per command, the only package that reads absl flags.

- ``experiment`` (``tf-lottery``, ``python -m tf_lottery.main``): a lottery experiment.
- ``analyze`` (``tf-lottery-analyze``, ``python -m tf_lottery.cli analyze``): analyses of a run.
- ``report`` (``tf-lottery-report``, ``python -m tf_lottery.cli report``): plots and tables.
- ``export`` (``tf-lottery-export``, ``python -m tf_lottery.cli export``): TFLite export.
- ``tune`` (``tf-lottery-tune``, ``python -m tf_lottery.cli tune``): keras-tuner search.

``experiment_flags`` holds the experiment's flags (shared by ``tune``) and ``errors`` the
one error and exit-code handler, which rewrites library arguments in error messages as
the flags that set them. ``python -m tf_lottery.cli COMMAND`` (``__main__``) runs any
command. Nothing outside this package imports it except ``tf_lottery.main``, the
program's entry.
"""
