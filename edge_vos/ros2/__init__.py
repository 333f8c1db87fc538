"""ROS 2 without rclpy (docs/ros2.md): rosbag2 sources and recordings, and a live bridge over Cyclone DDS.

Nothing here is imported unless a `rosbag2:`/`ros2:` source, `publish.rosbag`, the `ros2:` section,
`edge-vos ros2-bridge` or `subscribe --rosbag` asks for it; rosbags and cyclonedds are the `ros2` extra.
"""
