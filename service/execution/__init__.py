"""Running models: ONNX Runtime sessions, their worker threads, image codecs."""
