"""posenet_core: what the node (posenet_ros) and the trainer (posenet_train) both need.

ROS-free and torch-free (numpy and transforms3d only), so that the node never imports torch, the
trainer never imports ROS, and neither repeats the other's pose conventions, dataset formats,
metrics or model-file contract.

How it ships: a pip package (``pip install ./core``: workstations without ROS, and the trainer),
and, for ROS 2 workspaces, installed by the ``posenet_ros`` CMake package beside its own Python
module. It is not a colcon package of its own because colcon does not look for packages inside a
package's folder, and the repository root is the ``posenet_ros`` package.
"""

__version__ = "0.1.0"
