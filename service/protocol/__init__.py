"""The protocol layer: RPC handlers, request decoding and validation, reply encoding, model descriptions."""
