"""What every command-line tool of the project shares (the trainer's steps, build_engine,
verify_engine): argparse value types that name the bad value, and running a tool's ``main()``
from its parsed arguments with one clear error line.

Each tool keeps a typed ``main()`` (the library entry) and an argparse parser whose option
destinations are named like ``main``'s parameters; :func:`run_main` passes them over, so a
tool's ``cli()`` does not repeat every option once more. A destination that ``main`` does not
take must be mapped explicitly (``overrides``) or declared ``handled``, else :func:`run_main`
raises TypeError: a forgotten option fails the tool's tests instead of being dropped.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections.abc import Callable, Collection
from typing import Any

from posenet_core.errors import PoseNetError

__all__ = [
    "int_at_least",
    "main_arguments",
    "non_negative_float",
    "non_negative_int",
    "number",
    "positive_float",
    "positive_int",
    "run_main",
]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum`` ("must be >= 1, got 0")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


def number(
    *, positive: bool = False, low: float | None = None, high: float | None = None
) -> Callable[[str], float]:
    """argparse type: a finite number, > 0 with ``positive``, within [``low``, ``high``]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if positive and not (math.isfinite(value) and value > 0.0):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = number(positive=True)
non_negative_float = number(low=0.0)


def main_arguments(
    main: Callable[..., Any],
    args: argparse.Namespace,
    *,
    handled: Collection[str] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``main``: every parsed value whose destination is one of ``main``'s
    parameters, then ``overrides`` (values the tool computes, e.g. ``progress=not
    args.no_progress``). Raises TypeError for an override ``main`` does not take, or a parsed
    destination that is neither a parameter, nor replaced by an override, nor ``handled``."""
    parameters = inspect.signature(main).parameters
    unknown = [name for name in overrides if name not in parameters]
    if unknown:
        raise TypeError(f"{main.__qualname__}() takes no argument(s) {', '.join(unknown)}")
    values = vars(args)
    kwargs = {name: value for name, value in values.items() if name in parameters}
    unused = set(values) - set(kwargs) - set(handled)
    if unused:
        raise TypeError(
            f"parsed option(s) {', '.join(sorted(unused))} reach no parameter of "
            f"{main.__qualname__}(); map them with an override or list them as handled"
        )
    kwargs.update(overrides)
    return kwargs


def run_main(
    prog: str,
    main: Callable[..., Any],
    args: argparse.Namespace,
    *,
    then: Callable[[Any], int | None] | None = None,
    error_status: int = 2,
    handled: Collection[str] = (),
    **overrides: Any,
) -> int:
    """Run ``main`` with :func:`main_arguments`; the tool's exit status.

    A PoseNetError (any deliberate error of the project) becomes one line ``<prog>: error:
    <message>`` on stderr and ``error_status``; otherwise ``then(result)`` (e.g. printing a
    summary) gives the status (None: 0).
    """
    try:
        result = main(**main_arguments(main, args, handled=handled, **overrides))
    except PoseNetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return error_status
    status = then(result) if then is not None else None
    return 0 if status is None else status
