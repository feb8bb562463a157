"""posenet_ros: PoseNet camera relocalization for ROS 2."""
