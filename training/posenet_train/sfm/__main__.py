"""``python -m posenet_train.sfm``: see :mod:`posenet_train.sfm.cli`."""

import sys

from posenet_train.sfm.cli import cli

sys.exit(cli())
