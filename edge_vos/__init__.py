"""edge-vos: real-time video object segmentation for edge devices.

Data flows one way: source -> tracker (encoders, memory, readout, decoder) -> publisher.
`model/` and `readout/` are pure tensor code; `tracker/` composes them into a streaming step();
`service/` wires sources, the tracker and ZeroMQ together and never looks inside tensors.
"""

__version__ = "0.1.0"
