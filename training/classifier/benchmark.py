"""`cnnserve train benchmark-models`: a heavier CNN (`heavy_cnn`, 3x64x64, random-init weights) for server
benchmarks, exported and parity-checked like any model. Its outputs mean nothing; its cost is the point."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cnnserve.training.classifier.model import Classifier, ClassifierConfig
from cnnserve.training.export import ExportSpec, build_metadata, export_model
from cnnserve.training.publish import model_config, publish
from cnnserve.training.runs import configure_threads

logger = logging.getLogger(__name__)

HEAVY_CNN = ClassifierConfig(
    in_channels=3, image_size=64, num_classes=10, channels=(40, 80, 160, 320), kernel_sizes=(3, 3, 3, 3),
    hidden=256, batch_norm=True, dropout=0.0,
)  # fmt: skip


def count_flops(config: ClassifierConfig) -> int:
    """FLOPs per image (2 per multiply-add) of convs and dense layers; ReLU, pooling and batch norm not counted."""
    flops, side, in_ch = 0, config.image_size, config.in_channels
    for out_ch, k in zip(config.channels, config.kernel_sizes, strict=True):
        flops += 2 * side * side * in_ch * out_ch * k * k  # "same" conv at the block's input resolution
        side //= 2
        in_ch = out_ch
    flops += 2 * in_ch * side * side * config.hidden + 2 * config.hidden * config.num_classes
    return flops


def publish_benchmark_models(repo: Path, seed: int = 0) -> Path:
    configure_threads()
    torch.manual_seed(seed)
    model = Classifier(HEAVY_CNN).eval()
    gflops = count_flops(HEAVY_CNN) / 1e9
    print(f"heavy_cnn: {gflops:.3f} GFLOP per 3x64x64 image (random-init weights, for benchmarks only)")
    size = HEAVY_CNN.image_size
    spec = ExportSpec(
        name="heavy_cnn", input_names=("images",), output_names=("logits",),
        sample_inputs=lambda n, g: (torch.randn(n, 3, size, size, generator=g),),
        real_inputs=(torch.rand(7, 3, size, size, generator=torch.Generator().manual_seed(seed)),),
    )  # fmt: skip
    labels = [f"class_{i}" for i in range(HEAVY_CNN.num_classes)]
    report: dict[str, Any] = {
        "model": "heavy_cnn",
        "passed": None,
        "checks": [],
        "metrics": {"gflops_per_image": round(gflops, 4)},
    }
    metadata = build_metadata(labels, {}, report, {"model_config": HEAVY_CNN.to_dict(), "weights": "random-init"})
    exported = export_model(model, spec, metadata)
    parameters = {"task": "classification", "weights": "random-init", "gflops_per_image": f"{gflops:.4f}"}
    config = model_config("heavy_cnn", exported.inputs, exported.outputs, parameters, labels_file=True,
                          label_output="logits")  # fmt: skip
    version_dir = publish(repo, "heavy_cnn", exported.model.SerializeToString(), config, labels)
    print(f"published heavy_cnn -> {version_dir}")
    return version_dir
