# Source me: the venv, the ROS 2 underlay (system or wheels), this package's install space and
# the Fast DDS profile for camera images.
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
# Fast DDS's default 512 KiB shared-memory segment loses most full-size camera frames, and only
# the sending process can fix it (see config/fastdds_large_images.xml): every process started
# from this shell (a camera driver, dataset_player) gets the larger segment unless you chose a
# profile yourself.
if [[ -z "${FASTRTPS_DEFAULT_PROFILES_FILE:-}${FASTDDS_DEFAULT_PROFILES_FILE:-}" ]]; then
  export FASTRTPS_DEFAULT_PROFILES_FILE="$_posenet_root/config/fastdds_large_images.xml"
fi
unset _posenet_root
