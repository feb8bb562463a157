"""The prior limits' auto value and the posenet.median_error text it is read from."""

from __future__ import annotations

import math

import pytest

from posenet_core.contract import format_median_error, parse_median_error
from posenet_core.refine import RefinerConfig, auto_prior_limits, with_auto_prior_limits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.026 m, 2.22 deg", (0.026, 2.22)),
        (" 1.5 m ,10 deg ", (1.5, 10.0)),
        ("2e-2 m, 1.0E1 deg", (0.02, 10.0)),
        ("unknown", None),
        ("", None),
        (None, None),
        ("0.026 m", None),
        ("0.026 deg, 2.22 m", None),
        ("-0.1 m, 2 deg", None),
        ("nan m, 2 deg", None),
        ("0.1 m, 2 deg, 3 s", None),
    ],
)
def test_parse_median_error(text, expected):
    got = parse_median_error(text)
    assert got == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize(
    ("validation", "text"),
    [
        ({"median_translation_m": 0.0261, "median_rotation_deg": 2.219}, "0.026 m, 2.22 deg"),
        ({"median_translation_m": 0.5}, "unknown"),
        ({"median_translation_m": math.nan, "median_rotation_deg": 1.0}, "unknown"),
        ({"median_translation_m": "x", "median_rotation_deg": 1.0}, "unknown"),
        (None, "unknown"),
        ([0.1, 2.0], "unknown"),
    ],
)
def test_format_median_error_reads_back(validation, text):
    assert format_median_error(validation) == text
    if text != "unknown":
        assert parse_median_error(text) == pytest.approx((0.026, 2.22))


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("0.783 m, 0.42 deg", (3.915, 20.0)),  # the forward drive: 1 m would refuse 5 of 12
        ("0.026 m, 2.22 deg", (1.0, 20.0)),  # floors
        ("0.5 m, 10 deg", (2.5, 50.0)),
        ("3 m, 90 deg", (15.0, 180.0)),  # the angle stops at 180
        ("unknown", (1.0, 20.0)),
        ("garbage", (1.0, 20.0)),
    ],
)
def test_auto_prior_limits(text, limits):
    assert auto_prior_limits(text) == pytest.approx(limits)
    config = with_auto_prior_limits(RefinerConfig(min_inliers=30), text)
    assert (config.max_prior_distance_m, config.max_prior_angle_deg) == pytest.approx(limits)
    assert config.min_inliers == 30  # only the limits change
