"""FP32 against INT8 on the digits CNN and the heavier benchmark CNN, in one run: the gate's verdict for each
(`cnnserve quantize`, default limits), then in-process ONNX Runtime and a served model at batch 1 and 32.

Works in a scratch repository: REPO's digits_cnn (a trained one: `cnnserve train defaults`) and heavy_cnn (exported
here by `cnnserve train benchmark-models`; random weights, so it is calibrated and gated on crops of the photos that
scikit-learn bundles, by top-1 agreement). A variant the gate refuses is made again with `--min-speedup 0` in the
scratch repository only, so that it can be measured; the run says so.

In-process: one session with the model's own thread settings runs `batch` real images back to back, on the graph cut
to its logits (what the server runs for a request that names no outputs, and what the gate times). Served: `batch`
clients each send one image (the server's dynamic batching merges them), unary gRPC, as `cnnserve bench` does.

    python benchmarks/int8.py [--model-repository model_repository] [--duration-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from cnnserve.benchmarks.grpc_load import drive, fetch_metadata, serialized_request
from cnnserve.benchmarks.in_process import in_process
from cnnserve.benchmarks.local_server import LocalServer
from cnnserve.benchmarks.measurement import Measurement
from cnnserve.training.publish import latest_model
from cnnserve.training.variants.calibration import gate_images
from cnnserve.training.variants.gate import scores_only
from cnnserve.training.variants.source import read_source

MODELS = ("digits_cnn", "heavy_cnn")
BATCHES = (1, 32)
PHOTO_CROPS = 500


def photo_crops(folder: Path, count: int = PHOTO_CROPS, side: int = 96, seed: int = 0) -> Path:
    """Random square crops of scikit-learn's two bundled photos, as PNG files: real images for heavy_cnn."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        Image.fromarray(photo[top : top + side, left : left + side]).save(folder / f"{i:04d}.png")
    return folder


def cnnserve(*args: str) -> tuple[int, str]:
    """Run a cnnserve command, its output shown as it comes; returns its exit code and its stderr."""
    done = subprocess.run([str(Path(sys.executable).parent / "cnnserve"), *args], check=False, stderr=subprocess.PIPE,
                          text=True)  # fmt: skip
    sys.stderr.write(done.stderr)
    return done.returncode, done.stderr


def gate(repo: Path, model: str, calibration: str, duration_s: str) -> str:
    """The verdict with default limits; a refused variant is made anyway (scratch repository only) to be measured."""
    print(f"\n=== gate: cnnserve quantize {model} --calibration {calibration}", flush=True)
    common = ["quantize", "--model-repository", str(repo), model, "--calibration", calibration]
    code, errors = cnnserve(*common, "--speed-duration-s", duration_s)
    if code == 0:
        return "passed"
    refusal = next((line for line in errors.splitlines() if "refused by the" in line), "refused")
    print(f"--- {model}_int8 refused; made with every limit off in the scratch repository only, to measure it")
    anyway = ["--min-speedup", "0", "--min-agreement", "0", "--max-accuracy-drop", "100", "--speed-duration-s", "0.2"]
    if cnnserve(*common, *anyway)[0] != 0:
        raise SystemExit(f"int8: could not make {model}_int8 even with every limit off")
    return refusal.removeprefix("cnnserve quantize: ")


def served(address: str, model: str, item: dict[str, np.ndarray], clients: int, duration_s: float) -> Measurement:
    metadata = asyncio.run(fetch_metadata(address, model))
    payload = serialized_request(model, metadata, item)
    measurement, _ = asyncio.run(drive(address, payload, 1, clients, duration_s, warmup_s=1.0))
    return measurement


def measure(repo: Path, address: str, name: str, mode: str, batch_images: np.ndarray, duration_s: float
            ) -> Measurement:  # fmt: skip
    if mode == "served":
        return served(address, name, {"images": batch_images[:1]}, len(batch_images), duration_s)
    config = json.loads((repo / name / "config.json").read_text())
    threads = int(config.get("session", {}).get("intra_op_threads", 0))
    return in_process(scores_file(repo, name), {"images": batch_images}, duration_s, threads, False,
                      outputs=["logits"])  # fmt: skip


