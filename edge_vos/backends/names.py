"""The backend names a config may give (torch-free: config modules import it)."""

BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt", "torch_tensorrt")
