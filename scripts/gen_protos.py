"""Generate cnnserve/api/ from proto/grpc_service.proto: message and gRPC stubs plus their mypy stubs (`make protos`).

tests/test_protos.py runs this into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cnnserve/api"  # a folder: protoc derives the import path `cnnserve.api` from it
PROTO = "grpc_service.proto"
GENERATED = (
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
    "grpc_service_pb2_grpc.pyi",
)

# tritonclient registers the same `inference.*` names in protobuf's default descriptor pool, and a pool refuses a
# second definition of a name. Our messages live in a pool of their own so both can be imported in one process
# (tests drive the server with tritonclient). The wire format is unaffected; reflection must be given this pool.
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# cnnserve: a private pool, so that tritonclient's identical 'inference.*' names can share the process.\n"
    "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("
)


def _plugin(name: str) -> str:
    """A protoc plugin installed next to this interpreter (the venv's bin/), else found on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (mypy-protobuf)")
    return found


def generate(out: Path) -> list[Path]:
    """Write the generated files into out/cnnserve/api/ and return their paths."""
    with tempfile.TemporaryDirectory() as tmp:
        # Mapping proto/ to the virtual folder cnnserve/api makes the file's import path
        # cnnserve/api/grpc_service.proto, so generated imports read `from cnnserve.api import grpc_service_pb2`.
        args = [
            "grpc_tools.protoc",
            f"-I{PACKAGE}={ROOT / 'proto'}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            f"{PACKAGE}/{PROTO}",
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        pb2 = Path(tmp, PACKAGE, GENERATED[0])
        code = pb2.read_text()
        if code.count(_DEFAULT_POOL) != 1:
            raise SystemExit(f"unexpected protoc output in {pb2.name}: cannot move it to a private descriptor pool")
        pb2.write_text(code.replace(_DEFAULT_POOL, _PRIVATE_POOL))

        target = out / PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            shutil.copyfile(Path(tmp, PACKAGE, name), target / name)
            written.append(target / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=ROOT, help="folder that receives cnnserve/api/ (default: repo root)"
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
