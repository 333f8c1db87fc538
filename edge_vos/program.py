"""Where `edge-vos run` wires the program: the service, and its web view as a client of the service's own
sockets. The service knows nothing of the view (it serves any client the same way); the view knows the
service only through the wire protocol (edge_vos/wire). This module, in the CLI layer above both, is the
one place that configures, starts and stops them together.

A run config is a service config plus the `view:` section, so one YAML (configs/*.yaml) describes both,
and the checks between them (the page needs the preview JPEGs; CURVE needs the view's own client key) are
made here, once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_vos.config import ConfigError
from edge_vos.service.config import ServiceConfig
from edge_vos.service.pipeline import Service
from edge_vos.view.config import ViewConfig
from edge_vos.view.server import ViewServer


@dataclass
class RunConfig(ServiceConfig):
    # The live web page (edge_vos/view, docs/view.md); off unless `view.listen` is set (`run --view`).
    view: ViewConfig = field(default_factory=ViewConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.view.enabled and not self.publish.preview:
            raise ConfigError("publish.preview", "must be true when view.listen is set (the page shows the "
                                                 "preview frames; `run --view` turns it on)")
        if self.view.enabled and self.security.curve and not self.view.client_secret_key:
            raise ConfigError("view.client_secret_key", "is required with security.curve: the view is a ZeroMQ "
                                                        "client of the service (and must be on its allow-list)")


class Program:
    """The service and, when `view.listen` is set, its view: built, started and stopped together.
    `service_options` go to `Service` (tests inject a fake tracker or reader)."""

    def __init__(self, config: RunConfig, **service_options: Any) -> None:
        self.config = config
        self.service = Service(config, **service_options)  # the slow part: reader, keys, tracker, weights
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

