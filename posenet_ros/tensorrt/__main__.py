"""``python -m posenet_ros.tensorrt``: the build_engine command."""

import sys

from posenet_ros.tensorrt.cli import cli

sys.exit(cli())
