"""Point the CMake exports of ROS 2's PyPI wheels at this venv's Python and numpy headers.

The wheels are built in a manylinux container whose interpreter lives in /opt/python/cp311-cp311;
their exported ``*.cmake`` files name that interpreter's include folders, which do not exist on a
user's machine, so building any ``.msg`` package against them fails. Usage: ``python
fix_ros_wheel_cmake.py VENV``; with ``--numpy-link VENV`` it only prints the link below.
Idempotent.

numpy's headers are named through a link outside the repository: the venv lives in the source
tree (``.venv``), and CMake refuses to export a target whose include path lies inside the source
directory ("... which is prefixed in the source directory").
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
from pathlib import Path

import numpy

BUILD_PREFIX = re.compile(r"/opt/python/cp3\d+-cp3\d+")


def numpy_include_outside_tree(venv: Path) -> str:
    """A link to this venv's numpy headers in the user's cache, one per venv."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "posenet_ros"
    key = hashlib.sha256(str(venv.resolve()).encode()).hexdigest()[:16]
    link = cache / f"numpy-include-{key}"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(numpy.get_include(), target_is_directory=True)
    return str(link)


def fix(venv: Path) -> int:
    """Rewrite the foreign include paths under ``venv/share``; returns how many files changed."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy_include_outside_tree(venv)
    changed = 0
    for path in (venv / "share").rglob("*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text and "numpy/_core/include" not in text:
            continue
        new = re.sub(BUILD_PREFIX.pattern + r"/include/python3\.\d+", python_include, text)
        new = re.sub(
            r"[^\";) ]*/site-packages/numpy/_core/include",
            numpy_include,
            new,
        )
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--numpy-link":
        print(numpy_include_outside_tree(Path(sys.argv[2])))
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit("usage: fix_ros_wheel_cmake.py [--numpy-link] VENV")
    print(f"rewrote {fix(Path(sys.argv[1]))} CMake file(s)")
