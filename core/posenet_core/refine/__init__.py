"""Pose refinement against a site map: the PoseNet prior made precise where the map sees.

ROS-free and torch-free (numpy, and OpenCV imported on first use). The node's refinement worker
builds one :class:`Refiner` from the map file and calls :meth:`Refiner.refine` per frame::

    from posenet_core.refine import Refiner, RefinerConfig

    refiner = Refiner.from_file("site.map.npz", RefinerConfig(num_keyframes=5))
    result = refiner.refine(rgb_HWC, K, prior_T_world_camera)
    if result.success:
        use(result.T_world_camera, result.covariance)
    else:
        log(result.failure, result.message)

Modules: :mod:`posenet_core.features` (the extractor and matcher shared with the map builder),
:mod:`.pnp` (PnP-RANSAC and its covariance), :mod:`.refiner` (the per-frame pipeline),
:mod:`.limits` (the prior limits' auto value).
"""

from posenet_core.features import FeatureConfig, FeatureError
from posenet_core.refine.errors import RefineError
from posenet_core.refine.limits import (
    AUTO_FACTOR,
    AUTO_LIMIT,
    auto_prior_limits,
    with_auto_prior_limits,
)
from posenet_core.refine.refiner import (
    FAILURE_REASONS,
    RefinementResult,
    Refiner,
    RefinerConfig,
)

__all__ = [
    "AUTO_FACTOR",
    "AUTO_LIMIT",
    "FAILURE_REASONS",
    "FeatureConfig",
    "FeatureError",
    "RefineError",
    "RefinementResult",
    "Refiner",
    "RefinerConfig",
    "auto_prior_limits",
    "with_auto_prior_limits",
]
