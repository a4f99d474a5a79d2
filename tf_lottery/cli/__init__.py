"""The command line: one module per command, the only package that reads absl flags.

- ``experiment`` (``tf-lottery``, ``python -m tf_lottery.main``): a lottery experiment.
- ``analyze`` (``tf-lottery-analyze``, ``python -m tf_lottery.analyze``): analyses of a run.
- ``report`` (``tf-lottery-report``, ``python -m tf_lottery.report``): plots and tables.
- ``export`` (``tf-lottery-export``, ``python -m tf_lottery.export``): TFLite export.
- ``tune`` (``tf-lottery-tune``, ``python -m tf_lottery.tune``): keras-tuner search.

``experiment_flags`` holds the experiment's flags (shared by ``tune``) and ``errors`` the
one error and exit-code handler, which rewrites library arguments in error messages as
the flags that set them. Nothing outside this package imports it except
``tf_lottery.main``, the program's entry, through which every ``python -m`` spelling
(``tf_lottery.analyze``, the packages' ``__main__.py``) runs its command.
"""
