"""The commands' one error and exit-code handler, and the map from library arguments to flags.

Library functions raise ``ValueError`` naming their own arguments (```scope` must be
...``); a command catches it, rewrites each named argument as the flag that sets it
(``--pruning must be ...``) and exits with code 2 after one ``error: ...`` line. Every
command exits 0 on success, 1 when the work itself failed (a file that no runtime can
run), and 2 on bad input, before any work starts.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping

from absl import flags

__all__ = ["UsageError", "translate", "usage_errors", "exit_with", "parse_or_exit",
           "int_list", "HELP_FLAGS"]

HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


class UsageError(Exception):
    """Bad input, reported as one ``error: ...`` line with exit code 2."""


_ARGUMENT = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def translate(message: str, flag_names: Mapping[str, str | None]) -> str:
    """``message`` with each backticked library argument in ``flag_names`` written as
    its flag: ```rate` must be`` -> ``--prune_rate must be``. A name in capitals is a
    positional argument and is written as it is (``run_dirs`` -> ``RUN_DIR``). Arguments
    mapped to ``None`` or absent stay as they are."""

    def flag(match):
        name = flag_names.get(match.group(1))
        if not name:
            return match.group(0)
        return name if name[0].isupper() else f"--{name}"

    return _ARGUMENT.sub(flag, message)


class usage_errors:  # noqa: N801  (a context manager used like a function)
    """``with usage_errors(flag_names): ...`` turns a ``ValueError`` raised inside into a
    ``UsageError`` whose message names flags (see ``translate``)."""

    def __init__(self, flag_names: Mapping[str, str | None] | None = None, hint: str = ""):
        self.flag_names = flag_names or {}
        self.hint = hint

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, ValueError):
            text = translate(str(err), self.flag_names)
            raise UsageError(text + (f" {self.hint}" if self.hint else "")) from None
        return False


def exit_with(command: Callable[[], int]) -> int:
    """Runs ``command()`` and returns its exit code; a ``UsageError`` prints one
    ``error: ...`` line on standard error and gives 2."""
    try:
        return command()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def parse_or_exit(flag_values: flags.FlagValues, argv: list[str], usage: str,
                  *, positional: bool = False) -> list[str]:
    """Parses ``argv`` into ``flag_values`` (a command's own ``FlagValues``).

    Prints ``usage`` and the flags' help and exits 0 for ``--help``; exits 2 after one
    ``error: ...`` line for an unknown flag or bad value, or for positional arguments
    when the command takes none. Returns the positional arguments.
    """
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(usage + "\nflags:\n" + flag_values.get_help())
        sys.exit(0)
    try:
        extra = flag_values(argv)[1:]
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if extra and not positional:
        print(f"error: unexpected arguments {extra}; every option is a --flag.",
              file=sys.stderr)
        sys.exit(2)
    return extra


def int_list(name: str, values) -> list[int] | None:
    """``--name=0,3,7`` as ints; ``UsageError`` naming the flag otherwise."""
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--{name} must list integers such as 0,3,7; received "
                         f"{','.join(values)!r}.") from None
