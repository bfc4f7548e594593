"""Training side of cnnserve: one package per kind of model (classifier/, gan/, segmenter/, style/), found by the
registry (kinds.py) that the CLI and the defaults iterate; beside them the shared pieces (options, runs, data, ONNX
export with its parity check, publishing, report cards, plots) and the quantisation path (variants/).

Torch is imported by the jobs when they run, never by the registry; never grpc. The server reads only what this
package writes into a model repository.
"""
