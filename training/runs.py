"""Per-run housekeeping shared by the jobs and their loops: the start (seed, CPU threads, device), checkpoints and
report.json."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnserve.training.options import RunOptions, available_cores

logger = logging.getLogger(__name__)


def start(options: RunOptions) -> None:
    """What every job does first: seed everything (printed), set the threads, check the device."""
    seed_everything(options.seed)
    threads = configure_threads(options.threads)
    resolve_device(options.device)
    logger.info("threads=%d device=%s dry_run=%s", threads, options.device, options.dry_run)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and say so: a run is reproduced from its printed seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    print(f"seed: {seed}")


def configure_threads(threads: int = 0) -> int:
    """One intra-op thread per available core unless told otherwise; small convs gain nothing from more."""
    n = threads if threads > 0 else available_cores()
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op in a process
        torch.set_num_interop_threads(1)
    return n


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def save_checkpoint(out_dir: Path, epoch: int, state: dict[str, Any], keep: int = 3) -> Path:
    """`<out_dir>/checkpoints/epoch-NNN.pt`, one per epoch; only the newest `keep` stay on disk."""
    folder = out_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch-{epoch:03d}.pt"
    torch.save({"epoch": epoch, **state}, path)
    for old in sorted(folder.glob("epoch-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
