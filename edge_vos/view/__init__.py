"""The live web view: see the stream with its masks in a browser and steer it (point-and-track).

A client of the public protocol only (edge_vos.client and the wire format), never of the tracker: the
same `ViewServer` runs inside the service (`edge-vos run --view`) and on another machine
(`edge-vos view --masks ... --control ...`). Modules: config (ViewConfig), feed (the ZeroMQ threads),
server (aiohttp: page, API, WebSocket), cli (`edge-vos view`), static/ (the page: HTML, JS, CSS).
"""
