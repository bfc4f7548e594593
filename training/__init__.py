"""Training side of cnnserve: data, PyTorch models, training loops, ONNX export and model-repository publishing.

Imports torch; never grpc. The server reads only what this package writes into a model repository.
"""
