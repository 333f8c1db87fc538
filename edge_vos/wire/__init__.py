"""What the service and its clients (client.py, the web view, `edge-vos ctl`/`subscribe`) say to each other:
the wire format of the mask stream (`protocol`) and the client side of CURVE (`curve`). It sits below both,
so neither imports the other to speak; it imports no torch and nothing of the tracker."""
