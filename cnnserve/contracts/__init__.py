"""Contracts that training, serving and the client share, each defined once; no torch, no onnxruntime."""
