"""Shared pytest set-up of posenet_core's tests: the middlebury_dino fixture, and this folder's
helper modules made importable."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dino import dino_dir  # noqa: E402


@pytest.fixture(scope="module")
def dino() -> Path:
    """The middlebury_dino dataset folder; the test is skipped where it is not present."""
    path = dino_dir()
    if not (path / "dataset_train.txt").is_file():
        pytest.skip(
            f"middlebury_dino not found at {path} (expected ../shared/datasets/middlebury_dino"
            " beside the repository, or set POSENET_DINO_DIR)"
        )
    return path
