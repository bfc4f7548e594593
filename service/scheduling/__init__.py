"""Admission and dynamic batching: no transport, no ONNX Runtime."""
