"""posenet_core.checks: the range check of option dataclasses and its one message shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from posenet_core.checks import check_fields
from posenet_core.errors import PoseNetError


@dataclass
class _Options:
    count: object = 3
    share: object = 0.5
    scale: object = 1.0


LIMITS = {
    "integers": {"count": 1},
    "numbers": {"share": (0.0, 1.0), "scale": (0.0, math.inf)},
    "open_low": ("scale",),
    "prefix": "thing ",
}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": 0}, "thing count must be an integer >= 1, got 0"),
        ({"count": 2.0}, "thing count must be an integer >= 1, got 2.0"),
        ({"count": True}, "thing count must be an integer >= 1, got True"),
        ({"share": -0.1}, "thing share must be a number in [0.0, 1.0], got -0.1"),
        ({"share": 1.5}, "thing share must be a number in [0.0, 1.0], got 1.5"),
        ({"share": "0.5"}, "thing share must be a number in [0.0, 1.0], got '0.5'"),
        ({"share": False}, "thing share must be a number in [0.0, 1.0], got False"),
        ({"share": math.nan}, "thing share must be a number in [0.0, 1.0], got nan"),
        ({"scale": 0.0}, "thing scale must be a number in (0.0, inf], got 0.0"),
        ({"scale": math.inf}, "thing scale must be a number in (0.0, inf], got inf"),
        # Integers are checked first: the message names the integer.
        ({"count": 0, "share": 2.0}, "thing count must be an integer >= 1"),
    ],
)
def test_a_bad_field_is_named_with_what_is_allowed(values, message):
    with pytest.raises(PoseNetError) as info:
        check_fields(_Options(**values), PoseNetError, **LIMITS)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "values",
    [{}, {"count": 1}, {"share": 0.0}, {"share": 1}, {"scale": 1e-9}, {"scale": 5}],
)
def test_values_at_and_inside_the_limits_pass(values):
    check_fields(_Options(**values), PoseNetError, **LIMITS)
