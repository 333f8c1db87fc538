"""The streaming service: capture -> tracker -> ZeroMQ, a control channel, systemd integration.

Modules, one job each: config (ServiceConfig tree), sources (readers, capture thread, frame buffers),
protocol (wire format shared with clients), commands (validating untrusted requests), prompts (what each
frame prompts and the policy of commands that change tracking), inference (the thread that owns the
tracker), publisher and control (the threads that own the two sockets), pipeline (`Service`: wiring and
lifecycle), notify (sd_notify), metrics (Prometheus), security (CURVE), cli (`edge-vos run`).
Importing this package imports nothing heavy: clients use `protocol` without torch.
"""
