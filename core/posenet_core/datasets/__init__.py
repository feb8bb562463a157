"""Dataset formats: every reader converts once into :class:`PoseRecord` (``T_world_camera``).

- ``cambridge``: ``dataset_train.txt`` / ``dataset_test.txt`` (:mod:`.cambridge`; also written);
- ``7scenes``: ``TrainSplit.txt`` / ``TestSplit.txt`` and ``seq-XX`` folders (:mod:`.sevenscenes`);
- beside either: ``poses_{split}.csv`` (:mod:`.poses_csv`), read by :func:`read_dataset`;
- the camera (:mod:`.intrinsics`): the format's own, ``intrinsics.json``, ``dino_par.txt`` or a
  published calibration, found by :func:`find_intrinsics` / :func:`dataset_intrinsics` (what
  the player, the map builder and evaluation all use).

:func:`load_split` / :func:`read_dataset` detect the format from the folder's contents (see
:mod:`.formats`; the trainer passes its longer list, with COLMAP). The images themselves are read
with :func:`posenet_core.images.read_rgb`. Every malformed input raises DatasetError naming the
file, the line and the value.
"""

from posenet_core.datasets.cambridge import read_cambridge_file, write_cambridge
from posenet_core.datasets.common import SPLITS, PoseRecord, check_split
from posenet_core.datasets.formats import (
    CAMBRIDGE,
    FORMATS,
    SEVENSCENES,
    DatasetFormat,
    DatasetSplit,
    dataset_intrinsics,
    detect_format,
    find_intrinsics,
    load_split,
    parse_dataset_spec,
    read_dataset,
)
from posenet_core.datasets.intrinsics import (
    INTRINSICS_FILE,
    CameraIntrinsics,
    read_intrinsics,
    read_middlebury_intrinsics,
)
from posenet_core.datasets.poses_csv import POSES_CSV_COLUMNS, read_poses_csv
from posenet_core.datasets.sevenscenes import read_pose_file

__all__ = [
    "CAMBRIDGE",
    "FORMATS",
    "INTRINSICS_FILE",
    "POSES_CSV_COLUMNS",
    "SEVENSCENES",
    "SPLITS",
    "CameraIntrinsics",
    "DatasetFormat",
    "DatasetSplit",
    "PoseRecord",
    "check_split",
    "dataset_intrinsics",
    "detect_format",
    "find_intrinsics",
    "load_split",
    "parse_dataset_spec",
    "read_cambridge_file",
    "read_dataset",
    "read_intrinsics",
    "read_middlebury_intrinsics",
    "read_pose_file",
    "read_poses_csv",
    "write_cambridge",
]
