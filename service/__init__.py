"""The cnnserve inference server: Open Inference Protocol (KServe v2) over gRPC on ONNX Runtime. No torch.."""
