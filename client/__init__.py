"""cnnserve client: a small SDK and CLI over the Open Inference Protocol (grpcio, numpy, Pillow)."""
