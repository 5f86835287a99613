"""Shipping a model: ONNX/TorchScript export checked against eager (`export`), latency and size (`bench`).

Submodules are imported lazily by their callers because onnx/onnxruntime are optional extras.
"""

__all__: list[str] = []
