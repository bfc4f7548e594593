"""Measure a published generator from outside, as a user would see it: its ONNX file run by ONNX Runtime on 1,000
seeded latents (scaled by --truncation), judged by a classifier's ONNX file. Prints the report card's figures.

    .venv/bin/python scripts/gan_quality.py model_repository/cdcgan_digits/1/model.onnx \
        --judge model_repository/digits_cnn/1/model.onnx [--truncation 0.8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cnnserve.training.data import DIGITS, load_dataset
from cnnserve.training.gan.evaluation import GanEvaluator, Sampler, real_fid_floor
from cnnserve.training.gan.judge import Judge

NATIVE_SIZE = 8  # the digits' own resolution


def onnx_sampler(path: Path) -> tuple[Sampler, bool, int]:
    """(latent, classes) -> images from the ONNX file; whether it takes a class; its latent size."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def sample(latent: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        feed = {names[0]: latent.numpy().astype(np.float32)}
        if classes is not None:
            feed[names[1]] = classes.numpy().astype(np.int64)
        return torch.from_numpy(session.run(None, feed)[0])

    return sample, len(names) > 1, int(session.get_inputs()[0].shape[1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the generator's model.onnx")
    parser.add_argument("--judge", type=Path, required=True, help="the classifier's model.onnx")
    parser.add_argument("--truncation", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1, help="latent seed (the training report uses seed + 1 = 1)")
    args = parser.parse_args(argv)
    judge = Judge(args.judge)
    split = load_dataset(DIGITS, judge.shape[-1] or 16)
    sample, conditional, latent_dim = onnx_sampler(args.model)
    evaluator = GanEvaluator(
        judge, split.train, NATIVE_SIZE, len(split.classes), conditional, latent_dim, args.truncation
    )
    evaluation = evaluator(sample, args.seed)
    figures = {c.name: c.value for c in evaluation.checks} | evaluation.metrics
    figures["real_fid"] = round(real_fid_floor(judge, split.train, split.val), 3)
    print(json.dumps({"model": str(args.model), **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
