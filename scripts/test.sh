#!/usr/bin/env bash
# The whole test suite plus lint, on a fresh machine or an existing checkout:
#   set-up (venv, pip, colcon build) -> test-only interfaces -> ruff -> pytest (node + trainer).
# Extra arguments go to pytest, e.g. scripts/test.sh -k codec -x
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

scripts/setup.sh
# colcon's and ROS's setup files read unset variables: source them without `set -u`.
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u

# tf2_msgs is not obtainable from PyPI; a test-only copy of its one-line TFMessage is built into
# its own install space, never into install/posenet_ros.
echo "[test] building test-only interfaces (tf2_msgs/TFMessage)"
CMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH:-$VIRTUAL_ENV} colcon --log-base log build \
  --paths test/interfaces/tf2_msgs --build-base build/test_interfaces \
  --install-base install/test_interfaces --merge-install \
  --event-handlers console_direct- summary- status- \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" \
  -DPython3_NumPy_INCLUDE_DIR="$(python scripts/fix_ros_wheel_cmake.py --numpy-link "$VIRTUAL_ENV")" \
  >log/colcon-test-interfaces.txt 2>&1 \
  || { tail -40 log/colcon-test-interfaces.txt >&2; exit 1; }
set +u
# shellcheck disable=SC1091
source install/test_interfaces/local_setup.bash
set -u

echo "[test] ruff check + ruff format --check"
ruff check .
ruff format --check .

echo "[test] pytest"
# Localhost-only discovery: test processes never talk to other machines; each test that starts
# processes picks its own ROS_DOMAIN_ID on top of this.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export POSENET_REPO_ROOT=$ROOT
# `pytest`, not `python -m pytest`: the latter puts the source folder posenet_ros/ (which lacks the
# generated posenet_ros.msg) ahead of the install space on sys.path.
exec pytest core/tests test training/tests "$@"
