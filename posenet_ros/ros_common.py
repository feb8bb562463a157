"""What the package's rclpy nodes share: QoS profiles and parameter descriptors."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

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


def shut_down_while_spinning(node: object | None) -> bool:
    """True when a RuntimeError out of spinning ``node`` means a SIGINT, not a real fault.

    rclpy's signal handler shuts the context down from another thread; an executor that is just
    building its wait set then raises RCLError ("the given context is not valid") instead of
    ExternalShutdownException. Seen in about one test run in a hundred.
    """
    context = getattr(node, "context", None)
    return context is not None and not context.ok()
