"""posenet_train: turn images of a scene into a posenet_ros model file."""
