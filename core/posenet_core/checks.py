"""Range checks of option dataclasses: one message shape for every integer and number field.

An options class lists its limits once, in its ``__post_init__``::

    check_fields(
        self,
        FeatureError,
        integers={"max_keypoints": 8},
        numbers={"orb_scale_factor": (1.01, 4.0)},
        prefix="feature ",
    )

and a bad value raises that class's error naming the field, what is allowed and the value:
``feature max_keypoints must be an integer >= 8, got 0``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

__all__ = ["check_fields"]


def check_fields(
    obj: object,
    error: type[Exception],
    *,
    integers: Mapping[str, int] = {},
    numbers: Mapping[str, tuple[float, float]] = {},
    open_low: Collection[str] = (),
    prefix: str = "",
) -> None:
    """Raise ``error`` for the first field of ``obj`` outside its limits.

    Args:
        obj: the object whose attributes are checked (integers first, each in the given order).
        error: the exception type raised (the caller's own, e.g. FeatureError).
        integers: field -> smallest allowed value; the value must be an int (not a bool).
        numbers: field -> ``(low, high)``, the allowed closed range; the value must be a finite
            int or float (not a bool).
        open_low: fields of ``numbers`` whose low end is excluded: ``(low, high]``.
        prefix: put before the field's name in the message (``"refine "``).
    """
    for name, minimum in integers.items():
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise error(f"{prefix}{name} must be an integer >= {minimum}, got {value!r}")
    for name, (low, high) in numbers.items():
        value = getattr(obj, name)
        closed_low = name not in open_low
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not (value >= low if closed_low else value > low)
            or not value <= high
        ):
            bracket = "[" if closed_low else "("
            raise error(
                f"{prefix}{name} must be a number in {bracket}{low}, {high}], got {value!r}"
            )
