"""The node's covariance, base-pose and gating parameters, in-process (no DDS traffic): what is
accepted at run time, what is refused, and what reaches the gate on the next frame."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from posenet_ros import node as node_module  # noqa: E402

from model_factory import make_test_model  # noqa: E402


@pytest.fixture
def make_node(tmp_path):
    contexts, nodes = [], []

    def make(uncertainty=None, **params):
        model = make_test_model(str(tmp_path / f"m{len(nodes)}.onnx"), uncertainty=uncertainty)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=0)
        contexts.append(context)
        overrides = [Parameter("model_path", value=model)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        n = node_module.RelocalizerNode(
            context=context, parameter_overrides=overrides, start_parameter_services=False
        )
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.destroy_node()
    for context in contexts:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize(
    "uncertainty, params, source",
    [
        ("diagonal", {}, "model output 'log_variance'"),
        ("diagonal", {"use_model_covariance": False}, "parameters"),
        (None, {}, "parameters"),
    ],
)
def test_covariance_source(make_node, uncertainty, params, source):
    n = make_node(uncertainty=uncertainty, **params)
    assert n._covariance_source.startswith(source)


@pytest.mark.parametrize(
    "name, value",
    [
        ("max_speed_m_s", -1.0),
        ("max_position_stddev_m", -0.1),
        ("speed_gate_max_rejections", -1),
        ("model_covariance_scale", 0.0),
        ("position_variance_m2", [0.1, 0.0, 0.1]),
    ],
)
def test_bad_values_are_refused_at_run_time(make_node, name, value):
    n = make_node()
    before = n.get_parameter(name).value
    (result,) = n.set_parameters([Parameter(name, value=value)])
    assert not result.successful
    assert name in result.reason or "range" in result.reason
    assert n.get_parameter(name).value == before


@pytest.mark.parametrize(
    "name, value",
    [
        ("base_frame", "base_link"),
        ("camera_to_base_translation_m", [0.0, 0.1, 0.0]),
        ("camera_to_base_quat_xyzw", [0.0, 0.0, 0.0, 1.0]),
    ],
)
def test_base_pose_parameters_are_read_only(make_node, name, value):
    (result,) = make_node().set_parameters([Parameter(name, value=value)])
    assert not result.successful and "read-only" in result.reason


def test_gate_and_covariance_changes_apply_on_the_next_frame(make_node):
    n = make_node(uncertainty="diagonal")
    assert not n._gate.config.any_enabled
    results = n.set_parameters(
        [
            Parameter("max_speed_m_s", value=2.0),
            Parameter("speed_gate_max_rejections", value=4),
            Parameter("use_model_covariance", value=False),
            Parameter("model_covariance_scale", value=2.5),
        ]
    )
    assert all(r.successful for r in results)
    assert n._params_dirty
    n._apply_dynamic_parameters()  # what the worker does before its next frame
    assert n._gate.config.max_speed_m_s == 2.0
    assert n._gate.config.speed_gate_max_rejections == 4
    assert not n._use_model_covariance and n._model_covariance_scale == 2.5
    assert n._covariance_source.startswith("parameters")
