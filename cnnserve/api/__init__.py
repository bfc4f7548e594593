"""Generated protobuf and gRPC stubs for the Open Inference Protocol (from proto/grpc_service.proto; `make protos`)."""
