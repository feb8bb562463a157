"""posenet_core: what the node (posenet_ros) and the trainer (posenet_train) both need.

ROS-free and torch-free (numpy; transforms3d is declared too), so that the node never imports
torch, the trainer never imports ROS, and neither repeats the other's pose conventions, dataset
formats, metrics or model-file contract. Two optional dependencies are imported only inside the
functions that need them: OpenCV (``images.read_rgb``, ``preprocess.resize_shorter``) and
matplotlib (``plots``).

Modules:

- ``errors``: PoseNetError, the base of every deliberate error of the project, and the shared
  types (InvalidPoseError, DatasetError, ModelFileError, PreprocessError, ...);
- ``geometry``: the ``T_world_camera`` convention, quaternions (single and batched), pose
  matrices, the Cambridge convention, projection; ``covariance``: pose covariance, extrinsics,
  the base pose;
- ``datasets``: Cambridge Landmarks, 7-Scenes, intrinsics.json, poses_{split}.csv, format
  detection; ``images``: image files as RGB arrays;
- ``metrics``: errors, thresholds, summary statistics; ``matching``: estimates matched to
  ground truth by stamp; ``plots``: the error plots both evaluations draw;
- ``contract``: the model file's ``posenet.*`` metadata (read and written);
  ``calibration``: the INT8 calibration images beside it; ``preprocess``: the resize, centre
  crop and /255 the contract defines;
- ``files``, ``cli``, ``checks``: small helpers of the tools (JSON files, argparse types,
  running main(), range checks of option dataclasses).

How it ships: a pip package (``pip install ./core``: workstations without ROS, and the trainer),
and, for ROS 2 workspaces, installed by the ``posenet_ros`` CMake package beside its own Python
module. It is not a colcon package of its own because colcon does not look for packages inside a
package's folder, and the repository root is the ``posenet_ros`` package.
"""

__version__ = "0.1.0"
