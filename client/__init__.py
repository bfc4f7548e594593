"""cnnserve client: a small SDK and CLI over the Open Inference Protocol (grpcio, numpy, Pillow): a sans-I/O core
(core/) and two shells that send what it asks, blocking (client.py) and asyncio (aio_client.py)."""
