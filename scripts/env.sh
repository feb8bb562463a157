# Source me: the venv, the ROS 2 underlay (system or wheels) and this package's install space.
_posenet_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n "${ROS_DISTRO:-}" && -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]]; then
  # shellcheck disable=SC1090
  source "/opt/ros/${ROS_DISTRO}/setup.bash"
fi
# shellcheck disable=SC1091
source "$_posenet_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_posenet_root/install/posenet_ros:${AMENT_PREFIX_PATH:-$VIRTUAL_ENV}"
# shellcheck disable=SC1091
source "$_posenet_root/install/posenet_ros/share/posenet_ros/local_setup.bash" 2>/dev/null || true
export PATH="$_posenet_root/install/posenet_ros/lib/posenet_ros:$PATH"
unset _posenet_root
