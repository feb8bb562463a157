"""What the package's rclpy nodes share: QoS profiles, parameter descriptors, and the start-up /
spin / shut-down skeleton of the tool nodes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from posenet_ros.errors import PoseNetError

# Camera images: sensor-data semantics (best effort, volatile) with depth 1, so only the newest
# frame is ever kept; a reliable publisher would also match but stall on slow readers.
CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)


def reliable_qos(depth: int) -> QoSProfile:
    """Reliable, volatile, keep-last ``depth``: poses, TF, diagnostics, ground truth."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def descriptor(
    description: str,
    kind: int,
    *,
    read_only: bool = False,
    float_range: tuple[float, float] | None = None,
    int_range: tuple[int, int] | None = None,
    constraints: str = "",
) -> ParameterDescriptor:
    """A ParameterDescriptor with its description, type, optional range and constraints."""
    d = ParameterDescriptor(
        description=description,
        type=kind,
        read_only=read_only,
        additional_constraints=constraints,
    )
    if float_range is not None:
        d.floating_point_range = [
            FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)
        ]
    if int_range is not None:
        d.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return d


def declare_checked(
    node: Node,
    parameters: list[tuple[str, Any, ParameterDescriptor]],
    check: Callable[[dict], str],
) -> dict:
    """Declare ``parameters`` ((name, default, descriptor) each) on ``node`` and return their
    values by name; PoseNetError with ``check``'s reason when it returns one ("" = valid)."""
    for name, default, parameter_descriptor in parameters:
        node.declare_parameter(name, default, parameter_descriptor)
    values = {name: node.get_parameter(name).value for name, _, _ in parameters}
    reason = check(values)
    if reason:
        raise PoseNetError(reason)
    return values


def shut_down_while_spinning(node: object | None) -> bool:
    """True when a RuntimeError out of spinning ``node`` means a SIGINT, not a real fault.

    rclpy's signal handler shuts the context down from another thread; an executor that is just
    building its wait set then raises RCLError ("the given context is not valid") instead of
    ExternalShutdownException. Seen in about one test run in a hundred.
    """
    context = getattr(node, "context", None)
    return context is not None and not context.ok()


EXIT_STARTUP_FAILURE = 2


def spin_until_stopped(node: Node, future: Future) -> None:
    """Spin ``node`` until ``future`` is done; a SIGINT or an external shutdown ends it quietly."""
    try:
        rclpy.spin_until_future_complete(node, future)
    except (KeyboardInterrupt, ExternalShutdownException):
        return
    except RuntimeError:
        if not shut_down_while_spinning(node):
            raise


def run_node(
    name: str,
    make_node: Callable[[], Node],
    run: Callable[[Node], int],
    *,
    double_example: str,
    args: list[str] | None = None,
) -> int:
    """The life of a tool node (dataset_player, pose_evaluator): rclpy up, the node made, ``run``
    (spin and finish; its result is the exit status), everything torn down.

    Malformed ``--ros-args``, a parameter of the wrong type (the message shows a double like
    ``double_example``) or a PoseNetError / ParameterException while making or running the node
    is one clear line and exit status 2.
    """
    try:
        rclpy.init(args=args if args is not None else sys.argv)
    except RuntimeError as e:  # rclpy's RCLError: malformed --ros-args
        print(f"{name}: cannot start: invalid --ros-args ({e})", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    made: list[Node] = []
    try:
        made.append(make_node())
        return run(made[0])
    except InvalidParameterTypeException as e:
        return _fatal(name, f"{e} (write doubles with a decimal point, e.g. {double_example})")
    except (PoseNetError, ParameterException) as e:
        return _fatal(name, str(e))
    finally:
        for node in made:
            node.destroy_node()
        rclpy.try_shutdown()


def _fatal(name: str, reason: str) -> int:
    rclpy.logging.get_logger(name).fatal(f"cannot start: {reason}")
    return EXIT_STARTUP_FAILURE
