"""Training labels from a video, an image folder or a rosbag2: structure from motion (pycolmap),
made metric and expressed in the robot's frame.

Pipeline (each step an importable function; :func:`main` / ``python -m posenet_train.sfm`` runs
them all, reusing finished steps):

1. frames (:mod:`.frames`): read the input, select frames (every N-th, by time, sharpest of each
   block, relative blur rejection, a cap), write them as images;
2. features and matches (:mod:`.reconstruct`): SIFT, sequential (default) or exhaustive matching;
3. mapping (:mod:`.reconstruct`): pycolmap incremental mapping, initialised so that forward
   motion works, retried with COLMAP's own initialisation when too few frames register; the
   largest model is kept;
4. scale and frame (:mod:`.reference`): none (SfM units, warned), a factor, a known distance
   between two frames, or a robust similarity fit to the bag's odometry / TF;
5. export (:mod:`.pipeline`): a Cambridge dataset split by time blocks, the COLMAP model, a JSON
   report and a trajectory plot, usable directly by ``posenet_train.train``.
"""

from posenet_train.sfm.align import Similarity, fit_similarity_robust, interpolate_poses, umeyama
from posenet_train.sfm.errors import SfmError
from posenet_train.sfm.frames import FrameSelection, extract_frames, open_source
from posenet_train.sfm.pipeline import (
    COMPLETE_MARKER,
    REPORT,
    STEPS,
    SfmWarning,
    compute_transform,
    export_dataset,
    main,
    split_by_time_blocks,
)
from posenet_train.sfm.reconstruct import (
    CameraIntrinsics,
    SfmOptions,
    extract_and_match,
    map_with_fallback,
    run_mapping,
)
from posenet_train.sfm.reference import ReferenceOptions

__all__ = [
    "COMPLETE_MARKER",
    "REPORT",
    "STEPS",
    "CameraIntrinsics",
    "FrameSelection",
    "ReferenceOptions",
    "SfmError",
    "SfmOptions",
    "SfmWarning",
    "Similarity",
    "compute_transform",
    "export_dataset",
    "extract_and_match",
    "extract_frames",
    "fit_similarity_robust",
    "interpolate_poses",
    "main",
    "map_with_fallback",
    "open_source",
    "run_mapping",
    "split_by_time_blocks",
    "umeyama",
]
