"""The library's one rule no single module's tests can see: it imports neither ROS nor torch."""

import subprocess
import sys

import pytest

FORBIDDEN = ("rclpy", "torch", "torchvision", "posenet_ros", "posenet_train")


@pytest.mark.parametrize("module", ["posenet_core"])
def test_import_pulls_in_no_ros_and_no_torch(module):
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        "import pkgutil, posenet_core\n"
        "for info in pkgutil.walk_packages(posenet_core.__path__, 'posenet_core.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"posenet_core imported {result.stdout.strip()}"
