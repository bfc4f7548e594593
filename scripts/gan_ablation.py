"""What each of the GAN defaults' remedies buys: trains a generator with the default preset and with one remedy
taken away at a time (same seed, same data, same judge), then prints the report card's figures side by side.

    python scripts/gan_ablation.py --conditional [--model-repository DIR] [--only default,no_ema]

Each run takes the default's epochs (1-2 minutes on 2 cores); the published models go to a scratch repository, so
the served defaults are untouched. The judge is the newest digits_cnn in --model-repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cnnserve.training.gan.job import run_gan
from cnnserve.training.gan.kind import GanOptions

# name -> (model preset overrides, training overrides): one remedy off each
CONDITIONAL: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "no_ema": ({}, {"ema_decay": 0.0}),
    "no_spectral_norm": ({"spectral_norm": False}, {}),
    "bce_not_hinge": ({}, {"loss": "bce", "beta1": 0.5}),
    "equal_lr": ({}, {"lr_d": 1e-4}),
    "no_minibatch_std": ({"minibatch_std": False}, {}),
    "no_ac_head": ({"auxiliary_classifier": False}, {}),
}
UNCONDITIONAL: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "no_ema": ({}, {"ema_decay": 0.0}),
    "no_minibatch_std": ({"minibatch_std": False}, {}),
    "no_codes": ({"codes": 0}, {}),
    "hinge_spectral_norm": ({"spectral_norm": True}, {"loss": "hinge", "beta1": 0.0, "lr": 1e-4, "lr_d": 4e-4}),
}
FIGURES = ("fid", "diversity", "min_class_diversity", "confident_share", "asked_class_confident_share",
           "min_class_share")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditional", action="store_true")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = CONDITIONAL if args.conditional else UNCONDITIONAL
    chosen = [v for v in args.only.split(",") if v] or list(variants)
    judge = args.model_repository / "digits_cnn"
    if not judge.is_dir():
        print(f"no judge: train digits_cnn into {args.model_repository} first (cnnserve train classifier)")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="gan-ablation-"))
    shutil.copytree(judge, scratch / "digits_cnn")
    rows = []
    try:
        for name in chosen:
            model_extra, extra = variants[name]
            started = time.monotonic()
            options = GanOptions(repository=scratch, name=f"ablation_{name}", out_dir=scratch / "runs" / name,
                                 conditional=args.conditional, seed=args.seed, progress_bar=False,
                                 model_extra=model_extra, extra=extra)  # fmt: skip
            report = run_gan(options).report
            metrics = report["metrics"] | {check["name"]: check["value"] for check in report["checks"]}
            rows.append((name, metrics, time.monotonic() - started))
            print(f"{name}: " + ", ".join(f"{k} {metrics[k]}" for k in FIGURES if k in metrics), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    shown = [k for k in FIGURES if any(k in m for _, m, _ in rows)]
    print("\n| variant | " + " | ".join(shown) + " | selected epoch | seconds |")
    print("|---|" + "---|" * (len(shown) + 2))
    for name, metrics, seconds in rows:
        cells = [str(metrics.get(k, "-")) for k in shown]
        print(f"| {name} | " + " | ".join(cells) + f" | {metrics.get('selected_epoch')} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
