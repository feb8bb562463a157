"""An outside ROS 2 client of the relocalizer, written the way a user of the package would.

It imports nothing from this repository. It writes its own model file with `onnx`, following the
model-file contract in the README (position = the image's mean colour, so every frame has one
known answer), starts the node with the README's "without ros2 launch" command (the shipped
parameters; only model_path set), sends 640x480 frames in four encodings and checks that each one
comes back on `pose` and on `/tf` as map -> posenet_camera_optical with the frame's stamp and the
pose's values. Exit code 0 when every frame was answered, 1 otherwise.

    source scripts/env.sh && python test/outside_client.py      # from the repository root

test_outside_client.py runs it in its own ROS domain.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import rclpy
from geometry_msgs.msg import PoseStamped
from onnx import TensorProto, helper
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from tf2_msgs.msg import TFMessage

HEIGHT, WIDTH = 480, 640
RGB = (200, 40, 120)  # the colour sent; position = RGB / 255
GRAY = 90  # mono8 frames: position = (GRAY, GRAY, GRAY) / 255
QUAT_WXYZ = (0.5, 0.5, -0.5, 0.5)
TIMEOUT_S = 60.0


def write_model(path: Path) -> None:
    """A contract model: input [1,3,120,160] RGB 0..1; position = mean per channel."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 120, 160])
    position = helper.make_tensor_value_info("position", TensorProto.FLOAT, [1, 3])
    orientation = helper.make_tensor_value_info("orientation", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["position"], axes=[2, 3], keepdims=0),
        helper.make_node(
            "Constant",
            [],
            ["orientation"],
            value=helper.make_tensor("q", TensorProto.FLOAT, [1, 4], list(QUAT_WXYZ)),
        ),
    ]
    graph = helper.make_graph(nodes, "mean_colour", [image], [position, orientation])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {
        "posenet.format": "1",
        "posenet.input": "image",
        "posenet.outputs": "position,orientation",
        "posenet.input_size": "120,160",
        "posenet.resize": "120",
        "posenet.scene_frame": "map",
        "posenet.architecture": "outside-client-mean-colour",
    }
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def frame(encoding: str, stamp_ns: int) -> tuple[Image, np.ndarray]:
    """A solid 640x480 frame in ``encoding`` and the position the model must answer."""
    channels = {"rgb8": RGB, "bgr8": RGB[::-1], "rgba8": (*RGB, 255), "mono8": (GRAY,)}[encoding]
    pixels = np.broadcast_to(np.array(channels, np.uint8), (HEIGHT, WIDTH, len(channels)))
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "outside_camera"
    msg.height, msg.width, msg.encoding = HEIGHT, WIDTH, encoding
    msg.step = WIDTH * len(channels)
    msg.data = pixels.tobytes()
    rgb = (GRAY,) * 3 if encoding == "mono8" else RGB
    return msg, np.array(rgb) / 255.0


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def check(encoding: str, expected: np.ndarray, pose: PoseStamped, tf: TFMessage) -> str:
    """Empty string when the pose and its transform are right, else what is wrong."""
    (t,) = tf.transforms
    p, q = pose.pose.position, pose.pose.orientation
    position = np.array([p.x, p.y, p.z])
    if not np.allclose(position, expected, atol=2e-3):
        return f"{encoding}: position {position}, expected {expected}"
    if not np.allclose([q.w, q.x, q.y, q.z], QUAT_WXYZ, atol=1e-6):
        return f"{encoding}: orientation {q}"
    if (t.header.frame_id, t.child_frame_id) != ("map", "posenet_camera_optical"):
        return f"{encoding}: /tf is {t.header.frame_id} -> {t.child_frame_id}"
    tr, rot = t.transform.translation, t.transform.rotation
    if [tr.x, tr.y, tr.z, rot.x, rot.y, rot.z, rot.w] != [p.x, p.y, p.z, q.x, q.y, q.z, q.w]:
        return f"{encoding}: /tf {t.transform} differs from the pose {pose.pose}"
    return ""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "outside.onnx"
        write_model(model)
        # The README's command, as written (run from the repository root).
        node_proc = subprocess.Popen(
            [
                "relocalizer", "--ros-args", "--params-file", "config/relocalize.yaml",
                "-p", f"model_path:={model}", "-r", "image:=/camera/color/image_raw",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        rclpy.init()
        client = Node("outside_client")
        poses: list[PoseStamped] = []
        tfs: list[TFMessage] = []
        pub = client.create_publisher(Image, "/camera/color/image_raw", qos_profile_sensor_data)
        client.create_subscription(PoseStamped, "/pose", poses.append, 10)
        client.create_subscription(TFMessage, "/tf", tfs.append, 100)
        failures = []
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
                rclpy.spin_once(client, timeout_sec=0.1)
            for encoding in ("rgb8", "bgr8", "rgba8", "mono8"):
                msg, expected = frame(encoding, client.get_clock().now().nanoseconds)
                ns = stamp_ns(msg.header)
                pose = tf = None
                next_send, sent = 0.0, 0
                while (pose is None or tf is None) and time.monotonic() < deadline:
                    if time.monotonic() >= next_send:  # best effort: resend until answered
                        pub.publish(msg)
                        sent += 1
                        next_send = time.monotonic() + 1.0
                    rclpy.spin_once(client, timeout_sec=0.05)
                    pose = next((m for m in poses if stamp_ns(m.header) == ns), None)
                    tf = next((m for m in tfs if stamp_ns(m.transforms[0].header) == ns), None)
                if pose is None or tf is None:
                    failures.append(f"{encoding}: pose {pose is not None}, /tf {tf is not None}")
                    continue
                problem = check(encoding, expected, pose, tf)
                failures += [problem] if problem else []
                print(f"{encoding}: pose and /tf received after {sent} send(s)")
        finally:
            client.destroy_node()
            rclpy.shutdown()
            if node_proc.poll() is None:
                node_proc.send_signal(signal.SIGINT)
            try:
                output, _ = node_proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                output, _ = node_proc.communicate()
        if failures or node_proc.returncode != 0:
            print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
            print(f"relocalizer exited {node_proc.returncode}:\n{output}", file=sys.stderr)
            return 1
        print("outside client: every frame answered on pose and /tf")
        return 0


if __name__ == "__main__":
    sys.exit(main())
