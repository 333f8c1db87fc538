# mypy shim: the `tensorrt-stubs` wheel puts the TensorRT 10 API in tensorrt_bindings/tensorrt.pyi; this
# package makes `import tensorrt` resolve to it. Installed by stubs/install_tensorrt_stubs.py.
from tensorrt_bindings.tensorrt import *  # noqa: F403

__version__: str
