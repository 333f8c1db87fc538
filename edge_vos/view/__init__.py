"""The live web view: see the stream with its masks in a browser and steer it (point-and-track).

A client of the public protocol only (edge_vos.client and the wire format), never of the tracker: the
same `ViewServer` runs inside the service (`edge-vos run --view`) and on another machine
(`edge-vos view --masks ... --control ...`). Modules: config (ViewConfig), feed (the SUB socket's thread:
the newest frame and the stream's state), commands (the control socket's thread), server (ViewServer:
aiohttp in its own thread, the page and the API), viewers (the WebSocket viewers and their flow control),
guard (tokens, origins, hosts, the connection cap), cli (`edge-vos view`), static/ (the page).
"""
