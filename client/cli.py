"""`cnnserve classify | generate | segment | stylize | explain | models | health`: the client side of the command
line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnserve.client import images
from cnnserve.client.client import Client
from cnnserve.client.core import segment
from cnnserve.client.errors import ClientError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnserve")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--url", default="127.0.0.1:8001", help="server address HOST:PORT")
        sub.add_argument("--timeout-s", type=float, default=30.0)
        add_connection_flags(sub)
        return sub

    classify = add("classify", "classify image files")
    classify.add_argument("--model", default="digits_cnn")
    classify.add_argument("--top-k", type=int, default=3)
    classify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    classify.add_argument(
        "--send",
        choices=("auto", "files", "tensors"),
        default="auto",
        help="files: send the PNG/JPEG files, the server decodes them; tensors: decode and "
        "preprocess here; auto (default): files when the model takes them",
    )
    classify.add_argument("files", nargs="+", type=Path)

    generate = add("generate", "generate images and write a PNG grid")
    generate.add_argument("--model", default="cdcgan_digits")
    generate.add_argument("-n", type=int, default=16, help="how many images")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--label", type=int, help="class index for a conditional generator")
    generate.add_argument("--truncation", type=float, help="scale the latents: below 1 trades variety for fidelity, "
                          "0 gives one image per class (default: the model's default_truncation)")  # fmt: skip
    generate.add_argument("--out", type=Path, default=Path("grid.png"))
    generate.add_argument("--out-dir", type=Path, help="also write each image as its own PNG here")

    seg = add("segment", "find the digits in image files: boxes printed, mask and boxes drawn with --out")
    seg.add_argument("--model", default="digits_segmenter")
    seg.add_argument("--min-score", type=float, default=0.0, help="drop detections scored below this")
    seg.add_argument("--out", type=Path, help="write the mask blended over the image, with the boxes (one file)")
    seg.add_argument("--out-dir", type=Path, help="write <name>.overlay.png for each file here")
    seg.add_argument("--alpha", type=float, default=0.5, help="opacity of the mask's colours in the pictures")
    seg.add_argument("--json", action="store_true", help="print JSON instead of a table")
    seg.add_argument("files", nargs="+", type=Path)

    styl = add("stylize", "restyle photos with a style model: one PNG out per photo, at its own size")
    styl.add_argument("--model", default="stylize_brushstrokes")
    styl.add_argument("--out", type=Path, help="the PNG to write (one file; default <name>.styled.png beside it)")
    styl.add_argument("--out-dir", type=Path, help="write <name>.styled.png for each file here")
    styl.add_argument("files", nargs="+", type=Path)

    why = add("explain", "where a classifier looks: occlusion heatmaps of image files, drawn with --out-dir")
    why.add_argument("--model", default="digits_cnn")
    why.add_argument("--patch", type=int, help="occluding patch side in the model's input pixels (server: 4)")
    why.add_argument("--stride", type=int, help="step between patch positions (server: 2)")
    why.add_argument("--target-class", type=int, help="explain this class index instead of the top class")
    why.add_argument("--out-dir", type=Path, help="write <name>.explained.png (heatmap over the image) for each file")
    why.add_argument("--json", action="store_true", help="print JSON (with the heatmaps) instead of a summary")
    why.add_argument("files", nargs="+", type=Path)

    models = add("models", "list the server's models")
    models.add_argument("--json", action="store_true")

    health = add("health", "exit 0 when the server (or --model) is ready, 1 otherwise")
    health.add_argument("--model", default="", help="check this model's readiness instead of the server's")
    health.add_argument("--live", action="store_true", help="check liveness only")
    return parser


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """TLS and token flags, shared with `cnnserve bench`."""
    parser.add_argument("--tls", action="store_true", help="use TLS, verifying the server with the system's roots")
    parser.add_argument("--tls-ca", type=Path, metavar="FILE", help="use TLS, verifying the server with this PEM CA")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="private key (PEM) of --tls-cert")
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="send the bearer token in FILE (its first line not blank or #), never on the command line",
    )


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """Client keyword arguments from add_connection_flags' flags."""
    token = None
    if args.token_file is not None:
        lines = [line.strip() for line in args.token_file.read_text().splitlines()]
        token = next((line for line in lines if line and not line.startswith("#")), None)
    return {
        "tls": args.tls,
        "root_certificates": args.tls_ca,
        "certificate_chain": args.tls_cert,
        "private_key": args.tls_key,
        "token": token,
    }


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        with Client(args.url, timeout=args.timeout_s, **connection_options(args)) as client:
            return int(COMMANDS[args.command](client, args))
    except (ClientError, OSError, ValueError) as err:  # OSError, ValueError: a TLS or token file that cannot be used
        print(f"cnnserve {args.command}: {err}", file=sys.stderr)
        return 1


