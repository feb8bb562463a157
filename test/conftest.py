"""Shared pytest set-up for the node's tests: helper modules in this folder are importable."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
