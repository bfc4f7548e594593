"""The SDK's sans-I/O core: every operation's requests and the reading of their replies, written once as plain
functions and data, with no channel and no event loop (import-linter keeps grpc out).

operations.py  Operations: each operation as a plan (steps.py) that yields the calls it needs, and the caches
steps.py       what a plan yields: Call (one RPC), a tuple of Calls (sent together), Work (blocking local work)
tensors.py     numpy arrays <-> ModelInferRequest / ModelInferResponse (the contracts' datatypes, the BYTES codec)
hints.py       what a model's ModelConfig tells clients: preprocessing, the image input, whether it takes files
server.py      health and the repository index as plain data
classify.py  generate.py  segment.py  stylize.py  explain.py   one module per kind of operation

client.client.Client and client.aio_client.AsyncClient drive the plans: blocking, or with awaits.
"""
