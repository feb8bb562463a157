"""Start the posenet_ros relocalizer (and optionally RViz).

    ros2 launch posenet_ros relocalize.launch.py model_path:=/path/model.onnx \
        image_topic:=/camera/color/image_raw [map_path:=/path/site.map.npz]

Every node parameter lives in one file (params_file, default config/relocalize.yaml); this file
only overrides model_path, map_path and use_compressed when they are given on the command line.
What it starts is exactly `relocalizer --ros-args --params-file PARAMS -p ... -r image:=TOPIC
-r camera_info:=INFO_TOPIC`, which the test suite runs directly. INFO_TOPIC defaults to the image
topic's sibling `camera_info` (image_transport's convention: /camera/image_raw ->
/camera/camera_info).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def _relocalizer(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {}
    for name in ("model_path", "map_path"):
        if value(name):
            overrides[name] = value(name)
    if value("use_compressed"):
        overrides["use_compressed"] = value("use_compressed").lower() in ("true", "1", "yes")
    image_topic = value("image_topic")
    camera_info_topic = value("camera_info_topic") or (
        image_topic.rsplit("/", 1)[0] + "/camera_info" if "/" in image_topic else "camera_info"
    )
    return [
        Node(
            package="posenet_ros",
            executable="relocalizer",
            name="relocalizer",
            namespace=value("namespace"),
            output="screen",
            parameters=[value("params_file"), overrides],
            remappings=[
                ("image", image_topic),
                ("image/compressed", image_topic + "/compressed"),
                ("camera_info", camera_info_topic),
            ],
            arguments=["--ros-args", "--log-level", value("log_level")],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("posenet_ros")
    actions = []
    if "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ:
        # Fast DDS's default 512 KiB shared-memory segment loses most full-size camera frames
        # on a best-effort subscription (see the XML file).
        actions.append(
            SetEnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                os.path.join(share, "config", "fastdds_large_images.xml"),
            )
        )
    return LaunchDescription(
        actions
        + [
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "relocalize.yaml"),
                description="YAML file with every relocalizer parameter",
            ),
            DeclareLaunchArgument(
                "model_path",
                default_value="",
                description="PoseNet .onnx model file (overrides params_file when given)",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="/camera/image_raw",
                description="Camera image topic; with use_compressed, TOPIC/compressed is used",
            ),
            DeclareLaunchArgument(
                "map_path",
                default_value="",
                description="Map file (.npz) of the site: turns pose refinement on (overrides "
                "params_file when given)",
            ),
            DeclareLaunchArgument(
                "camera_info_topic",
                default_value="",
                description="CameraInfo topic for refinement; empty: image_topic's sibling "
                "camera_info",
            ),
            DeclareLaunchArgument(
                "use_compressed",
                default_value="",
                description="true: subscribe to CompressedImage (overrides params_file)",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
            DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz"),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="debug, info, warn, error or fatal"
            ),
            OpaqueFunction(function=_relocalizer),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", os.path.join(share, "config", "relocalize.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
