"""The prior limits' "auto" value: how far a refined pose may lie from its PoseNet prior.

A fixed limit does not fit every model: a fixed 1 m refused 5 of 12 refinements of a forward
drive whose PoseNet prior was 0.78 m off (median) although PnP put those frames within
millimetres (BENCHMARKS.md, "A forward drive with sparse mapping frames"). The limit has to scale
with the model actually used, whose median error the model file carries
(``posenet.median_error``). The node (``refine.max_prior_*`` = -1, the default) and
``posenet_train.evaluate --map`` both resolve it here, so offline and live refuse the same frames.
"""

from __future__ import annotations

import dataclasses

from posenet_core.contract import parse_median_error
from posenet_core.refine.refiner import RefinerConfig

__all__ = [
    "AUTO_FACTOR",
    "AUTO_FLOOR_ANGLE_DEG",
    "AUTO_FLOOR_DISTANCE_M",
    "AUTO_LIMIT",
    "auto_prior_limits",
    "with_auto_prior_limits",
]

AUTO_LIMIT = -1.0
"""The parameter value that stands for "auto"."""
AUTO_FACTOR = 5.0
AUTO_FLOOR_DISTANCE_M = RefinerConfig.max_prior_distance_m
AUTO_FLOOR_ANGLE_DEG = RefinerConfig.max_prior_angle_deg


def auto_prior_limits(model_median_error: str | None) -> tuple[float, float]:
    """The prior limits (m, deg) that auto stands for, given the model's median error text.

    ``AUTO_FACTOR`` times the median error, so that the prior's usual spread (its tail to about
    the 90th percentile on the data measured) passes while a refined pose that jumped to another
    part of the map is still refused; never below the floors (1 m, 20 deg), which are also the
    limits when the model file does not know its error ("unknown"). The angle is at most 180 deg.
    """
    parsed = parse_median_error(model_median_error)
    if parsed is None:
        return AUTO_FLOOR_DISTANCE_M, AUTO_FLOOR_ANGLE_DEG
    position_m, rotation_deg = parsed
    return (
        max(AUTO_FACTOR * position_m, AUTO_FLOOR_DISTANCE_M),
        min(max(AUTO_FACTOR * rotation_deg, AUTO_FLOOR_ANGLE_DEG), 180.0),
    )


def with_auto_prior_limits(config: RefinerConfig, model_median_error: str | None) -> RefinerConfig:
    """``config`` with both prior limits set to their auto value for this model."""
    distance_m, angle_deg = auto_prior_limits(model_median_error)
    return dataclasses.replace(
        config, max_prior_distance_m=distance_m, max_prior_angle_deg=angle_deg
    )
