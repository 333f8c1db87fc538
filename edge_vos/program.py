"""Where `edge-vos run` wires the program: the service, its web view as a client of the service's own
sockets, and, when configured, ROS 2 (edge_vos/ros2: `rosbag2:`/`ros2:` sources, the `publish.rosbag`
recording and the DDS bridge, attached to the service as a `PublishHook`). The service knows nothing of
the view (it serves any client the same way); the view knows the
service only through the wire protocol (edge_vos/wire). This module, in the CLI layer above both, is the
one place that configures, starts and stops them together.

Its config, `RunConfig` (run_config.py, torch-free), is a service config plus the `view:` and `ros2:`
sections, so one YAML (configs/*.yaml) describes them all.
"""

from __future__ import annotations

from typing import Any

from edge_vos.run_config import RunConfig
from edge_vos.service.pipeline import PublishHook, Service
from edge_vos.service.sources import source_kind
from edge_vos.view.server import ViewServer


class Program:
    """The service and, when `view.listen` is set, its view: built, started and stopped together.
    `service_options` go to `Service` (tests inject a fake tracker or reader)."""

    def __init__(self, config: RunConfig, **service_options: Any) -> None:
        self.config = config
        given = dict(service_options.pop("readers", None) or {})
        if service_options.get("reader") is None:
            for stream in config.stream_configs:
                if stream.id not in given and source_kind(stream.source.uri) in ("rosbag2", "ros2"):
                    from edge_vos.ros2.uri import open_source  # rosbags / cyclonedds load only for these sources

                    given[stream.id] = open_source(stream.source)
        service_options["readers"] = given
        hooks: list[PublishHook] = []
        if config.publish.rosbag or config.ros2.enabled:  # ROS 2 packages load only when configured
            from edge_vos.ros2.service_hooks import ServiceRos2

            hooks.append(ServiceRos2(config, config.ros2))
        self.service = Service(config, hooks=hooks, **service_options)  # the slow part: reader, keys, tracker
        self.view: ViewServer | None = None

    def start(self) -> None:
        """Binds the service's sockets and starts its threads, then the view on the bound endpoints; raises
        (ConfigError for an address in use) with nothing left running."""
        self.service.start()
        cfg = self.config
        if not cfg.view.enabled:
            return
        control = self.service.control
        try:
            self.view = ViewServer.for_service(cfg.view, self.service.publisher.last_endpoint,
                                               control.last_endpoint if control else "",
                                               cfg.security.server_secret_key if cfg.security.curve else "")
            self.view.start()
        except BaseException:
            self.stop()
            raise

    def request_stop(self) -> None:
        """Safe from signal handlers."""
        self.service.request_stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self.service.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """The view first (it is the service's client), then the service."""
        if self.view is not None:
            self.view.stop()
        self.service.stop(timeout)


__all__ = ["Program", "RunConfig"]
