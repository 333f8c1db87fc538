"""The streaming service: capture -> tracker -> ZeroMQ, a control channel, systemd integration.

Modules, one job each: config (ServiceConfig tree), sources (readers, capture thread, frame buffers),
protocol (wire format shared with clients), commands (validating untrusted requests), publisher and
control (the threads that own the two sockets), pipeline (the inference thread and the lifecycle),
notify (sd_notify), metrics (Prometheus), security (CURVE), cli (`edge-vos run`), fakes (test doubles).
Importing this package imports nothing heavy: clients use `protocol` without torch.
"""