def _classify(client: Client, args: argparse.Namespace) -> int:
    send_files = {"auto": None, "files": True, "tensors": False}[args.send]
    results = client.classify(args.model, args.files, top_k=args.top_k, send_files=send_files)
    if args.json:
        print(
            json.dumps(
                [
                    {"file": str(f), "top": [{"label": lbl, "probability": p} for lbl, p in r]}
                    for f, r in zip(args.files, results, strict=True)
                ],
                indent=2,
            )
        )
        return 0
    for file, ranked in zip(args.files, results, strict=True):
        print(f"{file}: " + "  ".join(f"{label} {probability:.3f}" for label, probability in ranked))
    return 0


def _generate(client: Client, args: argparse.Namespace) -> int:
    generated = client.generate(args.model, args.n, seed=args.seed, label=args.label, truncation=args.truncation)
    images.grid(generated).save(args.out)
    print(f"wrote {args.out} ({len(generated)} images)")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(generated):
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(args.out_dir / f"{i:04d}.png")
    return 0


def _segment(client: Client, args: argparse.Namespace) -> int:
    if args.out is not None and len(args.files) > 1:
        raise ValueError("--out takes one file; use --out-dir for several")
    drawing = args.out is not None or args.out_dir is not None
    results = client.segment(args.model, args.files, with_mask=drawing, min_score=args.min_score)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "file": str(f),
                        "detections": [
                            {
                                "label": d.label,
                                "class": d.class_index,
                                "score": round(d.score, 4),
                                "box": [round(v, 2) for v in d.box],
                            }
                            for d in r.detections
                        ],
                    }
                    for f, r in zip(args.files, results, strict=True)
                ],
                indent=2,
            )
        )
    for file, result in zip(args.files, results, strict=True):
        if not args.json:
            print(f"{file}: {len(result.detections)} found")
            for d in result.detections:
                x0, y0, x1, y1 = d.box
                print(f"  {d.label:<10} {d.score:.3f}  box x {x0:.0f}-{x1:.0f}  y {y0:.0f}-{y1:.0f}")
        if drawing:
            target = args.out or args.out_dir / f"{file.stem}.overlay.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            segment.picture(file, result, args.alpha).save(target)
            if not args.json:
                print(f"  wrote {target}")
    return 0


def _stylize(client: Client, args: argparse.Namespace) -> int:
    if args.out is not None and len(args.files) > 1:
        raise ValueError("--out takes one file; use --out-dir for several")
    for file, png in zip(args.files, client.stylize_png(args.model, args.files), strict=True):
        folder = args.out_dir if args.out_dir is not None else file.parent
        target = args.out or folder / f"{file.stem}.styled.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
        print(f"{file}: wrote {target}")
    return 0


def _explain(client: Client, args: argparse.Namespace) -> int:
    results = client.explain(args.model, args.files, patch=args.patch, stride=args.stride,
                             target_class=args.target_class, with_png=args.out_dir is not None)  # fmt: skip
    if args.json:
        print(json.dumps([{"file": str(f), "label": r.label, "class": r.class_index,
                           "explanation": np.round(r.heatmap, 5).tolist()}
                          for f, r in zip(args.files, results, strict=True)]))  # fmt: skip
    for file, result in zip(args.files, results, strict=True):
        if not args.json:
            ys, xs = np.nonzero(result.hottest(0.2))
            print(
                f"{file}: explains {result.label}; covering its hottest 20% of pixels (rows {ys.min()}-{ys.max()}, "
                f"columns {xs.min()}-{xs.max()}) costs up to {result.heatmap.max():.3f} of its probability"
            )
        if args.out_dir is not None and result.png is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            target = args.out_dir / f"{file.stem}.explained.png"
            target.write_bytes(result.png)
            if not args.json:
                print(f"  wrote {target}")
    return 0


def _models(client: Client, args: argparse.Namespace) -> int:
    entries = client.models()
    if args.json:
        print(json.dumps([e.__dict__ for e in entries], indent=2))
        return 0
    for e in entries:
        print(f"{e.name:<24} {e.version or '-':<8} {e.state:<12} {e.reason}")
    return 0


def _health(client: Client, args: argparse.Namespace) -> int:
    service = "" if args.live else (args.model or "ready")
    ok = client.health_check(service)
    print(f"{service or 'live'}: {'SERVING' if ok else 'NOT_SERVING'}")
    return 0 if ok else 1


COMMANDS = {
    "classify": _classify,
    "generate": _generate,
    "segment": _segment,
    "stylize": _stylize,
    "explain": _explain,
    "models": _models,
    "health": _health,
}
