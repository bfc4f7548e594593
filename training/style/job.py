"""The style model's end-to-end job: style image + content photos -> train -> report card on held-out photos ->
export (dynamic batch, height, width; parity at two sizes) -> publish with style.png beside the model."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnserve.contracts import style as contract
from cnnserve.contracts.imaging import read_image
from cnnserve.training.export import ExportSpec, build_metadata, export_model
from cnnserve.training.kinds import JobResult
from cnnserve.training.publish import model_config, publish
from cnnserve.training.report import announce, card
from cnnserve.training.runs import start, write_json
from cnnserve.training.style.data import (
    HELD_OUT_PHOTOS,
    TRAIN_PHOTOS,
    ContentCrops,
    fit_short_side,
    load_bundled,
    load_folder,
    to_tensor,
)
from cnnserve.training.style.kind import BUNDLED, PAINTED, StyleOptions
from cnnserve.training.style.loop import StyleTrainConfig, train_style
from cnnserve.training.style.losses import FeatureNetConfig
from cnnserve.training.style.model import STRIDE, StylizerConfig
from cnnserve.training.style.painting import brushstrokes
from cnnserve.training.style.report import JUDGED_SIDE, judged_photo, save_before_after, score_photos, style_checks

STYLE_BATCH_SIZE = 8  # the server's max_batch_size: 8 photos of 512 x 512 are ~100 MB of activations per layer
STYLE_MAX_PIXELS = 1024 * 1024
"""The largest photo (width x height) the server takes for the model: on 2 CPU cores one 1024 x 1024 photo takes
1.2-1.4 s and 0.7 GB, one 2048 x 2048 3.5-6 s and 2.4 GB (and a batch holds 8). The strokes are learnt at a fixed
size in pixels (128-pixel crops), so a larger photo gets finer strokes, not more style."""
STYLE_DYNAMIC_AXES = {contract.INPUT: {2: "height", 3: "width"}, contract.OUTPUT: {2: "height", 3: "width"}}
DRY_RUN_SIDE = 32  # a dry run trains on crops, and judges and draws the held-out photos, this small
STYLE_TOLERANCE = 1e-3  # pixels in [0, 1]: a thousandth is a quarter of one 8-bit step


def style_image(reference: str) -> Image.Image:
    if reference == PAINTED:
        return brushstrokes()
    path = Path(reference)
    if not path.is_file():
        raise FileNotFoundError(f"--style {reference}: no such image file (or say '{PAINTED}')")
    try:
        return read_image(path, "RGB")
    except OSError as err:
        raise ValueError(f"--style {reference}: not an image Pillow can read: {err}") from None


def run_style(options: StyleOptions) -> JobResult:
    started = time.monotonic()
    start(options)
    name = options.model_name()
    out_dir = options.artefacts(name)
    painting = style_image(options.style)
    bundled = options.content == BUNDLED
    photos = load_bundled(list(TRAIN_PHOTOS), TRAIN_PHOTOS) if bundled else load_folder(Path(options.content))
    chosen: dict[str, Any] = {"steps": options.steps, "batch_size": options.batch_size, "lr": options.lr}
    if options.dry_run:  # a smoke test: small crops, few of them (the first step at a new shape costs seconds)
        chosen = {"crop": DRY_RUN_SIDE, "batch_size": 2} | {k: v for k, v in chosen.items() if v is not None}
    train_cfg = StyleTrainConfig(seed=options.seed, dry_run=options.dry_run, device=options.device,
                                 progress_bar=options.progress_bar,
                                 **{k: v for k, v in chosen.items() if v is not None})  # fmt: skip
    style = fit_short_side(to_tensor(np.asarray(painting)), train_cfg.style_side)
    model_cfg = StylizerConfig()
    run = train_style(ContentCrops(photos, crop=train_cfg.crop), style, model_cfg, train_cfg, out_dir, name)
    held_out = dict(zip(HELD_OUT_PHOTOS, load_bundled(list(HELD_OUT_PHOTOS), HELD_OUT_PHOTOS), strict=True))
    side = DRY_RUN_SIDE if options.dry_run else JUDGED_SIDE
    checks, metrics = style_checks(score_photos(run.model, held_out, style, side), side)
    metrics |= {"steps": run.steps, "train_seconds": round(run.seconds, 1), "seed": options.seed,
                "loss_net_seed": train_cfg.loss_net_seed, "loss_net": FeatureNetConfig().__dict__,
                "style": options.style, "content": options.content, "train_photos": len(photos),
                "dry_run": options.dry_run}  # fmt: skip
    report = card(name, checks, metrics)
    announce(report)
    write_json(out_dir / "report.json", report)
    save_before_after(run.model, held_out, style, out_dir / "before_after.png", side)
    real = [judged_photo(p, 64).expand(7, -1, -1, -1)[:, :, :64, :64] for p in held_out.values()]
    wide = [judged_photo(p, 48).expand(7, -1, -1, -1)[:, :, :48, :80] for p in held_out.values()]
    spec = ExportSpec(
        name=name, input_names=(contract.INPUT,), output_names=(contract.OUTPUT,),
        sample_inputs=lambda n, g: (torch.rand(n, 3, 32, 48, generator=g),),  # multiples of STRIDE
        real_inputs=(real[0].contiguous(),), more_real_inputs=((wide[-1].contiguous(),),),
        tolerance=STYLE_TOLERANCE, exporter=options.exporter, dynamic_axes=STYLE_DYNAMIC_AXES,
    )  # fmt: skip
    preprocessing = contract.preprocessing(STRIDE, STYLE_MAX_PIXELS)
    metadata = build_metadata(
        [],
        preprocessing,
        report,
        {"model_config": model_cfg.to_dict(), "postprocessing": contract.postprocessing()},
    )
    exported = export_model(run.model, spec, metadata)
    config = model_config(name, exported.inputs, exported.outputs, contract.parameters(STRIDE),
                          preprocessing=preprocessing, postprocessing=contract.postprocessing(),
                          max_batch_size=STYLE_BATCH_SIZE, intra_op_threads=0)  # fmt: skip
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config,
                          extra_files={contract.STYLE_IMAGE_FILE: _png(painting)})  # fmt: skip
    return JobResult(name, version_dir, report, time.monotonic() - started)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
