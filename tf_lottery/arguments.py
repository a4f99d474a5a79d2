"""Hyperparameter arguments: the error that names them, their checks, and step strings.

Every hyperparameter dataclass (``tf_lottery.hparams``) validates its fields with these
checks, so bad input fails with an ``ArgumentError`` (a ``ValueError``) naming the field
before any work starts; the CLI maps the field to its flag.

Step lengths carry their unit, as in open_lth: ``"50000it"`` (iterations) or ``"40ep"``
(epochs of the training split).
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["ArgumentError", "Steps"]

_STEPS = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


class ArgumentError(ValueError):
    """A bad hyperparameter: ``argument`` names the dataclass field (the library
    argument), ``value`` is what was received. The CLI maps ``argument`` to its flag."""

    def __init__(self, argument: str, value, message: str):
        super().__init__(message)
        self.argument = argument
        self.value = value


def _fail(field: str, value, fix: str):
    raise ArgumentError(field, value, f"`{field}` {fix}; received {value!r}.")


@dataclasses.dataclass(frozen=True)
class Steps:
    """A training length with its unit: ``Steps.parse("500it")``, ``Steps.parse("2ep")``."""

    amount: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text, field: str = "steps") -> Steps:
        """Parses ``"<int>it"`` or ``"<int>ep"``; raises ``ValueError`` naming ``field``."""
        if isinstance(text, Steps):
            return text
        match = _STEPS.match(str(text)) if isinstance(text, str) else None
        if not match:
            _fail(field, text, "must be a step string such as '50000it' (iterations) or '40ep' (epochs)")
        return cls(int(match.group(1)), match.group(2))

    def iterations(self, steps_per_epoch: int) -> int:
        """The length in iterations, given ``steps_per_epoch`` iterations per epoch."""
        return self.amount if self.unit == "it" else self.amount * steps_per_epoch

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def _check_number(field, value, low, high=None, *, low_open=False, integer=False):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (
        not integer and not math.isfinite(value)
    ):
        _fail(field, value, f"must be {'an integer' if integer else 'a number'}")
    if (value <= low if low_open else value < low) or (high is not None and value >= high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
        _fail(field, value, f"must be {bound}")


def _check_choice(field, value, choices):
    if value not in choices:
        _fail(field, value, f"must be one of {list(choices)}")
