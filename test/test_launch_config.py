"""The launch file, the params YAML and the node's declared parameters agree.

`ros2 launch` is not installable here; the launch file is checked for what it declares and
passes, and the node is started with the YAML by the process tests (what launch does).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "relocalize.launch.py"
PARAMS = ROOT / "config" / "relocalize.yaml"
RCLPY_BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}
LAUNCH_ARGUMENTS = {
    "params_file",
    "model_path",
    "image_topic",
    "use_compressed",
    "namespace",
    "rviz",
    "log_level",
    "map_path",
    "camera_info_topic",
}


def declared_launch_arguments() -> set[str]:
    tree = ast.parse(LAUNCH.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            names.add(node.args[0].value)
    return names


def test_launch_declares_exactly_the_documented_arguments():
    assert declared_launch_arguments() == LAUNCH_ARGUMENTS


def test_params_yaml_is_one_wildcard_block():
    data = yaml.safe_load(PARAMS.read_text())
    assert list(data) == ["/**"]
    assert set(data["/**"]) == {"ros__parameters"}


def test_params_yaml_names_every_declared_parameter_and_nothing_else(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from posenet_ros import node as node_module

    from model_factory import make_test_model

    model = make_test_model(str(tmp_path / "m.onnx"))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=0)
    try:
        n = node_module.RelocalizerNode(
            context=context,
            parameter_overrides=[rclpy.parameter.Parameter("model_path", value=model)],
            start_parameter_services=False,
        )
        declared = set(n._parameters) - RCLPY_BUILTIN_PARAMETERS
        n.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    in_yaml = set(_flatten(yaml.safe_load(PARAMS.read_text())["/**"]["ros__parameters"]))
    assert declared == in_yaml
    # Every parameter is commented in the YAML (a nested one by its last name part).
    lines = PARAMS.read_text().splitlines()
    for name in in_yaml:
        leaf = name.rsplit(".", 1)[-1]
        i = next(k for k, line in enumerate(lines) if line.strip().startswith(leaf + ":"))
        assert lines[i - 1].strip().startswith("#"), f"{name} has no comment above it"


def _flatten(tree: dict, prefix: str = "") -> dict:
    """rcl's reading of nested YAML keys: {"refine": {"rate_hz": 5}} -> {"refine.rate_hz": 5}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat
