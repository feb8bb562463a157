#!/usr/bin/env bash
# The whole test suite plus lint, on a fresh machine or an existing checkout:
#   set-up (venv, pip, tf2_msgs with the wheels, colcon build) -> ruff -> pytest (node + trainer).
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
