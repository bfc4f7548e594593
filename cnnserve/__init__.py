"""cnnserve: train CNNs in PyTorch, serve them over the Open Inference Protocol on ONNX Runtime."""

__version__ = "0.1.0"
