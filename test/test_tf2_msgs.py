"""tf2_msgs/msg/TFMessage as the node loads it is jazzy's type: same name, same RIHS01 hash.

With Jazzy's PyPI wheels, scripts/setup.sh builds tf2_msgs from underlay/tf2_msgs (no wheel
exists). Endpoints match by type name and type hash, so a different hash would leave /tf
invisible to tf2_ros, RViz and robot_localization. rosidl derives the hash from the definition
and the types it uses, so with jazzy's geometry_msgs the hash must be jazzy's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rclpy
from ament_index_python.packages import get_package_share_directory
from rclpy.node import Node
from tf2_msgs.msg import TFMessage

from ros_harness import next_domain_id

# What a ROS 2 Jazzy install generates for these types (the same values are listed, e.g., in
# copper-rs's cu_ros2_payloads/all_rihs.md, a table of Jazzy's type hashes).
JAZZY_HASHES = {
    "tf2_msgs/msg/TFMessage": (
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
    ),
    "geometry_msgs/msg/TransformStamped": (
        "RIHS01_0a241f87d04668d94099cbb5ba11691d5ad32c2f29682e4eb5653424bd275206"
    ),
}


def generated_hashes(package: str, message: str) -> dict[str, str]:
    """Type name -> RIHS01 hash of ``message`` and every type it uses, as rosidl generated them."""
    path = Path(get_package_share_directory(package)) / "msg" / f"{message}.json"
    if not path.exists():
        pytest.skip(f"{path} missing: this ROS 2 has no type hashes (Humble)")
    return {h["type_name"]: h["hash_string"] for h in json.loads(path.read_text())["type_hashes"]}


def test_tf_message_has_jazzys_type_hash():
    used = generated_hashes("geometry_msgs", "TransformStamped")
    if (
        used["geometry_msgs/msg/TransformStamped"]
        != JAZZY_HASHES["geometry_msgs/msg/TransformStamped"]
    ):
        pytest.skip("geometry_msgs is not jazzy's: TFMessage's hash differs with it")
    hashes = generated_hashes("tf2_msgs", "TFMessage")
    assert hashes["tf2_msgs/msg/TFMessage"] == JAZZY_HASHES["tf2_msgs/msg/TFMessage"]
    # TFMessage's description embeds the geometry_msgs types it uses, unchanged.
    for name, value in used.items():
        assert hashes[name] == value


def test_a_tf_publisher_announces_the_generated_hash():
    expected = generated_hashes("tf2_msgs", "TFMessage")["tf2_msgs/msg/TFMessage"]
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain_id())
    try:
        node = Node("tf_hash_probe", context=context, start_parameter_services=False)
        node.create_publisher(TFMessage, "/tf_hash_probe", 1)
        (info,) = node.get_publishers_info_by_topic("/tf_hash_probe")
        assert info.topic_type == "tf2_msgs/msg/TFMessage"
        assert str(info.topic_type_hash) == expected
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
