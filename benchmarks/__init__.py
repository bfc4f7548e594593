"""Every benchmark in one place: `cnnserve bench` (bench.py, with its load generators grpc_load.py and rest_load.py,
and in-process ONNX Runtime, in_process.py) and the measurement scripts run as `python benchmarks/NAME.py`.

The scripts import heavy or checkout-only packages (tritonclient, onnx, tests/); nothing imports them, so
`cnnserve bench` needs only the `cpu` extra. Only in_process.py may be imported from outside (the quantiser's gate).
"""
