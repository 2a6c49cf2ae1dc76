"""Generates the Python code of `proto/` (messages, gRPC stubs and their type stubs).

`make proto` writes it into the packages; tests/bridge/test_codegen.py generates it again into a
temporary folder and fails when the committed files are stale.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cidsync", "cidsync_tooling")  # the product's contract, and the simulator's admin service
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on every .proto; return the files written, relative to `out_dir`."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    plugins = Path(sys.executable).parent  # mypy-protobuf's plugins, installed beside the interpreter
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its messages above")
    return sorted(p.relative_to(out_dir) for package in PACKAGES for p in (out_dir / package).rglob("*_pb2*.py*"))


if __name__ == "__main__":
    written = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print("\n".join(str(p) for p in written))