def scores_file(repo: Path, name: str) -> Path:
    """The newest version's graph cut to its logits, beside the repository: what the server runs for a request
    that names no outputs (the feature maps are optional outputs), and what the gate times."""
    cut = repo.parent / "scores-only" / f"{name}.onnx"
    if not cut.exists():
        model_file = latest_model(repo, name)
        assert model_file is not None
        cut.parent.mkdir(exist_ok=True)
        onnx.save(scores_only(onnx.load(str(model_file)), "images", "logits"), str(cut))
    return cut


def logits(repo: Path, name: str, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(scores_file(repo, name)), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"images": images})[0])


def combined(runs: list[Measurement]) -> Measurement:
    """The median round's items/s (a neighbour's burst costs one round), every round's latencies."""
    rates = sorted(m.items_per_s for m in runs)
    latencies = tuple(ms for m in runs for ms in m.latencies_ms)
    return Measurement(runs[0].label, rates[len(rates) // 2], sum(m.requests for m in runs), latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"),
                        help="holds a trained digits_cnn")  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="FP32 and INT8 measured in turn this many times")
    parser.add_argument("--gate-duration-s", default="2", help="the speed gate's seconds per model per round")
    args = parser.parse_args()
    if latest_model(args.model_repository, "digits_cnn") is None:
        raise SystemExit(f"int8: {args.model_repository} has no digits_cnn (cnnserve train defaults)")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        shutil.copytree(args.model_repository / "digits_cnn", repo / "digits_cnn")
        if cnnserve("train", "benchmark-models", "--model-repository", str(repo))[0] != 0:
            raise SystemExit("int8: cannot export heavy_cnn")
        calibration = {"digits_cnn": "digits", "heavy_cnn": str(photo_crops(Path(tmp) / "photos"))}
        verdicts = {model: gate(repo, model, calibration[model], args.gate_duration_s) for model in MODELS}
        held_out = {model: gate_images(calibration[model], read_source(repo, model)).held_out for model in MODELS}
        rows: dict[tuple[str, str, int], Measurement] = {}
        with LocalServer(repo) as server:
            print(
                f"\n=== measurements: {args.rounds} rounds of {args.duration_s:g} s each, FP32 and INT8 in turn; "
                f"items/s the median round, p50/p99 over all rounds; server {server.grpc_address}",
                flush=True,
            )
            print(f"{'model':>16} {'mode':>10} {'batch':>5} {'items/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
            for model in MODELS:
                for batch in BATCHES:
                    images = held_out[model]
                    batch_images = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
                    for mode in ("in-process", "served"):
                        runs: dict[str, list[Measurement]] = {model: [], f"{model}_int8": []}
                        for _ in range(args.rounds):
                            for name, measured in runs.items():
                                measured.append(measure(repo, server.grpc_address, name, mode, batch_images,
                                                        args.duration_s))  # fmt: skip
                        for name, measured in runs.items():
                            rows[(name, mode, batch)] = m = combined(measured)
                            print(f"{name:>16} {mode:>10} {batch:>5} {m.items_per_s:>10.1f} {m.percentile(50):>8.2f} "
                                  f"{m.percentile(99):>8.2f}", flush=True)  # fmt: skip
        print("\n=== INT8 / FP32 items/s (same run)")
        for model in MODELS:
            for mode in ("in-process", "served"):
                ratios = [rows[(f"{model}_int8", mode, b)].items_per_s / rows[(model, mode, b)].items_per_s
                          for b in BATCHES]  # fmt: skip
                listed = ", ".join(f"batch {b}: {r:.2f}x" for b, r in zip(BATCHES, ratios, strict=True))
                print(f"{model:>16} {mode:>10}  {listed}")
        print("\n=== why: the FP32 logits' top-1 margin against INT8's error, on the held-out images")
        for model in MODELS:
            fp32, int8 = (logits(repo, name, held_out[model]) for name in (model, f"{model}_int8"))
            top = np.sort(fp32, axis=1)
            print(
                f"{model:>16}: {len(fp32)} images, top-1 agreement {np.mean(fp32.argmax(1) == int8.argmax(1)):.4f}, "
                f"median margin top-1 - top-2 {np.median(top[:, -1] - top[:, -2]):.4g}, mean |INT8 - FP32| "
                f"{np.mean(np.abs(int8 - fp32)):.4g}, logit spread over images {np.mean(fp32.std(axis=0)):.4g}"
            )
        print("\n=== gate (default limits)")
        for model, verdict in verdicts.items():
            print(f"{model}_int8: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
