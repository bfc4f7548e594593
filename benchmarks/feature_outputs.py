"""Does a classifier exported with its feature maps as optional outputs serve plain requests as fast as one without?

Copies REPO's digits_cnn (exported with features.* outputs) beside `digits_cnn_plain`, the same graph with those
outputs removed, serves both from one server, and runs `cnnserve bench` on each in turn (alternating, `--rounds`
times), each beside in-process ONNX Runtime on its own file. Compare the two models' served items/s and p50 in the
same run: they should agree within noise.

    python benchmarks/feature_outputs.py model_repository [--rounds 2] [--concurrency 1,32] [--duration-s 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

from cnnserve.benchmarks.local_server import LocalServer
from cnnserve.contracts import features, segmentation

MODEL = "digits_cnn"
PLAIN = "digits_cnn_plain"


def strip_feature_outputs(source: Path, target: Path) -> None:
    """target: source's entry (newest version) with the feature outputs gone from graph and config."""
    version = max((p for p in source.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    (target / "1").mkdir(parents=True)
    model = onnx.load(str(version / "model.onnx"))
    kept = [o for o in model.graph.output if not features.is_feature_output(o.name)]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(target / "1" / "model.onnx"))
    config = json.loads((source / "config.json").read_text())
    config["name"] = target.name
    config["outputs"] = [o for o in config["outputs"] if not features.is_feature_output(o["name"])]
    for key in (features.FEATURE_OUTPUTS_PARAMETER, segmentation.OPTIONAL_OUTPUTS_PARAMETER):
        config.get("parameters", {}).pop(key, None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for extra in source.iterdir():
        if extra.is_file() and extra.name != "config.json":
            shutil.copy(extra, target / extra.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--duration-s", default="5")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        shutil.copytree(args.repository / MODEL, repo / MODEL)
        strip_feature_outputs(repo / MODEL, repo / PLAIN)
        with LocalServer(repo) as server:
            for round_number in range(1, args.rounds + 1):
                for name in (MODEL, PLAIN):
                    model_file = max((repo / name).glob("*/model.onnx"))
                    print(f"\n=== round {round_number}: {name} ({model_file.relative_to(repo)})", flush=True)
                    subprocess.run([str(bin_dir / "cnnserve"), "bench", "--url", server.grpc_address,
                                    "--model", name, "--model-file", str(model_file),
                                    "--concurrency", args.concurrency, "--duration-s", args.duration_s,
                                    "--server-pid", str(server.pid)], check=True, env=os.environ)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
