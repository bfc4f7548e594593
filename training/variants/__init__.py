"""The quantisation path: variants of a published classifier (INT8, FP16), calibrated and gated on images from one
seeded split, published beside their source; `cnnserve quantize` (cli.py). Torch-free: it runs on the cpu extra."""
